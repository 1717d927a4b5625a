"""What a check runs on: a Target (a net, its weights, the reference samples made for it).

The base is the Caffe case: a prototxt and a caffemodel, converted by parity. Other sources subclass it
(targets.tfgraph: a frozen TensorFlow graph and a hand-written Keras model) and say how they differ
through its methods, so the check pipeline (parity.check.prepare) knows only this class.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..graph import Net
from ..reference import Reference


@dataclass
class Target:
    """What to check: a net, its weights, and the reference samples Caffe produced for it."""

    name: str
    prototxt: Path
    caffemodel: Path
    references: list[Reference]
    until: str | None = None  # check only up to this layer
    tolerances: dict | None = None  # the fixture's own tolerance settings (parity.gate)

    partial_match = False  # True where only some reference entries have a counterpart (parity.tfgraph)

    def net(self) -> Net:
        net = Net.from_prototxt(self.prototxt)
        return net.until(self.until) if self.until else net

    def sources(self) -> dict[str, Path]:
        """The files whose sha256 each reference manifest records, by manifest key."""
        return {"prototxt": self.prototxt, "caffemodel": self.caffemodel}

    def read_weights(self):
        from ..reading.caffemodel import read_caffemodel

        return read_caffemodel(self.caffemodel)

    def default_converter(self) -> Callable:
        from ..convert import convert_net

        return convert_net

    def after_conversion(self, converted) -> "Target":
        """The target as the check compares it, once converted: where the checked model has no tensor for
        some entries (a source only partly paired, a hand-written model's left-out values), those entries
        are dropped here and said in notes by the caller."""
        if self.partial_match or converted.left_out is not None:
            return restricted(self, converted.tensors)
        return self


def restricted(target: Target, tensors: dict) -> Target:
    """`target` with each reference's entries cut to those the checked model has a tensor for."""
    refs = [replace(r, entries=[e for e in r.entries if (e.layer, e.top) in tensors]) for r in target.references]
    return replace(target, references=refs)
