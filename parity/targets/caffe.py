"""Caffe targets: from files (prototxt, caffemodel, a reference folder) or from a named fixture, and a
target cut to the layers up to one (--until)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import ParityError
from ..reference import find_references
from .base import Target


def up_to(target: Target, until: str | None) -> Target:
    """`target` restricted to the layers up to `until` (references too)."""
    if until is None:
        return target
    if not until.strip():
        raise ParityError("--until needs a layer name")
    kept = {layer.name for layer in replace(target, until=None).net().until(until).layers}
    refs = [replace(r, entries=[e for e in r.entries if e.layer in kept]) for r in target.references]
    return replace(target, references=refs, until=until)


def target_from_files(prototxt, caffemodel, blobs_dir, name: str | None = None) -> Target:
    """The model is named by the prototxt's `name:`, else its file's stem: never its folder's name (one
    package's folder holds several nets: "models" for an age net and a gender net alike)."""
    refs = find_references(blobs_dir)
    path = Path(prototxt)
    return Target(name or model_name(path), path, Path(caffemodel), refs)


def model_name(prototxt: Path) -> str:
    from ..reading.prototxt import read_prototxt

    stem = prototxt.name.removesuffix(".txt").removesuffix(".prototxt")  # deploy.prototxt.txt, as some ship it
    return read_prototxt(prototxt).name.strip() or stem or "model"


def target_from_fixture(name: str, images: list[str] | None = None) -> Target:
    from ..fixtures import load_fixture

    fixture = load_fixture(name)
    if fixture.kind == "tensorflow-graph":
        from .tfgraph import graph_target_from_fixture

        return graph_target_from_fixture(fixture, images)
    if not fixture.references.is_dir():
        raise ParityError(f"fixture {name!r} has no references yet (make them with `parity dump --fixture {name}`)",
                          fixture.references)
    refs = find_references(fixture.references)
    if images:
        refs = [r for r in refs if r.name in images]
        if not refs:
            raise ParityError(f"no reference for image(s) {', '.join(images)}", fixture.references)
    return Target(name, fixture.prototxt, fixture.weights_path(), refs,
                  tolerances=fixture.description.get("tolerances"))
