"""`parity dump-tf`: run a frozen TensorFlow graph and save every op's float output as the reference.

The graph itself is the truth here (no Caffe involved): TensorFlow runs it, single-threaded, on the
preprocessed input, and every op that yields a float tensor is fetched in that one run. The folder
has the same manifest + .npy layout as a Caffe dump. 4-D outputs are saved as the graph holds them,
and each entry records its layout: NCHW ones are compared like Caffe's blobs (transposed to
channels-last), NHWC ones as they are.

A .pb is untrusted data, and a GraphDef is a program: TensorFlow would run a WriteFile, ReadFile, Save
or PrintV2 op reached through any control dependency. So before TensorFlow sees the graph, every op
type must be one of SAFE_OPS, ops that only compute their outputs from their inputs; anything else is
refused by name.
"""
from __future__ import annotations

import datetime
import fnmatch
import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_directory, sha256_file
from ..caffe.dump import sample_folder, written_by_parity
from ..data.layout import to_keras_layout
from ..data.reference import FORMAT, FORMAT_VERSION, safe_filename
from ..errors import ParityError
from .graph import PLUMBING, RESIZE_OPS, constants, damaged_graph, load_graph, output_layouts, placeholders

SOURCE = "tensorflow-graph"

# Op types that compute their outputs from their inputs and nothing else: no files, printing, variables,
# queues, random state, function calls or loops. What tf_saliency and ordinary inference graphs use.
SAFE_OPS = frozenset({
    "Placeholder", "PlaceholderWithDefault", "Identity", "IdentityN", "StopGradient", "Snapshot",
    "Conv2D", "Conv2DBackpropInput", "Conv3D", "DepthwiseConv2dNative", "BiasAdd", "BiasAddV1",
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3",
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Softplus",
    "Softsign", "Erf", "MaxPool", "MaxPoolV2", "AvgPool", "MaxPool3D", "AvgPool3D",
    "Add", "AddV2", "AddN", "Sub", "Mul", "RealDiv", "Div", "DivNoNan", "FloorDiv", "FloorMod", "Maximum",
    "Minimum", "Neg", "Abs", "Exp", "Log", "Log1p", "Pow", "Rsqrt", "Sqrt", "Square", "SquaredDifference",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "ClipByValue",
    "Mean", "Sum", "Max", "Min", "Prod", "ArgMax", "ArgMin", "All", "Any", "Cumsum", "TopKV2",
    "ConcatV2", "Concat", "Split", "SplitV", "Slice", "StridedSlice", "Reshape", "Transpose", "Pad", "PadV2",
    "MirrorPad", "Squeeze", "ExpandDims", "Shape", "ShapeN", "Size", "Rank", "Pack", "Unpack", "Tile",
    "Fill", "Range", "ZerosLike", "OnesLike", "Cast", "Select", "SelectV2", "GatherV2", "GatherNd",
    "OneHot", "ReverseV2", "BroadcastTo", "BroadcastArgs",
    "Greater", "GreaterEqual", "Less", "LessEqual", "Equal", "NotEqual", "LogicalAnd", "LogicalOr", "LogicalNot",
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "LRN", "DepthToSpace", "SpaceToDepth",
    "SpaceToBatchND", "BatchToSpaceND",
}) | PLUMBING | RESIZE_OPS
SHOWN_NAMES = 20  # op names listed in the refusal; the rest are counted


def check_side_effect_free(graph_def, where=None) -> None:
    """Refuse a graph holding any op outside SAFE_OPS (or one the graph's own function library defines,
    which could shadow a safe name), listing every such op type and its op names, escaped, in one line."""
    functions = {f.signature.name for f in graph_def.library.function}
    refused: dict[str, list[str]] = {}
    for node in graph_def.node:
        if node.op not in SAFE_OPS or node.op in functions:
            refused.setdefault(node.op, []).append(node.name)
    if refused:
        raise ParityError("the graph holds ops parity does not run, since they may have side effects (files, "
                          "printing, state) or are not plain inference ops: " + _listed(refused), where)


def _listed(refused: dict[str, list[str]]) -> str:
    """'WriteFile ('a', 'b'); PrintV2 ('p')', names as Python literals (control characters escaped)."""
    parts, shown = [], 0
    for op, names in refused.items():
        quoted = [_quoted(name) for name in names[:max(SHOWN_NAMES - shown, 1)]]
        shown += len(quoted)
        more = f" and {len(names) - len(quoted)} more" if len(names) > len(quoted) else ""
        parts.append(f"{_quoted(op)[1:-1]} ({', '.join(quoted)}{more})")
    return "; ".join(parts)


def _quoted(text: str, limit: int = 120) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit - 4] + "...'"


def run_graph(graph_def, feeds: dict[str, np.ndarray], fetches: list[str], where=None) -> dict[str, np.ndarray]:
    """Values of `fetches` (tensor names) with `feeds` (placeholder name -> array), in one Session run."""
    check_side_effect_free(graph_def, where)
    import tensorflow as tf

    from .._tf import quiet_native_stderr

    graph = tf.Graph()
    try:
        with damaged_graph(where), graph.as_default(), quiet_native_stderr():
            tf.compat.v1.import_graph_def(graph_def, name="")
            fetched = [graph.get_tensor_by_name(t) for t in fetches]
            fed = {graph.get_tensor_by_name(f"{name}:0"): array for name, array in feeds.items()}
    except tf.errors.OpError as exc:  # e.g. an op type TensorFlow does not know
        raise ParityError(f"not a usable TensorFlow graph: {_reason(exc)}", where) from None
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    try:
        with quiet_native_stderr(), tf.compat.v1.Session(graph=graph, config=config) as session:
            values = session.run(fetched, fed)
    except tf.errors.OpError as exc:
        raise ParityError(f"TensorFlow could not run the graph{_nchw_hint(exc)}: {_reason(exc)}", where) from None
    return dict(zip(fetches, values))


