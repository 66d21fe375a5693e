# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A kernel module's ``.modinfo`` strings (``name=``, ``vermagic=``), as kmod's modinfo reads them.

Private to skm.modsign. Pure bytes work over the ELF section headers; what
cannot be read gives an empty answer, never an exception (the fields are for
reports and the controller's signing log, not for decisions).

    ELF header:     e_ident[EI_CLASS] 1 = 32-bit, 2 = 64-bit; e_ident[EI_DATA] 1 = little, 2 = big endian
                    e_shoff, e_shentsize, e_shnum, e_shstrndx locate the section headers and their names
    section header: sh_name (offset in the names section), sh_offset, sh_size
    .modinfo:       "key=value\\0" strings
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct
from typing import Dict, Sequence, Union

Buffer = Union[bytes, bytearray, memoryview]

# Per ELF class: where e_shoff is and its format, where e_shentsize/e_shnum/e_shstrndx are, the size of a
# section header and a format that reads (sh_name, sh_offset, sh_size) from one.
_LAYOUT = {
    1: (0x20, "I", 0x2E, 40, "I12xII16x"),
    2: (0x28, "Q", 0x3A, 64, "I20xQQ24x"),
}


def modinfo(payload, wanted=("name", "vermagic")):
    # type: (Buffer, Sequence[str]) -> Dict[str, str]
    """The first value of each ``wanted`` key in the module's ``.modinfo`` section (missing keys left out)."""
    try:
        if bytes(payload[:4]) != b"\x7fELF" or payload[4] not in _LAYOUT or payload[5] not in (1, 2):
            return {}
        shoff_at, shoff_format, counts_at, header_size, header_format = _LAYOUT[payload[4]]
        endian = "<" if payload[5] == 1 else ">"
        shoff = struct.unpack_from(endian + shoff_format, payload, shoff_at)[0]
        entsize, count, names_index = struct.unpack_from(endian + "HHH", payload, counts_at)
        if entsize != header_size or names_index >= count:
            return {}
        headers = list(struct.iter_unpack(endian + header_format, payload[shoff:shoff + count * entsize]))
        _n, names_offset, names_size = headers[names_index]
        target = bytes(payload[names_offset:names_offset + names_size]).find(b"\0.modinfo\0") + 1
        for name, offset, size in headers:
            if target and name == target:
                return _fields(bytes(payload[offset:offset + size]), wanted)
    except (struct.error, IndexError, OverflowError, ValueError):
        pass
    return {}


def _fields(section, wanted):
    # type: (bytes, Sequence[str]) -> Dict[str, str]
    found = {}  # type: Dict[str, str]
    strings = b"\0" + section
    for key in wanted:
        start = strings.find(b"\0" + key.encode("ascii") + b"=")
        if start >= 0:
            start += len(key) + 2
            end = strings.find(b"\0", start)
            found[key] = strings[start:end if end >= 0 else len(strings)].decode("utf-8", "backslashreplace")
    return found
