"""What a check runs on: a Target (a net, its weights, the reference samples made for it).

Each source of references is a subclass (targets.caffe: a prototxt and caffemodel, converted by parity
or paired with a hand-written Keras model; targets.tfgraph: a frozen TensorFlow graph's dump) that says
how it differs through these methods, so the check pipeline (parity.check.pipeline.prepare) knows only this class.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar

from ..caffe.graph import Net
from ..data.reference import Reference
from ..errors import ParityError


@dataclass
class Target:
    """What to check: a net, its weights, and the reference samples made for it."""

    name: str
    references: list[Reference]
    until: str | None = field(default=None, kw_only=True)  # check only up to this layer
    tolerances: dict | None = field(default=None, kw_only=True)  # the fixture's tolerance settings (check.gate)

    supports_local: ClassVar[bool] = True  # --local: can each layer be run on the reference's own bottoms?
    no_local: ClassVar[str] = ""  # why not, where it cannot

    def net(self) -> Net:
        """The net as the references describe it, cut at `until`."""
        raise NotImplementedError

    def sources(self) -> dict[str, Path]:
        """The files whose sha256 each reference manifest records, by manifest key."""
        raise NotImplementedError

    def read_weights(self):
        """The weights the converter reads (None where the converter finds its own)."""
        raise NotImplementedError

    def converter(self) -> Callable:
        """The `convert(net, weights) -> ConvertedModel` this target is checked with."""
        raise NotImplementedError

    def with_keras_model(self, spec: str, mapping: str | Path | None = None,
                         save_mapping: str | Path | None = None) -> "Target":
        """This target checked against the user's hand-written Keras model ('module:function')."""
        raise ParityError(f"{self.name!r} cannot be checked against a hand-written Keras model")

    def conversion_failure(self, exc: ParityError, net: Net, build: Callable) -> ParityError:
        """The error to report when `build` fails on this target (the Caffe side explains shape conflicts)."""
        return exc

    def after_conversion(self, converted) -> "Target":
        """The target as the check compares it, once converted: where the checked model has no tensor for
        some entries (a hand-written model's left-out values, a graph's unpaired ops), a subclass drops
        them (`restricted`) and the caller says so in notes."""
        return self

    def twin_fallback(self, net: Net, weights, build: Callable) -> Callable | None:
        """What converts a float64 twin where the checked model's own twin cannot be built (None: nothing)."""
        return None

    def require_local(self) -> None:
        """--local on a target that cannot run it is refused, naming why, before anything is converted."""
        if not self.supports_local:
            raise ParityError(f"--local is not available for {self.no_local or self.name}")

    def local_runner(self, net: Net, ref: Reference, weights, build: Callable, converted):
        """What runs each layer of the checked model on `ref`'s own bottoms (--local)."""
        raise NotImplementedError


def restricted(target: Target, tensors: dict) -> Target:
    """`target` with each reference's entries cut to those the checked model has a tensor for."""
    refs = [replace(r, entries=[e for e in r.entries if (e.layer, e.top) in tensors]) for r in target.references]
    return replace(target, references=refs)
