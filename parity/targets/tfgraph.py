"""Checking a hand-written Keras model against a frozen graph's dump, through parity's usual check.

The net comes from the dump's manifest (each entry records its op's inputs), so a check needs no
.pb; where the graph is at hand its sha256 is verified against the manifest. Each Keras layer is
paired with one graph op: the op named like the layer, or the last op (in execution order) of the
scope named like it (Keras `conv1_conv1_1` against `conv1/conv1_1/Relu`), or what a mapping file
{"keras layer": "graph op or scope"} says. Only paired ops are compared; the others' items say so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from ..caffe.graph import Layer, Net
from ..data.layout import caffe_shape
from ..data.reference import Reference
from ..errors import ParityError
from ..tfgraph.fixture import fixture_graph
from ..tfgraph.weights import normalized
from .base import Target, restricted


@dataclass
class GraphTarget(Target):
    """A frozen graph's dump checked against a hand-written Keras model: `graph` is the .pb where it is at
    hand (its sha256 verified, its Consts the weights unless `weights`, a file made by tf-import, is given)."""

    graph: Path | None = field(default=None, kw_only=True)
    keras_model: str = field(default="", kw_only=True)
    weights: Path | None = field(default=None, kw_only=True)
    mapping: dict | None = field(default=None, kw_only=True)

    supports_local: ClassVar[bool] = False
    no_local: ClassVar[str] = ("a TensorFlow-graph reference (always checked against a hand-written model whose "
                               "ops it cannot pair one by one)")

    def net(self) -> Net:
        net = manifest_net(self.references[0], self.name)
        return net.until(self.until) if self.until else net

    def sources(self) -> dict[str, Path]:
        return {"graph": self.graph} if self.graph else {}

    def read_weights(self):
        """The graph's Consts (None: the weights come from `weights`, a tf-import output)."""
        if self.weights is not None or self.graph is None:
            return None
        from ..tfgraph.graph import constants, read_graph_def

        return constants(read_graph_def(self.graph), self.graph)

    def converter(self) -> Callable:
        from ..user_modules import load_builder

        if not self.keras_model:
            raise ParityError("a TensorFlow-graph reference is checked against a hand-written Keras model: "
                              "give --keras-model MODULE:FN")
        if self.weights is None and self.graph is None:
            raise ParityError("give the Keras weights (--weights, a tf-import output) or the graph (--graph)")
        return graph_converter(load_builder(self.keras_model), self.weights, self.mapping or {}, self.graph)

    def with_keras_model(self, spec: str, mapping: str | Path | None = None,
                         save_mapping: str | Path | None = None) -> Target:
        """The graph checked against another Keras model (and mapping: op and scope names only)."""
        from .handwritten import read_mapping

        if save_mapping is not None:
            raise ParityError("--save-mapping writes a pairing with Caffe layers; a TensorFlow graph's is made "
                              "by name, or given with --mapping")
        return replace(self, keras_model=spec, mapping=read_mapping(mapping, names_only=True) if mapping
                       else self.mapping)

    def after_conversion(self, converted) -> Target:
        """Only the ops a Keras layer pairs with are compared."""
        return restricted(self, converted.tensors)


def manifest_net(ref: Reference, name: str) -> Net:
    """The dumped ops as a Net: placeholders first, then every entry in execution order with its inputs."""
    produced: set[str] = set(f"{blob}:0" for blob in ref.manifest["input"]["blobs"])
    layers = [Layer(i, blob, "Placeholder", (), (f"{blob}:0",), None)
              for i, blob in enumerate(ref.manifest["input"]["blobs"])]
    for raw in sorted(ref.manifest["entries"], key=lambda e: e["order"]):
        bottoms = tuple(b for b in raw.get("bottoms", []) if b in produced)
        layers.append(Layer(len(layers), raw["layer"], raw["type"], bottoms, (raw["top"],), None))
        produced.add(raw["top"])
    return Net.from_layers(name, layers, ref.dir / "manifest.json")


def pair_layers(model, net: Net, mapping: dict[str, str]) -> dict[str, Layer]:
    """Keras layer name -> the graph op it is compared with (see the module's docstring)."""
    from .handwritten import check_mapping

    check_mapping(mapping, model)
    by_name = {normalized(layer.name): layer for layer in net.layers}
    last_in_scope: dict[str, Layer] = {}
    for layer in net.layers:
        last_in_scope[normalized(layer.name.rpartition("/")[0])] = layer
    pairs = {}
    for keras_layer in model.layers:
        wanted = normalized(mapping.get(keras_layer.name, keras_layer.name))
        op = by_name.get(wanted) or last_in_scope.get(wanted)
        if op is not None:
            pairs[keras_layer.name] = op
        elif keras_layer.name in mapping:
            raise ParityError(f"the mapping pairs Keras layer {keras_layer.name!r} with {mapping[keras_layer.name]!r}, "
                              "which is no op or scope of the graph")
    return pairs


def graph_converter(build_fn: Callable, weights: Path | None, mapping: dict[str, str], graph: Path | None) -> Callable:
    """A `convert(net, consts)` for check.prepare: the user's model, weights in, layers paired with ops."""
    from ..convert import ConvertedModel

    def convert(net: Net, consts) -> ConvertedModel:
        model = build_fn()
        if weights is not None:
            _load_weights_file(model, weights)
        else:
            from ..tfgraph.weights import load_graph_weights

            load_graph_weights(model, consts, mapping, graph)
        pairs = pair_layers(model, net, mapping)
        tensors, shapes, inputs = {}, {}, []
        for keras_layer in model.layers:
            op = pairs.get(keras_layer.name)
            if op is None:
                continue
            key = (op.name, op.tops[0])
            if op.type == "Placeholder":
                inputs.append(op.name)
            tensors[key] = keras_layer.output
            shapes[key] = caffe_shape((1, *tuple(keras_layer.output.shape)[1:]))
        if len(inputs) != len(model.inputs):
            raise ParityError(f"the Keras model's inputs ({', '.join(t.name for t in model.inputs)}) must be named "
                              "like the graph's placeholders "
                              f"({', '.join(lay.name for lay in net.layers if lay.type == 'Placeholder')})")
        return ConvertedModel(model, net, tensors, shapes, {}, inputs)

    return convert


