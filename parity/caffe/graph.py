"""The net as parity reasons about it: layers in Caffe's execution order, their blobs and ancestry.

Built from the upgraded NetParameter (reading.prototxt). The converter walks it; the comparator uses
`ancestors` to tell a layer's own divergence from one it inherited ("downstream").
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ParityError
from .reading.prototxt import layer_name_lines, read_prototxt


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
    """Every lookup here costs at most what it returns: the net keeps, per layer, the layers whose
    outputs it reads (its direct inputs) and, per blob, the layers writing it in order, and answers
    ancestry by walking those back (a 20k-layer chain would need 200 M entries to hold every layer's
    ancestor set)."""

    name: str
    layers: list[Layer]
    path: Path | None = None
    text: str = ""
    _inputs: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)  # layer -> writers of its bottoms
    _by_name: dict[str, Layer] = field(init=False, repr=False, compare=False)
    _writers: dict[str, list[int]] = field(init=False, repr=False, compare=False)  # blob -> its writers' positions
    _lines: dict[tuple[str, int], int] | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name, self._writers = {}, {}
        for position, layer in enumerate(self.layers):
            self._by_name.setdefault(layer.name, layer)
            for top in dict.fromkeys(layer.tops):
                self._writers.setdefault(top, []).append(position)

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
        net._inputs = net._link()
        return net

    def layer(self, name: str) -> Layer:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(name) from None

    def until(self, layer_name: str) -> "Net":
        """The net up to and including `layer_name`, in Caffe's order (for `--until`)."""
        names = [layer.name for layer in self.layers]
        if layer_name not in self._by_name:
            raise ParityError(f"--until {layer_name!r}: no such layer (layers: {', '.join(names)})", self.path)
        layers = self.layers[: names.index(layer_name) + 1]
        kept = {layer.name for layer in layers}
        return Net(self.name, layers, self.path, self.text, {k: v for k, v in self._inputs.items() if k in kept})

    def line_of(self, layer_name: str, occurrence: int = 1) -> int | None:
        if not self.text:
            return None
        if self._lines is None:  # the prototxt scanned once, however many layers ask
            self._lines = {}
            counts: dict[str, int] = {}
            for name, line in layer_name_lines(self.text):
                counts[name] = counts.get(name, 0) + 1
                self._lines[(name, counts[name])] = line
        return self._lines.get((layer_name, occurrence))

    def error(self, layer_name: str, message: str, occurrence: int = 1) -> ParityError:
        """A ParityError located at the layer's definition in the prototxt."""
        return ParityError(f"layer {layer_name!r}: {message}", self.path, self.line_of(layer_name, occurrence))

    def ancestors(self, layer_name: str) -> frozenset[str]:
        """Names of the layers whose outputs flow into `layer_name` (directly or not).

        Walked back from the layer on each call, in time proportional to the answer."""
        inputs = self._inputs
        found: set[str] = set()
        stack = list(inputs[layer_name])
        while stack:
            name = stack.pop()
            if name not in found:
                found.add(name)
                stack.extend(inputs[name])
        return frozenset(found)

    def earliest_ancestors(self, names) -> dict[str, str | None]:
        """For every layer, the first of `names` (in the order given) among its ancestors, or None.

        One pass over the net, whatever the number of names: a blob carries the earliest name among the
        layers that contributed to its value (the minimum of a union is the minimum of the minima), where
        asking `ancestors` of each name's layer would walk the net once per name.
        """
        rank: dict[str, int] = {}
        for name in names:
            rank.setdefault(name, len(rank))
        none = len(rank)
        best: dict[str, int] = {}  # blob -> earliest rank among the layers behind its current value
        found: dict[str, int] = {}
        for layer in self.layers:
            earliest = min((best[b] for b in layer.bottoms), default=none)
            found[layer.name] = earliest
            mine = min(earliest, rank.get(layer.name, none))
            for top in layer.tops:
                best[top] = mine
        ordered = list(rank)
        return {layer: ordered[r] if r < none else None for layer, r in found.items()}

    def writer_before(self, layer_name: str, blob: str) -> Layer | None:
        """The layer that last wrote `blob` before `layer_name` runs (the value it reads), or None: of the
        layers before position `layer.index`, the last whose tops hold `blob` (a bisection of its writers)."""
        indices = self._writers.get(blob, ())
        at = bisect.bisect_left(indices, self.layer(layer_name).index)
        return self.layers[indices[at - 1]] if at else None

    def inplace_chain(self, layer_name: str, top: str, referenced: set[str]) -> list[str]:
        """The layers whose work a reference of `top` taken after `layer_name` reflects.

        At blob granularity an in-place chain (conv -> ReLU -> Dropout on one blob) has one reference,
        taken after its last layer: a divergence there may have entered at any layer of the chain
        back to the blob's producer, stopping early at a layer that has a reference of its own.
        Only the layers writing `top` are visited (from the blob's list of writers), in time proportional
        to the chain.
        """
        chain = [layer_name]
        indices = self._writers.get(top, ())
        for at in range(bisect.bisect_left(indices, self.layer(layer_name).index) - 1, -1, -1):
            layer = self.layers[indices[at]]
            if layer.name in referenced:
                break
            chain.append(layer.name)
            if top not in layer.bottoms:
                break  # the blob's producer
        chain.reverse()
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

    def _link(self) -> dict[str, tuple[str, ...]]:
        """Each layer's direct inputs: the layers that last wrote its bottoms. The ancestors of a layer are
        its inputs and their ancestors (a blob's value carries what its writer read, and the writer)."""
        writer: dict[str, str] = {}  # blob -> the layer that wrote its current value
        result: dict[str, tuple[str, ...]] = {}
        for layer in self.layers:
            for bottom in layer.bottoms:
                if bottom not in writer:
                    raise self.error(layer.name, f"bottom blob {bottom!r} is not produced by any earlier layer")
            result[layer.name] = tuple(dict.fromkeys(writer[b] for b in layer.bottoms))
            for top in layer.tops:
                writer[top] = layer.name
        return result
