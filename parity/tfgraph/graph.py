"""A frozen TensorFlow graph (.pb) as parity reasons about it: ops in execution order, the layout of
each 4-D output, and the Const weights.

The ops become a parity.graph.Net (op = layer, input tensors = bottoms, output tensors = tops), so
the comparison's ancestry ("downstream of the first divergence") works as for a Caffe net. Const
nodes, their Identity readers and NoOps are weights or plumbing, not computation: they are left out.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..errors import ParityError, require_file
from ..graph import Layer, Net

PLUMBING = {"Const", "NoOp"}
RESIZE_OPS = {"ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic", "ResizeArea"}  # NHWC by definition
TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


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
    return graph_def


def producer(tensor: str) -> tuple[str, int]:
    """'scope/op:1' -> ('scope/op', 1); 'scope/op' -> ('scope/op', 0)."""
    name, _, index = tensor.partition(":")
    return name, int(index or 0)


def data_inputs(node) -> list[str]:
    """A node's data inputs as 'op:index' (control inputs, '^op', dropped)."""
    return [f"{producer(i)[0]}:{producer(i)[1]}" for i in node.input if not i.startswith("^")]


def execution_order(graph_def, path: Path | None = None) -> list:
    """The nodes in a topological order that keeps the file's order where it can (Kahn's algorithm)."""
    nodes = {n.name: n for n in graph_def.node}
    done: set[str] = set()
    order = []
    pending = list(graph_def.node)
    while pending:
        ready = [n for n in pending if all(producer(i.lstrip("^"))[0] in done for i in n.input)]
        if not ready:
            missing = sorted({producer(i.lstrip("^"))[0] for n in pending for i in n.input} - set(nodes))
            what = f"inputs from missing nodes: {', '.join(missing[:5])}" if missing else "a cycle"
            raise ParityError(f"the graph cannot be ordered ({what})", path)
        for n in ready:
            done.add(n.name)
        order.extend(ready)
        pending = [n for n in pending if n.name not in done]
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


def constants(graph_def, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Every Const node's value, by node name."""
    from tensorflow.python.framework import tensor_util

    with damaged_graph(path):
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
