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

# (e_shoff, e_shentsize/e_shnum/e_shstrndx) offsets and formats, then sh_name/sh_offset/sh_size, per ELF class.
_LAYOUT = {
    1: (0x20, "I", 0x2E, 0, 16, 20, "I"),
    2: (0x28, "Q", 0x3A, 0, 24, 32, "Q"),
}


def _section(data, endian, layout, shoff, entsize, index):
    # type: (Buffer, str, tuple, int, int, int) -> tuple
    _a, _b, _c, name_at, offset_at, size_at, word = layout
    base = shoff + index * entsize
    name = struct.unpack_from(endian + "I", data, base + name_at)[0]
    offset = struct.unpack_from(endian + word, data, base + offset_at)[0]
    size = struct.unpack_from(endian + word, data, base + size_at)[0]
    return name, offset, size


def modinfo(payload, wanted=("name", "vermagic")):
    # type: (Buffer, Sequence[str]) -> Dict[str, str]
    """The first value of each ``wanted`` key in the module's ``.modinfo`` section (missing keys left out)."""
    try:
        if bytes(payload[:4]) != b"\x7fELF" or payload[4] not in _LAYOUT or payload[5] not in (1, 2):
            return {}
        layout = _LAYOUT[payload[4]]
        endian = "<" if payload[5] == 1 else ">"
        shoff = struct.unpack_from(endian + layout[1], payload, layout[0])[0]
        entsize, count, names_index = struct.unpack_from(endian + "HHH", payload, layout[2])
        _n, names_offset, names_size = _section(payload, endian, layout, shoff, entsize, names_index)
        for index in range(count):
            name, offset, size = _section(payload, endian, layout, shoff, entsize, index)
            if name < names_size and bytes(payload[names_offset + name:names_offset + name + 9]) == b".modinfo\0":
                return _fields(bytes(payload[offset:offset + size]), wanted)
    except (struct.error, IndexError, OverflowError, ValueError):
        pass
    return {}


def _fields(section, wanted):
    # type: (bytes, Sequence[str]) -> Dict[str, str]
    found = {}  # type: Dict[str, str]
    for item in section.split(b"\0"):
        key, sep, value = item.partition(b"=")
        text = key.decode("ascii", "replace")
        if sep and text in wanted and text not in found:
            found[text] = value.decode("utf-8", "backslashreplace")
    return found
