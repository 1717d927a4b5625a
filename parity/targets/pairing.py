"""Pairing a hand-written Keras model's layers with the Caffe layers they port.

People write `keras.applications.VGG19` or their own model, not parity's conversion: names differ
(`block1_conv1` for `conv1_1`), activations are fused into the layer before them (Conv2D(relu) is
Caffe's Convolution + in-place ReLU), BatchNorm + Scale are one BatchNormalization, and padding is a
layer of its own. Pairing walks the Keras graph from its inputs and, for each layer, looks among the
Caffe layers that read the same Caffe values for one of a matching type (and, with weights, shapes):

- a mapping entry decides first; then an equal name; then the graph position (type and shapes);
- a layer with weights takes them from its Caffe layer (a folded BatchNormalization from the BatchNorm
  and the Scale after it), and its output is compared with the end of what it covers: its fused
  activation, and Caffe's layers that are identities at inference (Dropout) after it;
- layers with no Caffe counterpart that do not change values (ZeroPadding2D, Flatten before an
  InnerProduct, Dropout) pass their Caffe value through, and are not compared themselves.

Every pair says how it was made, so the pairing can be printed and saved as a mapping. This module
needs no TensorFlow of its own: it reads the Keras model's layers, the Net and NumPy arrays.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np

from ..caffe.graph import Layer, Net
from ..errors import ParityError

Key = tuple[str, str]  # (caffe layer, top): one value of a Caffe blob

# Keras layer class -> the Caffe types it ports. Weighted ones take weights from the Caffe layer.
WEIGHTED = {"Conv2D": {"Convolution"}, "DepthwiseConv2D": {"Convolution"}, "Conv1D": {"Convolution"},
            "Conv2DTranspose": {"Deconvolution"}, "Dense": {"InnerProduct"},
            "BatchNormalization": {"BatchNorm"}, "Embedding": {"Embed"}}
WEIGHTLESS = {"MaxPooling2D": {"Pooling"}, "AveragePooling2D": {"Pooling"}, "GlobalAveragePooling2D": {"Pooling"},
              "GlobalMaxPooling2D": {"Pooling"}, "ReLU": {"ReLU"}, "LeakyReLU": {"ReLU"}, "PReLU": {"PReLU"},
              "ELU": {"ELU"}, "Softmax": {"Softmax"}, "Add": {"Eltwise"}, "Multiply": {"Eltwise"},
              "Maximum": {"Eltwise"}, "Subtract": {"Eltwise"}, "Concatenate": {"Concat"}, "Flatten": {"Flatten"},
              "Reshape": {"Reshape", "Flatten"}, "Dropout": {"Dropout"}, "Permute": {"Permute"},
              "UpSampling2D": {"Upsample", "Interp"}, "Cropping2D": {"Crop"}}
# Keras activation name -> the Caffe type that computes it (an `Activation` layer or a fused one).
ACTIVATIONS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "TanH", "softmax": "Softmax", "elu": "ELU",
               "softplus": "Softplus", "abs": "AbsVal", "exp": "Exp", "log": "Log", "swish": "Swish",
               "silu": "Swish", "relu6": "ReLU6", "hard_swish": "HardSwish", "hard_sigmoid": "HardSigmoid"}
# Keras layers that may have no Caffe counterpart without changing any value parity compares.
PASS_THROUGH = {"ZeroPadding2D", "Flatten", "Reshape", "Dropout", "InputLayer", "Identity", "SpatialDropout2D",
                "GaussianNoise", "GaussianDropout", "ActivityRegularization"}
# Caffe layers that are identities at inference: the value after them is the value before.
IDENTITIES = {"Dropout", "Split"}


@dataclass(frozen=True)
class Pair:
    """One Keras layer and the Caffe layers it ports."""

    keras: str
    weights: tuple[str, ...]  # the Caffe layers whose weights it takes (BatchNorm, Scale: two)
    covers: tuple[str, ...]  # every Caffe layer whose work it does, in order (its fused activation included)
    output: Key | None  # the Caffe value its output is compared with; None: not comparable (a pass-through)
    how: str  # "mapping", "name", "position" or "pass-through"

    def as_mapping(self) -> str | dict:
        """This pair as a mapping entry: a name where one Caffe layer says it all."""
        if self.output is None:
            return {"output": None}
        if self.how != "mapping" and self.covers and (not self.weights or self.covers[0] == self.weights[0]):
            return self.covers[0]  # its output follows from that layer, as without a mapping
        if self.weights and self.weights[0] == self.output[0]:
            return self.output[0]
        entry: dict = {"output": self.output[0]}
        if self.weights:
            entry["weights"] = list(self.weights) if len(self.weights) > 1 else self.weights[0]
        return entry


@dataclass
class Pairing:
    pairs: dict[str, Pair] = field(default_factory=dict)  # keras layer -> its pair
    hidden: dict[Key, str] = field(default_factory=dict)  # Caffe value -> the Keras layer it is inside
    aliases: dict[Key, str] = field(default_factory=dict)  # Caffe value equal to a Keras layer's output

    def tensors(self, outputs: dict[str, object]) -> dict[Key, object]:
        """(caffe layer, top) -> the Keras tensor holding that value, from each Keras layer's output."""
        found = {p.output: outputs[p.keras] for p in self.pairs.values() if p.output is not None}
        found.update({key: outputs[name] for key, name in self.aliases.items()})
        return found

    def mapping(self) -> dict[str, str | dict]:
        """The pairing as a mapping file's JSON object, Keras model order."""
        return {name: p.as_mapping() for name, p in self.pairs.items() if p.how not in ("pass-through", "input")}

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for p in self.pairs.values():
            counts[p.how] = counts.get(p.how, 0) + 1
        return ", ".join(f"{n} by {how}" for how, n in counts.items())


