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
The roles: tests/integration/test_secret_leaks_roles.py.
"""

from __future__ import annotations

import secrets
import subprocess

import pytest
import yaml

from tests.lib.ansible_run import ansible_env, bin_path
from tests.lib.secret_leaks import LeakRun, Secrets, unsigned_module_copies


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
    return unsigned_module_copies(debian_kernel, debian_sample[1:3], tmp_path / "modules")


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


def test_skm_certificates_leaks_nothing(keyset, tmp_path):
    """Shared key mode: the private key and the combined PEM reach the host through no_log options."""
    host = tmp_path / "host"
    generation = {"name": "20261123-120000", "certificate": "{{ leak_cert }}", "private_key": "{{ leak_key }}",
                  "combined": CONTENT}
    shared = {"path": str(host), "generations": [generation], "private_keys": "present"}
    tasks = [
        {"name": "shared, check+diff", "skm.modsign.skm_certificates": shared, "check_mode": True, "diff": True},
        {"name": "shared, diff", "skm.modsign.skm_certificates": shared, "diff": True},
        {"name": "shared again, diff", "skm.modsign.skm_certificates": shared, "diff": True},
        {"name": "a key given with private_keys=absent", "skm.modsign.skm_certificates":
            dict(shared, private_keys="absent"), "diff": True},
        {"name": "present without the combined PEM", "skm.modsign.skm_certificates":
            dict(shared, generations=[dict(generation, combined=None)])},
        {"name": "back to controller mode: the keys removed", "skm.modsign.skm_certificates":
            dict(shared, generations=[{"name": generation["name"], "certificate": "{{ leak_cert }}"}],
                 private_keys="absent"), "diff": True},
    ]
    variables = variables_for(keyset, leak_key=keyset["key"].read_text(), leak_cert=keyset["cert"].read_text())
    written = [host / generation["name"] / name for name in ("signing_key.key", "signing_key.pem")]
    results = LeakRun(tmp_path / "run", tasks, secrets_for(keyset, variables), [host, keyset["dir"]],
                      keyset["files"] + written, variables).run()
    assert results["case1"]["changed"] is True and results["case2"]["changed"] is False
    assert results["case3"].get("failed") is True and results["case4"].get("failed") is True
    assert results["case5"]["changed"] is True and not any(p.exists() for p in written)


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
