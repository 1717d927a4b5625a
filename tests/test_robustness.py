"""Robustness: damaged input only ever gives parity's one clear error, and nothing parity writes is half-written.

Property-based (hypothesis, derandomized so CI sees the same examples every run):

* REAL caffemodels (the fixtures' seeded weights, plus a legacy V1 transcoding and a double_data
  transcoding of them) truncated, bit-flipped, overwritten, and edited field by field at every
  nesting level of the protobuf wire structure (delete, duplicate, move a field; set a varint to an
  extreme; rewrite a packed shape; make a length claim more bytes than exist);
* fixture prototxts with lines deleted, duplicated and swapped, characters (or bytes) flipped, braces
  dropped, garbage tokens inserted and numbers made huge, negative or non-numeric.

Each must end in a ParityError naming the file (and, for a prototxt, the line where one line is to
blame) on one line, or
in a result that is consistent: blobs whose sizes match their declared shapes and agree with the
protobuf library's own reading of the same bytes (Caffe's reader). Never another exception, a hang
(SIGALRM guard per example) or a large allocation (tracemalloc peak per example).

Then the CLI end to end, in subprocesses; reports written atomically; and a check that never
writes to the reference folder.
"""
from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tracemalloc
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import parity
from parity import atomic
from parity.caffe.fixtures import fixtures_dir, load_fixture
from parity.caffe.graph import Net
from parity.caffe.reading import wire
from parity.caffe.reading.caffemodel import read_caffemodel
from parity.caffe.reading.prototxt import V1_TYPE_NAMES
from parity.caffe.schema import caffe_pb2 as pb
from parity.diagnose import report
from parity.errors import ParityError

REPO = Path(parity.__file__).resolve().parents[1]
FUZZ = settings(derandomize=True, deadline=None, database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fuzz(max_examples: int) -> settings:
    """Reproducible (derandomized, no example database), no per-example deadline: time_limit guards hangs."""
    return settings(FUZZ, max_examples=max_examples)


HANG_SECONDS = 5.0  # one example reads a few KB: anything near this is a hang
MAX_CAFFE_AXES = 32  # Caffe's kMaxBlobAxes (blob.hpp)


# -- guards ---------------------------------------------------------------------------------------
class Hang(Exception):
    """An example ran past HANG_SECONDS."""


@contextlib.contextmanager
def time_limit(seconds: float = HANG_SECONDS):
    """Raise Hang in the main thread after `seconds` (SIGALRM): a hang fails the example, not the run."""
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_clear_error(exc: ParityError, path: Path) -> None:
    """What the CLI prints: one line that starts with the file's name."""
    assert exc.path == str(path), (exc.path, str(exc))
    text = str(exc)
    assert text.startswith(str(path)), text
    assert "\n" not in text and "\r" not in text, repr(text)
    assert exc.message.strip(), repr(text)


# -- base files -----------------------------------------------------------------------------------
CAFFEMODEL_FIXTURES = ["tiny", "layers/conv_variants", "tiny_v1"]
PROTOTXT_FIXTURES = ["tiny", "tiny_v1", "layers/conv_variants", "layers/misc", "layers/reshaping",
                     "layers/batchnorm_scale", "layers/priorbox", "squeezenet"]


def v1_caffemodel(current: bytes) -> bytes:
    """A real caffemodel rewritten as old Caffe saved it: `layers` (V1) entries with enum types,
    4-D legacy num/channels/height/width dims and net-level `input`/`input_dim` instead of an Input layer."""
    net = pb.NetParameter()
    net.ParseFromString(current)
    enum_of = {new: old for old, new in V1_TYPE_NAMES.items() if new}
    v1 = pb.NetParameter(name=net.name)
    for layer in net.layer:
        if layer.type == "Input":
            v1.input.extend(layer.top)
            v1.input_dim.extend(layer.input_param.shape[0].dim)
            continue
        old = v1.layers.add(name=layer.name, bottom=layer.bottom, top=layer.top,
                            type=pb.V1LayerParameter.LayerType.Value(enum_of[layer.type]))
        for blob in layer.blobs:
            dims = [1] * (4 - len(blob.shape.dim)) + list(blob.shape.dim)
            old.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3], data=blob.data)
    return v1.SerializeToString()


