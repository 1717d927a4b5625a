"""Read a .caffemodel into numpy arrays per layer, zero copy, without the protobuf library.

The file is memory-mapped and walked field by field (see `wire`). Each packed `data` array of a
BlobProto becomes an `np.frombuffer` view into the map, so loading a 575 MB VGG-19 costs the
time to find ~40 offsets, and pages are read from disk only when a weight is actually used.

Handled: current (`layer`, field 100) and V1 (`layers`, field 2) nets; BlobShape and the legacy
num/channels/height/width dims; packed and unpacked floats; `double_data` (converted to float32,
as Caffe's Blob::FromProto does). Unpacked floats (one tag per value) are found as runs and
copied out in one strided read, never as a Python object per value.

The arrays are views of the map, so a file truncated while parity holds them turns the next read of a
lost page into SIGBUS, which ends the process without a word. `CaffeWeights.check_unchanged` notices
a change of size or modification time since the mapping; the conversion calls it before it takes a
layer's weights. A truncation in the moment a page is being read cannot be caught.
"""
from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ParityError, require_file
from .wire import I32, I64, LEN, VARINT, WireError, fixed_values, iter_fields, read_varint

# Field numbers from Caffe's caffe.proto.
NET_LAYER, NET_V1_LAYERS = 100, 2
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7
V1_NAME, V1_TYPE, V1_BLOBS, V1_V0_LAYER = 4, 5, 6, 1
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1
MAX_BLOB_AXES = 32  # Caffe's kMaxBlobAxes (blob.hpp): Blob::Reshape refuses more


@dataclass
class CaffeWeights:
    """The learned blobs of a caffemodel: layer name -> list of arrays, in Caffe's layout."""

    path: Path
    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # layer name -> type as stored (V1: enum number)
    mapped: mmap.mmap | None = field(default=None, repr=False)  # the map the arrays view, if any
    stamp: tuple[int, int, int, int] | None = None  # (device, inode, size, mtime_ns) of the file when mapped

    def check_unchanged(self) -> None:
        """Raise a ParityError if the mapped file changed since it was read.

        Why: the arrays are views of the map. A shrunk file makes touching a lost page a SIGBUS (exit
        135, no message); a file rewritten in place at the same size silently feeds other weights.
        The size is the mapped file's own (even after a rename over its path); the modification time
        is compared while the path still names that file (an atomic replacement leaves the map intact).
        """
        if self.mapped is None or self.stamp is None:
            return
        device, inode, size, mtime = self.stamp
        now = self.mapped.size()
        if now != size:
            raise ParityError(f"caffemodel changed on disk while parity was using it (was {size} bytes, now "
                              f"{now}); run again once it is written completely", self.path)
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == (device, inode) and st.st_mtime_ns != mtime:
            raise ParityError("caffemodel was rewritten on disk while parity was using it (same size, new "
                              "modification time); run again once it is written completely", self.path)

    def __contains__(self, layer: str) -> bool:
        return layer in self.blobs

    def get(self, layer: str) -> list[np.ndarray]:
        return self.blobs.get(layer, [])


def read_caffemodel(path: str | Path) -> CaffeWeights:
    """Map `path` and return its blobs. Raises ParityError naming the file when it is not a caffemodel."""
    p = require_file(path, "caffemodel")
    if p.stat().st_size == 0:
        raise ParityError("caffemodel is empty", p)
    with open(p, "rb") as fh:
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        st = os.fstat(fh.fileno())
    weights = CaffeWeights(p, mapped=buf, stamp=(st.st_dev, st.st_ino, len(buf), st.st_mtime_ns))
    try:
        _read_net(buf, weights)
    except WireError as exc:
        raise ParityError(f"truncated or corrupted caffemodel ({exc})", p) from None
    except _BlobError as exc:
        raise ParityError(str(exc), p) from None
    if not weights.blobs and not weights.types:
        raise ParityError("no layers found: not a caffemodel (NetParameter)", p)
    return weights


class _BlobError(ValueError):
    pass


def _read_net(buf, weights: CaffeWeights) -> None:
    for f in iter_fields(buf, 0, len(buf)):
        if f.number == NET_LAYER and f.wire_type == LEN:
            _read_layer(buf, f.start, f.end, weights, LAYER_NAME, LAYER_TYPE, LAYER_BLOBS)
        elif f.number == NET_V1_LAYERS and f.wire_type == LEN:
            _read_layer(buf, f.start, f.end, weights, V1_NAME, V1_TYPE, V1_BLOBS)


