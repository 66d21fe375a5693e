"""skm_genkey through real ansible-playbook, checked with openssl and the kernel's sign-file."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils._trailer import parse_signature, strip_signature
from tests.lib.ansible_run import run_module

PASSPHRASE = "tr0ub4dor&3 genkey"
FILES = ["signing_key.crt", "signing_key.der", "signing_key.key", "signing_key.pem", "skm-key.json"]


def snapshot(directory: pathlib.Path) -> dict:
    return {p.relative_to(directory).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink()
                                                  else os.readlink(p) if p.is_symlink() else None)
            for p in sorted(directory.rglob("*"))}


def four_times(args: dict) -> list[dict]:
    """check mode, real, check mode again, real again — as community.crypto's integration targets do."""
    return [run_module("skm_genkey", args, check=check, diff=True) for check in (True, False, True, False)]


def openssl(*args: str, input: bytes | None = None, env: dict | None = None) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, input=input, env=env).stdout.decode()


def assert_no_secret(result: dict, directory: pathlib.Path, passphrase: str | None = None) -> None:
    key_body = "".join((directory / "signing_key.key").read_text().splitlines()[1:-1])
    text = result["_stdout"] + result["_stderr"]
    for line in (directory / "signing_key.key").read_text().splitlines()[1:-1]:
        assert line not in text
    assert key_body[:40] not in text
    if passphrase:
        assert passphrase not in text


@pytest.mark.parametrize("key_type,key_size,hash_name", [("rsa", 3072, "sha256"), ("ecdsa", 384, "sha384")])
def test_make_keep_and_validate(key_type, key_size, hash_name, tmp_path, debian_kernel, debian_sample, sign_file):
    directory = tmp_path / "keys"
    args = {"path": str(directory), "key_type": key_type, "key_size": key_size, "hash": hash_name,
            "subject": {"CN": "fleet signing", "O": "skm tests"}}
    check1, real1, check2, real2 = four_times(args)
    assert check1["changed"] and check1["generated"] and not check1.get("failed")
    assert real1["changed"] and real1["generated"]
    assert not check2["changed"] and not real2["changed"], (check2["reason"], real2["reason"])
    assert real2["fingerprint"] == real1["fingerprint"]
    assert sorted(p.name for p in directory.iterdir()) == FILES
    assert oct((directory / "signing_key.key").stat().st_mode & 0o777) == "0o600"
    assert oct((directory / "signing_key.pem").stat().st_mode & 0o777) == "0o600"
    assert_no_secret(real1, directory)

    # openssl reads the certificate and finds the extensions the kernel and MOK need.
    crt = str(directory / "signing_key.crt")
    ext = openssl("x509", "-in", crt, "-noout", "-ext",
                  "basicConstraints,keyUsage,extendedKeyUsage,subjectKeyIdentifier,authorityKeyIdentifier")
    assert "critical" in ext.split("X509v3 Basic Constraints")[1].splitlines()[0]
    assert "CA:FALSE" in ext and "Digital Signature" in ext and "Code Signing" in ext
    assert "Subject Key Identifier" in ext and "Authority Key Identifier" in ext
    fingerprint = openssl("x509", "-in", crt, "-noout", "-fingerprint", "-sha256").split("=")[1].strip()
    assert fingerprint.replace(":", "").lower() == real1["fingerprint"]
    assert openssl("x509", "-inform", "DER", "-in", str(directory / "signing_key.der")) == \
        openssl("x509", "-in", crt)
    assert openssl("pkey", "-in", str(directory / "signing_key.key"), "-pubout") == \
        openssl("x509", "-in", crt, "-noout", "-pubkey")
    assert openssl("verify", "-x509_strict", "-CAfile", crt, crt).strip() == f"{crt}: OK"
    text = openssl("x509", "-in", crt, "-noout", "-text")
    assert ("Public-Key: (%d bit)" % key_size) in text
    assert "CN = fleet signing" in text or "CN=fleet signing" in text

    # The kernel's sign-file takes the combined PEM as CONFIG_MODULE_SIG_KEY; openssl verifies the result.
    module = tmp_path / "m.ko"
    module.write_bytes(strip_signature((debian_kernel.modules_dir / debian_sample[0]).read_bytes()))
    subprocess.run([sign_file, hash_name, str(directory / "signing_key.pem"), crt, str(module)], check=True)
    split = parse_signature(module.read_bytes())
    (tmp_path / "sig").write_bytes(split.pkcs7)
    (tmp_path / "payload").write_bytes(split.payload)
    proc = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "sig"),
                           "-content", str(tmp_path / "payload"), "-certfile", crt, "-nointern", "-CAfile", crt,
                           "-purpose", "any", "-out", "/dev/null"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_passphrase_key_works_with_kbuild_sign_pin(tmp_path, debian_kernel, debian_sample, sign_file):
    directory = tmp_path / "keys"
    args = {"path": str(directory), "key_size": 2048, "passphrase": PASSPHRASE}
    first = run_module("skm_genkey", args, diff=True)
    assert first["changed"]
    assert_no_secret(first, directory, PASSPHRASE)
    assert "ENCRYPTED PRIVATE KEY" in (directory / "signing_key.key").read_text()
    again = run_module("skm_genkey", args)
    assert not again["changed"]
    module = tmp_path / "m.ko"
    module.write_bytes(strip_signature((debian_kernel.modules_dir / debian_sample[1]).read_bytes()))
    env = dict(os.environ, KBUILD_SIGN_PIN=PASSPHRASE)
    subprocess.run([sign_file, "sha512", str(directory / "signing_key.pem"), str(directory / "signing_key.crt"),
                    str(module)], check=True, env=env)
    assert parse_signature(module.read_bytes()).signed

    before = snapshot(directory)
    wrong = run_module("skm_genkey", dict(args, passphrase="not it"))
    assert wrong["failed"] and "wrong passphrase" in wrong["msg"] and "signing_key.key" in wrong["msg"]
    assert "full_idempotence" in wrong["msg"]
    assert "not it" not in wrong["_stdout"] and PASSPHRASE not in wrong["_stdout"]
    missing = run_module("skm_genkey", {"path": str(directory), "key_size": 2048})
    assert missing["failed"] and "no passphrase" in missing["msg"]
    assert snapshot(directory) == before