def double_caffemodel(current: bytes) -> bytes:
    """The same net with every blob in `double_data` (which Caffe prefers over `data`)."""
    net = pb.NetParameter()
    net.ParseFromString(current)
    for layer in net.layer:
        for blob in layer.blobs:
            blob.double_data.extend(blob.data)
            blob.ClearField("data")
    return net.SerializeToString()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("robustness")


class Files(dict):
    """name -> contents; printed by name only (hypothesis prints its arguments with a failing example)."""

    def __repr__(self) -> str:
        return f"Files({sorted(self)})"


@pytest.fixture(scope="module")
def caffemodels() -> Files:
    """name -> bytes of a real caffemodel (built from the fixtures' recipes on first use)."""
    models = Files({name: load_fixture(name).weights_path(quiet=True).read_bytes() for name in CAFFEMODEL_FIXTURES})
    models["tiny_v1 (V1 layers, legacy dims)"] = v1_caffemodel(models["tiny_v1"])
    models["tiny (double_data)"] = double_caffemodel(models["tiny"])
    return models


@pytest.fixture(scope="module")
def prototxts() -> Files:
    return Files({name: (fixtures_dir() / name / "deploy.prototxt").read_text() for name in PROTOTXT_FIXTURES})


# -- the protobuf wire structure, as a tree that can be edited and written back ---------------------
@dataclass
class Node:
    """One field. LEN fields of a message type hold `children`; others keep their payload bytes."""

    number: int
    wire_type: int
    value: int = 0  # VARINT
    payload: bytes = b""  # LEN (when not a message), I32, I64
    children: list["Node"] | None = None
    message: object = None  # the descriptor of `children`'s message type
    claimed_length: int | None = None  # a lie told by the length prefix (set by a mutation)

    def clone(self) -> "Node":
        children = None if self.children is None else [c.clone() for c in self.children]
        return Node(self.number, self.wire_type, self.value, self.payload, children, self.message, self.claimed_length)

    def encode(self) -> bytes:
        head = wire.tag(self.number, self.wire_type)
        if self.wire_type == wire.VARINT:
            return head + wire.encode_varint(self.value)
        if self.wire_type == wire.LEN:
            body = self.payload if self.children is None else encode(self.children)
            length = len(body) if self.claimed_length is None else self.claimed_length
            return head + wire.encode_varint(length) + body
        return head + self.payload


def encode(nodes: list[Node]) -> bytes:
    return b"".join(n.encode() for n in nodes)


def decode(buf: bytes, message=pb.NetParameter.DESCRIPTOR) -> list[Node]:
    """Fields of `buf` as a tree, recursing into the fields the schema says are messages."""
    nodes = []
    for f in wire.iter_fields(buf, 0, len(buf)):
        fd = message.fields_by_number.get(f.number) if message is not None else None
        if f.wire_type == wire.VARINT:
            nodes.append(Node(f.number, f.wire_type, value=f.value))
        elif f.wire_type == wire.LEN and fd is not None and fd.message_type is not None:
            sub = fd.message_type
            nodes.append(Node(f.number, f.wire_type, children=decode(buf[f.start:f.end], sub), message=sub))
        else:
            nodes.append(Node(f.number, f.wire_type, payload=bytes(buf[f.start:f.end])))
    return nodes


def walk(nodes: list[Node], message=pb.NetParameter.DESCRIPTOR):
    """(siblings, index, node, the message `node` belongs to) for every node, depth first."""
    for i, node in enumerate(nodes):
        yield nodes, i, node, message
        if node.children is not None:
            yield from walk(node.children, node.message)


EXTREME_INTS = [0, 1, 2, 3, 31, 32, 33, 64, 65, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**61, 2**62 - 1,
                2**62, 2**63 - 1, 2**63, 2**64 - 1]
extreme_ints = st.one_of(st.sampled_from(EXTREME_INTS), st.integers(0, 2**64 - 1))
small_dims = st.one_of(st.sampled_from([0, 1, 1, 1, 2, 3, 8]), extreme_ints)
STRUCTURED = ["delete", "duplicate", "move", "set varint", "packed dims", "ones in dims", "empty blob",
              "lie about length"]
