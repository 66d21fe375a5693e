"""_gate on Debian's real kernel: which kernel boots next, its config, its built-in certificate.

Module verdicts come from the signing core; here the kernel side is checked against Debian's
real /boot/config and vmlinuz (Debian 6.1: sha512 and sha3 are modules, no ECDSA).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
from ansible_collections.skm.modsign.plugins.module_utils import _files
from ansible_collections.skm.modsign.plugins.module_utils import _gate as gate
from ansible_collections.skm.modsign.plugins.module_utils import _verdicts
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._kernel_image import builtin_certificates
from ansible_collections.skm.modsign.plugins.module_utils._signing import TrustedCertificate, Verdict


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


# ------------------------------------------------ issue 16: containers, non-regular files, broken images

def test_who_decompresses_from_the_config():
    debian = _verdicts.decompression_of({"CONFIG_MODULE_COMPRESS_NONE": "y"})
    assert debian.by == "kmod" and debian.of("xz/crc64") == "kmod" and debian.of("none") is None
    in_kernel = _verdicts.decompression_of({"CONFIG_MODULE_DECOMPRESS": "y", "CONFIG_MODULE_COMPRESS_XZ": "y"})
    assert (in_kernel.by, in_kernel.kernel_format) == ("kernel", "xz")
    assert in_kernel.of("xz/crc64") == "kernel" and in_kernel.of("gzip") == "kmod"
    assert _verdicts.decompression_of(None).of("zstd") == "unknown"


@pytest.mark.parametrize("xz_args, check, refused", [
    (["--check=crc32", "--lzma2=dict=1MiB"], "crc32", False), (["--check=none"], "none", False),
    ([], "crc64", True), (["--check=sha256"], "sha256", True)])
def test_xz_check_read_from_the_stream_header_as_real_xz_writes_it(xz_args, check, refused):
    data = subprocess.run(["xz", "-c"] + xz_args, input=b"\x7fELF" * 64, capture_output=True, check=True).stdout
    assert compression.xz_check(data) == check
    assert (compression.kernel_refuses(compression.container(compression.XZ, data)) is not None) == refused
    assert compression.kernel_refuses("gzip") is None and compression.kernel_refuses("none") is None


def test_judge_container_only_demotes_a_trusted_module_the_kernel_would_decompress():
    trusted = Verdict("trusted", hash_name="sha256")
    in_kernel = _verdicts.decompression_of({"CONFIG_MODULE_DECOMPRESS": "y", "CONFIG_MODULE_COMPRESS_XZ": "y"})
    kmod = _verdicts.decompression_of({})
    judged = _verdicts.Judged("/m.ko.xz", trusted, "xz/crc64")
    bad = _verdicts.judge_container(judged, in_kernel)
    assert bad.state == "bad_container" and "CRC64" in bad.reason and "status 6" in bad.reason
    assert _verdicts.judge_container(judged, kmod) == trusted
    assert _verdicts.judge_container(judged._replace(container="xz/crc32"), in_kernel) == trusted
    unsigned = Verdict("unsigned")
    assert _verdicts.judge_container(judged._replace(verdict=unsigned), in_kernel) == unsigned
    unknown = _verdicts.judge_container(judged, _verdicts.decompression_of(None, "/boot/config-x"))
    assert unknown.state == "bad_container" and "/boot/config-x" in unknown.reason


def test_non_regular_module_files_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo.ko"
    os.mkfifo(fifo)
    verdict, container = _verdicts.check_module(str(fifo), [])       # would block forever on open/read
    assert (verdict.state, container) == ("unparseable", None) and "a FIFO" in verdict.reason
    zero = tmp_path / "zero.ko"
    zero.symlink_to("/dev/zero")
    verdict, _container = _verdicts.check_module(str(zero), [])
    assert verdict.state == "unparseable" and "a character device" in verdict.reason


def test_display_path_escapes_bytes_that_are_not_utf8():
    assert _files.display_path(os.fsdecode(b"/lib/drv\xff.ko")) == "/lib/drv\\xff.ko"
    assert _files.display_path("/lib/modules/ü.ko") == "/lib/modules/ü.ko"


def test_truncated_or_corrupt_kernel_image_says_so(debian_kernel):
    image = debian_kernel.vmlinuz.read_bytes()
    with pytest.raises(ModSignError, match=r"cannot extract built-in certificates: its xz-compressed kernel ends "
                                           r"after \d+ of its bytes \(the image is truncated or corrupt\)"):
        builtin_certificates(image[:len(image) // 2], "vmlinuz")
    flipped = bytearray(image)
    flipped[len(image) // 2] ^= 0xFF
    with pytest.raises(ModSignError, match="cannot extract built-in certificates: its xz-compressed kernel is corrupt"):
        builtin_certificates(bytes(flipped), "vmlinuz")
    with pytest.raises(ModSignError, match="no compressed kernel"):
        builtin_certificates(b"MZ" + b"\0" * 4096, "vmlinuz")


def test_boot_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    (tmp_path / "boot/grub2").mkdir(parents=True)
    os.mkfifo(tmp_path / "boot/grub2/grubenv")
    with pytest.raises(ModSignError, match="not a regular file"):
        gate.default_kernel(str(tmp_path))


@pytest.mark.parametrize("kind", ["xz", "gzip"])
def test_module_that_expands_past_the_cap_is_refused_by_name(kind, tmp_path, monkeypatch):
    """A small file that decompresses to more than the cap (lowered here to 1 MiB; 1 GiB by default) is
    unparseable with the reason, and nothing past the cap is held in memory."""
    monkeypatch.setattr(compression, "MAX_DECOMPRESSED_BYTES", 1 << 20)
    tool = ["xz", "--check=crc32"] if kind == "xz" else ["gzip", "-n"]
    bomb = subprocess.run(tool + ["-c"], input=b"\0" * (4 << 20), capture_output=True, check=True).stdout
    path = tmp_path / ("bomb.ko." + ("xz" if kind == "xz" else "gz"))
    path.write_bytes(bomb)
    verdict, _container = _verdicts.check_module(str(path), [])
    assert verdict.state == "unparseable" and "decompresses to more than 1048576 bytes" in verdict.reason
    small = subprocess.run(tool + ["-c"], input=b"\0" * 4096, capture_output=True, check=True).stdout
    assert compression.decompress(small) == (kind, b"\0" * 4096)
