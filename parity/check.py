"""The whole check for one model: references -> conversion -> one-pass capture -> comparison -> Report.

Shared by the CLI (`parity check`) and the pytest plugin, so both give the same verdict.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic import sha256_file
from .compare import LayerResult, Tolerance, attribute, measure
from .errors import ParityError, ShapeDivergence
from .graph import Net
from .reference import Reference, find_references
from .report import Report

# Chosen from measured data: see README, "Tolerances".
DEFAULT_ATOL = 1e-2
DEFAULT_RTOL = 1e-4


@dataclass
class Target:
    """What to check: a net, its weights, and the reference samples Caffe produced for it."""

    name: str
    prototxt: Path
    caffemodel: Path
    references: list[Reference]
    until: str | None = None  # check only up to this layer

    def net(self) -> Net:
        net = Net.from_prototxt(self.prototxt)
        return net.until(self.until) if self.until else net


def up_to(target: Target, until: str | None) -> Target:
    """`target` restricted to the layers up to `until` (references too)."""
    if not until:
        return target
    kept = {layer.name for layer in Net.from_prototxt(target.prototxt).until(until).layers}
    refs = [replace(r, entries=[e for e in r.entries if e.layer in kept]) for r in target.references]
    return replace(target, references=refs, until=until)


def target_from_files(prototxt, caffemodel, blobs_dir, name: str | None = None) -> Target:
    refs = find_references(blobs_dir)
    return Target(name or Path(prototxt).parent.name, Path(prototxt), Path(caffemodel), refs)


def target_from_fixture(name: str, images: list[str] | None = None) -> Target:
    from .fixtures import load_fixture

    fixture = load_fixture(name)
    if not fixture.references.is_dir():
        raise ParityError(f"fixture {name!r} has no references yet (make them with `parity dump --fixture {name}`)",
                          fixture.references)
    refs = find_references(fixture.references)
    if images:
        refs = [r for r in refs if r.name in images]
        if not refs:
            raise ParityError(f"no reference for image(s) {', '.join(images)}", fixture.references)
    return Target(name, fixture.prototxt, fixture.weights_path(), refs)


def source_mismatches(ref: Reference, prototxt: Path, caffemodel: Path, hashes: dict[Path, str]) -> list[str]:
    """Which of the manifest's sha256s the given files fail to match (hashes cached per file)."""
    problems = []
    for key, path in (("prototxt", prototxt), ("caffemodel", caffemodel)):
        if path not in hashes:
            hashes[path] = sha256_file(path)
        expected = ref.manifest["model"][key]["sha256"]
        if hashes[path] != expected:
            problems.append(f"{key} {path.name} has sha256 {hashes[path][:12]}..., the reference was made "
                            f"from {expected[:12]}...")
    return problems


def environment() -> dict:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


@dataclass
class Prepared:
    """A target converted once, with its one-pass capture model: reused for every sample."""

    target: Target
    net: Net
    converted: object  # ConvertedModel
    capture: object  # Capture
    notes: dict[Path, list[str]]
    environment: dict


def prepare(target: Target, allow_mismatch: bool = False, convert: Callable | None = None,
            progress: Callable[[str], None] | None = None) -> Prepared:
    """Verify provenance, convert (`convert` may replace the converter: tests plant bugs so), build the capture."""
    from .capture import Capture
    from .convert import convert_net
    from .reading.caffemodel import read_caffemodel

    say = progress or (lambda _msg: None)
    net = target.net()
    hashes: dict[Path, str] = {}
    notes = {}
    for ref in target.references:
        problems = source_mismatches(ref, target.prototxt, target.caffemodel, hashes)
        if problems and not allow_mismatch:
            raise ParityError(f"{'; '.join(problems)} (pass --allow-mismatch to compare anyway)", ref.dir / "manifest.json")
        notes[ref.dir] = [f"ALLOWED MISMATCH: {p}" for p in problems]
    say(f"converting {target.prototxt.name} ...")
    build = convert or convert_net
    weights = read_caffemodel(target.caffemodel)
    try:
        converted = build(net, weights)
    except ShapeDivergence:
        raise
    except ParityError as exc:
        raise explain_shape_conflict(exc, net, target, build) from None
    keys = list(dict.fromkeys((e.layer, e.top) for ref in target.references for e in ref.entries))
    return Prepared(target, net, converted, Capture(converted, keys), notes, environment())


def explain_shape_conflict(exc: ParityError, net: Net, target: Target, build: Callable) -> ParityError:
    """When the weights do not fit, look for the layer whose output shape first departs from Caffe's.

    A converter bug upstream (pooling rounded down) changes every later shape, and the first thing to
    break is an InnerProduct's weight matrix, far from the cause. A shape-only conversion (zero
    weights) compared with the reference shapes finds the cause; without such a layer, the weights
    really are wrong and the original error stands.
    """
    try:
        shapes = build(net, None).caffe_shapes
    except ShapeDivergence as divergence:
        return divergence
    except ParityError:
        return exc
    entries = sorted({(e.order, e.layer, e.top, e.type, e.shape) for ref in target.references for e in ref.entries})
    for _, layer, top, layer_type, want in entries:
        got = shapes.get((layer, top))
        if got is not None and tuple(got[1:]) != tuple(want[1:]):
            return ShapeDivergence(
                f"first divergence at {layer} ({layer_type}): output shape {tuple(got)} differs from Caffe's "
                f"{tuple(want)}, and later weights no longer fit ({exc})", layer, net.path)
    return exc


def check_reference(prepared: Prepared, ref: Reference, tol: Tolerance,
                    inputs: dict[str, np.ndarray] | None = None) -> Report:
    """One forward pass on `ref`'s input (or `inputs`), every entry compared, first divergence named."""
    outputs = prepared.capture.run(ref.inputs() if inputs is None else inputs)
    results = []
    referenced = {e.layer for e in ref.entries}
    for entry in ref.entries:
        result = LayerResult(entry.layer, entry.type, entry.top, entry.order, entry.shape)
        chain = prepared.net.inplace_chain(entry.layer, entry.top, referenced)
        result.covers = chain if len(chain) > 1 else None
        results.append(measure(result, ref.load(entry), outputs[(entry.layer, entry.top)], tol))
    first = attribute(results, prepared.net)
    notes = prepared.notes.get(ref.dir, [])
    header = {"reference": str(ref.dir), "granularity": ref.granularity, "caffe": ref.manifest.get("caffe", {}),
              "environment": prepared.environment, "allow_mismatch": bool(notes), "notes": notes}
    return Report(prepared.target.name, ref.name, tol.atol, tol.rtol, results, first, header)


def run_target(target: Target, tol: Tolerance, allow_mismatch: bool = False,
               convert: Callable | None = None, progress: Callable[[str], None] | None = None) -> list[Report]:
    """Check every reference sample of `target`."""
    prepared = prepare(target, allow_mismatch, convert, progress)
    reports = []
    for ref in target.references:
        if progress:
            progress(f"running {target.name} on {ref.name} and comparing {len(ref.entries)} outputs ...")
        reports.append(check_reference(prepared, ref, tol))
    return reports