RAW = ["truncate", "flip bits", "overwrite bytes", "cut bytes", "insert bytes"]


def mutate_structure(draw, data: bytes) -> bytes:
    """One to three edits of whole fields, anywhere in the tree (net, layer, blob, shape, parameters)."""
    tree = decode(data)
    for _ in range(draw(st.integers(1, 3), label="edits")):
        kind = draw(st.sampled_from(STRUCTURED), label="edit")
        everything = list(walk(tree))
        if kind == "set varint":
            candidates = [t for t in everything if t[2].wire_type == wire.VARINT]
        elif kind in ("packed dims", "ones in dims"):
            candidates = [t for t in everything if t[3] is pb.BlobShape.DESCRIPTOR and t[2].wire_type == wire.LEN]
        elif kind == "empty blob":
            candidates = [t for t in everything if t[2].message is pb.BlobProto.DESCRIPTOR]
        elif kind == "lie about length":
            candidates = [t for t in everything if t[2].wire_type == wire.LEN]
        else:
            candidates = everything
        if not candidates:
            continue
        siblings, i, node, _ = candidates[draw(st.integers(0, len(candidates) - 1), label="field")]
        if kind == "delete":
            del siblings[i]
        elif kind == "duplicate":
            siblings.insert(i, node.clone())
        elif kind == "move":
            siblings.insert(draw(st.integers(0, len(siblings) - 1), label="to"), siblings.pop(i))
        elif kind == "set varint":
            node.value = draw(extreme_ints, label="value")
        elif kind == "packed dims":
            dims = draw(st.lists(small_dims, max_size=80), label="dims")
            node.payload = b"".join(wire.encode_varint(d) for d in dims)
        elif kind == "ones in dims":  # same number of values, more axes
            dims = packed_varints(node.payload)
            at = draw(st.integers(0, len(dims)), label="at")
            dims[at:at] = [1] * draw(st.integers(1, 70), label="ones")
            node.payload = b"".join(wire.encode_varint(d) for d in dims)
        elif kind == "empty blob":  # no values, and a shape with a zero among any other dims
            node.children = [c for c in node.children if c.number not in (5, 8)]  # BlobProto.data, double_data
            dims = draw(st.lists(small_dims, min_size=1, max_size=6), label="dims")
            dims.insert(draw(st.integers(0, len(dims)), label="zero at"), 0)
            packed = b"".join(wire.encode_varint(d) for d in dims)
            node.children.append(Node(7, wire.LEN, children=[Node(1, wire.LEN, payload=packed)],
                                      message=pb.BlobShape.DESCRIPTOR))
        else:
            true_length = len(node.payload if node.children is None else encode(node.children))
            node.claimed_length = draw(st.sampled_from([0, 1, max(true_length - 1, 0), true_length + 1,
                                                        2**31, 2**40, 2**62, 2**64 - 1]), label="claim")
    return encode(tree)


def packed_varints(payload: bytes) -> list[int]:
    values, pos = [], 0
    while pos < len(payload):
        value, pos = wire.read_varint(payload, pos, len(payload))
        values.append(value)
    return values


def mutate_raw(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(RAW), label="damage")
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1), label="keep")]
    out = bytearray(data)
    if kind == "flip bits":
        for _ in range(draw(st.integers(1, 8), label="flips")):
            bit = draw(st.integers(0, 8 * len(out) - 1), label="bit")
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    at = draw(st.integers(0, len(out) - 1), label="at")
    if kind == "cut bytes":
        del out[at: at + draw(st.integers(1, 64), label="length")]
    else:
        junk = draw(st.binary(min_size=1, max_size=16), label="bytes")
        out[at: at + (len(junk) if kind == "overwrite bytes" else 0)] = junk
    return bytes(out)


