"""The net as parity reasons about it: layers in Caffe's execution order, their blobs and ancestry.

Built from the upgraded NetParameter (reading.prototxt). The converter walks it; the comparator uses
`ancestors` to tell a layer's own divergence from one it inherited ("downstream").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import ParityError
from .reading.prototxt import line_of_layer, read_prototxt


@dataclass(frozen=True)
class Layer:
    index: int
    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    param: object  # caffe_pb2.LayerParameter

    @property
    def in_place(self) -> bool:
        return bool(self.tops) and self.tops == self.bottoms[: len(self.tops)]


@dataclass
class Net:
    name: str
    layers: list[Layer]
    path: Path | None = None
    text: str = ""
    _ancestors: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_prototxt(cls, path: str | Path) -> "Net":
        proto = read_prototxt(path)
        p = Path(path)
        return cls.from_proto(proto, p, p.read_text(encoding="utf-8"))

    @classmethod
    def from_proto(cls, proto, path: Path | None = None, text: str = "") -> "Net":
        layers = [Layer(i, lp.name, lp.type, tuple(lp.bottom), tuple(lp.top), lp) for i, lp in enumerate(proto.layer)]
        return cls.from_layers(proto.name, layers, path, text)

    @classmethod
    def from_layers(cls, name: str, layers: list[Layer], path: Path | None = None, text: str = "") -> "Net":
        """A net of any source's layers (Caffe's, a TensorFlow graph's ops), in execution order."""
        net = cls(name, layers, path, text)
        net._check_names()
        net._ancestors = net._compute_ancestors()
        return net

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def until(self, layer_name: str) -> "Net":
        """The net up to and including `layer_name`, in Caffe's order (for `--until`)."""
        names = [layer.name for layer in self.layers]
        if layer_name not in names:
            raise ParityError(f"--until {layer_name!r}: no such layer (layers: {', '.join(names)})", self.path)
        layers = self.layers[: names.index(layer_name) + 1]
        kept = {layer.name for layer in layers}
        return Net(self.name, layers, self.path, self.text, {k: v for k, v in self._ancestors.items() if k in kept})

    def line_of(self, layer_name: str, occurrence: int = 1) -> int | None:
        return line_of_layer(self.text, layer_name, occurrence) if self.text else None

    def error(self, layer_name: str, message: str, occurrence: int = 1) -> ParityError:
        """A ParityError located at the layer's definition in the prototxt."""
        return ParityError(f"layer {layer_name!r}: {message}", self.path, self.line_of(layer_name, occurrence))

    def ancestors(self, layer_name: str) -> frozenset[str]:
        """Names of the layers whose outputs flow into `layer_name` (directly or not)."""
        return self._ancestors[layer_name]

    def inplace_chain(self, layer_name: str, top: str, referenced: set[str]) -> list[str]:
        """The layers whose work a reference of `top` taken after `layer_name` reflects.

        At blob granularity an in-place chain (conv -> ReLU -> Dropout on one blob) has one reference,
        taken after its last layer: a divergence there may have entered at any layer of the chain
        back to the blob's producer, stopping early at a layer that has a reference of its own.
        """
        chain = [layer_name]
        index = self.layer(layer_name).index
        for layer in reversed(self.layers[:index]):
            if top not in layer.tops:
                continue
            if layer.name in referenced:
                break
            chain.insert(0, layer.name)
            if top not in layer.bottoms:
                break  # the blob's producer
        return chain

    def _check_names(self) -> None:
        """What Caffe's Net refuses to build: repeated layer names, a layer without a type, and a top
        blob written by a second layer other than in place (Net::AppendTop, "produced by multiple sources")."""
        seen: set[str] = set()
        producer: dict[str, str] = {}
        for layer in self.layers:
            if layer.name in seen:
                raise self.error(layer.name, "duplicate layer name", occurrence=2)
            seen.add(layer.name)
            if not layer.type:
                raise self.error(layer.name, "has no type")
            for i, top in enumerate(layer.tops):
                in_place = i < len(layer.bottoms) and layer.bottoms[i] == top
                if top in producer and not in_place:
                    raise self.error(layer.name, f"top blob {top!r} is already produced by layer {producer[top]!r}; "
                                                 "Caffe refuses a second producer unless the layer works in place")
                producer.setdefault(top, layer.name)

    def _compute_ancestors(self) -> dict[str, frozenset[str]]:
        sources: dict[str, frozenset[str]] = {}  # blob -> layers that contributed to its current value
        result: dict[str, frozenset[str]] = {}
        for layer in self.layers:
            deps: frozenset[str] = frozenset()
            for bottom in layer.bottoms:
                if bottom not in sources:
                    raise self.error(layer.name, f"bottom blob {bottom!r} is not produced by any earlier layer")
                deps |= sources[bottom]
            result[layer.name] = deps
            for top in layer.tops:
                sources[top] = deps | {layer.name}
        return result
