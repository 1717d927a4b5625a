"""Caffe targets: a prototxt and caffemodel converted by parity, or paired with the user's hand-written Keras
model (targets.handwritten). Made from files (prototxt, caffemodel, a reference folder) or from a named
fixture (which may be a TensorFlow graph's: targets.tfgraph), and cut at a layer (--until)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..caffe.graph import Net
from ..data.reference import Reference, find_references
from ..errors import ParityError
from .base import Target, restricted


@dataclass
class CaffeTarget(Target):
    """A Caffe net and its weights, converted by parity (or by a planted bug's converter, in tests)."""

    prototxt: Path = field(kw_only=True)
    caffemodel: Path = field(kw_only=True)

    def net(self) -> Net:
        net = Net.from_prototxt(self.prototxt)
        return net.until(self.until) if self.until else net

    def sources(self) -> dict[str, Path]:
        return {"prototxt": self.prototxt, "caffemodel": self.caffemodel}

    def read_weights(self):
        from ..caffe.reading.caffemodel import read_caffemodel

        return read_caffemodel(self.caffemodel)

    def converter(self) -> Callable:
        from ..convert import convert_net

        return convert_net

    def with_keras_model(self, spec: str, mapping: str | Path | None = None,
                         save_mapping: str | Path | None = None) -> Target:
        return HandwrittenTarget(self.name, self.references, until=self.until, tolerances=self.tolerances,
                                 prototxt=self.prototxt, caffemodel=self.caffemodel, keras_model=spec,
                                 mapping_path=mapping, save_mapping=save_mapping)

    def conversion_failure(self, exc: ParityError, net: Net, build: Callable) -> ParityError:
        """A converter's error that Caffe's own shapes explain becomes a ShapeDivergence at its layer."""
        from ..check.divergence import explain_shape_conflict
        from ..errors import ShapeDivergence

        return exc if isinstance(exc, ShapeDivergence) else explain_shape_conflict(exc, net, self.references, build)

    def twin_fallback(self, net: Net, weights, build: Callable) -> Callable | None:
        """Another converter's model (a planted bug, a hand-written model) falls back on parity's own."""
        from ..convert import convert_net

        return None if build is convert_net else lambda: convert_net(net, weights)

    def local_runner(self, net: Net, ref: Reference, weights, build: Callable, converted):
        """The layers converted again, each fed Caffe's bottoms, all in one model (parity.check.local)."""
        from ..check.local import LocalRunner

        return LocalRunner(net, ref, weights, build)


@dataclass
class HandwrittenTarget(CaffeTarget):
    """Caffe's weights loaded into the user's model by name; only the paired outputs are compared."""

    keras_model: str = field(kw_only=True)  # 'package.module:function' or 'file.py:function'
    mapping_path: str | Path | None = field(default=None, kw_only=True)  # {"keras layer": "caffe layer"}
    save_mapping: str | Path | None = field(default=None, kw_only=True)  # where to write the pairing made

    def converter(self) -> Callable:
        from ..user_modules import load_builder
        from .handwritten import handwritten_converter, read_mapping

        return handwritten_converter(load_builder(self.keras_model), read_mapping(self.mapping_path),
                                     self.keras_model, self.mapping_path, self.save_mapping)

    def after_conversion(self, converted) -> Target:
        return restricted(self, converted.tensors)

    def local_runner(self, net: Net, ref: Reference, weights, build: Callable, converted):
        """parity cannot rebuild the user's model layer by layer, but it can cut each paired layer out of it."""
        from ..check.local import CutRunner

        return CutRunner(net, ref, converted)


def up_to(target: Target, until: str | None) -> Target:
    """`target` restricted to the layers up to `until` (references too)."""
    if until is None:
        return target
    if not until.strip():
        raise ParityError("--until needs a layer name")
    kept = {layer.name for layer in replace(target, until=None).net().until(until).layers}
    refs = [replace(r, entries=[e for e in r.entries if e.layer in kept]) for r in target.references]
    return replace(target, references=refs, until=until)


def from_files(prototxt, caffemodel, blobs_dir, name: str | None = None) -> CaffeTarget:
    """The model is named by the prototxt's `name:`, else its file's stem: never its folder's name (one
    package's folder holds several nets: "models" for an age net and a gender net alike)."""
    refs = find_references(blobs_dir)
    path = Path(prototxt)
    return CaffeTarget(name or model_name(path), refs, prototxt=path, caffemodel=Path(caffemodel))


def model_name(prototxt: Path) -> str:
    from ..caffe.reading.prototxt import read_prototxt

    stem = prototxt.name.removesuffix(".txt").removesuffix(".prototxt")  # deploy.prototxt.txt, as some ship it
    return read_prototxt(prototxt).name.strip() or stem or "model"


def fixture_references(fixture, images: list[str] | None, dump_command: str) -> list[Reference]:
    """A fixture's reference samples (only `images`, where given), or why there are none."""
    if not fixture.references.is_dir():
        raise ParityError(f"fixture {fixture.name!r} has no references yet (make them with "
                          f"`parity {dump_command} --fixture {fixture.name}`)", fixture.references)
    refs = find_references(fixture.references)
    if images:
        refs = [r for r in refs if r.name in images]
        if not refs:
            raise ParityError(f"no reference for image(s) {', '.join(images)}", fixture.references)
    return refs


def from_fixture(name: str, images: list[str] | None = None) -> Target:
    """A named fixture's target, of the kind the fixture is (a Caffe net, or a TensorFlow graph)."""
    from ..caffe.fixtures import load_fixture

    fixture = load_fixture(name)
    if fixture.kind == "tensorflow-graph":
        from .tfgraph import graph_target_from_fixture

        return graph_target_from_fixture(fixture, fixture_references(fixture, images, "dump-tf"))
    return CaffeTarget(name, fixture_references(fixture, images, "dump"), prototxt=fixture.prototxt,
                       caffemodel=fixture.weights_path(), tolerances=fixture.description.get("tolerances"))
