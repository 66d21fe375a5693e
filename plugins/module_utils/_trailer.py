# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module signature trailer, exactly as kernel/module/signing.c reads it.

Private to skm.modsign.

A signed module is::

    payload || PKCS#7 DER || struct module_signature || "~Module signature appended~\\n"

    struct module_signature {
        u8     algo;        /* 0 for PKCS#7 */
        u8     hash;        /* 0 for PKCS#7 */
        u8     id_type;     /* 2 = PKEY_ID_PKCS7 */
        u8     signer_len;  /* 0 for PKCS#7 */
        u8     key_id_len;  /* 0 for PKCS#7 */
        u8     __pad[3];
        __be32 sig_len;     /* length of the PKCS#7 DER */
    };

The kernel (mod_check_sig) refuses anything but id_type 2 with every other
byte zero, so so do we: a trailer that does not parse is an error, never
"unsigned".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct
from typing import NamedTuple, Optional, Tuple, Union

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

MAGIC = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
_INFO = struct.Struct(">BBBBB3sI")
INFO_SIZE = _INFO.size  # 12
ELF_MAGIC = b"\x7fELF"

Buffer = Union[bytes, bytearray, memoryview]


class ModuleSignature(NamedTuple):
    """A module split at its signature: ``payload`` is what the signature covers."""

    payload: bytes
    pkcs7: Optional[bytes]   # None when the module is unsigned

    @property
    def signed(self):
        # type: () -> bool
        return self.pkcs7 is not None


def check_elf(payload, path=None):
    # type: (Buffer, Optional[str]) -> None
    """Refuse what cannot be a kernel module (no ELF magic)."""
    if bytes(payload[:4]) != ELF_MAGIC:
        raise ModSignError("not a kernel module (no ELF magic)", path)


def has_trailer(data):
    # type: (Buffer) -> bool
    return bytes(data[-len(MAGIC):]) == MAGIC


def split_signature(data, path=None):
    # type: (Buffer, Optional[str]) -> Tuple[int, Optional[bytes]]
    """Where ``data`` (an uncompressed module: bytes or a memoryview) splits: (payload length, PKCS#7 or None).

    Copies nothing but the PKCS#7 blob. An unsigned module gives None; a
    trailer that lies about its lengths or is not PKCS#7 raises ModSignError.
    """
    if not has_trailer(data):
        check_elf(data, path)
        return len(data), None
    end = len(data) - len(MAGIC)
    if end < INFO_SIZE:
        raise ModSignError("truncated signature trailer: no room for struct module_signature", path)
    algo, hash_, id_type, signer_len, key_id_len, pad, sig_len = _INFO.unpack_from(data, end - INFO_SIZE)
    if id_type != PKEY_ID_PKCS7:
        raise ModSignError("signature trailer has id_type %d, the kernel accepts only 2 (PKCS#7)" % id_type, path)
    if algo or hash_ or signer_len or key_id_len or pad != b"\0\0\0":
        raise ModSignError("signature trailer has non-zero algo/hash/signer_len/key_id_len/pad fields "
                           "(the kernel rejects it)", path)
    sig_end = end - INFO_SIZE
    if sig_len == 0 or sig_len > sig_end:
        raise ModSignError("signature trailer claims a %d-byte signature but only %d bytes precede it"
                           % (sig_len, sig_end), path)
    check_elf(data[:min(4, sig_end - sig_len)], path)
    return sig_end - sig_len, bytes(data[sig_end - sig_len:sig_end])


def parse_signature(data, path=None):
    # type: (Buffer, Optional[str]) -> ModuleSignature
    """Split ``data`` (an uncompressed module) into payload and PKCS#7.

    An unsigned module gives ``pkcs7=None``; a trailer that lies about its
    lengths or is not PKCS#7 raises ModSignError.
    """
    length, pkcs7 = split_signature(data, path)
    if pkcs7 is None:
        return ModuleSignature(bytes(data), None)
    return ModuleSignature(bytes(data[:length]), pkcs7)


def strip_signature(data, path=None):
    # type: (bytes, Optional[str]) -> bytes
    """The module without its signature (cut at the trailer, never with strip(1))."""
    return parse_signature(data, path).payload


def trailer(pkcs7):
    # type: (bytes) -> bytes
    """The bytes appended after a payload for a given PKCS#7 DER blob."""
    return pkcs7 + _INFO.pack(0, 0, PKEY_ID_PKCS7, 0, 0, b"\0\0\0", len(pkcs7)) + MAGIC


def append_signature(payload, pkcs7):
    # type: (bytes, bytes) -> bytes
    return payload + trailer(pkcs7)