def _nchw_hint(exc) -> str:
    """TensorFlow's own CPU kernels refuse NCHW pooling and convolution; its oneDNN kernels run them, but TF
    turns oneDNN on by itself only on CPUs with AVX512-VNNI/BF16 or AMX: say how to turn it on."""
    from ..check.numerics import onednn

    if "only supports NHWC" not in str(exc) or onednn()["enabled"]:
        return ""
    return " (its CPU kernels run NCHW ops only with oneDNN, which is off here: set TF_ENABLE_ONEDNN_OPTS=1)"


def dump_graph(path: Path, input_name: str, samples: list, out: Path, input_layout: str,
               patterns: list[str] | None = None, log=print) -> list[Path]:
    """Run the graph on each sample (parity.caffe.dump.Sample, arrays in NCHW) and write one reference folder each.

    `patterns`: globs on op names; only matching ops are saved (default: every op with a float output).
    """
    import tensorflow as tf

    graph_def, net = load_graph(path)
    check_side_effect_free(graph_def, path)
    names = [p.name for p in placeholders(net)]
    if input_name not in names:
        raise ParityError(f"the graph has no placeholder {input_name!r} (placeholders: {', '.join(names) or 'none'})",
                          path)
    layouts = output_layouts(net, input_layout, constants(graph_def, path))
    float_ops = [(layer, top) for layer in net.layers if layer.type != "Placeholder"
                 for top in layer.tops[:1] if _is_float(layer.param)
                 and (not patterns or any(fnmatch.fnmatchcase(layer.name, p) for p in patterns))]
    if not float_ops:
        raise ParityError(f"no op with a float output matches {', '.join(patterns or [])}", path)
    inputs = dumped_inputs(net, {top for _, top in float_ops})
    model = {"graph": {"file": path.name, "sha256": sha256_file(path)}}
    written = []
    for sample in samples:
        feed = sample.arrays[input_name]
        fed = to_keras_layout(feed) if input_layout == "NHWC" else feed
        log(f"parity dump-tf: {sample.name}: running the graph ({len(float_ops)} float outputs) ...")
        values = run_graph(graph_def, {input_name: fed}, [top for _, top in float_ops], path)
        target = out / sample_folder(sample.name)
        with atomic_directory(target, written_by_parity) as stage:
            entries = []
            for layer, top in float_ops:
                array = np.ascontiguousarray(values[top], np.float32)
                file = f"{len(entries):03d}_{safe_filename(layer.name)}.npy"
                np.save(stage / file, array, allow_pickle=False)
                entry = {"order": layer.index, "layer": layer.name, "type": layer.type, "top": top, "file": file,
                         "shape": list(array.shape), "dtype": "float32", "bottoms": inputs[layer.name]}
                if array.ndim == 4 and top in layouts:
                    entry["layout"] = layouts[top]
                entries.append(entry)
            np.save(stage / "input.npy", np.ascontiguousarray(fed, np.float32), allow_pickle=False)
            blob = {"file": "input.npy", "shape": list(fed.shape), "sha256": sha256_file(stage / "input.npy")}
            if fed.ndim == 4:
                blob["layout"] = input_layout
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "source": SOURCE,
                "tensorflow": {"version": tf.__version__, "threads": 1},
                "created_by": f"parity {__version__} dump-tf", "created": datetime.date.today().isoformat(),
                "model": model, "data_format": input_layout,
                "input": {"name": sample.name, **sample.source, "blobs": {input_name: blob}},
                "granularity": "layer", "entries": entries}
            (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        log(f"parity dump-tf: {sample.name}: {len(entries)} entries -> {target}")
        written.append(target)
    return written


def dumped_inputs(net, dumped: set[str]) -> dict[str, list[str]]:
    """For each op, the nearest tensors upstream of it that the dump holds (or the placeholders).

    Recorded as each entry's "bottoms", they let `check` rebuild the ancestry ("downstream of the
    first divergence") from the manifest alone, even when only some ops were dumped.
    """
    reach: dict[str, set[str]] = {}  # tensor -> the dumped tensors (or placeholders) it is computed from
    result = {}
    for layer in net.layers:
        sources = set().union(*(reach.get(b, set()) for b in layer.bottoms)) if layer.bottoms else set()
        result[layer.name] = sorted(sources)
        for top in layer.tops:
            reach[top] = {top} if top in dumped or layer.type == "Placeholder" else sources
    return result


def _reason(exc) -> str:
    """The line of a TensorFlow run error that says what went wrong, with the op it happened at.

    TensorFlow's message is "Graph execution error:", where it was defined, then the reason; an NCHW
    pooling or convolution on a CPU without oneDNN ends up here, for one."""
    lines = [line.strip() for line in (exc.message or "").splitlines() if line.strip()]
    reasons = [line for line in lines
               if not line.startswith(("Graph execution error", "Detected at node", "Node:", "[["))]
    node = getattr(exc, "op", None)
    where = f" (at op {node.name})" if node is not None else ""
    return (reasons[-1] if reasons else type(exc).__name__) + where


def _is_float(node) -> bool:
    """Whether the op's first output is a float tensor (its T or dtype attribute, when it has one)."""
    from tensorflow.core.framework import types_pb2

    floats = {types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_DOUBLE, types_pb2.DT_BFLOAT16}
    for key in ("T", "dtype", "out_type"):
        if key in node.attr and node.attr[key].type:
            return node.attr[key].type in floats
    return False