def _load_weights_file(model, path: Path) -> None:
    import zipfile

    from ..errors import require_file

    try:
        check_weights_file(model, require_file(path, "weights"))
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:  # a .keras is a zip: a damaged one says so
        raise ParityError(f"cannot load these weights into the Keras model ({str(exc).splitlines()[0]})",
                          path) from None


KERAS_WEIGHTS = "model.weights.h5"  # the weights inside a .keras archive


def check_weights_file(model, path: Path) -> None:
    """Refuse, naming the dataset, a weights file whose stored arrays do not fit `model`, before Keras
    reads a byte of them. Why: Keras reads a whole dataset before it compares shapes, and HDF5 keeps a
    dataset never written as its shape and a fill value, so a 15 KB file can claim terabytes.

    A .keras is a zip: only its model.weights.h5 is read, in place, metadata only."""
    import zipfile

    if path.name.endswith(".keras"):
        with zipfile.ZipFile(path) as archive, archive.open(KERAS_WEIGHTS) as member:
            _check_h5(model, member, path, f" in {KERAS_WEIGHTS}")
    elif path.name.endswith(".weights.h5"):
        _check_h5(model, path, path, "")
    else:
        raise ParityError("--weights takes a .keras or a .weights.h5 file (what `parity tf-import` writes)", path)


def _check_h5(model, source, path: Path, where: str) -> None:
    """Every dataset of the HDF5 file `source`: where Keras reads a variable, that variable's shape and
    dtype; elsewhere (an optimizer's state, say), a shape and dtype some variable has, or one value."""
    import h5py

    expected = _expected_datasets(model)
    fits = {(shape, dtype) for shape, dtype, _ in expected.values()} or {
        (tuple(v.shape), _described(v)[1]) for v in model.weights}
    found: list[tuple[str, object]] = []
    with h5py.File(source, "r") as fh:
        fh.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
        for name, dataset in found:
            problem = _dataset_problem(dataset, expected.get(name), fits)
            if problem:
                raise ParityError(f"dataset {name}{where} {problem}; refusing the file before Keras reads it", path)


def _dataset_problem(dataset, wanted: tuple | None, fits: set) -> str | None:
    """Why Keras must not read `dataset` (None when it may): its storage, or a shape or dtype unlike
    `wanted` (shape, dtype, variable), or, where no variable is read from it, unlike any in `fits`."""
    if dataset.is_virtual or dataset.external:
        return "keeps its data outside this file"
    shape = dataset.shape
    dtype = "bfloat16" if dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16") else dataset.dtype.name
    if shape is None:
        return "has no shape"
    nbytes = math.prod(shape) * dataset.dtype.itemsize
    if dataset.chunks and math.prod(dataset.chunks) * dataset.dtype.itemsize > max(nbytes, 1 << 20):
        return f"is stored in chunks of {dataset.chunks}, larger than the data itself"
    if wanted is not None and (shape, dtype) != wanted[:2]:
        return f"is {shape} {dtype}, but the model's variable {wanted[2]} is {wanted[0]} {wanted[1]}"
    if wanted is None and (shape, dtype) not in fits and math.prod(shape) > 1:
        return f"is {shape} {dtype}, which no variable of the model is"
    return None


def _expected_datasets(model) -> dict[str, tuple]:
    """Dataset path -> (shape, dtype, variable path) for every variable Keras would load into `model`,
    found by letting Keras' own saving walk the model into a store that writes nothing. Empty where
    that walk is not available (a Keras without these internals): then only the shapes are checked."""
    try:
        from keras.src.saving import saving_lib

        layout = _layout_store(saving_lib.H5IOStore)
        saving_lib._save_state(model, weights_store=layout, assets_store=None, inner_path="", visited_saveables=set())
    except (ImportError, AttributeError, TypeError):
        return {}
    return layout.found


def _layout_store(base: type):
    """A `base` (Keras' H5IOStore) that records what would be written, and where, instead of writing."""

    class Layout(base):
        def __init__(self):  # opens no file
            self.found, self.group = {}, "vars"

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self.group = f"{path}/vars" if path else "vars"
            return self

        def __setitem__(self, key, value):
            self.found[f"{self.group}/{key}"] = (*_described(value), getattr(value, "path", key))

    return Layout()


def _described(value) -> tuple[tuple[int, ...], str]:
    """(shape, dtype name) of what Keras saves: a variable, usually, read without copying its values."""
    import keras

    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return tuple(value.shape), keras.backend.standardize_dtype(value.dtype)
    array = np.asarray(value)
    return array.shape, keras.backend.standardize_dtype(array.dtype)


def graph_target_from_fixture(fixture, refs: list[Reference]) -> GraphTarget:
    """A tensorflow-graph fixture: its graph (built into the cache), references, hand-written Keras model."""
    return GraphTarget(fixture.name, refs, graph=fixture_graph(fixture), keras_model=fixture.keras_model,
                       mapping=fixture.description.get("mapping"), tolerances=fixture.description.get("tolerances"))