# -- what a correct reading is ---------------------------------------------------------------------
def caffe_blob(blob) -> tuple[tuple[int, ...], np.ndarray] | None:
    """Caffe's Blob::FromProto on a protobuf-parsed BlobProto: (shape, values), None if Caffe would refuse."""
    with np.errstate(over="ignore"):  # static_cast<float>: out-of-range doubles become +-inf
        values = np.array(blob.double_data if len(blob.double_data) else blob.data, np.float64).astype(np.float32)
    if any(blob.HasField(k) for k in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    elif blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    else:  # Caffe: 0-D, one value; parity is lenient and keeps any number of values as 1-D (see test_caffemodel)
        shape = (values.size,)
    if len(shape) > MAX_CAFFE_AXES or any(d < 0 for d in shape) or math.prod(shape) != values.size:
        return None
    return shape, values


def check_caffemodel(path: Path, data: bytes) -> None:
    """Read `path` (holding `data`): a clear error, or blobs that are what Caffe would load."""
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with time_limit(), warnings.catch_warnings():
            warnings.simplefilter("error")  # a stray warning is a second stderr line in the CLI
            weights = read_caffemodel(path)
    except ParityError as exc:
        assert_clear_error(exc, path)
        return
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # doubles become a float32 copy; everything else is a view of the file
        assert peak < (1 << 20) + 4 * len(data), f"peak allocation {peak} bytes for a {len(data)}-byte file"
    assert Path(weights.path) == path
    assert weights.types, "a successful reading has layers"
    assert set(weights.blobs) <= set(weights.types)
    values = 0
    for name, arrays in weights.blobs.items():
        assert arrays, name
        for a in arrays:
            assert isinstance(a, np.ndarray) and a.dtype == np.float32, (name, type(a))
            assert a.ndim <= MAX_CAFFE_AXES and a.size == math.prod(a.shape)
            values += a.size
    assert 4 * values <= len(data), "more values than the file has bytes for"
    # The protobuf library's reading (what Caffe sees), when it accepts the bytes too.
    msg = pb.NetParameter()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return
    layers = list(msg.layer) + list(msg.layers)
    names = [layer.name for layer in layers]
    assert set(weights.types) == set(names)
    for layer in layers:
        if names.count(layer.name) > 1:
            continue  # the last definition wins in both readers; not worth modelling here
        expected = [caffe_blob(b) for b in layer.blobs]
        got = weights.get(layer.name)
        assert len(got) == len(expected), layer.name
        assert None not in expected, f"parity accepts a blob of {layer.name!r} that Caffe refuses"
        for (shape, want), have in zip(expected, got):
            assert have.shape == shape, (layer.name, have.shape, shape)
            np.testing.assert_array_equal(have, want.reshape(shape))


# -- caffemodel properties ---------------------------------------------------------------------------
def test_tree_round_trip_and_v1_transcoding(caffemodels, workdir):
    """The fuzzers' own tools: the wire tree writes every base file back byte for byte, and the V1 and
    double_data transcodings read back as the original arrays (legacy 4-D shapes for V1)."""
    for name, data in caffemodels.items():
        assert encode(decode(data)) == data, name
    for name, variant, legacy in (("tiny_v1", "tiny_v1 (V1 layers, legacy dims)", True),
                                  ("tiny", "tiny (double_data)", False)):
        original = read_caffemodel(load_fixture(name).weights_path(quiet=True))
        path = workdir / "variant.caffemodel"
        path.write_bytes(caffemodels[variant])
        got = read_caffemodel(path)
        assert set(got.blobs) == set(original.blobs)
        for layer, arrays in original.blobs.items():
            for g, a in zip(got.blobs[layer], arrays, strict=True):
                assert g.shape == ((1,) * (4 - a.ndim) + a.shape if legacy else a.shape)
                np.testing.assert_array_equal(g.reshape(a.shape), a)


@fuzz(250)
@given(st.data())
def test_damaged_caffemodel_bytes(caffemodels, workdir, data):
    """Truncations, bit flips and overwritten, cut or inserted bytes of real caffemodels."""
    base = data.draw(st.sampled_from(sorted(caffemodels)), label="caffemodel")
    check_caffemodel(workdir / "damaged.caffemodel", mutate_raw(data.draw, caffemodels[base]))


@fuzz(250)
@given(st.data())
def test_edited_caffemodel_fields(caffemodels, workdir, data):
    """Whole fields deleted, duplicated, moved or rewritten at every nesting level, lengths fixed up
    (or, for "lie about length", not)."""
    base = data.draw(st.sampled_from(sorted(caffemodels)), label="caffemodel")
    check_caffemodel(workdir / "edited.caffemodel", mutate_structure(data.draw, caffemodels[base]))


def _one_blob(*fields: bytes) -> bytes:
    """A NetParameter with one layer "l" holding one BlobProto made of `fields` (encoded by hand)."""
    blob = b"".join(fields)
    layer = wire.len_field(1, 1) + b"l" + wire.len_field(7, len(blob)) + blob
    return wire.len_field(100, len(layer)) + layer


def _shape(*dims: int) -> bytes:
    packed = b"".join(wire.encode_varint(d) for d in dims)
    inner = wire.len_field(1, len(packed)) + packed
    return wire.len_field(7, len(inner)) + inner


@pytest.mark.parametrize("data, message", [
    # 70 axes of size 1 around one value: numpy cannot even hold it (found by the fuzzer)
    (_one_blob(_shape(*[1] * 70), wire.len_field(5, 4) + b"\0\0\x80?"), "axes"),
    (_one_blob(_shape(*[1] * 33), wire.len_field(5, 4) + b"\0\0\x80?"), "axes"),
    # no values, a zero dimension and dimensions whose product no array can have (found by the fuzzer)
    (_one_blob(_shape(0, 2**61, 2**61)), "too large"),
    (_one_blob(wire.tag(1, 0) + wire.encode_varint(0), wire.tag(2, 0) + wire.encode_varint(2**31 - 1),
               wire.tag(3, 0) + wire.encode_varint(2**31 - 1), wire.tag(4, 0) + wire.encode_varint(2**31 - 1)),
     "too large"),
    # a length claiming a terabyte
    (wire.len_field(100, 2**40) + b"\0" * 16, "claims 1099511627776 bytes"),
], ids=["70 axes", "33 axes", "zero and huge dims", "zero and huge legacy dims", "terabyte length"])
def test_impossible_blob_shapes_and_lengths(workdir, data, message):
    path = workdir / "impossible.caffemodel"
    path.write_bytes(data)
    with pytest.raises(ParityError, match=message) as info:
        with time_limit():
            read_caffemodel(path)
    assert_clear_error(info.value, path)


def test_repeated_shape_fields_merge_as_protobuf_merges_them(workdir):
    """Two `shape` fields in one blob: protobuf (so Caffe) merges them, dims appended (found by the fuzzer:
    parity kept only the last, and accepted a blob Caffe refuses)."""
    data = _one_blob(_shape(2), _shape(3), wire.len_field(5, 24) + np.arange(6, dtype="<f4").tobytes())
    msg = pb.NetParameter()
    msg.ParseFromString(data)
    assert list(msg.layer[0].blobs[0].shape.dim) == [2, 3]
    path = workdir / "merged.caffemodel"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_caffemodel(path).blobs["l"][0], np.arange(6).reshape(2, 3))
    path.write_bytes(_one_blob(_shape(2), _shape(3), wire.len_field(5, 12) + np.arange(3, dtype="<f4").tobytes()))
    with pytest.raises(ParityError, match=r"shape \(2, 3\) but 3 values"):
        read_caffemodel(path)


