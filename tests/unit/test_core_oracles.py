"""The signing core held against tools we did not write, on Debian's real modules.

Oracles: the kernel's own sign-file (Debian's linux-kbuild-6.1) for RSA byte identity,
`openssl cms -verify` for every signature, kmod's `modinfo` as an independent trailer parser,
the xz/gzip/zstd command-line tools for compressed modules, and Debian's kernel image itself
(the certificate it has built in verifies Debian's signature over the payload we cut out).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from ansible_collections.skm.modsign.plugins.module_utils._kernel_image import builtin_certificates
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import format_serial, parse_signed_data
from ansible_collections.skm.modsign.plugins.module_utils._trailer import parse_signature, strip_signature

RSA_CASES = [(k, h) for k in ("rsa2048", "rsa3072", "rsa4096") for h in ("sha256", "sha384", "sha512")]
ECDSA_CASES = [("p256", "sha256"), ("p256", "sha512"), ("p384", "sha384"), ("p384", "sha512")]


def openssl_cms_verify(payload: pathlib.Path, pkcs7: bytes, cert: pathlib.Path, tmp: pathlib.Path) -> None:
    sig = tmp / "sig.p7"
    sig.write_bytes(pkcs7)
    proc = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(sig), "-content", str(payload),
         "-certfile", str(cert), "-nointern", "-noverify", "-purpose", "any", "-out", "/dev/null"],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Verification successful" in proc.stderr, proc.stderr


def modinfo(path: pathlib.Path) -> dict:
    out = subprocess.run(["modinfo", str(path)], check=True, capture_output=True, text=True).stdout
    info = {}
    for line in out.splitlines():
        if ":" in line and not line.startswith("\t"):
            key, _sep, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    return info


def cert_subject_cn(cert: pathlib.Path) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "multiline"],
                         check=True, capture_output=True, text=True).stdout
    return next(line.split("=", 1)[1].strip() for line in out.splitlines() if "commonName" in line)


@pytest.fixture(scope="module")
def stripped(debian_kernel, debian_sample, tmp_path_factory):
    """The sample, with Debian's signatures cut off by our core, in a scratch directory."""
    base = tmp_path_factory.mktemp("stripped")
    out = []
    for rel in debian_sample:
        target = base / rel.name
        target.write_bytes(strip_signature((debian_kernel.modules_dir / rel).read_bytes(), str(rel)))
        out.append(target)
    return out


def test_debian_signature_verifies_over_the_payload_we_cut(debian_kernel, debian_sample, stripped, tmp_path):
    """Stripping is exact: Debian's own signature verifies over our payload with the key its kernel trusts."""
    certs = builtin_certificates(debian_kernel.vmlinuz.read_bytes(), str(debian_kernel.vmlinuz))
    assert certs, "no built-in certificate found in Debian's vmlinuz"
    cert_pem = tmp_path / "builtin.der"
    cert_pem.write_bytes(certs[0].der)
    pem = tmp_path / "builtin.pem"
    subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(cert_pem), "-out", str(pem)], check=True)
    trusted = [signing.TrustedCertificate.from_file(str(cert_pem))]
    for rel, payload_path in zip(debian_sample, stripped):
        original = (debian_kernel.modules_dir / rel).read_bytes()
        pkcs7 = parse_signature(original).pkcs7
        openssl_cms_verify(payload_path, pkcs7, pem, tmp_path)
        assert signing.verify_module(str(debian_kernel.modules_dir / rel), trusted).state == signing.TRUSTED
        # modinfo (kmod) parses the same trailer: its sig_key is the serial our parser read.
        signer = parse_signed_data(pkcs7)[0].signer
        assert modinfo(debian_kernel.modules_dir / rel)["sig_key"] == format_serial(signer.serial)


@pytest.mark.parametrize("kind,hash_name", RSA_CASES)
@pytest.mark.parametrize("use_skid", [False, True], ids=["issuer-serial", "skid"])
def test_rsa_byte_identical_with_sign_file(kind, hash_name, use_skid, stripped, session_keys, sign_file, tmp_path):
    key = session_keys(kind)
    signing_key = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name=hash_name, use_skid=use_skid)
    for module in stripped[:4]:
        reference = tmp_path / module.name
        shutil.copy(module, reference)
        subprocess.run([sign_file] + (["-k"] if use_skid else []) + [hash_name, str(key.key), str(key.cert),
                                                                     str(reference)], check=True)
        assert signing_key.sign_payload(module.read_bytes()) == reference.read_bytes(), module.name


