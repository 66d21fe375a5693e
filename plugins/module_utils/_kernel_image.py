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
from typing import List, Optional

from ansible_collections.skm.modsign.plugins.module_utils import _der as der
from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import CertificateId, certificate_id

_ELF = b"\x7fELF"
_PAYLOAD_MAGICS = (b"\xfd7zXZ\x00", b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd", b"BZh", b"\x5d\x00\x00")
_CERT_START = re.compile(b"\x30\x82")


def _decompress_at(data, offset):
    # type: (bytes, int) -> Optional[bytes]
    chunk = data[offset:]
    try:
        if chunk.startswith(b"\xfd7zXZ\x00"):
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(chunk)
        if chunk.startswith(b"\x1f\x8b\x08"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(chunk)
        if chunk.startswith(b"\x28\xb5\x2f\xfd"):
            return compression.decompress(chunk)[1]
        if chunk.startswith(b"BZh"):
            return bz2.BZ2Decompressor().decompress(chunk)
        if chunk.startswith(b"\x5d\x00\x00"):
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(chunk)
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError, ModSignError):
        return None
    return None


def vmlinux_from_image(image, path=None):
    # type: (bytes, Optional[str]) -> bytes
    """The uncompressed kernel (ELF) inside a vmlinuz, or the image itself if it is already ELF."""
    if image.startswith(_ELF):
        return image
    for magic in _PAYLOAD_MAGICS:
        start = 0
        while True:
            offset = image.find(magic, start)
            if offset < 0:
                break
            out = _decompress_at(image, offset)
            if out and out.startswith(_ELF):
                return out
            start = offset + 1
    raise ModSignError("cannot find a compressed kernel (gzip/xz/zstd/bzip2/lzma) inside this image", path)


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
