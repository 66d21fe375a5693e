"""What must hold for ANY input to the parsers that read untrusted bytes (issue 9).

One function per parser, shared by the atheris harnesses (tests/fuzz/fuzz_*.py, `make fuzz`) and the
hypothesis tests (tests/unit/test_fuzz_core.py, `make test`). Each takes arbitrary bytes and
- lets only ModSignError out (anything else - IndexError, struct.error, UnicodeDecodeError, a zstd
  library error - propagates and is a finding);
- checks that whatever was accepted is consistent: the parse gives back exactly its input when
  re-assembled.
`check_sign_file` runs the real in-place signer on a file holding the bytes and checks that a module it
refuses or leaves alone keeps its exact bytes and that no temporary file stays behind.
"""

from __future__ import annotations

import os
import pathlib
import sys

_REPO = pathlib.Path(__file__).resolve().parents[2]
_COLLECTIONS = _REPO / "build" / "collections"
for _p in (str(_REPO), str(_COLLECTIONS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils import _pkcs7 as pkcs7  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils import _trailer as trailer  # noqa: E402
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError  # noqa: E402

try:
    from ansible_collections.skm.modsign.plugins.module_utils import _kconfig as kconfig  # noqa: E402
except ImportError:  # the kconfig parser arrives with skm_kconfig
    kconfig = None

KINDS = (compression.NONE, compression.XZ, compression.GZIP, compression.ZSTD)


def check_trailer(data: bytes) -> None:
    """parse_signature: ModSignError or a split that re-assembles to ``data`` byte for byte."""
    try:
        sig = trailer.parse_signature(data, "fuzz.ko")
    except ModSignError:
        return
    assert sig.payload[:4] == trailer.ELF_MAGIC
    if sig.pkcs7 is None:
        assert sig.payload == data and not data.endswith(trailer.MAGIC)
    else:
        assert trailer.append_signature(sig.payload, sig.pkcs7) == data
        assert trailer.strip_signature(data) == sig.payload


def check_pkcs7(data: bytes) -> None:
    """parse_signed_data: ModSignError or at least one signer with a known hash and key type."""
    try:
        signers = pkcs7.parse_signed_data(data, "fuzz.ko")
    except ModSignError:
        return
    assert signers
    for signer in signers:
        assert signer.hash_name in pkcs7.HASHES
        assert signer.key_algorithm in ("rsa", "ecdsa")
        assert (signer.signer.skid is None) != (signer.signer.issuer is None)
        signer.signer.describe()  # renders any accepted issuer/serial without raising


def check_certificate(data: bytes) -> None:
    """certificate_id: ModSignError or an id that keeps the exact DER and renders its names."""
    try:
        cert = pkcs7.certificate_id(data, "fuzz.crt")
    except ModSignError:
        return
    assert cert.der == data
    pkcs7.name_to_text(cert.issuer)
    pkcs7.name_to_text(cert.subject)
    pkcs7.format_serial(cert.serial)


def check_compression(data: bytes) -> None:
    """detect/decompress: one of four kinds; ModSignError or bytes (the input itself when plain)."""
    kind = compression.detect(data)
    assert kind in KINDS
    try:
        got_kind, out = compression.decompress(data, "fuzz.ko.x")
    except ModSignError:
        assert kind != compression.NONE, "plain data cannot be a corrupt stream"
        return
    assert got_kind == kind and isinstance(out, bytes)
    if kind == compression.NONE:
        assert out == data


def check_kconfig(data: bytes) -> None:
    """parse_config: ModSignError or lines that render back to the exact text."""
    if kconfig is None:
        return
    try:
        lines = kconfig.parse_config(data, "fuzz.config")
    except ModSignError:
        return
    assert kconfig.render(lines) == data.decode("utf-8")
    kconfig.values(lines)
    kconfig.kernel_version(lines)


def check_sign_file(data: bytes, key: "signing.SigningKey", directory: str) -> None:
    """sign_module_file on a file holding ``data``: refused or left alone means byte-identical;
    signed means the new file is our payload plus a signature that parses; never a stray temp file."""
    path = os.path.join(directory, "fuzz.ko")
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        outcome = signing.sign_module_file(path, key)
        with open(path, "rb") as handle:
            after = handle.read()
        leftovers = sorted(set(os.listdir(directory)) - {"fuzz.ko"})
        assert not leftovers, "left behind: %s" % leftovers
        if outcome.status in (signing.SIGNED, signing.REPLACED):
            kind, plain = compression.decompress(after, path)
            assert kind == compression.detect(data)
            sig = trailer.parse_signature(plain, path)
            assert sig.signed
            assert pkcs7.parse_signed_data(sig.pkcs7, path)
        else:
            assert after == data, "%s changed the file (%s)" % (outcome.status, outcome.reason)
    finally:
        os.unlink(path)


def small_elf() -> bytes:
    """A minimal 64-bit little-endian ELF header followed by some bytes: enough to count as a module
    payload for the signing core (it checks the magic, not the sections)."""
    return trailer.ELF_MAGIC + b"\x02\x01\x01" + bytes(9) + b"\x01\x00\x3e\x00" + bytes(44) + b"fuzz payload\n"