def test_rsa_whole_sample_identical_and_parsed_by_modinfo(stripped, session_keys, sign_file, tmp_path):
    key = session_keys("rsa2048")
    signing_key = signing.SigningKey.from_files(str(key.combined), hash_name="sha256")
    for module in stripped:
        ours = tmp_path / ("ours-" + module.name)
        ours.write_bytes(signing_key.sign_payload(module.read_bytes()))
        reference = tmp_path / module.name
        shutil.copy(module, reference)
        subprocess.run([sign_file, "sha256", str(key.key), str(key.cert), str(reference)], check=True)
        assert ours.read_bytes() == reference.read_bytes(), module.name
        info = modinfo(ours)
        assert info["sig_id"] == "PKCS#7" and info["sig_hashalgo"] == "sha256"
        assert info["signer"] == cert_subject_cn(key.cert)


@pytest.mark.parametrize("kind,hash_name", ECDSA_CASES)
def test_ecdsa_verified_by_openssl_and_modinfo(kind, hash_name, stripped, session_keys, sign_file, tmp_path):
    key = session_keys(kind)
    signing_key = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name=hash_name)
    for module in stripped[:6]:
        signed = tmp_path / module.name
        signed.write_bytes(signing_key.sign_payload(module.read_bytes()))
        split = parse_signature(signed.read_bytes())
        assert split.payload == module.read_bytes()
        openssl_cms_verify(module, split.pkcs7, key.cert, tmp_path)
        info = modinfo(signed)
        assert info["sig_hashalgo"] == hash_name and info["signer"] == cert_subject_cn(key.cert)
        # sign-file's own ECDSA output has the same structure, all but the (random) signature value.
        reference = tmp_path / ("ref-" + module.name)
        shutil.copy(module, reference)
        subprocess.run([sign_file, hash_name, str(key.key), str(key.cert), str(reference)], check=True)
        theirs = parse_signed_data(parse_signature(reference.read_bytes()).pkcs7)[0]
        ours = parse_signed_data(split.pkcs7)[0]
        assert ours._replace(signature=b"") == theirs._replace(signature=b"")
        assert signing.verify_module(str(reference), [signing_key.trusted]).state == signing.TRUSTED


COMPRESSORS = {
    # what the kernel's scripts/Makefile.modinst runs, and how to read it back
    "xz": (["xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"], ["xz", "-d", "-c"], ".ko.xz"),
    "gzip": (["gzip", "-n", "-9", "-c"], ["gzip", "-d", "-c"], ".ko.gz"),
    "zstd": (["zstd", "-q", "-c"], ["zstd", "-d", "-q", "-c"], ".ko.zst"),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_modules_signed_inside_the_stream(kind, debian_kernel, debian_sample, session_keys, tmp_path):
    pack, unpack, suffix = COMPRESSORS[kind]
    key = session_keys("p384")
    signing_key = signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha384")
    for rel in debian_sample[:5]:
        original = (debian_kernel.modules_dir / rel).read_bytes()   # Debian-signed
        # A name that lies: detection is by magic bytes, not by the file name.
        path = tmp_path / (rel.name[:-3] + ".ko")
        path.write_bytes(subprocess.run(pack, input=original, capture_output=True, check=True).stdout)
        outcome = signing.sign_module_file(str(path), signing_key, replace_foreign=True)
        assert outcome.status == signing.REPLACED, outcome
        assert compression.detect(path.read_bytes()) == kind
        plain = subprocess.run(unpack, input=path.read_bytes(), capture_output=True, check=True).stdout
        split = parse_signature(plain)
        assert split.payload == strip_signature(original)
        payload = tmp_path / "payload"
        payload.write_bytes(split.payload)
        openssl_cms_verify(payload, split.pkcs7, key.cert, tmp_path)
        if kind == "xz":
            # xz itself says which integrity check the stream carries (the kernel's decoder wants CRC32).
            listing = subprocess.run(["xz", "--robot", "--list", str(path)], capture_output=True, text=True,
                                     check=True).stdout
            assert "\tCRC32\t" in listing, listing
        # Second pass: nothing to do, and the compressed bytes are not rewritten.
        before = path.read_bytes()
        assert signing.sign_module_file(str(path), signing_key).status == signing.ALREADY_SIGNED
        assert path.read_bytes() == before
