"""Write a .caffemodel: the net's layer definitions with their blobs, as Caffe's Net::ToProto does.

Layer definitions are serialized by the protobuf library (small); blob data is streamed to disk as
packed little-endian floats straight from numpy, because building `repeated float` fields of 143 M
values through the protobuf library would take tens of seconds and gigabytes. Concatenating the two
is valid protobuf: a message is the concatenation of its fields.

The file appears atomically (written to a temporary name, then renamed), so a reader never sees
half a caffemodel, even when two pytest workers build the same fixture at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

import numpy as np

from ...atomic import atomic_path
from .caffemodel import BLOB_DATA, BLOB_SHAPE, LAYER_BLOBS, NET_LAYER, SHAPE_DIM
from .wire import encode_varint, len_field


def write_caffemodel(path: str | Path, net, blobs: Mapping[str, Sequence[np.ndarray]]) -> Path:
    """Write `net` (a caffe_pb2.NetParameter in the current `layer` form) with `blobs` to `path`."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        _write_net(out, net, blobs)
    return path


def _write_net(out: BinaryIO, net, blobs: Mapping[str, Sequence[np.ndarray]]) -> None:
    header = type(net)()
    header.CopyFrom(net)
    del header.layer[:]
    out.write(header.SerializeToString())
    for layer in net.layer:
        definition = type(layer)()
        definition.CopyFrom(layer)
        del definition.blobs[:]
        head = definition.SerializeToString()
        arrays = [np.asarray(a, dtype="<f4", order="C") for a in blobs.get(layer.name, ())]  # keeps 0-D blobs 0-D
        blob_heads = [_blob_head(a) for a in arrays]
        body = sum(len(len_field(LAYER_BLOBS, len(h) + a.nbytes)) + len(h) + a.nbytes
                   for h, a in zip(blob_heads, arrays))
        out.write(len_field(NET_LAYER, len(head) + body))
        out.write(head)
        for h, a in zip(blob_heads, arrays):
            out.write(len_field(LAYER_BLOBS, len(h) + a.nbytes))
            out.write(h)
            out.write(memoryview(a.reshape(-1)).cast("B"))


def _blob_head(array: np.ndarray) -> bytes:
    """BlobProto fields up to the data payload: shape, then the data field's tag and length."""
    dims = b"".join(encode_varint(int(d)) for d in array.shape)
    shape = len_field(SHAPE_DIM, len(dims)) + dims
    return len_field(BLOB_SHAPE, len(shape)) + shape + len_field(BLOB_DATA, array.nbytes)
