"""Checking a Keras model written by hand against Caffe: weights in by layer name, outputs out by name.

parity converts the Caffe net itself only to obtain Caffe's weights in Keras layout (kernels
transposed, InnerProduct rows reordered, BatchNorm's scale_factor folded); those are loaded into the
user's model by layer and variable name, and the user's layers are matched to Caffe layers by name,
or through a JSON mapping {"keras layer": "caffe layer"} where names differ. The result looks like a
converted model to the rest of the pipeline, so the same capture, comparison and report apply.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from .convert import ConvertedModel, convert_net, keras_name_for
from .errors import ParityError, parsing, require_file
from .user_modules import call_user_code, import_user_module


def keras_arrays(model) -> dict[str, np.ndarray]:
    """Every weight of `model` under '<layer>/<variable>' (e.g. 'conv1_1/kernel'), in Keras layout."""
    return {f"{layer.name}/{v.name}": np.asarray(v.numpy()) for layer in model.layers for v in layer.weights}


def load_builder(spec: str, model: bool = True) -> Callable:
    """'package.module:function' or 'path/to/file.py:function' -> that function, wrapped so that its
    failure, or (with `model`) a result that is not a keras.Model, is one clear error in the user's file."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ParityError(f"--keras-model wants 'package.module:build_fn' or 'file.py:build_fn', got {spec!r}")
    module = import_user_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ParityError(f"{module_name!r} has no function {attr!r}")

    def build(*args):
        import keras

        return call_user_code(f"{spec}()", fn, *args, returns=keras.Model if model else None)

    return build


def read_mapping(path: str | Path | None) -> dict[str, str]:
    if path is None:
        return {}
    p = require_file(path, "layer mapping")
    try:
        with parsing(p, "layer mapping"):
            mapping = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ParityError(f"cannot read the layer mapping ({exc})", p) from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ParityError('the layer mapping must be a JSON object {"keras layer": "caffe layer"}', p)
    return mapping


def check_mapping(mapping: dict[str, str], model, sources: set[str] | None = None, source: str = "") -> None:
    """A mapping entry naming a Keras layer the model lacks, or a `source` layer (Caffe's) that does not
    exist, would pair nothing and be silently ignored: refuse it, all at once. Without `sources` only the
    Keras side is checked (a graph's ops and scopes are checked as they are paired)."""
    keras_names = {layer.name for layer in model.layers}
    problems = [f"Keras layer {k!r} is not in the model" for k in mapping if k not in keras_names]
    problems += [f"{source} {v!r} does not exist" for v in mapping.values() if sources is not None and v not in sources]
    if problems:
        raise ParityError("the layer mapping pairs nothing for: " + "; ".join(problems))


def load_caffe_weights(model, arrays: dict[str, np.ndarray], mapping: dict[str, str]) -> None:
    """Assign Caffe's Keras-layout weights to `model` by name; every problem is named, all at once."""
    problems = []
    for layer in model.layers:
        caffe_name = keras_name_for(mapping.get(layer.name, layer.name))
        values = []
        for variable in layer.weights:
            key = f"{caffe_name}/{variable.name}"
            if key not in arrays:
                problems.append(f"{layer.name}.{variable.name}: no Caffe weight {key!r}")
            elif tuple(arrays[key].shape) != tuple(variable.shape):
                problems.append(f"{layer.name}.{variable.name}: shape {tuple(variable.shape)} but Caffe's "
                                f"{key} is {tuple(arrays[key].shape)}")
            else:
                values.append(arrays[key])
        if layer.weights and len(values) == len(layer.weights):
            layer.set_weights(values)
    if problems:
        raise ParityError("cannot load Caffe's weights into the Keras model: " + "; ".join(problems))


def handwritten_converter(build_fn: Callable, mapping: dict[str, str]) -> Callable:
    """A `convert(net, weights)` for check.prepare that returns the user's model, weights loaded."""

    def convert(net, weights) -> ConvertedModel:
        reference = convert_net(net, weights)
        model = build_fn()
        check_mapping(mapping, model, {layer.name for layer in net.layers}, "Caffe layer")
        load_caffe_weights(model, keras_arrays(reference.model), mapping)
        by_caffe = {keras_name_for(mapping.get(layer.name, layer.name)): layer for layer in model.layers}
        inputs = {layer.name for layer in net.layers if layer.type == "Input"}
        tensors = {}
        for caffe_layer, top in reference.caffe_shapes:
            if caffe_layer in inputs:  # the user's model inputs, in Caffe's input order
                tensors[(caffe_layer, top)] = model.inputs[reference.input_blobs.index(top)]
            elif (layer := by_caffe.get(keras_name_for(caffe_layer))) is not None:
                tensors[(caffe_layer, top)] = layer.output
        shapes = {key: reference.caffe_shapes[key] for key in tensors}
        return ConvertedModel(model, net, tensors, shapes, {}, reference.input_blobs)

    convert.supports_local = False  # the user's model is one piece: parity cannot rebuild it layer by layer
    return convert