def test_out_of_range_doubles_become_inf_without_a_warning(workdir):
    """Caffe's static_cast<float> of 1e300 is inf; numpy says so with a RuntimeWarning, a stray stderr
    line in the CLI (found by the fuzzer)."""
    path = workdir / "doubles.caffemodel"
    path.write_bytes(_one_blob(_shape(2), wire.len_field(8, 16) + np.array([1e300, -1e300], "<f8").tobytes()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_caffemodel(path).blobs["l"][0]
    assert got.tolist() == [np.inf, -np.inf]


def test_32_axes_are_still_a_blob(workdir):
    """Caffe's limit is 32 axes: a blob with exactly 32 reads (the fix must not refuse it)."""
    path = workdir / "axes32.caffemodel"
    path.write_bytes(_one_blob(_shape(*[1] * 31, 2), wire.len_field(5, 8) + b"\0\0\x80?\0\0\0@"))
    got = read_caffemodel(path).blobs["l"][0]
    assert got.shape == (1,) * 31 + (2,) and got.ravel().tolist() == [1.0, 2.0]


# -- prototxt properties -------------------------------------------------------------------------------
GARBAGE = ["{", "}", ":", '"', "'", "#", "<", ">", "[", "]", ";", ",", "\\", "layer", "layers", "name:",
           'name: "x"', 'top: "ghost"', 'bottom: "ghost"', "layer {", "input:", "input_dim: 1", "\x00", "\ufeff",
           "\u00e9", "1e999", "nan", "-", "0x", "\t", "\n", 'type: "Input"', "include { phase: TRAIN }"]
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w.])")
NEW_NUMBERS = ["0", "-1", "-7", "99999999999999999999999", "4294967296", "2147483648", "1e999", "-1e999",
               "1e-999", "nan", "inf", "-inf", "abc", '"3"', "3.5", "0x10", "010", "1_0", "", "--1", "1e", "TRUE"]