def _read_layer(buf, start: int, end: int, weights: CaffeWeights, name_no: int, type_no: int, blobs_no: int) -> None:
    name, layer_type, blobs = None, "", []
    for f in iter_fields(buf, start, end):
        if f.number == name_no and f.wire_type == LEN:
            name = _text(buf, f)
        elif f.number == type_no:
            layer_type = _text(buf, f) if f.wire_type == LEN else str(f.value)
        elif f.number == blobs_no and f.wire_type == LEN:
            blobs.append(_read_blob(buf, f.start, f.end))
        elif name_no == V1_NAME and f.number == V1_V0_LAYER and f.wire_type == LEN:
            raise _BlobError("V0 caffemodel (layers { layer { ... } }) is not supported; "
                             "upgrade it with Caffe's upgrade_net_proto_binary")
    if name is None:
        raise _BlobError(f"a layer at byte {start} has no name")
    weights.types[name] = layer_type
    if blobs:
        weights.blobs[name] = blobs


def _text(buf, f) -> str:
    try:
        return bytes(buf[f.start:f.end]).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"string field at byte {f.start} is not UTF-8") from None


def _read_blob(buf, start: int, end: int) -> np.ndarray:
    shape: list[int] | None = None
    legacy: list[int | None] = [None, None, None, None]
    floats: list[np.ndarray] = []  # every occurrence of `data`, in file order (packed, or a run of unpacked values)
    doubles: list[np.ndarray] = []
    for f in iter_fields(buf, start, end, runs=True):
        if f.number == BLOB_SHAPE and f.wire_type == LEN:  # a repeated `shape` merges, as protobuf (so Caffe) merges it
            shape = (shape or []) + _read_shape(buf, f.start, f.end)
        elif f.number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and f.wire_type == VARINT:
            legacy[f.number - 1] = _int32(f.value)
        elif f.number == BLOB_DATA and f.wire_type == LEN:
            floats.append(_packed(buf, f, "<f4", 4))
        elif f.number == BLOB_DATA and f.wire_type == I32:
            floats.append(fixed_values(buf, f, "<f4"))
        elif f.number == BLOB_DOUBLE_DATA and f.wire_type == LEN:
            doubles.append(_packed(buf, f, "<f8", 8))
        elif f.number == BLOB_DOUBLE_DATA and f.wire_type == I64:
            doubles.append(fixed_values(buf, f, "<f8"))
    data = _choose_data(floats, doubles)
    if any(d is not None for d in legacy):  # Caffe's Blob::FromProto: legacy dims win when any is set
        shape = [d or 0 for d in legacy]
    elif shape is None:  # no shape at all is a 0-D blob: Caffe writes a scalar (PReLU channel_shared) that way
        shape = []
    if any(d < 0 for d in shape):
        raise _BlobError(f"blob at byte {start} has a negative dimension {tuple(shape)}")
    if len(shape) > MAX_BLOB_AXES:  # numpy would refuse it with a bare ValueError
        raise _BlobError(f"blob at byte {start} has {len(shape)} axes; Caffe allows at most {MAX_BLOB_AXES}")
    if math.prod(shape) != data.size:  # Python ints: no int64 wrap-around on corrupt dims
        raise _BlobError(f"blob at byte {start} has shape {tuple(shape)} but {data.size} values")
    if math.prod(d for d in shape if d) * data.itemsize > np.iinfo(np.intp).max:
        # A zero next to huge dimensions matches zero values, but numpy refuses the shape (ValueError).
        raise _BlobError(f"blob at byte {start} has shape {tuple(shape)}, too large for any array")
    return data.reshape(shape)


def _int32(value: int) -> int:
    """A varint holding an int32: negative values arrive as 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _choose_data(floats: list[np.ndarray], doubles: list[np.ndarray]) -> np.ndarray:
    """Caffe prefers double_data when present, else data. One packed run stays a zero-copy view."""
    if doubles:
        with np.errstate(over="ignore"):  # like Caffe's static_cast<float>: out-of-range doubles become +-inf,
            return np.concatenate(doubles).astype(np.float32)  # without a RuntimeWarning line on stderr
    if len(floats) == 1:
        return floats[0]
    return np.concatenate(floats) if floats else np.zeros(0, np.float32)


def _packed(buf, f, dtype: str, itemsize: int) -> np.ndarray:
    length = f.end - f.start
    if length % itemsize:
        raise WireError(f"packed array at byte {f.start} has {length} bytes, not a multiple of {itemsize}")
    return np.frombuffer(buf, dtype, length // itemsize, f.start)


def _read_shape(buf, start: int, end: int) -> list[int]:
    dims: list[int] = []
    for f in iter_fields(buf, start, end):
        if f.number != SHAPE_DIM:
            continue
        if f.wire_type == VARINT:
            dims.append(f.value)
        elif f.wire_type == LEN:  # packed
            pos = f.start
            while pos < f.end:
                value, pos = read_varint(buf, pos, f.end)
                dims.append(value)
    if any(d >= 1 << 62 for d in dims):
        raise WireError(f"negative dimension in blob shape at byte {start}")
    return dims
