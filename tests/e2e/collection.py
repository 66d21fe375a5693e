"""The collection's own modules as the e2e run uses them: skm_genkey (keys), skm_kconfig (kernel config),
skm_sign (host and controller mode), each run through real ansible-playbook on localhost.

Until skm_genkey / skm_kconfig exist in plugins/modules/, keys come from openssl (tests/lib/keys.py) and the
signing options from a fragment written here; `SigningSetup.via` says which was used.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile

from tests.lib.ansible_run import REPO, run_playbook
from tests.lib.debian_kernel import cache_dir
from tests.lib.keys import make_key

MODULES = REPO / "plugins" / "modules"
HASH = "sha512"            # CONFIG_MODULE_SIG_HASH of the e2e kernel (what MODULE_SIG_ALL would use)
COMPRESS = "xz"


# Set to True once the wiring below (_skm_genkey, _skm_kconfig) speaks the module's real options; until then a
# module that exists is only reported, so that its arrival cannot break the run.
WIRED = {"skm_genkey": False, "skm_kconfig": False}


def has_module(name: str) -> bool:
    return WIRED.get(name, True) and (MODULES / f"{name}.py").exists()


def pending_modules() -> list[str]:
    """Modules that now exist but are not wired into the run yet."""
    return [name for name, wired in WIRED.items() if not wired and (MODULES / f"{name}.py").exists()]


def run_tasks(tasks: list[dict], check: bool = False) -> list[dict]:
    """Run ``tasks`` (module name -> args, plus optional 'name') in one play; one result dict per task."""
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": t.get("name", f"task {i}"), "ignore_errors": True,
         **{k: v for k, v in t.items() if k != "name"}} for i, t in enumerate(tasks)]}]
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "play.yml"
        path.write_text(json.dumps(play))
        proc = run_playbook(path, check=check)
    try:
        report = json.loads(proc.stdout)
        results = [t["hosts"]["localhost"] for t in report["plays"][0]["tasks"]]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"ansible-playbook gave no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if len(results) != len(tasks):
        raise AssertionError(f"{len(tasks)} tasks, {len(results)} results:\n{proc.stdout[-4000:]}")
    return results


@dataclasses.dataclass
class KeyPair:
    name: str
    key: pathlib.Path        # PEM private key (or key + certificate)
    cert: pathlib.Path       # PEM certificate
    combined: pathlib.Path   # key + certificate, as CONFIG_MODULE_SIG_KEY names it


@dataclasses.dataclass
class SigningSetup:
    keydir: pathlib.Path
    rsa: KeyPair             # CONFIG_MODULE_SIG_KEY (the build's own key; its certificate is built in)
    p384: KeyPair            # CONFIG_SYSTEM_TRUSTED_KEYS
    via: str                 # "skm_genkey" or "openssl"
    notes: list[str]

    @property
    def trusted_certs(self) -> list[pathlib.Path]:
        return [self.rsa.cert, self.p384.cert]

    @property
    def kconfig_args(self) -> dict:
        return {"hash": HASH, "force": True, "sign_all": True, "key": str(self.rsa.combined),
                "key_type": "rsa", "trusted_keys": str(self.p384.cert), "compression": COMPRESS,
                "via": "skm_kconfig" if has_module("skm_kconfig") else "fragment"}

    def expected_config(self) -> dict[str, str]:
        return {
            "CONFIG_MODULE_SIG": "y", "CONFIG_MODULE_SIG_FORCE": "y", "CONFIG_MODULE_SIG_ALL": "y",
            f"CONFIG_MODULE_SIG_{HASH.upper()}": "y", "CONFIG_MODULE_SIG_HASH": f'"{HASH}"',
            "CONFIG_MODULE_SIG_KEY": f'"{self.rsa.combined}"', "CONFIG_MODULE_SIG_KEY_TYPE_RSA": "y",
            "CONFIG_SYSTEM_TRUSTED_KEYS": f'"{self.p384.cert}"',
            f"CONFIG_MODULE_COMPRESS_{COMPRESS.upper()}": "y",
        }

    def write_kconfig(self, config: pathlib.Path, check: bool) -> dict:
        """Write the signing options into ``config`` (skm_kconfig, or the fallback fragment)."""
        if has_module("skm_kconfig"):
            return _skm_kconfig(self, config, check)
        from tests.e2e.kernel_build import _missing
        missing = _missing(config, self.expected_config())
        if missing and not check:
            with open(config, "a") as out:
                out.write("\n# signing options (fallback fragment: skm_kconfig not available)\n")
                for name, value in self.expected_config().items():
                    out.write(f"{name}={value}\n")
        return {"changed": bool(missing), "via": "fragment", "missing": missing}


def _skm_kconfig(setup: SigningSetup, config: pathlib.Path, check: bool) -> dict:
    raise NotImplementedError("wire skm_kconfig's options here when it lands")


def signing_setup() -> SigningSetup:
    """Our two trusted keys, kept under the cache (so that the cached kernel trusts them next run too)."""
    keydir = cache_dir() / "e2e" / "keys"
    keydir.mkdir(parents=True, exist_ok=True)
    if has_module("skm_genkey"):
        return _skm_genkey(keydir)
    pairs = {}
    for kind in ("rsa3072", "p384"):
        stem = keydir / "openssl" / kind
        if not (stem / f"{kind}.pem").exists():
            make_key(stem, kind)
        pairs[kind] = KeyPair(kind, stem / f"{kind}.key", stem / f"{kind}.crt", stem / f"{kind}.pem")
    notes = ["keys made by openssl (fallback)"] + [f"{n} exists but is not wired yet" for n in pending_modules()]
    return SigningSetup(keydir, pairs["rsa3072"], pairs["p384"], "openssl", notes)


def _skm_genkey(keydir: pathlib.Path) -> SigningSetup:
    raise NotImplementedError("wire skm_genkey's options here when it lands")


def foreign_key(workdir: pathlib.Path) -> KeyPair:
    """A key no kernel here trusts: made fresh each run."""
    k = make_key(workdir / "foreign", "rsa2048", cn="foreign")
    return KeyPair("foreign", k.key, k.cert, k.combined)


def sign_tasks(path: str, pair: KeyPair, hash_name: str, mode: str, replace_foreign: bool = False) -> dict:
    """One skm_sign task: host mode (key on the host) or controller mode (action plugin, key stays here)."""
    args = {"path": [path], "key": str(pair.key), "cert": str(pair.cert), "hash": hash_name,
            "key_location": mode, "replace_foreign": replace_foreign}
    return {"name": f"skm_sign {mode} {hash_name} {pathlib.Path(path).name}", "skm.modsign.skm_sign": args}
