"""Protocol-buffer wire format, just enough to walk a caffemodel and to write one.

Why not the protobuf library: parsing a 575 MB VGG-19 caffemodel into message objects and copying
`repeated float` fields into numpy costs ~3 s and twice the file size in memory. Walking the wire
format over a memory map lets every packed float array be viewed in place (zero copy).
Facts: https://protobuf.dev/programming-guides/encoding/ (varints, tags = field << 3 | wire type).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes do not follow the protobuf wire format (truncated or corrupted file)."""


class Field(NamedTuple):
    number: int
    wire_type: int
    value: int  # VARINT: the integer; LEN: the payload's length; I64/I32: how many values (see `iter_fields`)
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


def iter_fields(buf, start: int, end: int, runs: bool = False) -> Iterator[Field]:
    """Yield every field of the message stored in buf[start:end], without decoding payloads.

    With `runs`, back-to-back I32/I64 fields with the same tag (a `repeated float` written unpacked,
    one tag per value) come as ONE Field whose `value` counts them, read with `fixed_values`: a
    Python object per value would cost ~100 bytes for each 5 on disk.
    """
    pos = start
    while pos < end:
        tag_start = pos
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
            width = 8 if wire_type == I64 else 4
            nxt = pos + width
            if nxt > end:
                raise WireError(f"fixed-size field {number} at byte {pos} runs past the end")
            count = _run_length(buf, tag_start, pos - tag_start, nxt - tag_start, end) if runs else 1
            nxt += (count - 1) * (nxt - tag_start)
            yield Field(number, wire_type, count, pos, nxt)
        else:
            raise WireError(f"unknown wire type {wire_type} for field {number} at byte {pos}")
        pos = nxt


RUN_CHUNK = 1 << 16  # the most records compared at once: bounds the scan's temporaries to a few MB


def _run_length(buf, first: int, tag_len: int, stride: int, end: int) -> int:
    """How many `stride`-byte records, each opening with the tag bytes of the one at `first`, follow
    one another from `first` (at least that one). Compared by numpy in chunks that double from 16, so
    a lone value costs one small comparison and a run of n costs O(n) without a Python loop per value."""
    tag = np.frombuffer(buf, np.uint8, tag_len, first)
    count, limit, chunk = 1, (end - first) // stride, 16
    while count < limit:
        k = min(chunk, limit - count)
        rows = np.frombuffer(buf, np.uint8, k * stride, first + count * stride).reshape(k, stride)
        same = (rows[:, :tag_len] == tag).all(axis=1)
        if not same.all():
            return count + int(same.argmin())
        count += k
        chunk = min(2 * chunk, RUN_CHUNK)
    return count


def fixed_values(buf, f: Field, dtype: str) -> np.ndarray:
    """The value(s) of an I32/I64 field as a 1-D array: one value is a view into `buf`; a run (see
    `iter_fields`) is read through a strided view (values every tag + width bytes) into one copy."""
    width = 8 if f.wire_type == I64 else 4
    if f.value <= 1:
        return np.frombuffer(buf, dtype, 1, f.start)
    stride = (f.end - f.start - width) // (f.value - 1)
    return np.ndarray((f.value,), dtype, buffer=buf, offset=f.start, strides=(stride,)).copy()


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