LINE_EDITS = ["delete line", "duplicate line", "swap lines", "flip character", "drop brace", "insert garbage",
              "change number", "flip byte"]


def mutate_prototxt(draw, text: str) -> bytes:
    """One to three edits of the text; "flip byte" works on the UTF-8 bytes (so may leave invalid UTF-8)."""
    flip = None
    for _ in range(draw(st.integers(1, 3), label="edits")):
        kind = draw(st.sampled_from(LINE_EDITS), label="edit")
        lines = text.split("\n")
        if kind in ("delete line", "duplicate line", "swap lines"):
            i = draw(st.integers(0, len(lines) - 1), label="line")
            if kind == "delete line":
                del lines[i]
            elif kind == "duplicate line":
                lines.insert(i, lines[i])
            else:
                j = draw(st.integers(0, len(lines) - 1), label="other")
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == "flip character" and text:
            i = draw(st.integers(0, len(text) - 1), label="at")
            char = draw(st.one_of(st.sampled_from(list('{}:"#\\ \n0-.e')), st.characters(codec="utf-8")), label="char")
            text = text[:i] + char + text[i + 1:]
        elif kind == "drop brace":
            braces = [m.start() for m in re.finditer(r"[{}]", text)]
            if braces:
                i = braces[draw(st.integers(0, len(braces) - 1), label="brace")]
                text = text[:i] + text[i + 1:]
        elif kind == "insert garbage":
            i = draw(st.integers(0, len(text)), label="at")
            token = draw(st.one_of(st.sampled_from(GARBAGE), st.text(max_size=8)), label="garbage")
            text = text[:i] + " " + token + " " + text[i:]
        elif kind == "change number":
            numbers = list(NUMBER.finditer(text))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1), label="number")]
                text = text[:m.start()] + draw(st.sampled_from(NEW_NUMBERS), label="new") + text[m.end():]
        elif kind == "flip byte":
            flip = (draw(st.integers(0, 2**31), label="at"), draw(st.integers(1, 255), label="mask"))
    data = text.encode("utf-8")
    if flip and data:
        at = flip[0] % len(data)
        data = data[:at] + bytes([data[at] ^ flip[1]]) + data[at + 1:]
    return data


# The errors about the net as a whole, which no single line holds (see parity.caffe.reading.prototxt).
NET_LEVEL = re.compile(r"^(\d+ inputs? |input |input_dim/input_shape given|mixes `layer`|no layers in prototxt)")


def check_prototxt(path: Path, data: bytes) -> None:
    """Read `data` as the CLI does (prototxt reader, then the graph): a clear error, or a usable net."""
    path.write_bytes(data)
    try:
        with time_limit(), warnings.catch_warnings():
            warnings.simplefilter("error")
            net = Net.from_prototxt(path)
    except ParityError as exc:
        assert_clear_error(exc, path)
        if not NET_LEVEL.match(exc.message):  # a syntax error, a stray byte, a layer: there is a line to name
            assert exc.line is not None, str(exc)
        if exc.line is not None:
            assert 1 <= exc.line <= data.count(b"\n") + 1, (exc.line, str(exc))
        return
    assert net.layers, "a net without layers is an error"
    names = [layer.name for layer in net.layers]
    assert len(set(names)) == len(names)
    produced: set[str] = set()
    for layer in net.layers:
        assert isinstance(layer.param, pb.LayerParameter) and layer.type == layer.param.type
        assert set(layer.bottoms) <= produced, layer.name
        produced.update(layer.tops)


