# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The certificates a kernel image trusts at boot (its built-in .system_certificate_list).

Private to skm.modsign. A bzImage (vmlinuz) carries the kernel compressed;
the built-in keyring (CONFIG_SYSTEM_TRUSTED_KEYS and the build's own
signing key) sits in it as concatenated DER certificates. Finding them tells
which keys that kernel verifies modules with before any MOK or secondary key.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bz2
import lzma
import re
import zlib
from typing import Any, List, Optional, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _der as der
from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import CertificateId, certificate_id

_ELF = b"\x7fELF"
_PAYLOAD_MAGICS = (b"\xfd7zXZ\x00", b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd", b"BZh", b"\x5d\x00\x00")
_CERT_START = re.compile(b"\x30\x82")
# MemoryError: a chance match of a magic (lzma's 5d 00 00 is common) may ask for a huge dictionary
_STREAM_ERRORS = (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError, MemoryError) + compression.ZSTD_ERRORS
_LZMA_MEMLIMIT = 1 << 30


def _decompressor(chunk):
    # type: (bytes) -> Optional[Tuple[str, Any]]
    """(name, a streaming decompressor) for the compressed stream ``chunk`` starts with, if any."""
    if chunk.startswith(b"\xfd7zXZ\x00"):
        return "xz", lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)
    if chunk.startswith(b"\x1f\x8b\x08"):
        return "gzip", zlib.decompressobj(16 + zlib.MAX_WBITS)
    if chunk.startswith(b"BZh"):
        return "bzip2", bz2.BZ2Decompressor()
    if chunk.startswith(b"\x5d\x00\x00"):
        return "lzma", lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=_LZMA_MEMLIMIT)
    if chunk.startswith(b"\x28\xb5\x2f\xfd") and compression.HAS_ZSTANDARD:
        return "zstd", compression.zstandard.ZstdDecompressor().decompressobj()
    return None


def _decompress_at(data, offset):
    # type: (bytes, int) -> Tuple[Optional[bytes], Optional[str]]
    """(the kernel ELF, None) when a whole compressed kernel starts at ``offset``; (None, why) when one starts
    there but its stream is cut short or corrupt; (None, None) when none does."""
    chunk = memoryview(data)[offset:]
    found = _decompressor(bytes(chunk[:8]))
    if found is None:
        if bytes(chunk[:4]) == b"\x28\xb5\x2f\xfd":      # zstd without the zstandard package
            try:
                out = compression.decompress(bytes(chunk))[1]
            except ModSignError:
                return None, None
            return (out, None) if out.startswith(_ELF) else (None, None)
        return None, None
    name, stream = found
    try:
        head = stream.decompress(bytes(chunk[:4096]))
    except _STREAM_ERRORS:
        return None, None
    if not head.startswith(_ELF):
        return None, None
    try:
        out = head + stream.decompress(bytes(chunk[4096:]))
    except _STREAM_ERRORS as exc:
        return None, "its %s-compressed kernel is corrupt (%s)" % (name, exc)
    if not getattr(stream, "eof", True):
        return None, ("its %s-compressed kernel ends after %d of its bytes (the image is truncated or corrupt)"
                      % (name, len(out)))
    return out, None


def vmlinux_from_image(image, path=None):
    # type: (bytes, Optional[str]) -> bytes
    """The uncompressed kernel (ELF) inside a vmlinuz, or the image itself if it is already ELF.

    A compressed kernel that starts but does not decompress to its end means a truncated or corrupt image:
    an error that says so, never a partial kernel (its certificates would be missing, and every module
    signed with them would look signed by an unknown key).
    """
    if image.startswith(_ELF):
        return image
    for magic in _PAYLOAD_MAGICS:
        start = 0
        while True:
            offset = image.find(magic, start)
            if offset < 0:
                break
            out, why = _decompress_at(image, offset)
            if out is not None:
                return out
            if why is not None:     # the kernel starts here (ELF), and its stream is broken
                raise ModSignError("cannot extract built-in certificates: %s" % why, path)
            start = offset + 1
    raise ModSignError("cannot extract built-in certificates: no compressed kernel (gzip/xz/zstd/bzip2/lzma) inside "
                       "this image", path)


def builtin_certificates(image, path=None):
    # type: (bytes, Optional[str]) -> List[CertificateId]
    """Every X.509 certificate embedded in a kernel image, in order, without duplicates."""
    vmlinux = vmlinux_from_image(image, path)
    found = []  # type: List[CertificateId]
    seen = set()
    for match in _CERT_START.finditer(vmlinux):
        try:
            tlv, _end = der.read_tlv(vmlinux, match.start())
            if not 200 < len(tlv.raw) < 8192:
                continue
            cert = certificate_id(tlv.raw)
        except (ValueError, ModSignError):
            continue
        if cert.der not in seen:
            seen.add(cert.der)
            found.append(cert)
    return found
