"""skm_sign in controller mode (action plugin), through real ansible-playbook, on copies of real Debian modules.

The managed host's Python is a wrapper around the test interpreter that
  * makes ``cryptography`` unimportable (a package of that name whose import raises ImportError),
    so the host side provably works without it;
  * keeps a copy of every module payload the controller sends (Ansible 2.19 puts the module arguments
    in clear in the AnsiballZ file) and of everything the host sends back, to prove that no key
    material reaches the host and to measure the bytes per module;
  * can run a hook before the write step, to change a module between the two steps.
Oracles as in host mode: sign-file (RSA byte identity), openssl cms -verify (ECDSA), modinfo.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re
import subprocess
import sys

import pytest

from ansible_collections.skm.modsign.plugins.module_utils._trailer import parse_signature, strip_signature
from tests.lib.ansible_run import bin_path, run_module, run_playbook
from tests.lib.module_tree import (
    decompressed, make_tree, modinfo_signature, openssl_cms_verify, sign_file_reference, stat_ids,
)

PASSPHRASE = "controller only passphrase 0815"


class Host:
    """The wrapper interpreter and what it saw."""

    def __init__(self, base: pathlib.Path):
        self.log = base / "host-log"
        self.log.mkdir(parents=True)
        self.hook = base / "before-write.sh"
        blocker = base / "blocker" / "cryptography"
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text("raise ImportError('cryptography is unimportable on this test host')\n")
        self.python = base / "host-python"
        self.python.write_text(f"""#!/bin/bash
