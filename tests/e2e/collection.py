"""The collection's own modules as the e2e run uses them, each run through real ansible-playbook on localhost:
skm_genkey makes our two trusted keys, skm_kconfig writes the kernel's signing options, skm_sign signs.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile

from tests.lib.ansible_run import run_playbook
from tests.lib.debian_kernel import cache_dir
from tests.lib.keys import make_key

HASH = "sha512"            # CONFIG_MODULE_SIG_HASH of the e2e kernel (what MODULE_SIG_ALL would use)
COMPRESS = "xz"            # 6.1 decompresses gzip or xz in the kernel (zstd from 6.2)
# Our two trusted keys: the build's own (CONFIG_MODULE_SIG_KEY, its certificate built in) and an extra one
# (CONFIG_SYSTEM_TRUSTED_KEYS). Each lives in its own skm_genkey directory under the cache.
KEYS = {
    "rsa": {"key_type": "rsa", "key_size": 3072, "subject": {"CN": "skm.modsign e2e RSA-3072"}},
    "p384": {"key_type": "ecdsa", "key_size": 384, "subject": {"CN": "skm.modsign e2e ECDSA P-384"}},
}


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


def run_task(name: str, module: str, args: dict, check: bool = False) -> dict:
    """One task; a failed task raises with the module's message."""
    result = run_tasks([{"name": name, f"skm.modsign.{module}": args}], check=check)[0]
    if result.get("failed"):
        raise AssertionError(f"{module} failed: {result.get('msg') or result}")
    return result


@dataclasses.dataclass
class KeyPair:
    name: str
    key: pathlib.Path        # PEM private key
    cert: pathlib.Path       # PEM certificate
    combined: pathlib.Path   # key + certificate, as CONFIG_MODULE_SIG_KEY names it


@dataclasses.dataclass
class SigningSetup:
    keydir: pathlib.Path
    rsa: KeyPair             # CONFIG_MODULE_SIG_KEY (the build's own key; its certificate is built in)
    p384: KeyPair            # CONFIG_SYSTEM_TRUSTED_KEYS
    notes: list[str]         # what skm_genkey did with each key (made or kept, and why)

    @property
    def trusted_certs(self) -> list[pathlib.Path]:
        return [self.rsa.cert, self.p384.cert]

    @property
    def kconfig_args(self) -> dict:
        """skm_kconfig's signing options for the e2e kernel (without path and extra)."""
        return {"sig": True, "sig_force": True, "sig_all": True, "hash": HASH, "key": str(self.rsa.combined),
                "key_type": "rsa", "trusted_keys": str(self.p384.cert), "compress": COMPRESS, "decompress": True}

    def expected_config(self) -> dict[str, str]:
        """What the built kernel's .config must say, written out here independently of skm_kconfig."""
        return {
            "CONFIG_MODULE_SIG": "y", "CONFIG_MODULE_SIG_FORCE": "y", "CONFIG_MODULE_SIG_ALL": "y",
            f"CONFIG_MODULE_SIG_{HASH.upper()}": "y", "CONFIG_MODULE_SIG_HASH": f'"{HASH}"',
            "CONFIG_MODULE_SIG_KEY": f'"{self.rsa.combined}"', "CONFIG_MODULE_SIG_KEY_TYPE_RSA": "y",
            "CONFIG_SYSTEM_TRUSTED_KEYS": f'"{self.p384.cert}"',
            f"CONFIG_MODULE_COMPRESS_{COMPRESS.upper()}": "y", "CONFIG_MODULE_DECOMPRESS": "y",
        }

    def write_kconfig(self, config: pathlib.Path, extra: dict[str, str], check: bool) -> dict:
        """skm_kconfig on ``config``: the signing options plus ``extra`` (the recipe), in one write."""
        args = {"path": str(config), **self.kconfig_args, "extra": extra}
        return run_task(f"skm_kconfig {config}", "skm_kconfig", args, check=check)


def signing_setup() -> SigningSetup:
    """Our two trusted keys from skm_genkey, kept under the cache so that the cached kernel trusts them next run.

    skm_genkey is idempotent: a key that is there and matches the options is kept, so the kernel cache (keyed by
    the certificates' fingerprints) stays valid between runs.
    """
    keydir = cache_dir() / "e2e" / "keys"
    names = list(KEYS)
    tasks = [{"name": f"skm_genkey {name}", "skm.modsign.skm_genkey": {"path": str(keydir / name), "hash": HASH,
                                                                       **KEYS[name]}} for name in names]
    results = run_tasks(tasks)
    pairs, notes = {}, []
    for name, result in zip(names, results):
        if result.get("failed"):
            raise AssertionError(f"skm_genkey {name} failed: {result.get('msg') or result}")
        pairs[name] = KeyPair(name, pathlib.Path(result["private_key"]), pathlib.Path(result["certificate"]),
                              pathlib.Path(result["combined"]))
        notes.append(f"{name} key {'made' if result['generated'] else 'kept'} by skm_genkey "
                     f"({result['reason']}; sha256 {result['fingerprint'][:16]})")
    return SigningSetup(keydir, pairs["rsa"], pairs["p384"], notes)


def foreign_key(workdir: pathlib.Path) -> KeyPair:
    """A key no kernel here trusts: made fresh each run (by openssl, so not by the code under test)."""
    k = make_key(workdir / "foreign", "rsa2048", cn="foreign")
    return KeyPair("foreign", k.key, k.cert, k.combined)


def sign_tasks(path: str, pair: KeyPair, hash_name: str, mode: str, replace_foreign: bool = False) -> dict:
    """One skm_sign task: host mode (key on the host) or controller mode (action plugin, key stays here)."""
    args = {"path": [path], "key": str(pair.key), "cert": str(pair.cert), "hash": hash_name,
            "key_location": mode, "replace_foreign": replace_foreign}
    return {"name": f"skm_sign {mode} {hash_name} {pathlib.Path(path).name}", "skm.modsign.skm_sign": args}
