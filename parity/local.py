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

from .errors import ParityError
from .graph import Net
from .reference import Entry, Reference


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
    from .schema import caffe_pb2

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
        self.twin = None  # parity.noise.Twin of the local model, made on first use
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


def require_local_support(build: Callable | None) -> None:
    """A hand-written model cannot be cut into single layers by parity: say so instead of guessing."""
    if build is not None and not getattr(build, "supports_local", True):
        raise ParityError("--local checks parity's own conversion layer by layer; it is not available with "
                          "--keras-model (nor for a TensorFlow-graph reference, always checked against one)")
