"""A frozen TensorFlow graph (.pb) as parity reasons about it: ops in execution order, the layout of
each 4-D output, and the Const weights.

The ops become a parity.caffe.graph.Net (op = layer, input tensors = bottoms, output tensors = tops), so
the comparison's ancestry ("downstream of the first divergence") works as for a Caffe net. Const
nodes, their Identity readers and NoOps are weights or plumbing, not computation: they are left out.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np

from ..caffe.graph import Layer, Net
from ..errors import ParityError, require_file

PLUMBING = {"Const", "NoOp"}
RESIZE_OPS = {"ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic", "ResizeArea"}  # NHWC by definition
TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
# Bytes of Const values a graph may ask to be filled in: a Const storing fewer values than its shape holds
# is completed with its last value, by numpy here and by TensorFlow when it runs the graph.
FILLED_CONST_LIMIT = 1 << 30


def read_graph_def(path: str | Path):
    """The GraphDef in a frozen .pb, or one clear error naming the file."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    p = require_file(path, "graph")
    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(p.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ParityError(f"not a TensorFlow GraphDef (.pb): {exc}", p) from None
    if not graph_def.node:
        raise ParityError("the graph has no nodes (is this a frozen GraphDef .pb?)", p)
    with damaged_graph(p):
        check_constant_sizes(graph_def, p)
    return graph_def


def producer(tensor: str) -> tuple[str, int]:
    """'scope/op:1' -> ('scope/op', 1); 'scope/op' -> ('scope/op', 0)."""
    name, _, index = tensor.partition(":")
    return name, int(index or 0)


def data_inputs(node) -> list[str]:
    """A node's data inputs as 'op:index' (control inputs, '^op', dropped)."""
    return [f"{producer(i)[0]}:{producer(i)[1]}" for i in node.input if not i.startswith("^")]


def execution_order(graph_def, path: Path | None = None) -> list:
    """The nodes in a topological order that keeps the file's order where it can (Kahn's algorithm).

    In rounds: each round takes every node whose inputs (data and control) all ran in earlier rounds,
    in file order. Each node waits on a count of its unfinished inputs, decremented as they finish, so
    the whole costs time linear in the graph (plus sorting each round), where rescanning every pending
    node each round was quadratic for a deep graph. Names are held once, everything else by position.
    """
    nodes = list(graph_def.node)
    names = [node.name for node in nodes]
    first: dict[str, int] = {}  # name -> the position of its first node: a name's place in the tables below
    for position, name in enumerate(names):
        first.setdefault(name, position)
    waiting = [0] * len(nodes)  # per node: inputs (by name, each once) that have not run yet
    consumers: list[list[int] | None] = [None] * len(nodes)  # per name (first position): the nodes waiting on it
    for position, node in enumerate(nodes):
        deps = {producer(i.lstrip("^"))[0] for i in node.input}
        waiting[position] = len(deps)
        for dep in deps:
            at = first.get(dep)  # None: a missing node, never runs
            if at is not None:
                if consumers[at] is None:
                    consumers[at] = [position]
                else:
                    consumers[at].append(position)
    repeated: dict[str, list[int]] = {}  # a name held by more than one node (a malformed graph): all of them
    if len(first) < len(nodes):
        for position, name in enumerate(names):
            if first[name] != position:
                repeated.setdefault(name, [first[name]]).append(position)
    ran = bytearray(len(nodes))  # per name (first position): a node of that name ran
    taken = bytearray(len(nodes))  # per node: ran, or shares its name with a node that ran in an earlier round
    order = []
    ready = [position for position, count in enumerate(waiting) if count == 0]
    while ready:
        ready.sort()  # file order within the round
        finished = []
        for position in ready:
            if not taken[position]:
                taken[position] = 1
                order.append(nodes[position])
                at = first[names[position]]
                if not ran[at]:
                    ran[at] = 1
                    finished.append(at)
        upcoming = []
        for at in finished:
            for position in consumers[at] or ():
                waiting[position] -= 1
                if waiting[position] == 0:
                    upcoming.append(position)
        for at in finished:  # the name ran: its other nodes leave the queue without running
            for position in repeated.get(names[at], ()):
                taken[position] = 1
        ready = [position for position in upcoming if not taken[position]]
    if taken.count(0):  # never ready: waiting on a missing node, or on each other
        pending = [node for position, node in enumerate(nodes) if not taken[position]]
        missing = sorted({producer(i.lstrip("^"))[0] for n in pending for i in n.input} - first.keys())
        what = f"inputs from missing nodes: {', '.join(missing[:5])}" if missing else "a cycle"
        raise ParityError(f"the graph cannot be ordered ({what})", path)
    return order


def constant_names(graph_def) -> set[str]:
    """Const nodes and the Identity ops that only read one (frozen variables' '/read')."""
    consts = {n.name for n in graph_def.node if n.op == "Const"}
    return consts | {n.name for n in graph_def.node if n.op == "Identity" and n.input
                     and producer(n.input[0])[0] in consts}


def graph_net(graph_def, path: Path | None = None) -> Net:
    """The computing ops as a Net, in execution order; their tops are every output some op reads, and :0."""
    skip = constant_names(graph_def) | {n.name for n in graph_def.node if n.op in PLUMBING}
    read: dict[str, set[int]] = {}
    for node in graph_def.node:
        for tensor in data_inputs(node):
            name, index = producer(tensor)
            read.setdefault(name, set()).add(index)
    layers = []
    for node in execution_order(graph_def, path):
        if node.name in skip:
            continue
        bottoms = tuple(t for t in data_inputs(node) if producer(t)[0] not in skip)
        tops = tuple(f"{node.name}:{i}" for i in sorted(read.get(node.name, set()) | {0}))
        layers.append(Layer(len(layers), node.name, node.op, bottoms, tops, node))
    return Net.from_layers(path.stem if path else "graph", layers, path)


def output_layouts(net: Net, input_layout: str, consts: dict[str, np.ndarray]) -> dict[str, str]:
    """'NCHW' or 'NHWC' for each op output that has a layout, by tensor name.

    An op's `data_format` attribute decides; a Transpose by (0,2,3,1) or (0,3,1,2) says where it goes;
    resize ops are NHWC; Placeholders take `input_layout`; anything else inherits from its first input
    that has a layout (elementwise ops, Relu, Concat, Mean with keep_dims, ...).
    """
    layouts: dict[str, str] = {}
    for layer in net.layers:
        node = layer.param
        own = None
        if "data_format" in node.attr and node.attr["data_format"].s in (b"NCHW", b"NHWC"):
            own = node.attr["data_format"].s.decode()
        elif layer.type in RESIZE_OPS:
            own = "NHWC"
        elif layer.type == "Placeholder":
            own = input_layout
        elif layer.type == "Transpose":
            own = _transpose_layout(node, consts)
        if own is None:
            own = next((layouts[b] for b in layer.bottoms if b in layouts), None)
        if own is not None:
            for top in layer.tops:
                layouts[top] = own
    return layouts


def _transpose_layout(node, consts: dict[str, np.ndarray]) -> str | None:
    perm = consts.get(producer(node.input[1])[0]) if len(node.input) > 1 else None
    if perm is None:
        return None
    perm = tuple(int(v) for v in np.asarray(perm).reshape(-1))
    return {TO_NHWC: "NHWC", TO_NCHW: "NCHW"}.get(perm)


def check_constant_sizes(graph_def, path: str | Path | None = None) -> None:
    """Refuse Consts that claim more values than they store, past FILLED_CONST_LIMIT in all, before
    anything materialises them: one stored float with a huge tensor_shape is a 161-byte .pb that
    tf.make_ndarray, or TensorFlow running the graph, turns into gigabytes."""
    filled = 0
    for node in graph_def.node:
        if node.op != "Const" or "value" not in node.attr:
            continue
        tensor = node.attr["value"].tensor
        dims = tuple(d.size for d in tensor.tensor_shape.dim)
        if any(d < 0 for d in dims):
            raise ParityError(f"Const {node.name!r} has a dimension below 0 in its shape {dims}", path)
        claimed, stored = math.prod(dims), _stored_values(tensor)
        if claimed <= stored:
            continue  # no more than the file holds
        size = claimed * _itemsize(tensor.dtype)
        filled += size
        if filled > FILLED_CONST_LIMIT:
            raise ParityError(f"Const {node.name!r} claims shape {dims} ({size:,} bytes) from {stored} stored "
                              f"value(s); parity fills in at most {FILLED_CONST_LIMIT >> 30} GiB of such constants",
                              path)


def _stored_values(tensor) -> int:
    """How many values a TensorProto holds itself: its raw content, or its longest repeated `*_val` list."""
    if tensor.tensor_content:
        return len(tensor.tensor_content) // max(_itemsize(tensor.dtype), 1)
    return max((len(value) for fd, value in tensor.ListFields() if fd.name.endswith("_val")), default=0)


def _itemsize(dtype_enum: int) -> int:
    """Bytes per value of a TensorFlow dtype as numpy holds it (object references for strings)."""
    from tensorflow.python.framework import dtypes

    return np.dtype(dtypes.as_dtype(dtype_enum).as_numpy_dtype).itemsize


def constants(graph_def, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Every Const node's value, by node name (sizes checked first: see check_constant_sizes)."""
    from tensorflow.python.framework import tensor_util

    with damaged_graph(path):
        check_constant_sizes(graph_def, path)
        return {n.name: tensor_util.MakeNdarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}


def load_graph(path: str | Path) -> tuple[object, Net]:
    """(GraphDef, Net) for a frozen .pb."""
    graph_def = read_graph_def(path)
    with damaged_graph(path):
        return graph_def, graph_net(graph_def, Path(path))


@contextlib.contextmanager
def damaged_graph(path: str | Path):
    """A GraphDef that parses may still be nonsense (a bit flip in a dtype, a tensor's byte count);
    TensorFlow and protobuf then raise ValueError, TypeError and friends: one clear error instead."""
    try:
        yield
    except ParityError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, OverflowError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParityError(f"not a usable TensorFlow graph: {reason}", path) from None


def placeholders(net: Net) -> list[Layer]:
    return [layer for layer in net.layers if layer.type == "Placeholder"]


def placeholder_shape(layer: Layer, path: Path | None = None) -> tuple[int, ...]:
    """The Placeholder's declared shape, an unknown batch as 1."""
    dims = [d.size for d in layer.param.attr["shape"].shape.dim]
    if not dims or any(d < 0 for d in dims[1:]):
        raise ParityError(f"placeholder {layer.name!r} needs a fully known shape (besides the batch), has {dims}",
                          path)
    return (1, *dims[1:]) if dims[0] < 0 else tuple(dims)


def guess_input_layout(net: Net, layer: Layer) -> str:
    """NCHW or NHWC for a 4-D Placeholder: its first consumer with a data_format, else where its 3 channels are."""
    for other in net.layers:
        node = other.param
        if f"{layer.name}:0" in other.bottoms and "data_format" in node.attr and node.attr["data_format"].s:
            return node.attr["data_format"].s.decode()
    shape = placeholder_shape(layer, net.path)
    return "NCHW" if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3) else "NHWC"
