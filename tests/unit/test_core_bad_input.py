"""Bad input to the signing core: a clear ModSignError naming the file and the cause, the file untouched,
and no secret (key bytes, passphrase) in the message."""

from __future__ import annotations

import gzip
import lzma
import os
import pathlib
import struct
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._trailer import MAGIC, parse_signature, strip_signature

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def real_module(debian_kernel, debian_sample):
    return (debian_kernel.modules_dir / debian_sample[3]).read_bytes()


@pytest.fixture(scope="module")
def rsa_key(session_keys):
    key = session_keys("rsa2048")
    return signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha256")


def assert_clean_failure(path: pathlib.Path, before: bytes, outcome, *words: str) -> None:
    assert outcome.status == signing.FAILED, outcome
    assert outcome.path == str(path)
    for word in words:
        assert word in outcome.reason, outcome.reason
    assert path.read_bytes() == before, "the file was changed"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".~skm~")], "temporary file left behind"


def lying_trailers(module: bytes) -> dict[str, bytes]:
    signed = module
    sig_len = struct.unpack(">I", signed[-len(MAGIC) - 4:-len(MAGIC)])[0]
    info_at = len(signed) - len(MAGIC) - 12

    def with_info(info: bytes) -> bytes:
        return signed[:info_at] + info + MAGIC
    return {
        "longer than the file": with_info(struct.pack(">BBBBB3sI", 0, 0, 2, 0, 0, b"\0\0\0", len(signed) * 2)),
        "zero length": with_info(struct.pack(">BBBBB3sI", 0, 0, 2, 0, 0, b"\0\0\0", 0)),
        "not PKCS#7": with_info(struct.pack(">BBBBB3sI", 0, 0, 1, 0, 0, b"\0\0\0", sig_len)),
        "non-zero fields": with_info(struct.pack(">BBBBB3sI", 1, 4, 2, 0, 0, b"\0\0\0", sig_len)),
        "cut inside PKCS#7": with_info(struct.pack(">BBBBB3sI", 0, 0, 2, 0, 0, b"\0\0\0", sig_len - 7)),
        "only the magic": MAGIC,
    }


@pytest.mark.parametrize("case", ["longer than the file", "zero length", "not PKCS#7", "non-zero fields",
                                  "cut inside PKCS#7", "only the magic"])
def test_trailer_that_lies(case, real_module, rsa_key, tmp_path):
    path = tmp_path / "lying.ko"
    path.write_bytes(lying_trailers(real_module)[case])
    before = path.read_bytes()
    outcome = signing.sign_module_file(str(path), rsa_key, replace_foreign=True)
    assert_clean_failure(path, before, outcome)
    # The audit never calls it unsigned either.
    assert signing.verify_module(str(path), [rsa_key.trusted]).state == signing.UNPARSEABLE


