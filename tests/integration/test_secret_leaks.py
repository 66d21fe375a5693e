"""Secret-leak tests: no private key bytes, passphrase or MOK password anywhere a person or a log could see.

Each module that takes or touches a secret runs through real ansible-playbook at -vvvv, one playbook per
module, its cases as tasks with per-task check_mode/diff (normal, check mode, diff mode, and failure
paths such as a wrong passphrase or a private key given where a certificate belongs). Then every place a
secret could end up is searched for every form of it:
- the playbook's stdout and stderr (default callback, -vvvv: module invocations, results, diffs);
- the returned results as JSON (registered, then written out by the play);
- ANSIBLE_LOG_PATH;
- every file left in the run's private TMPDIR, Ansible's local and remote temp dirs and the module's
  working directories (the key files themselves excepted);
- the argument list of every process on the machine while the playbook runs (/proc/*/cmdline, polled).
Forms searched: the passphrase/password; the PEM private key's base64 lines; the key's DER (encrypted as
written, and decrypted in PKCS#8 and traditional form), raw, in hex and in base64.
skm_enforce_gate and skm_kernel_cmdline take no secret and read no key, so they are not run here.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import secrets
import subprocess
import threading

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from ansible_collections.skm.modsign.plugins.module_utils._trailer import strip_signature
from tests.lib.ansible_run import ansible_env, bin_path


class Secrets:
    """Every form of every secret, as bytes to search for."""

    def __init__(self) -> None:
        self.needles: dict[bytes, str] = {}

    def text(self, label: str, value: str) -> None:
        self.needles[value.encode()] = label

    def der(self, label: str, der: bytes) -> None:
        b64 = base64.b64encode(der)
        self.needles[der] = label + " (DER)"
        self.needles[der.hex().encode()] = label + " (DER, hex)"
        self.needles[der.hex().upper().encode()] = label + " (DER, HEX)"
        self.needles[b64] = label + " (DER, base64)"
        for start in range(0, len(b64) - 63, 64):
            self.needles[b64[start:start + 64]] = label + " (base64 line)"

    def private_key(self, label: str, pem: bytes, passphrase: str | None) -> None:
        block = pem.split(b"-----BEGIN ")[1]
        body = b"".join(line for line in block.splitlines()[1:] if b":" not in line and not line.startswith(b"-"))
        self.der(label + " as written", base64.b64decode(body))
        key = serialization.load_pem_private_key(pem, passphrase.encode() if passphrase else None)
        for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
            self.der(label + " decrypted", key.private_bytes(serialization.Encoding.DER, fmt,
                                                             serialization.NoEncryption()))

    def found_in(self, data: bytes) -> list[str]:
        return sorted({label for needle, label in self.needles.items() if needle in data})


def _watch_cmdlines(stop: threading.Event, seen: set) -> None:
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        seen.add(handle.read())
                except OSError:
                    pass
        stop.wait(0.01)


class LeakRun:
    """One -vvvv playbook run with private temp/log places, and everything it left to search."""

    def __init__(self, base: pathlib.Path, tasks: list[dict], secrets_: Secrets,
                 workdirs: list[pathlib.Path], allowed: list[pathlib.Path], variables: dict) -> None:
        self.base = base
        self.secrets = secrets_
        self.workdirs = workdirs
        self.allowed = {p.resolve() for p in allowed}
        for name in ("input", "tmp", "local_tmp", "remote_tmp"):
            (base / name).mkdir(parents=True, exist_ok=True)
        self.results_file = base / "tmp" / "results.json"
        play_tasks = []
        for index, task in enumerate(tasks):
            play_tasks.append(dict(task, register=f"case{index}", ignore_errors=True))
        collect = "{{ {" + ", ".join(f"'case{i}': case{i}" for i in range(len(tasks))) + "} | to_json }}"
        play_tasks.append({"name": "write the returned results", "ansible.builtin.copy": {
            "content": collect, "dest": str(self.results_file), "mode": "0600"}})
        self.playbook = base / "input" / "play.yml"
        self.playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                                  "tasks": play_tasks}]))
        # Secrets reach the play as variables from a file of their own, as they would from a vault: a
        # secret written literally into a playbook is shown by ansible-core itself, which prints the
        # playbook lines around a failed task ("Origin: ...").
        self.variables = base / "input" / "secrets.yml"
        self.variables.write_text(yaml.safe_dump(variables))

    def run(self) -> dict:
        env = ansible_env({
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_LOG_PATH": str(self.base / "tmp" / "ansible.log"),
            "ANSIBLE_LOCAL_TEMP": str(self.base / "local_tmp"),
            "ANSIBLE_REMOTE_TMP": str(self.base / "remote_tmp"),
            "TMPDIR": str(self.base / "tmp"),
        })
        stop, seen = threading.Event(), set()
        watcher = threading.Thread(target=_watch_cmdlines, args=(stop, seen), daemon=True)
        watcher.start()
        try:
            proc = subprocess.run([bin_path("ansible-playbook"), "-i", "localhost,", "-c", "local", "-vvvv",
                                   "-e", "@" + str(self.variables), str(self.playbook)], capture_output=True, env=env, check=False)
        finally:
            stop.set()
            watcher.join()
        assert proc.returncode == 0, proc.stdout[-3000:].decode() + proc.stderr[-2000:].decode()
        self.stdout, self.stderr = proc.stdout, proc.stderr
        leaks = []
        for where, data in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            leaks += [f"{where}: {label}" for label in self.secrets.found_in(data)]
        leaks += [f"process argument list: {label}" for cmd in seen for label in self.secrets.found_in(cmd)]
        for directory in [self.base / "tmp", self.base / "local_tmp", self.base / "remote_tmp", *self.workdirs]:
            for path in directory.rglob("*"):
                if path.is_file() and not path.is_symlink() and path.resolve() not in self.allowed:
                    leaks += [f"file {path}: {label}" for label in self.secrets.found_in(path.read_bytes())]
        assert not leaks, "secret found:\n" + "\n".join(sorted(set(leaks)))
        assert b"ESTABLISH LOCAL CONNECTION" in proc.stdout, "not a -vvvv run"
        leftovers = sorted(p.name for p in (self.base / "remote_tmp").iterdir())
        assert not leftovers, f"Ansible left remote temp files: {leftovers}"
        return json.loads(self.results_file.read_text())


@pytest.fixture(scope="module")
def keyset(tmp_path_factory):
    """A passphrase-protected ECDSA key made by skm_genkey itself (the module under test makes secrets too)."""
    base = tmp_path_factory.mktemp("leakkey")
    passphrase = "pp-" + secrets.token_urlsafe(24)
    tasks = [{"name": "make the key", "skm.modsign.skm_genkey": {
        "path": str(base / "keys"), "key_type": "ecdsa", "key_size": 256, "hash": "sha256",
        "passphrase": passphrase, "subject": {"CN": "skm leak test"}}}]
    keys = base / "keys"
    env = ansible_env()
    play = base / "make.yml"
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    proc = subprocess.run([bin_path("ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    info = {p.name: p for p in keys.rglob("*") if p.is_file()}
    pem_key = next(p for p in info.values() if b"PRIVATE KEY-----" in p.read_bytes() and
                   b"CERTIFICATE" not in p.read_bytes())
    combined = next(p for p in info.values() if b"PRIVATE KEY-----" in p.read_bytes() and
                    b"CERTIFICATE" in p.read_bytes())
    cert_der = next(p for p in info.values() if p.suffix in (".der", ".cer") or p.name.endswith(".der"))
    cert_pem = next(p for p in info.values() if p.read_bytes().startswith(b"-----BEGIN CERTIFICATE"))
    return {"dir": keys, "key": pem_key, "combined": combined, "cert": cert_pem, "cert_der": cert_der,
            "passphrase": passphrase, "files": list(info.values())}


@pytest.fixture()
def scratch_modules(debian_kernel, debian_sample, tmp_path):
    """Two unsigned copies of real Debian modules in a directory of their own."""
    directory = tmp_path / "modules"
    directory.mkdir()
    for rel in debian_sample[1:3]:
        name = pathlib.Path(str(rel)).name
        (directory / name).write_bytes(strip_signature((debian_kernel.modules_dir / rel).read_bytes()))
    return directory


PASS = "{{ leak_passphrase }}"
WRONG = "{{ leak_wrong }}"
CONTENT = "{{ leak_key_content }}"
MOKPW = "{{ leak_mok_password }}"


def variables_for(keyset: dict, **extra: str) -> dict:
    return dict({"leak_passphrase": keyset["passphrase"], "leak_wrong": "wrong-" + secrets.token_urlsafe(16),
                 "leak_key_content": keyset["combined"].read_text()}, **extra)


def secrets_for(keyset: dict, variables: dict) -> Secrets:
    found = Secrets()
    found.text("passphrase", keyset["passphrase"])
    found.text("wrong passphrase", variables["leak_wrong"])
    if "leak_mok_password" in variables:
        found.text("MOK password", variables["leak_mok_password"])
    found.private_key("private key", keyset["key"].read_bytes(), keyset["passphrase"])
    return found


def test_skm_genkey_leaks_nothing(keyset, tmp_path):
    base = {"path": str(keyset["dir"]), "key_type": "ecdsa", "key_size": 256, "hash": "sha256",
            "subject": {"CN": "skm leak test"}}
    fresh = dict(base, path=str(tmp_path / "fresh"), passphrase=PASS)
    tasks = [
        {"name": "keep, check+diff", "skm.modsign.skm_genkey": dict(base, passphrase=PASS),
         "check_mode": True, "diff": True},
        {"name": "keep, diff", "skm.modsign.skm_genkey": dict(base, passphrase=PASS), "diff": True},
        {"name": "wrong passphrase, never regenerate",
         "skm.modsign.skm_genkey": dict(base, passphrase=WRONG, regenerate="never")},
        {"name": "new key, check", "skm.modsign.skm_genkey": fresh, "check_mode": True, "diff": True},
        {"name": "new key", "skm.modsign.skm_genkey": fresh, "diff": True},
    ]
    variables = variables_for(keyset)
    found = secrets_for(keyset, variables)
    run = LeakRun(tmp_path / "run", tasks, found, [keyset["dir"], tmp_path / "fresh"], keyset["files"], variables)
    results = run.run()
    assert results["case1"]["changed"] is False and not results["case1"].get("failed")
    assert results["case4"]["changed"] is True and not results["case4"].get("failed")
    # the fresh key exists only after the run: search everything the run printed and left for it too
    fresh_key = next(p for p in (tmp_path / "fresh").rglob("*") if p.is_file() and b"PRIVATE KEY-----" in
                     p.read_bytes() and b"CERTIFICATE" not in p.read_bytes())
    fresh_found = Secrets()
    fresh_found.private_key("fresh private key", fresh_key.read_bytes(), keyset["passphrase"])
    for path in (run.base / "tmp").rglob("*"):
        if path.is_file():
            assert not fresh_found.found_in(path.read_bytes()), path
    assert not fresh_found.found_in(run.stdout + run.stderr)


def test_skm_sign_leaks_nothing(keyset, scratch_modules, tmp_path):
    host = {"path": [str(scratch_modules)], "key": str(keyset["key"]), "cert": str(keyset["cert"]),
            "hash": "sha256"}
    controller = dict(host, key_location="controller", hash="sha384")
    content = {"path": [str(scratch_modules)], "key_location": "controller", "key_content": CONTENT,
               "hash": "sha512"}
    tasks = [
        {"name": "wrong passphrase (host)", "skm.modsign.skm_sign": dict(host, passphrase=WRONG)},
        {"name": "no passphrase for an encrypted key", "skm.modsign.skm_sign": host},
        {"name": "sign, check+diff", "skm.modsign.skm_sign": dict(host, passphrase=PASS),
         "check_mode": True, "diff": True},
        {"name": "sign, diff", "skm.modsign.skm_sign": dict(host, passphrase=PASS), "diff": True},
        {"name": "key_content on the host is refused", "skm.modsign.skm_sign":
            dict(content, key_location="host", passphrase=PASS)},
        {"name": "key_content, wrong passphrase", "skm.modsign.skm_sign": dict(content, passphrase=WRONG)},
        {"name": "key_content, re-sign sha512", "skm.modsign.skm_sign": dict(content, passphrase=PASS),
         "diff": True},
        {"name": "controller, wrong passphrase", "skm.modsign.skm_sign": dict(controller, passphrase=WRONG)},
        {"name": "controller, check", "skm.modsign.skm_sign": dict(controller, passphrase=PASS),
         "check_mode": True, "diff": True},
        {"name": "controller, re-sign sha384", "skm.modsign.skm_sign": dict(controller, passphrase=PASS),
         "diff": True},
    ]
    variables = variables_for(keyset)
    results = LeakRun(tmp_path / "run", tasks, secrets_for(keyset, variables), [scratch_modules, keyset["dir"]],
                      keyset["files"], variables).run()
    for case in ("case0", "case1", "case4", "case5", "case7"):
        assert results[case].get("failed") is True, (case, results[case])
    for case in ("case3", "case6", "case9"):
        assert results[case]["changed"] is True and not results[case].get("failed"), (case, results[case])


def test_skm_mok_enroll_leaks_nothing(keyset, tmp_path):
    base = {"certificate": str(keyset["cert_der"]), "password": MOKPW}
    tasks = [
        {"name": "enroll (no EFI here: fails)", "skm.modsign.skm_mok_enroll": base},
        {"name": "enroll, check+diff", "skm.modsign.skm_mok_enroll": base, "check_mode": True, "diff": True},
        {"name": "skip when unsupported", "skm.modsign.skm_mok_enroll": dict(base, when_unsupported="skip")},
        {"name": "the private key given as certificate",
         "skm.modsign.skm_mok_enroll": dict(base, certificate=str(keyset["combined"]))},
        {"name": "delete", "skm.modsign.skm_mok_enroll": dict(base, state="absent"), "diff": True},
    ]
    variables = variables_for(keyset, leak_mok_password="mok-" + secrets.token_urlsafe(16))
    results = LeakRun(tmp_path / "run", tasks, secrets_for(keyset, variables), [keyset["dir"]], keyset["files"],
                      variables).run()
    assert results["case3"].get("failed") is True


def test_skm_kconfig_leaks_nothing(keyset, debian_kernel, tmp_path):
    config = tmp_path / "linux" / ".config"
    config.parent.mkdir()
    config.write_bytes(debian_kernel.config.read_bytes())
    base = {"path": str(config), "key": str(keyset["combined"]), "hash": "sha256", "key_type": "ecdsa",
            "trusted_keys": str(keyset["cert"])}
    tasks = [
        {"name": "configure, check+diff", "skm.modsign.skm_kconfig": base, "check_mode": True, "diff": True},
        {"name": "configure, diff, backup", "skm.modsign.skm_kconfig": dict(base, backup=True), "diff": True},
        {"name": "a key file as the config", "skm.modsign.skm_kconfig": dict(base, path=str(keyset["key"]))},
    ]
    variables = variables_for(keyset)
    results = LeakRun(tmp_path / "run", tasks, secrets_for(keyset, variables), [config.parent, keyset["dir"]],
                      keyset["files"], variables).run()
    assert results["case2"].get("failed") is True


def test_skm_module_info_leaks_nothing(keyset, scratch_modules, tmp_path):
    tasks = [
        {"name": "audit the modules and, named directly, the key files", "skm.modsign.skm_module_info": {
            "path": [str(scratch_modules), str(keyset["key"]), str(keyset["combined"])],
            "trusted_certs": [str(keyset["cert"])], "builtin_certs": False}},
        {"name": "a private key given as trusted certificate", "skm.modsign.skm_module_info": {
            "path": [str(scratch_modules)], "trusted_certs": [str(keyset["combined"])], "builtin_certs": False}},
    ]
    variables = variables_for(keyset)
    results = LeakRun(tmp_path / "run", tasks, secrets_for(keyset, variables), [scratch_modules, keyset["dir"]],
                      keyset["files"], variables).run()
    assert results["case0"]["summary"]["total"] == 4


def test_the_search_finds_a_leak_in_each_place(keyset, tmp_path):
    """The checks above can fail: a play that prints the passphrase, puts it on a command line and leaves
    the decrypted key in a temp file is caught in each of those places."""
    tasks = [
        {"name": "print it", "ansible.builtin.debug": {"msg": "{{ leak_passphrase }}"}},
        {"name": "on a command line", "ansible.builtin.command": {
            "argv": ["sh", "-c", "sleep 0.5", "{{ leak_passphrase }}"]}, "no_log": True},
        {"name": "a decrypted key left behind", "ansible.builtin.shell": {
            "cmd": "openssl pkey -in {{ key }} -passin env:P -outform DER > \"$TMPDIR/left.der\""},
         "environment": {"P": "{{ leak_passphrase }}"}, "vars": {"key": str(keyset["key"])}, "no_log": True},
    ]
    variables = variables_for(keyset)
    run = LeakRun(tmp_path / "run", tasks, secrets_for(keyset, variables), [keyset["dir"]], keyset["files"],
                  variables)
    with pytest.raises(AssertionError) as caught:
        run.run()
    message = str(caught.value)
    assert "stdout: passphrase" in message
    assert "process argument list: passphrase" in message
    assert "left.der: private key decrypted (DER)" in message
