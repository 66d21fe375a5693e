# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A minimal DER (X.690) reader and writer: just what PKCS#7 and X.509 need here.

Private to skm.modsign. Reading is strict: definite lengths only, no trailing
garbage inside a constructed value, every length checked against the buffer.
Errors are ValueError; callers turn them into ModSignError with a file name.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import List, NamedTuple, Tuple

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
BIT_STRING = 0x03


def context(number, constructed=True):
    # type: (int, bool) -> int
    """Tag byte of a context-specific [number] tag."""
    return 0x80 | (0x20 if constructed else 0) | number


class TLV(NamedTuple):
    tag: int
    value: bytes   # the content octets
    raw: bytes     # the whole encoding: tag, length and content


def encode_length(length):
    # type: (int) -> bytes
    if length < 0x80:
        return bytes((length,))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def encode(tag, content):
    # type: (int, bytes) -> bytes
    return bytes((tag,)) + encode_length(len(content)) + content


def sequence(*items):
    # type: (bytes) -> bytes
    return encode(SEQUENCE, b"".join(items))


def set_of(*items):
    # type: (bytes) -> bytes
    """A SET OF; DER wants the members sorted by their encoding."""
    return encode(SET, b"".join(sorted(items)))


def integer(value):
    # type: (int) -> bytes
    length = max(1, (value.bit_length() + 8) // 8)
    return encode(INTEGER, value.to_bytes(length, "big", signed=True))


def octet_string(data):
    # type: (bytes) -> bytes
    return encode(OCTET_STRING, data)


def oid(dotted):
    # type: (str) -> bytes
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return encode(OID, bytes(body))


def decode_oid(content):
    # type: (bytes) -> str
    if not content:
        raise ValueError("empty OBJECT IDENTIFIER")
    first = content[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if content[-1] & 0x80:
        raise ValueError("truncated OBJECT IDENTIFIER")
    return ".".join(str(a) for a in arcs)


def read_tlv(data, offset=0):
    # type: (bytes, int) -> Tuple[TLV, int]
    """Read one TLV at ``offset``; return it and the offset just after it."""
    end = len(data)
    if offset + 2 > end:
        raise ValueError("truncated DER: no room for a tag and length at offset %d" % offset)
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used here (offset %d)" % offset)
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise ValueError("indefinite length is not DER (offset %d)" % offset)
    else:
        count = first & 0x7F
        if count > 4 or pos + count > end:
            raise ValueError("DER length field too long or truncated at offset %d" % offset)
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("DER value at offset %d claims %d bytes, only %d remain" % (offset, length, end - pos))
    return TLV(tag, bytes(data[pos:pos + length]), bytes(data[offset:pos + length])), pos + length


def read_one(data, expected_tag=None):
    # type: (bytes, int) -> TLV
    """Read exactly one TLV that fills ``data``."""
    item, pos = read_tlv(data)
    if pos != len(data):
        raise ValueError("%d bytes of trailing data after a DER value" % (len(data) - pos))
    if expected_tag is not None and item.tag != expected_tag:
        raise ValueError("expected DER tag 0x%02x, found 0x%02x" % (expected_tag, item.tag))
    return item


def children(content):
    # type: (bytes) -> List[TLV]
    """The TLVs that make up the content of a constructed value."""
    items = []
    pos = 0
    while pos < len(content):
        item, pos = read_tlv(content, pos)
        items.append(item)
    return items


def expect(item, tag, what):
    # type: (TLV, int, str) -> TLV
    if item.tag != tag:
        raise ValueError("%s: expected DER tag 0x%02x, found 0x%02x" % (what, tag, item.tag))
    return item


def decode_integer(content):
    # type: (bytes) -> int
    if not content:
        raise ValueError("empty INTEGER")
    return int.from_bytes(content, "big", signed=True)
