"""Layer-local checks: every converted layer run on Caffe's own inputs, isolated from upstream drift.

The propagated check feeds the converted net its input and compares every layer; a layer's error
there is its own error plus everything it inherited. Here each layer (or, at blob granularity, each
in-place chain with one reference) is fed its bottoms from the dump instead, so its error is its
own. A layer failing locally is a conversion bug; a propagated failure whose local check passes is
accumulated float drift.

All units go into ONE Keras model: a synthetic net in which each unit gets Input layers for its
bottoms and private blob names (`<unit>::<blob>`), while the layers keep their Caffe names so the
converter finds their weights. One conversion, one forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..caffe.graph import Net
from ..data.reference import Entry, Reference


@dataclass(frozen=True)
class Unit:
    """Layers checked together: an in-place chain with one reference (one layer at layer granularity)."""

    index: int
    layers: tuple[str, ...]
    sources: tuple[tuple[str, Entry], ...]  # (bottom blob, the reference entry holding its value)

    @property
    def prefix(self) -> str:
        return f"local{self.index}::"


def plan_units(net: Net, ref: Reference) -> tuple[list[Unit], dict[str, str]]:
    """The units to run locally, and for the layers that cannot be, why not."""
    referenced = {e.layer for e in ref.entries}
    by_key = {(e.layer, e.top): e for e in ref.entries}
    chains = dict.fromkeys(tuple(net.inplace_chain(e.layer, e.top, referenced)) for e in ref.entries)
    units, skipped = [], {}
    for chain in chains:
        if any(net.layer(name).type == "Input" for name in chain):
            continue  # its "input" is what was fed: the propagated result is the local one
        sources, missing = bottom_sources(net, chain, by_key)
        if missing:
            skipped[chain[-1]] = f"Caffe's value of {', '.join(missing)} as this layer read it is not in the dump"
        else:
            units.append(Unit(len(units), chain, tuple(sources.items())))
    return units, skipped


def bottom_sources(net: Net, chain: tuple[str, ...], by_key: dict) -> tuple[dict[str, Entry], list[str]]:
    """For each blob the chain reads from outside, the reference entry of its last writer before the chain."""
    made: set[str] = set()
    sources, missing = {}, []
    for name in chain:
        layer = net.layer(name)
        for bottom in layer.bottoms:
            if bottom in made or bottom in sources or bottom in missing:
                continue
            writer = net.writer_before(chain[0], bottom)
            entry = by_key.get((writer.name, bottom)) if writer else None
            if entry is None:
                missing.append(bottom)
            else:
                sources[bottom] = entry
        made.update(layer.tops)
    return sources, missing


def local_net(net: Net, units: list[Unit]) -> Net:
    """One synthetic net holding every unit, each fed by its own Input layers."""
    from ..caffe.schema import caffe_pb2

    proto = caffe_pb2.NetParameter(name=f"{net.name}_local")
    for unit in units:
        for i, (blob, entry) in enumerate(unit.sources):
            lp = proto.layer.add(name=f"parity_local_{unit.index}_{i}", type="Input", top=[unit.prefix + blob])
            lp.input_param.shape.add(dim=list(entry.shape))
        for name in unit.layers:
            lp = proto.layer.add()
            lp.CopyFrom(net.layer(name).param)
            lp.bottom[:] = [unit.prefix + b for b in lp.bottom]
            lp.top[:] = [unit.prefix + t for t in lp.top]
    return Net.from_proto(proto, net.path, net.text)


class LocalRunner:
    """Converts the local net once per reference layout, then runs it on any sample's dump."""

    def __init__(self, net: Net, ref: Reference, weights, build: Callable):
        from .capture import Capture

        self.units, self.skipped = plan_units(net, ref)
        self.keys = {}  # (layer, top) in the real net -> (layer, prefixed top) in the local net
        for unit in self.units:
            last = net.layer(unit.layers[-1])
            for top in last.tops:
                self.keys[(last.name, top)] = (last.name, unit.prefix + top)
        self.capture = None
        self.twin = None  # parity.check.noise.Twin of the local model, made on first use
        if self.units:
            converted = build(local_net(net, self.units), weights)
            self.capture = Capture(converted, [k for k in self.keys.values() if k in converted.tensors])

    def run(self, ref: Reference, peaks: dict | None = None) -> "LocalRun":
        """Every unit's output, channels-last, keyed like the propagated capture; given `peaks` (each
        reference's largest magnitude), each output's float32 noise too: the local model's float64 twin
        measures a layer's own rounding, nothing inherited."""
        if self.capture is None:
            return LocalRun({}, {}, self.skipped)
        inputs = {unit.prefix + blob: ref.load(entry) for unit in self.units for blob, entry in unit.sources}
        feed = self.capture.feed(inputs)
        outputs = self.capture.forward(feed)
        noise = self._noise(feed, outputs, peaks) if peaks is not None else {}
        return LocalRun({key: outputs[local] for key, local in self.keys.items() if local in outputs},
                        {key: noise[local] for key, local in self.keys.items() if local in noise}, self.skipped)

    def _noise(self, feed, outputs, peaks: dict) -> dict:
        from .noise import Twin, output_noise, peak

        if self.twin is None:
            self.twin = Twin(self.capture)
        table = self.twin.table(feed, outputs)
        if table is None:
            return {}
        real = {local: key for key, local in self.keys.items()}
        local_peaks = {local: peaks[real[local]] if real.get(local) in peaks else peak(outputs[local])
                       for local in self.capture.keys}
        return output_noise(table, self.capture.keys, local_peaks, {})