@fuzz(300)
@given(st.data())
def test_mutated_prototxt(prototxts, workdir, data):
    base = data.draw(st.sampled_from(sorted(prototxts)), label="prototxt")
    check_prototxt(workdir / "mutated.prototxt", mutate_prototxt(data.draw, prototxts[base]))


@pytest.mark.parametrize("text", [
    'layer { name: "\\377" type: "Input" top: "d" }',  # a string escape that is not UTF-8
    'layer { name: "a" type: "Input" top: "d" input_param { shape { dim: 99999999999999999999999 } } }',
    'layer { name: "a" type: "Convolution" convolution_param { num_output: -1 } }',
    'layer { name: "a" ' + "{" * 2000,  # deep nesting
    'layers { name: "a" type: 999 }',
    "\ufefflayer { name: \"a\" type: \"Input\" top: \"d\" }",  # a byte-order mark
    'layer { name: "a" type: "Input" top: "d" }\n\x00',
    'layers { name: "a" type: CONVOLUTION }\nlayer { name: "b" type: "ReLU" }',
])
def test_hand_picked_bad_prototxts(workdir, text):
    check_prototxt(workdir / "picked.prototxt", text.encode("utf-8"))


def test_stray_byte_names_its_line(workdir):
    """A prototxt byte that is not UTF-8 is located by line, as every other prototxt error is (the
    fuzzer's "flip byte" edit found it named only the byte offset)."""
    path = workdir / "latin1.prototxt"
    path.write_bytes(b"# comment\n" * 1000 + b'layer { name: "caf\xe9" type: "ReLU" }\n')
    with pytest.raises(ParityError) as info:
        Net.from_prototxt(path)
    assert_clear_error(info.value, path)
    assert info.value.line == 1001 and str(info.value).startswith(f"{path}:1001: not a UTF-8 text file")


# -- the CLI, end to end ---------------------------------------------------------------------------------
def test_cli_bad_input_end_to_end(caffemodels, workdir):
    """`python -m parity` in its own process: exit 2, one stderr line naming the file (and line), no
    traceback, and no output file (nor its temporary sibling) left behind. Both run at once (each pays
    for importing TensorFlow); the terabyte length and the other damage are read in-process above."""
    tiny = load_fixture("tiny")
    lines = tiny.prototxt.read_text().split("\n")
    broken = next(i for i, line in enumerate(lines) if "convolution_param {" in line)
    lines[broken] = lines[broken].replace("convolution_param {", "convolution_param ")  # a dropped brace
    bad_prototxt = workdir / "bad.prototxt"
    bad_prototxt.write_text("\n".join(lines))
    tree = decode(caffemodels["tiny"])
    conv1 = next(n for n in tree
                 if n.number == 100 and any(c.number == 1 and c.payload == b"conv1" for c in n.children))
    shape = next(c for c in conv1.children if c.number == 7).children[0]  # BlobShape of conv1's weights
    shape.children[0].payload = b"".join(wire.encode_varint(d) for d in [1] * 60 + [8, 3, 3, 3])  # 64 axes
    axes = workdir / "axes.caffemodel"
    axes.write_bytes(encode(tree))
    outs = {key: workdir / f"out-{key}" for key in ("prototxt", "axes")}
    for out in outs.values():
        out.mkdir()
    cases = {
        "prototxt": (["convert", bad_prototxt, tiny.weights_path(quiet=True), "-o", outs["prototxt"] / "m.keras"],
                     f"{bad_prototxt}:{broken + 1}: syntax error"),
        "axes": (["check", tiny.prototxt, axes, "--blobs", tiny.references / "chelsea", "--allow-mismatch",
                  "--json", outs["axes"] / "report.json", "-q"], f"{axes}: blob at byte"),  # -q: no progress lines
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    procs = {key: subprocess.Popen([sys.executable, "-m", "parity", *map(str, argv)], cwd=REPO, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for key, (argv, _) in cases.items()}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (key, err)
        assert "Traceback" not in err and "Traceback" not in out, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("parity: error: " + cases[key][1]), (key, err)
        assert list(outs[key].iterdir()) == [], (key, list(outs[key].iterdir()))


# -- reports are written atomically ------------------------------------------------------------------------
def test_failed_report_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    report.write_json(path, {"status": "PASS", "layers": []})
    old = path.read_bytes()
    # json refuses NaN (allow_nan=False) only when it gets there: by then part of the file is written
    with pytest.raises(ValueError):
        report.write_json(path, {"layers": list(range(5000)), "status": float("nan")})
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]

    def disk_full(payload, fh, **kwargs):
        fh.write('{"half": ')
        fh.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.json, "dump", disk_full)
    with pytest.raises(OSError):
        report.write_json(path, {"status": "FAIL"})
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    monkeypatch.undo()
    report.write_json(path, {"status": "FAIL"})  # and a write that succeeds replaces it whole
    assert json.loads(path.read_text()) == {"status": "FAIL"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_atomic_path_failure_in_a_fresh_folder_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "model.keras"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target, ".keras") as tmp:
            tmp.write_bytes(b"half a model")
            raise RuntimeError("writer crashed")
    assert not target.exists() and list(target.parent.iterdir()) == []