def test_not_elf_and_truncated(real_module, rsa_key, tmp_path):
    cases = {
        "text.ko": b"#!/bin/sh\necho not a module\n",
        "empty.ko": b"",
        "truncated.ko": real_module[: len(real_module) - 9],   # magic string cut short: no trailer, no ELF end
        "headless.ko": real_module[4096:],                      # ELF header gone, trailer intact
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        outcome = signing.sign_module_file(str(path), rsa_key)
        if name == "truncated.ko":
            # A truncated trailer leaves no magic: the bytes still start with ELF, so it reads as an
            # unsigned ELF whose tail is garbage; the kernel would do the same. It gets signed.
            assert outcome.status == signing.SIGNED
            continue
        assert_clean_failure(path, data, outcome, "ELF" if name != "headless.ko" else "")


@pytest.mark.parametrize("kind", ["xz", "gzip", "zstd"])
def test_corrupt_compressed_stream(kind, real_module, rsa_key, tmp_path):
    if kind == "xz":
        data = lzma.compress(real_module, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    elif kind == "gzip":
        data = gzip.compress(real_module)
    else:
        data = subprocess.run(["zstd", "-q", "-c"], input=real_module, capture_output=True, check=True).stdout
    corrupt = bytearray(data)
    middle = len(corrupt) // 2
    corrupt[middle:middle + 16] = bytes(16)
    for name, blob in (("corrupt", bytes(corrupt)), ("cut", data[: len(data) // 3])):
        path = tmp_path / f"{name}.ko.{kind}"
        path.write_bytes(blob)
        outcome = signing.sign_module_file(str(path), rsa_key)
        assert_clean_failure(path, blob, outcome, kind)


def test_key_not_matching_certificate(session_keys, tmp_path):
    a, b = session_keys("rsa2048"), session_keys("p256")
    with pytest.raises(ModSignError) as err:
        signing.SigningKey.from_files(str(a.key), str(b.cert), hash_name="sha256")
    assert "does not match the certificate" in str(err.value) and str(b.cert) in str(err.value)


def test_passphrase_protected_key(session_keys, tmp_path, real_module):
    key = session_keys("p384", PASSPHRASE)
    good = signing.SigningKey.from_files(str(key.key), str(key.cert), passphrase=PASSPHRASE, hash_name="sha384")
    assert signing.judge(strip_signature(real_module), parse_signature(good.sign_payload(
        strip_signature(real_module))).pkcs7, [good.trusted]).state == signing.TRUSTED
    body = key.key.read_text().split("-----")[2].strip().splitlines()[1]
    for passphrase, words in ((None, "encrypted and no passphrase"), ("wrong", "wrong passphrase")):
        with pytest.raises(ModSignError) as err:
            signing.SigningKey.from_files(str(key.key), str(key.cert), passphrase=passphrase, hash_name="sha384")
        message = str(err.value)
        assert words in message and str(key.key) in message
        assert PASSPHRASE not in message and "wrong" not in message.replace("wrong passphrase", "")
        assert body not in message
    plain = session_keys("p256")
    with pytest.raises(ModSignError, match="not encrypted"):
        signing.SigningKey.from_files(str(plain.key), str(plain.cert), passphrase=PASSPHRASE, hash_name="sha256")


@pytest.mark.parametrize("kind,words", [("ed25519", "cannot sign kernel modules"), ("p521", "not accepted by the kernel"),
                                        ("rsapss", "RSA-PSS")])
def test_key_types_the_kernel_refuses(kind, words, session_keys):
    key = session_keys(kind)
    with pytest.raises(ModSignError) as err:
        signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha512")
    assert str(key.key) in str(err.value) or str(key.cert) in str(err.value)
    assert words in str(err.value)


def test_unsupported_hash_and_weak_pairs(session_keys):
    key = session_keys("p384")
    with pytest.raises(ModSignError, match="unsupported hash 'md5'"):
        signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="md5")
    with pytest.raises(ModSignError, match="at least 384 bits"):
        signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha256")


def test_expired_certificate(session_keys, tmp_path):
    """A certificate whose notAfter has passed (re-issued for the same key with a window in 2000)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = session_keys("p256")
    private = serialization.load_pem_private_key(key.key.read_bytes(), None)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "expired")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(7).not_valid_before(datetime.datetime(2000, 1, 1))
            .not_valid_after(datetime.datetime(2001, 1, 1)).sign(private, hashes.SHA256()))
    expired = tmp_path / "expired.crt"
    expired.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ModSignError, match="expired on 2001-01-01") as err:
        signing.SigningKey.from_files(str(key.key), str(expired), hash_name="sha256")
    assert str(expired) in str(err.value)


def test_read_only_filesystem(real_module, rsa_key, tmp_path):
    """A read-only mount (a real one: a tmpfs remounted ro) fails cleanly and leaves the module as it was."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        path = mnt / "m.ko"
        path.write_bytes(strip_signature(real_module))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        before = path.read_bytes()
        outcome = signing.sign_module_file(str(path), rsa_key)
        assert outcome.status == signing.FAILED and "read-only file system" in outcome.reason.lower().replace(
            "filesystem", "file system"), outcome
        assert path.read_bytes() == before
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_filesystem(real_module, rsa_key, tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={len(real_module) + 64 * 1024}", "tmpfs",
                       str(mnt)], check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        path = mnt / "m.ko"
        path.write_bytes(strip_signature(real_module))
        free = os.statvfs(mnt)
        (mnt / "filler").write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 4096))
        before = path.read_bytes()
        outcome = signing.sign_module_file(str(path), rsa_key)
        assert outcome.status == signing.FAILED and "no space left" in outcome.reason, outcome
        assert path.read_bytes() == before
        assert sorted(p.name for p in mnt.iterdir()) == ["filler", "m.ko"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_atomic_write_keeps_mode_and_owner(real_module, rsa_key, tmp_path):
    path = tmp_path / "m.ko"
    path.write_bytes(strip_signature(real_module))
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 1234, 4321)
    assert signing.sign_module_file(str(path), rsa_key).status == signing.SIGNED
    st = path.stat()
    assert st.st_mode & 0o7777 == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ko"]
