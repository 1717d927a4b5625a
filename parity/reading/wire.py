"""Protocol-buffer wire format, just enough to walk a caffemodel and to write one.

Why not the protobuf library: parsing a 575 MB VGG-19 caffemodel into message objects and copying
`repeated float` fields into numpy costs ~3 s and twice the file size in memory. Walking the wire
format over a memory map lets every packed float array be viewed in place (zero copy).
Facts: https://protobuf.dev/programming-guides/encoding/ (varints, tags = field << 3 | wire type).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes do not follow the protobuf wire format (truncated or corrupted file)."""


class Field(NamedTuple):
    number: int
    wire_type: int
    value: int  # the integer for VARINT/I64/I32 is not decoded here: see `start`
    start: int  # offset of the payload (for LEN: first byte of the data)
    end: int  # offset just past the payload


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint at `pos`; return (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError(f"varint runs past the end at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def iter_fields(buf, start: int, end: int) -> Iterator[Field]:
    """Yield every field of the message stored in buf[start:end], without decoding payloads."""
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        if wire_type == VARINT:
            value, nxt = read_varint(buf, pos, end)
            yield Field(number, wire_type, value, pos, nxt)
        elif wire_type == LEN:
            length, data = read_varint(buf, pos, end)
            nxt = data + length
            if nxt > end:
                raise WireError(f"field {number} at byte {pos} claims {length} bytes past the end")
            yield Field(number, wire_type, length, data, nxt)
        elif wire_type in (I64, I32):
            nxt = pos + (8 if wire_type == I64 else 4)
            if nxt > end:
                raise WireError(f"fixed-size field {number} at byte {pos} runs past the end")
            yield Field(number, wire_type, 0, pos, nxt)
        else:
            raise WireError(f"unknown wire type {wire_type} for field {number} at byte {pos}")
        pos = nxt


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer as a varint."""
    if value < 0:
        value += 1 << 64  # negative int64 values take ten bytes, two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def len_field(number: int, payload_size: int) -> bytes:
    """The header (tag and length) of a length-delimited field whose payload follows it."""
    return tag(number, LEN) + encode_varint(payload_size)