# -- a check never writes to the reference folder -----------------------------------------------------------
def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder below `folder`: size, mtime and sha256 (files), mtime (folders)."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns,
                                               hashlib.sha256(p.read_bytes()).hexdigest())
            if p.is_file() else ("folder", p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def tempfile_in(folder: Path) -> None:
    import tempfile

    fd, name = tempfile.mkstemp(dir=folder)  # what atomic_path does beside its target
    os.close(fd)
    os.unlink(name)


def test_check_never_writes_to_reference_blobs(monkeypatch):
    from parity.check.compare import PASS, Tolerance
    from parity.check.pipeline import DEFAULT_ATOL, DEFAULT_RTOL, run_target
    from parity.targets import from_fixture

    target = from_fixture("tiny")
    folder = load_fixture("tiny").references.resolve()
    before = snapshot(folder)
    writes: list[str] = []

    def inside(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(folder)
        except (TypeError, ValueError):
            return False  # a file descriptor or a file object: not a path

    def refuse(what: str, path) -> None:
        writes.append(f"{what} {path}")
        raise PermissionError(13, "read-only reference folder (test)", str(path))

    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            refuse("open", file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            refuse("os.open", path)
        return real_os_open(path, flags, *args, **kwargs)

    def guard(owner, name, path_arg=0):
        real = getattr(owner, name)

        def guarded(*args, **kwargs):
            if any(inside(a) for a in args[: path_arg + 1] if isinstance(a, (str, os.PathLike))):
                refuse(name, args[path_arg])
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, guarded)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    for owner, name, arg in ((np, "save", 0), (np, "savez", 0), (np, "savez_compressed", 0), (os, "replace", 1),
                             (os, "rename", 1), (os, "remove", 0), (os, "unlink", 0), (os, "mkdir", 0),
                             (os, "rmdir", 0), (os, "utime", 0), (os, "chmod", 0), (Path, "write_text", 0),
                             (Path, "write_bytes", 0), (Path, "touch", 0), (Path, "unlink", 0), (Path, "mkdir", 0)):
        guard(owner, name, arg)

    reports = run_target(target, Tolerance(DEFAULT_ATOL, DEFAULT_RTOL))
    assert writes == []
    # the guard itself works: each way of writing there is refused, and nothing is written
    victim = folder / "chelsea" / "manifest.json"
    for attempt in (lambda: open(victim, "a"), lambda: victim.write_text("{}"), lambda: np.save(victim, np.zeros(1)),
                    lambda: os.replace(victim, victim), lambda: tempfile_in(folder)):
        with pytest.raises(PermissionError):
            attempt()
    monkeypatch.undo()
    assert len(writes) == 5
    assert [r.status for r in reports] == [PASS] * len(target.references)
    assert snapshot(folder) == before
