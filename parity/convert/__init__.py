"""Caffe net + weights -> functional channels-last keras.Model whose layers carry Caffe's names.

One module per Caffe layer family registers its converter by type name (see `registry`). This
module only walks the net in Caffe's order, hands each layer its bottoms, and keeps the map from
every (Caffe layer, top) to the Keras tensor holding it, which the capture step needs.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

from ..caffe.graph import Net
from ..caffe.reading.caffemodel import CaffeWeights
from ..check.divergence import keras_refusal
from ..errors import ParityError

# Importing the layer modules registers their converters.
from . import (  # noqa: E402,F401  # noqa: E402,F401  (Embed/BatchReindex/Parameter, LSTM/RNN, SPP/Im2col)
    convolution,
    detection,
    elementwise,
    indexing,
    inner_product,
    input,
    merge,
    normalization,
    pooling,
    priorbox,
    proposal,  # noqa: E402,F401  (Faster R-CNN's Proposal)
    recurrent,
    reduction,
    resampling,  # noqa: E402,F401  (the fork's Upsample, Resize, BilinearInterpolate, PixelShuffle, Pad)
    reshaping,
    windows,
)
from .context import Blob, Context, keras_axis, keras_name_for, keras_shape
from .registry import converter_for, override, register, supported_types
from .sizing import check_activations

__all__ = ["Blob", "ConvertedModel", "convert_net", "keras_axis", "keras_name_for", "keras_shape",
           "override", "register", "supported_types"]


@dataclass
class ConvertedModel:
    model: object  # keras.Model
    net: Net
    tensors: dict[tuple[str, str], object]  # (caffe layer, top) -> Keras tensor
    caffe_shapes: dict[tuple[str, str], tuple[int, ...]]
    keras_names: dict[str, str]  # caffe layer -> keras layer
    input_blobs: list[str]  # Caffe blob fed by each of model.inputs, in order
    checked: dict | None = None  # a hand-written model: what was checked (builder, mapping, pairing)
    left_out: dict | None = None  # a hand-written model: Caffe value -> why no Keras tensor holds it


# Layer types that only make sense while training or evaluating (data sources, losses, metrics).
# SSD's DetectionOutput is not among them: it is the detector's output.
NO_INFERENCE = {"Data", "ImageData", "HDF5Data", "HDF5Output", "MemoryData", "WindowData", "DummyData",
                "AnnotatedData", "VideoData", "Accuracy", "DetectionEvaluate", "Python"}


def has_inference_meaning(type_name: str) -> bool:
    return type_name not in NO_INFERENCE and not type_name.endswith("Loss")


def _why_not(type_name: str) -> str:
    """': the reason' for a type parity leaves unconverted on purpose (registry.not_convertible), else ''."""
    from .registry import why_not_convertible

    why = why_not_convertible(type_name)
    return f": not converted, because {why}" if why else ""


def check_supported(net: Net) -> None:
    """Name every layer that cannot be converted at once: types without an inference meaning, then
    types parity does not convert (yet), each with the layers that use it."""
    no_meaning: dict[str, list[str]] = defaultdict(list)
    missing: dict[str, list[str]] = defaultdict(list)
    for layer in net.layers:
        if not has_inference_meaning(layer.type):
            no_meaning[layer.type].append(layer.name)
        elif converter_for(layer.type) is None:
            missing[layer.type].append(layer.name)
    problems = []
    if no_meaning:
        problems.append("layers without an inference meaning: " + "; ".join(
            f"{t} ({', '.join(n)})" for t, n in no_meaning.items()) + " (use --until LAYER to stop before them)")
    if missing:
        problems.append("unsupported layer types: "
                        + "; ".join(f"{t} ({', '.join(n)})" + _why_not(t) for t, n in missing.items())
                        + f". Supported: {', '.join(supported_types())}")
    if problems:
        first = next(layer.name for layer in net.layers if layer.name in
                     {n for names in (*no_meaning.values(), *missing.values()) for n in names})
        raise ParityError(". ".join(problems), net.path, net.line_of(first))


@contextmanager
def recursion_room(depth: int):
    """Python's recursion limit raised, for the duration, to what a graph `depth` layers deep needs.

    Why: Keras walks a functional graph recursively while it builds the model, about three frames per
    layer, so a chain of a few thousand layers (a legitimate, if unusual, net) ended in RecursionError."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 4 * depth + 1000))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def convert_net(net: Net, weights: CaffeWeights | None) -> ConvertedModel:
    """Build the Keras model for `net`, loading `weights` (Caffe layout) into it."""
    import keras

    check_supported(net)
    check_activations(net)
    ctx = Context(net, weights)
    blobs: dict[str, Blob] = {}
    tensors, shapes, inputs, input_blobs, consumed = {}, {}, [], [], set()
    for layer in net.layers:
        bottoms = [blobs[b] for b in layer.bottoms]
        consumed.update(layer.bottoms)
        try:
            outputs = converter_for(layer.type)(layer, bottoms, ctx)
        except ParityError:
            raise
        except ValueError as exc:  # Keras refusing to build a layer: incompatible shapes, so a divergence here
            raise keras_refusal(layer, exc, net) from None
        if len(outputs) != len(layer.tops):  # what a converter returned, plain function or handler
            raise ParityError(f"layer {layer.name!r} has {len(layer.tops)} tops, but the {layer.type} converter "
                              f"returned {len(outputs)}", net.path, net.line_of(layer.name))
        for top, blob in zip(layer.tops, outputs):
            blobs[top] = blob
            tensors[(layer.name, top)] = blob.tensor
            shapes[(layer.name, top)] = blob.caffe_shape
            if layer.type == "Input":
                inputs.append(blob.tensor)
                input_blobs.append(top)
        for top in layer.tops:
            consumed.discard(top)  # an in-place top is a fresh value until something reads it
    if not inputs:
        raise ParityError("the net has no Input layer or input fields", net.path)
    finals = [blobs[name].tensor for name in dict.fromkeys(t for lay in net.layers for t in lay.tops)
              if name not in consumed]
    with recursion_room(len(net.layers)):
        model = keras.Model(inputs=inputs, outputs=finals, name=keras_name_for(net.name or "caffe_net"))
    return ConvertedModel(model, net, tensors, shapes, ctx.keras_names, input_blobs)
