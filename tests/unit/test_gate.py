"""_gate on Debian's real kernel: which kernel boots next, its config, its built-in certificate.

Module verdicts come from the signing core; here the kernel side is checked against Debian's
real /boot/config and vmlinuz (Debian 6.1: sha512 and sha3 are modules, no ECDSA).
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _gate as gate
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._kernel_image import builtin_certificates
from ansible_collections.skm.modsign.plugins.module_utils._signing import TrustedCertificate


@pytest.fixture(scope="module")
def kconfig(debian_kernel):
    return gate.read_kconfig(debian_kernel.config.read_text())


def test_debian_config_verdicts(kconfig):
    assert gate.config_problems(kconfig, ["rsa"], ["sha256"]) == []
    problems = gate.config_problems(kconfig, ["ecdsa"], ["sha512", "sha3-256"])
    assert problems == [
        "ECDSA keys need CONFIG_CRYPTO_ECDSA=y (this kernel has it not set)",
        "hash sha3-256 needs CONFIG_CRYPTO_SHA3=y (this kernel has =m, a module; a module cannot verify the module "
        "that would provide it)",
        "hash sha512 needs CONFIG_CRYPTO_SHA512=y (this kernel has =m, a module; a module cannot verify the module "
        "that would provide it)",
    ]
    assert gate.config_problems({}, ["rsa"], [])[0].startswith("CONFIG_MODULE_SIG is not set")


def test_keyrings_mok_needs_mok_list_trusted_rt(debian_kernel, kconfig, session_keys):
    image = builtin_certificates(debian_kernel.vmlinuz.read_bytes())
    ours = TrustedCertificate.from_file(str(session_keys("rsa2048").cert))
    plain = gate.keyrings(image, kconfig, mok=[ours])
    assert len(plain.builtin) >= 1 and plain.machine == [] and "MokListTrustedRT" in plain.notes[0]
    assert gate.untrusted_certificates([("ours", ours)], plain) == ["ours"]
    trusted = gate.keyrings(image, kconfig, mok=[ours], trust_mok=True)
    assert trusted.machine == [ours] and gate.untrusted_certificates([("ours", ours)], trusted) == []
    no_machine = dict(kconfig, CONFIG_INTEGRITY_MACHINE_KEYRING="n")
    assert gate.keyrings(image, no_machine, mok=[ours], trust_mok=True).machine == []


def _link(tmp_path, path, target):
    link = tmp_path / path.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def test_default_kernel_sources(tmp_path):
    for version in ("6.1.0-9-amd64", "6.1.0-10-amd64"):
        (tmp_path / "boot").mkdir(exist_ok=True)
        (tmp_path / "boot" / f"vmlinuz-{version}").write_bytes(b"")
    assert gate.default_kernel(str(tmp_path)) == ("6.1.0-10-amd64", "newest /boot/vmlinuz-*")
    (tmp_path / "boot/grub").mkdir()
    (tmp_path / "boot/grub/grub.cfg").write_text("menuentry 'x' {\n\tlinux /boot/vmlinuz-6.1.0-9-amd64 root=x ro\n}\n")
    assert gate.default_kernel(str(tmp_path))[0] == "6.1.0-9-amd64"
    _link(tmp_path, "/vmlinuz", "boot/vmlinuz-6.1.0-10-amd64")
    assert gate.default_kernel(str(tmp_path)) == ("6.1.0-10-amd64", "/vmlinuz -> boot/vmlinuz-6.1.0-10-amd64")
    (tmp_path / "boot/loader/entries").mkdir(parents=True)
    (tmp_path / "boot/loader/entries/m-6.5.conf").write_text("title f\nversion 6.5.6-300.fc39.x86_64\n")
    (tmp_path / "boot/grub2").mkdir()
    (tmp_path / "boot/grub2/grubenv").write_text("# GRUB Environment Block\nsaved_entry=m-6.5\n")
    assert gate.default_kernel(str(tmp_path)) == ("6.5.6-300.fc39.x86_64", "grubenv saved_entry m-6.5")


def test_no_kernel_is_a_clear_failure(tmp_path):
    with pytest.raises(ModSignError, match="cannot tell which kernel boots next"):
        gate.default_kernel(str(tmp_path))


def test_runtime_switch_file(tmp_path):
    path = tmp_path / "sig_enforce"
    assert gate.runtime_enforced(str(path)) is None
    path.write_text("N\n")
    assert gate.runtime_enforced(str(path)) is False
    gate.enable_runtime(str(path))
    assert gate.runtime_enforced(str(path)) is True
    if os.path.exists(gate.SIG_ENFORCE):
        assert gate.runtime_enforced() in (True, False)