def test_options_changed_regenerate_rules(tmp_path):
    directory = tmp_path / "keys"
    base = {"path": str(directory), "key_type": "ecdsa", "key_size": 256, "hash": "sha256"}
    assert run_module("skm_genkey", base)["changed"]
    before = snapshot(directory)
    refused = run_module("skm_genkey", dict(base, key_size=384, hash="sha384", regenerate="fail"))
    assert refused["failed"] and "key_size is 256, asked for 384" in refused["msg"]
    assert "partial_idempotence" in refused["msg"]
    kept = run_module("skm_genkey", dict(base, key_size=384, hash="sha384", regenerate="never"))
    assert not kept["changed"] and kept["key_size"] == 256
    assert snapshot(directory) == before
    replaced = run_module("skm_genkey", dict(base, key_size=384, hash="sha384"))
    assert replaced["changed"] and replaced["key_size"] == 384 and "key_size is 256" in replaced["reason"]
    weak = run_module("skm_genkey", dict(base, key_size=384, hash="sha256"))
    assert weak["failed"] and "at least 384 bits" in weak["msg"]


def test_dated_layout_refresh_and_retention(tmp_path):
    base = tmp_path / "keys"
    args = {"path": str(base), "layout": "dated", "key_size": 2048, "refresh": "7d", "keep": 2}
    first = run_module("skm_genkey", args)
    assert first["changed"] and os.readlink(base / "current") == pathlib.Path(first["directory"]).name
    assert not run_module("skm_genkey", args)["changed"]
    # Age the generation by rewriting its recorded creation time (the rotation clock), not file times.
    for age_days, expect_new in ((6, False), (8, True)):
        meta = base / "current" / "skm-key.json"
        data = json.loads(meta.read_text())
        data["created"] = (subprocess.run(["date", "-u", "-d", f"{age_days} days ago", "+%Y-%m-%dT%H:%M:%SZ"],
                                          capture_output=True, text=True, check=True).stdout.strip())
        meta.write_text(json.dumps(data))
        result = run_module("skm_genkey", args, check=True)
        assert result["changed"] is expect_new and not any(
            p.name.startswith(".") for p in base.iterdir())
    rotated = run_module("skm_genkey", args)
    assert rotated["changed"] and "older than the refresh period" in rotated["reason"]
    assert rotated["directory"] != first["directory"]
    third = run_module("skm_genkey", dict(args, refresh="always"))
    generations = sorted(p.name for p in base.iterdir() if p.name != "current")
    assert len(generations) == 2 and pathlib.Path(first["directory"]).name not in generations
    assert third["removed_generations"] == [first["directory"]]
    assert os.readlink(base / "current") == pathlib.Path(third["directory"]).name


