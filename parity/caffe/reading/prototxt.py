"""Read a deploy .prototxt (current or legacy V1 form) into one in-memory form.

The result is a caffe_pb2.NetParameter holding only `layer` entries, as Caffe itself sees the net
after its upgrade step (upgrade_proto.cpp): V1 `layers { type: CONVOLUTION }` become
`layer { type: "Convolution" }`, and top-level `input:` / `input_dim:` / `input_shape` become one
Input layer named "input" at the front. Layers excluded from the TEST phase are dropped, as
Net::FilterNet does, so layer order and names match what pycaffe runs and dumps.
"""
from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import text_format

from ...errors import ParityError, require_file
from ..schema import caffe_pb2

# V1LayerParameter.LayerType enum name -> current type string (Caffe's UpgradeV1LayerType).
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
# V1 fields that only steer training (learning rates, decay, sharing): nothing to convert.
V1_TRAINING_ONLY = {"param", "blobs_lr", "weight_decay", "blob_share_mode"}
V1_HANDLED = {"name", "type", "bottom", "top", "blobs", "include", "exclude", "loss_weight"}


def read_prototxt(path: str | Path, phase: int = caffe_pb2.TEST) -> caffe_pb2.NetParameter:
    """Parse, upgrade and phase-filter a prototxt. Errors name the file and, where known, the line."""
    p = require_file(path, "prototxt")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # the line too, so an editor can find the stray byte
        line = exc.object.count(b"\n", 0, exc.start) + 1  # read() decodes the whole file: offsets are the file's
        raise ParityError(f"not a UTF-8 text file (byte {exc.start})", p, line) from None
    return parse_prototxt(text, p, phase)


def parse_prototxt(text: str, path: str | Path = "<prototxt>", phase: int = caffe_pb2.TEST) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    try:
        text_format.Merge(text, net)
    except text_format.ParseError as exc:
        raise ParityError(_parse_message(exc), path, exc.GetLine()) from None
    if net.layer and net.layers:
        raise ParityError("mixes `layer` and legacy `layers` entries; use one form", path)
    if net.layers:
        _upgrade_v1(net, text, path)
    _upgrade_inputs(net, path)
    _filter_phase(net, phase)
    if not net.layer:
        raise ParityError("no layers in prototxt", path)
    return net


_TOKENS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|#[^\n]*|[{}:]|[A-Za-z_]\w*|\S')


def layer_name_lines(text: str) -> list[tuple[str, int]]:
    """(name, line) of each `layer { name: ... }` / `layers { name: ... }` definition, in file order.

    A small scanner rather than a regex over the text, so that commented-out layers, the net's own
    `name:` and nested fields such as `param { name: ... }` are never mistaken for a layer's name.
    One pass: line numbers are counted on from the previous name found, never from the start.
    """
    found: list[tuple[str, int]] = []
    depth, block, previous = 0, None, []
    line, counted = 1, 0  # the line at offset `counted`
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token.startswith("#"):
            continue
        if token == "{":
            if depth == 0:
                block = previous[-1] if previous else None
            depth += 1
        elif token == "}":
            depth = max(depth - 1, 0)
        elif (depth == 1 and block in ("layer", "layers") and token[0] in "\"'"
              and previous[-2:] == ["name", ":"]):
            line += text.count("\n", counted, m.start())
            counted = m.start()
            found.append((token[1:-1], line))
        previous = (previous + [token])[-2:]
    return found


def line_of_layer(text: str, layer_name: str, occurrence: int = 1) -> int | None:
    """Line of the `occurrence`-th definition of layer `layer_name` in the prototxt, for error messages.

    One scan of the text per call: for many layers, scan once with layer_name_lines (as Net.line_of does)."""
    lines = [line for name, line in layer_name_lines(text) if name == layer_name]
    return lines[occurrence - 1] if len(lines) >= occurrence else None