@dataclass
class LocalRun:
    """One sample's local outputs and their noise, by the propagated capture's keys; skipped layers and why."""

    outputs: dict
    noise: dict
    skipped: dict


# -- --local for a model parity did not build: cut out of it ------------------------------------------
@dataclass
class CutUnit:
    """One reference entry's computation cut out of the checked model: from the tensors that hold its
    Caffe bottoms to its own tensor (a hand-written model's ZeroPadding2D before a conv comes along)."""

    layer: str  # the Caffe layer of the entry
    chain: tuple[str, ...]  # the Caffe layers it covers (an in-place chain at blob granularity)
    model: object  # keras.Model from the bottoms' tensors to the entry's tensor
    sources: tuple[tuple[str, str], ...]  # the reference entries (layer, top) holding its bottoms
    bottoms: tuple[str, ...]  # their blob names
    feeds: list[np.ndarray]  # the first sample's bottoms, channels-last

    def feeds_for(self, ref: Reference) -> list[np.ndarray]:
        from ..data.layout import to_keras_layout

        by_key = {(e.layer, e.top): e for e in ref.entries}
        return [to_keras_layout(np.asarray(ref.load(by_key[key]), np.float32)) for key in self.sources]

    def __call__(self, feeds: list[np.ndarray] | None = None) -> np.ndarray:
        return np.asarray(self.model(feeds if feeds is not None else self.feeds, training=False))

    def keras_layers(self) -> list:
        return [layer for layer in self.model.layers if type(layer).__name__ != "InputLayer"]


def cut_unit(net: Net, converted, ref: Reference, layer: str, top: str) -> CutUnit | None:
    """The entry (layer, top)'s computation as its own model, or None where a bottom's Caffe value is
    not in the dump or not held by a tensor of the checked model (inside a fused layer)."""
    import keras

    referenced = {e.layer for e in ref.entries}
    chain = tuple(net.inplace_chain(layer, top, referenced))
    by_key = {(e.layer, e.top): e for e in ref.entries}
    sources, missing = bottom_sources(net, chain, by_key)
    output = converted.tensors.get((layer, top))
    if missing or not sources or output is None:
        return None
    keys = tuple((entry.layer, entry.top) for entry in sources.values())
    tensors = [converted.tensors.get(key) for key in keys]
    if any(t is None for t in tensors):
        return None
    try:
        model = keras.Model(tensors, output)
    except (ValueError, TypeError):  # the output does not depend on those tensors alone
        return None
    unit = CutUnit(layer, chain, model, keys, tuple(sources), [])
    unit.feeds = unit.feeds_for(ref)
    return unit


class CutRunner:
    """--local for a hand-written model: each entry's computation cut out of it (parity.check.local.cut_unit),
    fed Caffe's bottoms from the dump, with its own float64 twin for its noise."""

    def __init__(self, net: Net, ref: Reference, converted):
        self.net, self.converted = net, converted
        self.units: dict[tuple[str, str], CutUnit] = {}
        self.skipped: dict[str, str] = {}
        self.twins: dict = {}
        for entry in ref.entries:
            if entry.type == "Input":
                continue
            unit = cut_unit(net, converted, ref, entry.layer, entry.top)
            if unit is None:
                self.skipped[entry.layer] = ("Caffe's values of its bottoms are not in the dump, or no layer of the "
                                             "model holds them (inside a fused layer)")
            else:
                self.units[(entry.layer, entry.top)] = unit

    def run(self, ref: Reference, peaks: dict | None = None) -> LocalRun:
        outputs, noise = {}, {}
        for key, unit in self.units.items():
            feeds = unit.feeds_for(ref)
            outputs[key] = unit(feeds)
            if peaks is not None and key in peaks:
                measured = self._noise(key, unit, feeds, outputs[key], peaks[key])
                if measured is not None:
                    noise[key] = measured
        return LocalRun(outputs, noise, self.skipped)

    def _noise(self, key, unit: CutUnit, feeds, out, peak_value) -> float | None:
        from ..convert import ConvertedModel
        from .capture import Capture
        from .noise import Twin, output_noise

        if key not in self.twins:
            converted = ConvertedModel(unit.model, self.net, {key: unit.model.outputs[0]}, {}, {}, list(unit.bottoms))
            self.twins[key] = Twin(Capture(converted, [key]))
        table = self.twins[key].table(feeds, {key: out})
        return None if table is None else output_noise(table, [key], {key: peak_value}, {}).get(key)
