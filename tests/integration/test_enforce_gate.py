"""skm_enforce_gate on Debian's real kernel: its vmlinuz (built-in certificate), its config, all its modules.

A tree of symlinks to the unpacked linux-image package stands for the host; the one module we
re-sign is a real copy, signed by the kernel's own scripts/sign-file with a key made now.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.lib.ansible_run import run_module
from ansible_collections.skm.modsign.plugins.module_utils._signing import read_module

MODULE = "kernel/fs/fat/vfat.ko"


@pytest.fixture()
def host_tree(tmp_path, debian_kernel):
    tree = tmp_path / "host"
    subprocess.run(["cp", "-as", f"{debian_kernel.root}/.", str(tree)], check=True)
    (tree / "boot" / "vmlinuz").symlink_to(f"vmlinuz-{debian_kernel.version}")     # Debian's linux-base link
    return tree


def _resign(tree, debian_kernel, sign_file, key, hash_name="sha256"):
    """Replace one module by a copy signed with ``key`` by the kernel's sign-file (old signature cut first)."""
    path = tree / "lib" / "modules" / debian_kernel.version / MODULE
    payload = read_module(str(path)).payload
    path.unlink()
    path.write_bytes(payload)
    subprocess.run([sign_file, hash_name, str(key.key), str(key.cert), str(path)], check=True)
    return path


def test_all_debian_signed_modules_pass_against_the_builtin_certificate(host_tree, debian_kernel):
    result = run_module("skm_enforce_gate", {"root_dir": str(host_tree)})
    assert result.get("failed") is not True, result.get("msg")
    assert result["passed"] is True and result["overridden"] is False and result["changed"] is False
    assert result["kernel"] == debian_kernel.version
    assert result["kernel_source"] == f"/boot/vmlinuz -> vmlinuz-{debian_kernel.version}"
    assert result["modules_total"] == len(debian_kernel.modules()) > 3000
    assert result["offenders"] == [] and result["module_hashes"] == ["sha256"]
    assert len(result["builtin_certificates"]) >= 1


def test_module_resigned_with_our_key_is_refused_by_name_then_trusted_through_mok(
        host_tree, debian_kernel, sign_file, session_keys):
    key = session_keys("rsa2048")
    path = _resign(host_tree, debian_kernel, sign_file, key)
    assert "skm test rsa2048" in subprocess.run(["modinfo", "-F", "signer", str(path)],
                                                capture_output=True, text=True, check=True).stdout
    args = {"root_dir": str(host_tree), "certificates": [str(key.cert)]}

    refused = run_module("skm_enforce_gate", args)
    assert refused.get("failed") is True and refused["passed"] is False
    assert [o["path"] for o in refused["offenders"]] == [str(path)]
    assert refused["offenders"][0]["state"] == "unknown_key"
    assert str(path) in refused["msg"] and "skm test rsa2048" in refused["msg"]
    assert any("not in a keyring" in p for p in refused["problems"])

    # enrolled in MOK but shim does not export MokListTrustedRT: still refused
    mok_only = run_module("skm_enforce_gate", {**args, "mok_certificates": [str(key.cert_der)]})
    assert mok_only.get("failed") is True and len(mok_only["offenders"]) == 1
    assert any("MokListTrustedRT" in n for n in mok_only["notes"])

    # Debian's config links MOK into the machine keyring: with trust_mok it passes
    trusted = run_module("skm_enforce_gate", {**args, "mok_certificates": [str(key.cert_der)], "trust_mok": True})
    assert trusted.get("failed") is not True, trusted.get("msg")
    assert trusted["passed"] is True and trusted["offenders"] == []

    # the explicit override lets the play go on, with the same findings and a warning
    overridden = run_module("skm_enforce_gate", {**args, "allow_untrusted": True})
    assert overridden.get("failed") is not True
    assert overridden["passed"] is False and overridden["overridden"] is True
    assert [o["path"] for o in overridden["offenders"]] == [str(path)]
    assert any("overridden" in w for w in overridden.get("warnings", []))


