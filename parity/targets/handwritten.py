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

from ..convert import ConvertedModel, convert_net
from ..errors import ParityError, parsing, require_file
from .pairing import Pairing, pair_layers, read_entry, weight_values


def keras_arrays(model) -> dict[str, np.ndarray]:
    """Every weight of `model` under '<layer>/<variable>' (e.g. 'conv1_1/kernel'), in Keras layout."""
    return {f"{layer.name}/{v.name}": np.asarray(v.numpy()) for layer in model.layers for v in layer.weights}


def read_mapping(path: str | Path | None, names_only: bool = False) -> dict[str, str | dict]:
    """A mapping file; `names_only` (a TensorFlow graph's ops and scopes) refuses the {"weights", "output"}
    entries, which pair with Caffe layers."""
    if path is None:
        return {}
    p = require_file(path, "layer mapping")
    try:
        with parsing(p, "layer mapping"):
            mapping = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ParityError(f"cannot read the layer mapping ({exc})", p) from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, (str, dict))
                                                for k, v in mapping.items()):
        raise ParityError('the layer mapping must be a JSON object {"keras layer": "caffe layer"} (or '
                          '{"keras layer": {"weights": "caffe layer", "output": "caffe layer"}})', p)
    try:
        for key, value in mapping.items():
            read_entry(key, value)
    except ParityError as exc:
        raise ParityError(exc.message, p) from None
    entries = [k for k, v in mapping.items() if not isinstance(v, str)]
    if names_only and entries:
        raise ParityError(f"entry {entries[0]!r}: a TensorFlow graph's mapping pairs a Keras layer with an op or "
                          'scope name; {"weights": ..., "output": ...} entries are for Caffe references', p)
    return mapping


def mapping_names(mapping: dict) -> list[str]:
    """Every Caffe name a mapping's values give (weights and outputs alike)."""
    names = []
    for key, value in mapping.items():
        weights, output, _ = read_entry(key, value)
        names += [*(weights or ()), *([output] if output else [])]
    return names


def check_mapping(mapping: dict, model, sources: set[str] | None = None, source: str = "") -> None:
    """A mapping entry naming a Keras layer the model lacks, or a `source` layer (Caffe's) that does not
    exist, would pair nothing and be silently ignored: refuse it, all at once. Without `sources` only the
    Keras side is checked (a graph's ops and scopes are checked as they are paired)."""
    keras_names = {layer.name for layer in model.layers}
    problems = [f"Keras layer {k!r} is not in the model" for k in mapping if k not in keras_names]
    if sources is not None:
        problems += [f"{source} {v!r} does not exist"
                     for v in dict.fromkeys(mapping_names(mapping)) if v not in sources]
    if problems:
        raise ParityError("the layer mapping pairs nothing for: " + "; ".join(problems))


def caffe_arrays(reference: ConvertedModel) -> dict[str, dict[str, np.ndarray]]:
    """Caffe layer -> {Keras variable name: value}, from parity's own conversion (Keras layout)."""
    model = reference.model
    found = {}
    for caffe_name, keras_name in reference.keras_names.items():
        layer = model.get_layer(keras_name)
        if layer.weights:
            found[caffe_name] = {v.name: np.asarray(v.numpy()) for v in layer.weights}
    return found


def load_pairing(model, pairing: Pairing, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    """Assign each paired Keras layer its Caffe weights; every problem is named, all at once."""
    problems = []
    for pair in pairing.pairs.values():
        layer = model.get_layer(pair.keras)
        if not layer.weights:
            continue
        values = (weight_values(layer, list(pair.weights), arrays) if pair.weights
                  else "no Caffe layer gives its weights")
        if isinstance(values, str):
            problems.append(f"{pair.keras}.{values}")
        else:
            layer.set_weights(values)
    if problems:
        raise ParityError("cannot load Caffe's weights into the Keras model: " + "; ".join(problems))


def handwritten_converter(build_fn: Callable, mapping: dict, spec: str = "", mapping_path: str | Path | None = None,
                          save_mapping: str | Path | None = None) -> Callable:
    """A `convert(net, weights)` for check.prepare that returns the user's model, weights loaded and its
    layers paired with Caffe's (parity.targets.pairing). Caffe values with no Keras counterpart are left out of
    the comparison, each named in the report's notes."""

    def convert(net, weights) -> ConvertedModel:
        reference = convert_net(net, weights)
        model = build_fn()
        check_mapping(mapping, model, {layer.name for layer in net.layers}, "Caffe layer")
        arrays = caffe_arrays(reference)
        pairing, unpaired = pair_layers(net, model, arrays, mapping)
        if save_mapping is not None:
            write_mapping(save_mapping, pairing)
        load_pairing(model, pairing, arrays)
        outputs = {layer.name: layer.output for layer in model.layers}
        tensors = squeezed_alike(pairing.tensors(outputs), reference.caffe_shapes)
        shapes = {key: reference.caffe_shapes[key] for key in tensors if key in reference.caffe_shapes}
        converted = ConvertedModel(model, net, tensors, shapes, {}, reference.input_blobs)
        converted.checked = {"model": spec or getattr(build_fn, "__name__", "hand-written"),
                             "mapping": str(mapping_path) if mapping_path else None,
                             "pairing": pairing.summary(), "pairs": pairing.mapping()}
        converted.left_out = left_out_notes(reference, pairing, unpaired)
        return converted

    return convert


def squeezed_alike(tensors: dict, caffe_shapes: dict) -> dict:
    """Keras outputs that hold Caffe's values with size-1 axes dropped (GlobalAveragePooling2D's (N, C) for
    Caffe's global Pooling, N x C x 1 x 1) reshaped to Caffe's shape, channels-last, to be compared."""
    import keras

    from ..convert import keras_name_for
    from ..data.layout import keras_shape

    result = {}
    for key, tensor in tensors.items():
        want = caffe_shapes.get(key)
        got = tuple(tensor.shape[1:])
        if want is not None and None not in got:
            target = keras_shape(tuple(want))[1:]
            if got != target and [d for d in got if d != 1] == [d for d in target if d != 1]:
                tensor = keras.layers.Reshape(target, name=keras_name_for(f"parity_as_caffe_{key[0]}"))(tensor)
        result[key] = tensor
    return result


def left_out_notes(reference: ConvertedModel, pairing: Pairing, unpaired: list[tuple[str, str]]) -> dict:
    """Caffe value -> why no Keras tensor holds it (inside a fused Keras layer, or nothing pairs with it)."""
    notes = {}
    for key in reference.tensors:
        if key in pairing.hidden:
            notes[key] = f"inside Keras layer {pairing.hidden[key]!r}"
    for name, why in unpaired:
        notes[("", name)] = f"Keras layer {name!r} not compared: {why}"
    return notes


def write_mapping(path: str | Path, pairing: Pairing) -> None:
    from ..atomic import atomic_path

    with atomic_path(path) as staged:
        staged.write_text(json.dumps(pairing.mapping(), indent=2) + "\n", encoding="utf-8")