def read_entry(keras_name: str, value) -> tuple[tuple[str, ...] | None, str | None, bool]:
    """A mapping value -> (weights' Caffe layers or None, output Caffe layer or None, output given).

    "conv1_1": weights and output from conv1_1 (its fused activation's end, as without a mapping);
    {"weights": "conv1_1", "output": "relu1_1"} or {"weights": ["bn1", "scale1"]}: each named on its own;
    {"output": null}: do not compare this layer's output."""
    if isinstance(value, str):
        return (value,), value, False
    if isinstance(value, dict) and set(value) <= {"weights", "output"}:
        weights = value.get("weights")
        if isinstance(weights, str):
            weights = [weights]
        if weights is not None and not (isinstance(weights, list) and all(isinstance(w, str) for w in weights)):
            raise ParityError(f"mapping entry {keras_name!r}: 'weights' must be a Caffe layer name or a list of them")
        output = value.get("output")
        if output is not None and not isinstance(output, str):
            raise ParityError(f"mapping entry {keras_name!r}: 'output' must be a Caffe layer name or null")
        return (tuple(weights) if weights is not None else None), output, "output" in value
    raise ParityError(f'mapping entry {keras_name!r}: expected a Caffe layer name or {{"weights": ..., "output": ...}}')


class Pairer:
    """Walks the Keras model in its order, pairing each layer with what its Caffe bottoms' readers offer."""

    def __init__(self, net: Net, model, arrays: dict[str, dict[str, np.ndarray]], mapping: dict):
        self.net, self.model, self.mapping = net, model, mapping
        self.arrays = arrays  # caffe layer -> {variable: value in Keras layout}, from parity's conversion
        self.readers: dict[Key, list[Layer]] = {}  # Caffe value -> the layers reading it, in net order
        self.reads: dict[str, list[Key]] = {}
        for layer in net.layers:
            keys = [(net.writer_before(layer.name, b).name, b) for b in layer.bottoms]
            self.reads[layer.name] = keys
            for key in dict.fromkeys(keys):
                self.readers.setdefault(key, []).append(layer)
        self.taken: set[str] = set()
        self.pairing = Pairing()
        self.value: dict[str, Key] = {}  # keras layer -> the Caffe value its output equals
        self.unpaired: list[tuple[str, str]] = []  # (keras layer, why)

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Pairing:
        inputs = [layer for layer in self.net.layers if layer.type == "Input"]
        for i, tensor in enumerate(self.model.inputs):
            name = tensor._keras_history.operation.name
            if i < len(inputs):
                self._pair(name, inputs[i], (), (inputs[i].name,), (inputs[i].name, inputs[i].tops[0]), "input")
        for layer in self.model.layers:
            if layer.name in self.pairing.pairs or type(layer).__name__ == "InputLayer":
                continue
            self._visit(layer)
        return self.pairing

    def _visit(self, layer) -> None:
        parents = parents_of(layer)
        if any(p not in self.value for p in parents):
            self.unpaired.append((layer.name, "an input of it has no Caffe counterpart"))
            return
        bottoms = [self.value[p] for p in parents]
        if layer.name in self.mapping:
            self._from_mapping(layer, bottoms)
            return
        kind = keras_kind(layer)
        candidates = self._candidates(bottoms)
        named = [c for c in candidates if c.name == layer.name and c.type in caffe_types(kind)]
        found = named or [c for c in candidates if self._fits(layer, kind, c)]
        if found:
            self._pair_with(layer, kind, found[0], "name" if named else "position")
        elif type(layer).__name__ in PASS_THROUGH and len(bottoms) == 1:
            self.value[layer.name] = bottoms[0]
            self.pairing.pairs[layer.name] = Pair(layer.name, (), (), None, "pass-through")
        else:
            offered = ", ".join(f"{c.name} ({c.type})" for c in candidates) or "none"
            self.unpaired.append((layer.name, f"{kind}: no Caffe layer of a matching type and shape reads its "
                                              f"input (Caffe's readers there: {offered})"))

    def _candidates(self, bottoms: list[Key]) -> list[Layer]:
        """The untaken Caffe layers reading exactly `bottoms`, looking through identities (Dropout)."""
        found = [c for c in self.readers.get(bottoms[0], []) if c.name not in self.taken
                 and self.reads[c.name] == bottoms and c.type not in IDENTITIES]
        if found or len(bottoms) != 1:
            return found
        for c in self.readers.get(bottoms[0], []):
            if c.type in IDENTITIES and c.name not in self.taken and c.tops:
                return self._candidates([(c.name, c.tops[0])])
        return []

    def _fits(self, layer, kind: str, caffe: Layer) -> bool:
        if caffe.type not in caffe_types(kind):
            return False
        if not layer.weights:
            return True
        covers = [c.name for c in self._weight_layers(kind, caffe)]
        return isinstance(weight_values(layer, covers, self.arrays), list)

    def _weight_layers(self, kind: str, caffe: Layer) -> list[Layer]:
        """The Caffe layers one Keras layer of `kind` takes its weights from: a BatchNormalization takes the
        BatchNorm and the Scale right after it; everything else its one layer."""
        after = self._next(caffe) if kind == "BatchNormalization" else None
        return [caffe, after] if after is not None and after.type == "Scale" else [caffe]

    # -- what a pair covers ------------------------------------------------------------------------
    def _pair_with(self, layer, kind: str, caffe: Layer, how: str) -> None:
        covers = self._weight_layers(kind, caffe)
        weights = [c.name for c in covers] if layer.weights else []
        activation = fused_activation(layer)
        if activation is not None:
            after = self._next(covers[-1])
            if after is None or after.type != ACTIVATIONS.get(activation):
                self.unpaired.append((layer.name, f"its fused activation {activation!r} has no Caffe "
                                                  f"{ACTIVATIONS.get(activation, activation)} after {covers[-1].name}"))
                return
            covers.append(after)
        last = covers[-1]
        self._pair(layer.name, caffe, tuple(weights), tuple(c.name for c in covers), (last.name, last.tops[0]), how)

    def _next(self, caffe: Layer) -> Layer | None:
        """The one Caffe layer that reads `caffe`'s output next, through identities, if only one does."""
        key = (caffe.name, caffe.tops[0])
        readers = [c for c in self.readers.get(key, []) if c.name not in self.taken]
        while len(readers) == 1 and readers[0].type in IDENTITIES:
            key = (readers[0].name, readers[0].tops[0])
            readers = [c for c in self.readers.get(key, []) if c.name not in self.taken]
        return readers[0] if len(readers) == 1 and len(self.reads[readers[0].name]) == 1 else None

    def _pair(self, keras: str, caffe: Layer, weights: tuple, covers: tuple, output: Key, how: str) -> None:
        self.taken.update(covers)
        for inner in covers[:-1]:  # values inside the Keras layer: not observable in its model
            for top in self.net.layer(inner).tops:
                self.pairing.hidden[(inner, top)] = keras
        output = self._through_identities(output, keras)
        self.pairing.pairs[keras] = Pair(keras, weights, covers, output, how)
        self.value[keras] = output

    def _through_identities(self, key: Key, keras: str) -> Key:
        """Dropout after a paired layer: its value is the same tensor, under the identity's name too."""
        while True:
            readers = [c for c in self.readers.get(key, []) if c.type in IDENTITIES and c.name not in self.taken]
            if len(readers) != 1 or not readers[0].tops:
                return key
            self.taken.add(readers[0].name)
            self.pairing.aliases[key] = keras
            key = (readers[0].name, readers[0].tops[0])

    def _from_mapping(self, layer, bottoms: list[Key]) -> None:
        weights, output, explicit = read_entry(layer.name, self.mapping[layer.name])
        kind = keras_kind(layer)
        if layer.weights and weights:
            covers = [c.name for c in self._weight_layers(kind, self.net.layer(weights[0]))] if not explicit \
                else list(weights)
            values = weight_values(layer, covers, self.arrays)
            if isinstance(values, str):  # the user said so: their entry is the error, not the pairing
                raise ParityError(f"cannot load Caffe's weights into the Keras model: {layer.name}.{values} "
                                  f"(mapping entry {layer.name!r})")
        if not explicit and weights is not None:
            self._pair_with(layer, kind, self.net.layer(weights[0]), "mapping")
            return
        covers = tuple(dict.fromkeys([*(weights or ()), *([output] if output else [])]))
        self.taken.update(covers)
        key = self._through_identities((output, self.net.layer(output).tops[0]), layer.name) if output else None
        self.pairing.pairs[layer.name] = Pair(layer.name, weights or (), covers, key, "mapping")
        if key is not None or len(bottoms) == 1:
            self.value[layer.name] = key if key is not None else bottoms[0]

    # -- when it fails ---------------------------------------------------------------------------
    def failure(self) -> ParityError | None:
        """One error for the Keras layers with weights that found no Caffe layer (their weights cannot be
        loaded): the first few, the closest untaken Caffe names, and the pairing made so far."""
        weighted = {layer.name for layer in self.model.layers if layer.weights}
        missing = [(name, why) for name, why in self.unpaired if name in weighted]
        if not missing:
            return None
        free = [c.name for c in self.net.layers if c.name not in self.taken and c.type != "Input"]
        lines = []
        for name, why in missing[:3]:
            close = difflib.get_close_matches(name, free, n=3, cutoff=0.3) or free[:3]
            lines.append(f"{name!r} ({why}; closest untaken Caffe layers: {', '.join(close)})")
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        made = f"; paired so far: {self.pairing.summary()}" if self.pairing.pairs else ""
        return ParityError(f"{len(missing)} Keras layer(s) with weights have no Caffe counterpart: "
                           f"{'; '.join(lines)}{more}{made}. Name the pairs in a JSON mapping, "
                           f'{{"keras layer": "caffe layer"}}, and pass it with --mapping')