def test_sha512_signature_is_refused_because_debian_builds_sha512_as_a_module(
        host_tree, debian_kernel, sign_file, session_keys):
    key = session_keys("rsa2048")
    _resign(host_tree, debian_kernel, sign_file, key, "sha512")
    result = run_module("skm_enforce_gate", {"root_dir": str(host_tree), "certificates": [str(key.cert)],
                                             "mok_certificates": [str(key.cert)], "trust_mok": True})
    assert result.get("failed") is True and result["offenders"] == []
    assert result["problems"] == ["hash sha512 needs CONFIG_CRYPTO_SHA512=y (this kernel has =m, a module; a module "
                                  "cannot verify the module that would provide it)"]


def test_no_config_for_the_kernel_is_a_clear_failure(host_tree, debian_kernel):
    (host_tree / "boot" / f"config-{debian_kernel.version}").unlink()
    result = run_module("skm_enforce_gate", {"root_dir": str(host_tree)})
    assert result.get("failed") is True
    assert f"config-{debian_kernel.version}" in result["msg"] and "missing" in result["msg"]


def test_verdict_cache_answers_a_second_run_and_never_hides_a_changed_module(host_tree, debian_kernel, tmp_path):
    """The second gate reads no module; a module replaced, or changed in place with its mtime put back, is read
    again and refused. The audit then answers the same tree from the gate's cache (one file for both)."""
    cache = tmp_path / "cache"
    args = {"root_dir": str(host_tree), "verdict_cache": str(cache)}
    total = len(debian_kernel.modules())
    first = run_module("skm_enforce_gate", args)
    assert first["passed"] is True and first["verdict_cache"]["misses"] == total, first.get("msg")
    assert (cache / "verdicts.json").stat().st_mode & 0o777 == 0o600
    assert (cache / "builtin-certificates.json").stat().st_mode & 0o777 == 0o600     # the image's, kept too

    second = run_module("skm_enforce_gate", args)
    assert second["passed"] is True and second["verdict_cache"] == dict(first["verdict_cache"], hits=total, misses=0)

    # A real copy of one module (a new inode): read again, still trusted, cached under the new identity.
    path = host_tree / "lib" / "modules" / debian_kernel.version / MODULE
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    third = run_module("skm_enforce_gate", args)
    assert third["passed"] is True and third["verdict_cache"]["misses"] == 1

    # Changed in place, same size, mtime put back: ctime gives it away.
    before = path.stat()
    tampered = bytearray(data)
    tampered[len(data) // 3] ^= 0x01
    with open(path, "r+b") as handle:
        handle.write(bytes(tampered))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    refused = run_module("skm_enforce_gate", args)
    assert refused.get("failed") is True and refused["verdict_cache"]["misses"] == 1
    assert [(o["path"], o["state"]) for o in refused["offenders"]] == [(str(path), "bad_signature")]
    assert subprocess.run(["openssl", "version"], capture_output=True, check=False).returncode == 0

    # The audit of the same kernel against the same built-in certificate: every verdict from the gate's cache.
    audit = run_module("skm_module_info", {
        "kernel": [debian_kernel.version], "modules_root": str(host_tree / "lib" / "modules"),
        "boot_dir": str(host_tree / "boot"), "report": "untrusted", "verdict_cache": str(cache)})
    assert audit["verdict_cache"]["hits"] == total and audit["verdict_cache"]["misses"] == 0, (audit["verdict_cache"], audit["summary"])
    assert [(m["path"], m["state"]) for m in audit["modules"]] == [(str(path), "bad_signature")]


def test_verdict_cache_of_another_owner_or_writable_by_others_is_not_trusted(host_tree, debian_kernel, tmp_path):
    cache = tmp_path / "cache"
    args = {"root_dir": str(host_tree), "verdict_cache": str(cache)}
    assert run_module("skm_enforce_gate", args)["passed"] is True
    (cache / "verdicts.json").chmod(0o666)
    again = run_module("skm_enforce_gate", args)
    assert again["verdict_cache"]["hits"] == 0 and "writable by others" in again["verdict_cache"]["note"]
    assert (cache / "verdicts.json").stat().st_mode & 0o777 == 0o600     # replaced by a private one


def test_verdict_cache_is_not_written_in_check_mode(host_tree, tmp_path):
    cache = tmp_path / "cache"
    result = run_module("skm_enforce_gate", {"root_dir": str(host_tree), "verdict_cache": str(cache)}, check=True)
    assert result["passed"] is True and not cache.exists()
