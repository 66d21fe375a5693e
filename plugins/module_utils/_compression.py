# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compressed modules: detect by magic bytes, decompress, recompress as modules_install does.

Private to skm.modsign.

The kernel decompresses a module first and checks the signature of the
uncompressed bytes, so the signature goes inside the compressed stream.
Recompression follows scripts/Makefile.modinst so that in-kernel
decompression (CONFIG_MODULE_DECOMPRESS) accepts the result:

- xz:   ``xz --check=crc32 --lzma2=dict=1MiB`` (the kernel's xz decoder knows CRC32, not CRC64; see
        ``xz_check``)
- gzip: ``gzip -n -9`` (no name, no timestamp)
- zstd: ``zstd`` at its default level (zstd-compressed modules need kernel 6.2+ to load)

zstd uses the ``zstandard`` Python package when present, else the ``zstd``
command; without either a zstd module is a clear error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import lzma
import shutil
import subprocess
import zlib
from typing import Optional, Tuple

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

try:
    import zstandard
    HAS_ZSTANDARD = True
    ZSTD_ERRORS = (zstandard.ZstdError,)  # type: tuple
except ImportError:
    HAS_ZSTANDARD = False
    ZSTD_ERRORS = ()

NONE = "none"
XZ = "xz"
GZIP = "gzip"
ZSTD = "zstd"

_MAGICS = (
    (b"\xfd7zXZ\x00", XZ),
    (b"\x1f\x8b", GZIP),
    (b"\x28\xb5\x2f\xfd", ZSTD),
)

XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20}]

# The integrity checks an .xz stream may carry (its stream header: 6 magic bytes, then the stream flags,
# 0x00 and the check ID, then a CRC32 of the flags). xz uses CRC64 unless told otherwise.
_XZ_CHECKS = {0x00: "none", 0x01: "crc32", 0x04: "crc64", 0x0A: "sha256"}
# The kernel's own xz decoder (lib/xz, used by CONFIG_MODULE_DECOMPRESS) is built without XZ_DEC_ANY_CHECK
# and without CRC64: any other check is XZ_OPTIONS_ERROR, "decompression failed with status 6" (EINVAL).
KERNEL_XZ_CHECKS = ("none", "crc32")


def detect(data):
    # type: (bytes) -> str
    """The compression of ``data`` by its magic bytes: none, xz, gzip or zstd."""
    for magic, kind in _MAGICS:
        if data[:len(magic)] == magic:
            return kind
    return NONE


def xz_check(data):
    # type: (bytes) -> str
    """The integrity check named in an .xz stream header: none, crc32, crc64, sha256 (or "check id N")."""
    flags = bytes(data[6:8])
    if len(flags) < 2:
        return "truncated header"
    if flags[0] != 0:
        return "reserved stream flags %#04x" % flags[0]
    return _XZ_CHECKS.get(flags[1], "check id %d" % flags[1])


def container(kind, data):
    # type: (str, bytes) -> str
    """What the kernel's decompressor must accept: ``kind``, and for xz its check ("xz/crc64")."""
    if kind == XZ:
        return "%s/%s" % (XZ, xz_check(data))
    return kind


def kernel_refuses(container_name):
    # type: (str) -> Optional[str]
    """Why the kernel's own decompressor refuses a module of ``container_name`` (None: it accepts it)."""
    kind, _sep, check = container_name.partition("/")
    if kind == XZ and check not in KERNEL_XZ_CHECKS:
        return ("xz stream with a %s check: the kernel's own xz decoder knows only CRC32 and none and refuses it "
                "(EINVAL, \"decompression failed with status 6\"); recompress with xz --check=crc32 "
                "--lzma2=dict=1MiB (skm_sign does)" % check.upper())
    return None


def _zstd_command(args, data, path):
    # type: (list, bytes, Optional[str]) -> bytes
    exe = shutil.which("zstd")
    if exe is None:
        raise ModSignError("zstd-compressed module, but neither the zstandard Python package "
                           "nor the zstd command is available", path)
    proc = subprocess.run([exe] + args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise ModSignError("zstd failed: %s" % proc.stderr.decode("utf-8", "replace").strip(), path)
    return proc.stdout


# A module that decompresses to more than this is not a module (the biggest Debian module is about 30 MB): a
# small xz or gzip file can expand to any size, and the whole output is held in memory.
MAX_DECOMPRESSED_BYTES = 1 << 30


def _xz_decompress(data, limit):
    # type: (bytes, int) -> bytes
    """``lzma.decompress(data)`` (concatenated streams; leftover data that is no stream is ignored), at most
    ``limit`` bytes of output."""
    out, total = [], 0
    while True:
        stream = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            chunk = stream.decompress(data, max_length=limit - total + 1)
        except lzma.LZMAError:
            if out:
                break
            raise
        total += len(chunk)
        out.append(chunk)
        if total > limit:
            raise ValueError("decompresses to more than %d bytes" % limit)
        if not stream.eof:
            raise EOFError("Compressed data ended before the end-of-stream marker was reached")
        data = stream.unused_data
        if not data:
            return b"".join(out)
    return b"".join(out)


def _gzip_decompress(data, limit):
    # type: (bytes, int) -> bytes
    """``gzip.decompress(data)`` (members one after another, zero padding after them), at most ``limit`` bytes of
    output."""
    out, total = [], 0
    while data:
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = stream.decompress(data, limit - total + 1)
        total += len(chunk)
        out.append(chunk)
        if total > limit:
            raise ValueError("decompresses to more than %d bytes" % limit)
        if not stream.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        data = stream.unused_data.lstrip(b"\0")
    return b"".join(out)


def decompress(data, path=None):
    # type: (bytes, Optional[str]) -> Tuple[str, bytes]
    """Return (kind, uncompressed bytes); a corrupt stream, or one that expands past
    ``MAX_DECOMPRESSED_BYTES`` (xz, gzip), is a ModSignError."""
    kind = detect(data)
    try:
        if kind == XZ:
            return kind, _xz_decompress(data, MAX_DECOMPRESSED_BYTES)
        if kind == GZIP:
            return kind, _gzip_decompress(data, MAX_DECOMPRESSED_BYTES)
        if kind == ZSTD:
            if HAS_ZSTANDARD:
                stream = zstandard.ZstdDecompressor().decompressobj()
                out = stream.decompress(data)
                if getattr(stream, "eof", None) is not None:  # zstandard >= 0.18 tells truncation apart
                    if not stream.eof:
                        raise ValueError("truncated stream")
                    if stream.unused_data:
                        raise ValueError("trailing data after the stream")
                    return kind, out
            return kind, _zstd_command(["-d", "-q", "-c"], data, path)
    except (lzma.LZMAError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise ModSignError("corrupt %s stream (%s)" % (kind, exc), path)
    except ModSignError as exc:
        raise exc.with_path(path or "")
    except Exception as exc:  # zstandard.ZstdError and friends
        raise ModSignError("corrupt %s stream (%s)" % (kind, exc), path)
    return kind, data


def compress(kind, data, path=None):
    # type: (str, bytes, Optional[str]) -> bytes
    """Compress ``data`` as the kernel's modules_install would for ``kind``."""
    if kind == NONE:
        return data
    if kind == XZ:
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=XZ_FILTERS)
    if kind == GZIP:
        return gzip.compress(data, compresslevel=9, mtime=0)
    if kind == ZSTD:
        if HAS_ZSTANDARD:
            return zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True).compress(data)
        return _zstd_command(["-q", "-c", "-3"], data, path)
    raise ModSignError("unknown compression %r" % kind, path)