def parents_of(layer) -> list[str]:
    """The names of the Keras layers whose outputs `layer` reads (its first call)."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return []
    return [t._keras_history.operation.name for t in nodes[0].input_tensors]


def keras_kind(layer) -> str:
    """The class name, with an `Activation` layer named by what it computes (Activation:relu)."""
    name = type(layer).__name__
    if name == "Activation":
        return f"Activation:{activation_name(layer.activation)}"
    return name


def caffe_types(kind: str) -> set[str]:
    if kind.startswith("Activation:"):
        found = ACTIVATIONS.get(kind.split(":", 1)[1])
        return {found} if found else set()
    return WEIGHTED.get(kind) or WEIGHTLESS.get(kind) or set()


def activation_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def fused_activation(layer) -> str | None:
    """The activation a weighted Keras layer applies after its own work, or None (linear)."""
    if type(layer).__name__ not in WEIGHTED or not hasattr(layer, "activation"):
        return None
    name = activation_name(layer.activation)
    return None if name == "linear" else name


def weight_values(layer, caffe_layers: list[str], arrays: dict[str, dict[str, np.ndarray]]) -> list | str:
    """The values for `layer.weights`, in order, from Caffe's layers (parity's conversion, Keras layout),
    or why they do not fit. A Keras bias Caffe lacks (bias_term: false) is zeros; a BatchNormalization
    takes gamma and beta from the Scale after the BatchNorm (ones and zeros without one)."""
    found = {}
    for name in caffe_layers:
        found.update(arrays.get(name, {}))
    if len(caffe_layers) > 1 or type(layer).__name__ == "BatchNormalization":
        scale = arrays.get(caffe_layers[1], {}) if len(caffe_layers) > 1 else {}
        found = {"moving_mean": found.get("moving_mean"), "moving_variance": found.get("moving_variance"),
                 "gamma": scale.get("scale"), "beta": scale.get("bias")}
    values = []
    for variable in layer.weights:
        value = found.get(variable.name)
        shape = tuple(variable.shape)
        if value is None and variable.name in ("bias", "beta", "gamma") and found:
            value = np.full(shape, 1.0 if variable.name == "gamma" else 0.0, np.float32)
        if value is None:
            return (f"{variable.name}: Caffe's {'+'.join(caffe_layers)} has no such weight "
                    f"(it has: {', '.join(found) or 'none'})")
        if (value.size == int(np.prod(shape)) and value.shape != shape
                and value.squeeze().shape == tuple(d for d in shape if d != 1)):
            value = value.reshape(shape)  # a Scale's (1, 1, 1, C) operand for a BatchNormalization's (C,)
        if tuple(value.shape) != shape:
            return f"{variable.name}: shape {shape}, Caffe's {'+'.join(caffe_layers)} gives {tuple(value.shape)}"
        values.append(value)
    return values


def pair_layers(net: Net, model, arrays: dict[str, dict[str, np.ndarray]], mapping: dict) -> tuple[Pairing, list]:
    """Pair `model`'s layers with `net`'s: the pairing, and the Keras layers left unpaired (name, why)."""
    pairer = Pairer(net, model, arrays, mapping)
    pairing = pairer.run()
    error = pairer.failure()
    if error is not None:
        raise error
    return pairing, pairer.unpaired