def _parse_message(exc: text_format.ParseError) -> str:
    msg = str(exc)
    # The library prefixes "line:column : "; we report the line ourselves.
    m = re.match(r"^\d+:\d+\s*:\s*(.*)$", msg, re.S)
    detail = m.group(1) if m else msg
    col = exc.GetColumn()
    return f"syntax error (column {col}): {detail}" if col else f"syntax error: {detail}"


def _upgrade_v1(net: caffe_pb2.NetParameter, text: str, path) -> None:
    """Rewrite V1 `layers` entries as current `layer` entries, field by field."""
    new_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for old in net.layers:  # the text is scanned for a layer's line only to raise: once, not per layer
        if old.HasField("layer"):
            raise ParityError("V0 prototxt (layers { layer { ... } }) is not supported; upgrade it with "
                              "Caffe's upgrade_net_proto_text", path, line_of_layer(text, old.name))
        layer = net.layer.add()
        layer.name = old.name
        type_name = caffe_pb2.V1LayerParameter.LayerType.Name(old.type)
        layer.type = V1_TYPE_NAMES.get(type_name, type_name)
        layer.bottom.extend(old.bottom)
        layer.top.extend(old.top)
        layer.blobs.extend(old.blobs)
        layer.include.extend(old.include)
        layer.exclude.extend(old.exclude)
        layer.loss_weight.extend(old.loss_weight)
        for fd, value in old.ListFields():
            if fd.name in V1_HANDLED or fd.name in V1_TRAINING_ONLY:
                continue
            if fd.name not in new_fields:
                raise ParityError(f"V1 layer {old.name!r}: field {fd.name!r} has no current equivalent", path,
                                  line_of_layer(text, old.name))
            getattr(layer, fd.name).CopyFrom(value)
    del net.layers[:]


def _upgrade_inputs(net: caffe_pb2.NetParameter, path) -> None:
    """Turn top-level input / input_dim / input_shape into one Input layer named "input", first."""
    if not net.input:
        if net.input_dim or net.input_shape:
            raise ParityError("input_dim/input_shape given without `input:` names", path)
        return
    if net.input_shape:
        if len(net.input_shape) != len(net.input):
            raise ParityError(f"{len(net.input)} inputs but {len(net.input_shape)} input_shape entries", path)
        shapes = [list(s.dim) for s in net.input_shape]
    elif net.input_dim:
        if len(net.input_dim) != 4 * len(net.input):
            raise ParityError(f"{len(net.input)} inputs need {4 * len(net.input)} input_dim values, "
                              f"found {len(net.input_dim)}", path)
        shapes = [list(net.input_dim[4 * i:4 * i + 4]) for i in range(len(net.input))]
    else:
        raise ParityError(f"input {net.input[0]!r} has no shape (input_dim or input_shape)", path)
    layer = caffe_pb2.LayerParameter(name="input", type="Input", top=list(net.input))
    for dims in shapes:
        layer.input_param.shape.add().dim.extend(dims)
    existing = list(net.layer)
    del net.layer[:]
    net.layer.append(layer)
    net.layer.extend(existing)
    net.ClearField("input")
    net.ClearField("input_dim")
    net.ClearField("input_shape")


def _filter_phase(net: caffe_pb2.NetParameter, phase: int) -> None:
    """Keep the layers Caffe keeps for `phase` (Net::FilterNet as pycaffe's Net(file, phase) runs it)."""
    # pycaffe's Net(file, phase) sets the level to 0 and keeps the prototxt's stages (net.cpp).
    state = caffe_pb2.NetState(phase=phase, level=0, stage=list(net.state.stage))
    kept = [layer for layer in net.layer if _included(layer, state)]
    del net.layer[:]
    net.layer.extend(kept)


def _included(layer, state) -> bool:
    if layer.include:
        return any(_meets(state, rule) for rule in layer.include)
    return not any(_meets(state, rule) for rule in layer.exclude)


def _meets(state, rule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(stage not in state.stage for stage in rule.stage):
        return False
    return not any(stage in state.stage for stage in rule.not_stage)