def test_ca_profile(tmp_path):
    directory = tmp_path / "ca"
    run_module("skm_genkey", {"path": str(directory), "key_type": "ecdsa", "profile": "ca"})
    crt = str(directory / "signing_key.crt")
    ext = openssl("x509", "-in", crt, "-noout", "-ext", "basicConstraints,keyUsage")
    assert "CA:TRUE" in ext and "Certificate Sign" in ext and "Digital Signature" in ext
    assert openssl("verify", "-x509_strict", "-CAfile", crt, crt).strip() == f"{crt}: OK"


def test_read_only_directory_fails_cleanly(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mnt)], check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        result = run_module("skm_genkey", {"path": str(mnt), "key_size": 2048})
        assert result["failed"] and "read-only" in result["msg"] and str(mnt) in result["msg"]
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_check_mode_makes_nothing_and_diff_shows_public_facts_only(tmp_path):
    directory = tmp_path / "keys"
    args = {"path": str(directory), "key_type": "ecdsa", "key_size": 256, "hash": "sha256"}
    would = run_module("skm_genkey", args, check=True, diff=True)
    assert would["changed"] and would["generated"] and not directory.exists()
    assert would["diff"]["before"] == "(no key)\n" and would["diff"]["after"] == "(a new key)\n"
    made = run_module("skm_genkey", args, diff=True)
    assert made["diff"]["before"] == "(no key)\n"
    assert f"fingerprint: {made['fingerprint']}\n" in made["diff"]["after"]
    assert f"serial: {made['serial']}\n" in made["diff"]["after"]
    assert "PRIVATE" not in made["_stdout"] and "PRIVATE" not in made["_stderr"]
    assert_no_secret(made, directory)
    kept = run_module("skm_genkey", args, check=True, diff=True)
    assert not kept["changed"] and kept["diff"]["before"] == kept["diff"]["after"]


def test_unreadable_key_is_kept_unless_full_idempotence(tmp_path):
    directory = tmp_path / "keys"
    args = {"path": str(directory), "key_size": 2048}
    made = run_module("skm_genkey", args)
    (directory / "signing_key.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    before = snapshot(directory)
    for regenerate in ("never", "partial_idempotence"):
        refused = run_module("skm_genkey", dict(args, regenerate=regenerate))
        assert refused["failed"] and "not a readable private key" in refused["msg"], refused["msg"]
        assert "signing_key.key" in refused["msg"]
        assert "full_idempotence" in refused["msg"]
        assert snapshot(directory) == before
    replaced = run_module("skm_genkey", dict(args, regenerate="full_idempotence"))
    assert replaced["changed"] and replaced["fingerprint"] != made["fingerprint"]
    openssl("pkey", "-in", str(directory / "signing_key.key"), "-noout")   # openssl reads the new key


def test_passphrase_added_to_an_unencrypted_key(tmp_path):
    directory = tmp_path / "keys"
    args = {"path": str(directory), "key_size": 2048}
    run_module("skm_genkey", args)
    before = snapshot(directory)
    refused = run_module("skm_genkey", dict(args, passphrase=PASSPHRASE))
    assert refused["failed"] and "not encrypted" in refused["msg"] and PASSPHRASE not in refused["_stdout"]
    assert snapshot(directory) == before
    replaced = run_module("skm_genkey", dict(args, passphrase=PASSPHRASE, regenerate="full_idempotence"))
    assert replaced["changed"] and "ENCRYPTED PRIVATE KEY" in (directory / "signing_key.key").read_text()
    assert PASSPHRASE not in replaced["_stdout"] + replaced["_stderr"]
    openssl("pkey", "-in", str(directory / "signing_key.key"), "-passin", "env:SKM_PASS", "-noout",
            env=dict(os.environ, SKM_PASS=PASSPHRASE))