n=$(date +%s%N)
cp "$1" {self.log}/$n.in
if [ -f {self.hook} ] && grep -q '"step": "write"' "$1"; then bash {self.hook}; fi
PYTHONPATH={blocker.parent} {sys.executable} "$@" | tee {self.log}/$n.out
exit ${{PIPESTATUS[0]}}
""")
        self.python.chmod(0o755)

    @property
    def vars(self) -> dict:
        return {"ansible_python_interpreter": str(self.python)}

    def reset(self) -> None:
        for path in self.log.iterdir():
            path.unlink()

    def sent(self) -> list[str]:
        """The module arguments (JSON text) of every module run on the host, in order."""
        out = []
        for path in sorted(self.log.glob("*.in")):
            match = re.search(r"^\s*params=(.*),$", path.read_text(), re.M)
            assert match, f"no params in {path}"
            out.append(ast.literal_eval(match.group(1)))
        return out

    def steps(self) -> list[str]:
        return [json.loads(s)["ANSIBLE_MODULE_ARGS"]["controller_request"]["step"] for s in self.sent()]

    def received(self) -> list[str]:
        return [p.read_text() for p in sorted(self.log.glob("*.out"))]

    def everything(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log.iterdir()))


@pytest.fixture()
def host(tmp_path):
    return Host(tmp_path / "host")


@pytest.fixture()
def tree(debian_kernel, debian_sample, tmp_path):
    return make_tree(debian_kernel, debian_sample, tmp_path / "tree")


def key_body(key) -> str:
    return "".join(key.key.read_text().splitlines()[1:-1])[:48]


def test_cryptography_is_really_unimportable_on_the_host(tree, session_keys, host):
    key = session_keys("rsa2048")
    result = run_module("skm_sign", {"path": str(tree.root), "key": str(key.key), "cert": str(key.cert)},
                        vars=host.vars)
    assert result.get("failed") and "cryptography" in result["msg"], result


def test_rsa_controller_mode_matches_sign_file(tree, session_keys, sign_file, host, tmp_path):
    key = session_keys("rsa4096")
    args = {"path": str(tree.root), "key_location": "controller", "key": str(key.key), "cert": str(key.cert),
            "hash": "sha512", "signing_log": str(tmp_path / "signing.log")}
    before = tree.snapshot()
    debian_signed = sorted(p for p in tree.files if parse_signature(decompressed(p)).pkcs7 is not None)

    dry = run_module("skm_sign", args, check=True, diff=True, vars=host.vars)
    assert dry["changed"] and not dry.get("failed"), dry.get("msg")
    assert tree.snapshot() == before, "check mode wrote a module"
    assert host.steps() == ["survey"]
    assert sorted(pathlib.Path(p) for p in dry["signed"]) == sorted(set(tree.files) - set(debian_signed))
    assert str(tree.stripped[0]) in dry["diff"]["after"]

    host.reset()
    first = run_module("skm_sign", args, vars=host.vars)
    assert first["changed"] and first["key_location"] == "controller" and not first.get("failed"), first.get("msg")
    assert {f["action"] for f in first["foreign"]} == {"left"}
    assert sorted(pathlib.Path(f["path"]) for f in first["foreign"]) == debian_signed
    sent = host.sent()
    assert host.steps() == ["survey", "write"]
    per_module = (sum(map(len, sent)) + sum(map(len, host.received()))) / len(tree.files)
    print(f"controller mode, RSA-4096/sha512: {per_module:.0f} bytes per module over the wire (both ways)")
    assert per_module < 2048

    host.reset()
    second = run_module("skm_sign", dict(args, replace_foreign=True), vars=host.vars)
    assert second["changed"] and second["counts"]["already_signed"] == len(first["signed"])
    assert second["counts"]["replaced"] == len(first["foreign"])

    for path in tree.files:
        expected = sign_file_reference(sign_file, key, "sha512", tree.payloads[path], tmp_path / "ref")
        assert decompressed(path) == expected, f"{path} differs from sign-file's output"
        info = modinfo_signature(path)
        assert info["signer"] == "skm test rsa4096" and info["sig_hashalgo"] == "sha512", (path, info)

    ids, signed_state = stat_ids(tree.files), tree.snapshot()
    host.reset()
    for check in (True, False):
        again = run_module("skm_sign", dict(args, replace_foreign=True), check=check, vars=host.vars)
        assert not again["changed"] and again["counts"]["already_signed"] == len(tree.files)
    assert host.steps() == ["survey", "survey"]
    assert tree.snapshot() == signed_state and stat_ids(tree.files) == ids

    leaked = host.everything()
    assert key_body(key) not in leaked and "PRIVATE KEY" not in leaked


def test_vaulted_key_with_passphrase_ecdsa(tree, session_keys, host, tmp_path):
    """The key and its passphrase come from an ansible-vault encrypted vars file; neither reaches the host."""
    key = session_keys("p256", PASSPHRASE)
    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text("test vault password\n")
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(json.dumps({"vault_key_pem": key.key.read_text(), "vault_passphrase": PASSPHRASE}))
    subprocess.run([bin_path("ansible-vault"), "encrypt", "--vault-password-file", str(vault_pass), str(secrets)],
                   check=True, capture_output=True)
    assert PASSPHRASE not in secrets.read_text()
    playbook = tmp_path / "play.yml"
    task = {"path": [str(tree.root / "stripped"), str(tree.root / "compressed")], "key_location": "controller",
            "signing_log": str(tmp_path / "signing.log"),
            "key_content": "{{ vault_key_pem }}", "cert_content": key.cert.read_text(),
            "passphrase": "{{ vault_passphrase }}", "hash": "sha256", "replace_foreign": True}
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "vars_files": [str(secrets)],
                                     "vars": host.vars, "tasks": [{"skm.modsign.skm_sign": task}]}]))

    def play():
        proc = run_playbook(playbook, "--vault-password-file", str(vault_pass))
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
        assert PASSPHRASE not in proc.stdout + proc.stderr and key_body(key) not in proc.stdout + proc.stderr
        return result

    first = play()
    assert first["changed"] and not first.get("failed"), first.get("msg")
    targets = sorted(tree.stripped + tree.compressed)
    assert sorted(pathlib.Path(p) for p in first["signed"] + first["replaced"]) == targets
    for path in targets:
        sig = parse_signature(decompressed(path))
        assert sig.payload == tree.payloads[path]
        openssl_cms_verify(sig.payload, sig.pkcs7, key.cert, tmp_path / "cms")
        assert modinfo_signature(path)["sig_hashalgo"] == "sha256"
    assert not play()["changed"]
    leaked = host.everything()
    assert PASSPHRASE not in leaked and key_body(key) not in leaked and "PRIVATE KEY" not in leaked


def test_module_changed_between_the_steps_is_not_written(tree, session_keys, host):
    key = session_keys("rsa2048")
    victim = tree.stripped[0]
    tampered = bytearray(victim.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    changed_copy = host.log.parent / "tampered.ko"
    changed_copy.write_bytes(bytes(tampered))
    host.hook.write_text(f"cat {changed_copy} > {victim}\n")   # same inode: only the digest check can catch it
    result = run_module("skm_sign", {"path": str(tree.root / "stripped"), "key_location": "controller",
                                     "key": str(key.combined), "hash": "sha256",
                                     "signing_log": str(host.log.parent / "signing.log")}, vars=host.vars)
    assert result.get("failed")
    assert [f["path"] for f in result["failures"]] == [str(victim)]
    assert "changed since its digest was taken" in result["failures"][0]["reason"]
    assert str(victim) in result["msg"]
    assert victim.read_bytes() == bytes(tampered), "the changed module was written over"
    assert result["counts"]["signed"] == len(tree.stripped) - 1
    for path in tree.stripped[1:]:
        assert strip_signature(path.read_bytes()) == tree.payloads[path]
        assert modinfo_signature(path)["signer"] == "skm test rsa2048"


def test_key_content_is_refused_in_host_mode_before_anything_is_sent(tree, session_keys, host):
    key = session_keys("rsa2048")
    result = run_module("skm_sign", {"path": str(tree.root), "key_content": key.key.read_text()}, vars=host.vars)
    assert result.get("failed") and "key_location=controller" in result["msg"]
    assert not list(host.log.iterdir()), "something was sent to the host"
    bad = run_module("skm_sign", {"path": str(tree.root), "key_location": "controller",
                                  "key": str(tree.root / "missing.pem")}, vars=host.vars)
    assert bad.get("failed") and "missing.pem" in bad["msg"]
    assert not list(host.log.iterdir())
