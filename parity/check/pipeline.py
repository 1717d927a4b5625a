"""The whole check for one model: references -> conversion -> one-pass capture -> comparison -> Report.

Shared by the CLI (`parity check`) and the pytest plugin, so both give the same verdict.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import sha256_file
from ..caffe.graph import Net
from ..data.layout import to_caffe_layout, to_keras_layout
from ..data.reference import Reference
from ..diagnose.report import Report
from ..errors import ParityError, ShapeDivergence
from ..targets import Target
from .compare import FAIL, PASS, LayerResult, NoiseRule, Tolerance, measure
from .decisions import DETECTIONS, PROPOSALS, decision_bottom, decision_bottoms, is_decision, settle
from .divergence import locate_first_divergence
from .noise import peak

# The fixed rule's values where only one of atol/rtol is given, and where no float64 twin can run
# (README, "Tolerances"): VGG-19's float32 error, as it was calibrated before the noise rule.
DEFAULT_ATOL = 1e-2
DEFAULT_RTOL = 1e-4
FALLBACK = Tolerance(DEFAULT_ATOL, DEFAULT_RTOL)

Key = tuple[str, str]


def source_mismatches(ref: Reference, sources: dict[str, Path], hashes: dict[Path, str]) -> list[str]:
    """Which of the manifest's sha256s the given files ({manifest key: path}) fail to match (hashes cached)."""
    problems = []
    for key, path in sources.items():
        if path not in hashes:
            hashes[path] = sha256_file(path)
        expected = ref.manifest["model"][key]["sha256"]
        if hashes[path] != expected:
            problems.append(f"{key} {path.name} has sha256 {hashes[path][:12]}..., the reference was made "
                            f"from {expected[:12]}...")
    return problems


@dataclass
class Prepared:
    """A target converted once, with its one-pass capture model: reused for every sample."""

    target: Target
    net: Net
    converted: object  # ConvertedModel
    capture: object  # Capture
    notes: dict[Path, list[str]]
    environment: dict
    weights: object = None  # the read caffemodel, for --local's second conversion
    build: Callable | None = None  # the converter used (the target's, or a planted bug's)
    twin: object = None  # parity.check.noise.Twin: what runs in float64 to measure each output's noise
    parents: dict = field(default_factory=dict)  # key -> the captured keys it reads (for inherited noise)
    left_out: dict = field(default_factory=dict)  # reference dir -> notes on entries a hand-written model lacks
    _local: dict = field(default_factory=dict, repr=False)  # entry layout -> LocalRunner

    def local_runner(self, ref: Reference):
        """The layer-local runner for `ref`'s entry layout, built once (by the target) and shared by its samples."""
        self.target.require_local()
        layout = tuple((e.layer, e.top, e.shape) for e in ref.entries)
        if layout not in self._local:
            self._local[layout] = self.target.local_runner(self.net, ref, self.weights, self.build, self.converted)
        return self._local[layout]


def prepare(target: Target, allow_mismatch: bool = False, convert: Callable | None = None,
            progress: Callable[[str], None] | None = None, numerics: dict | None = None) -> Prepared:
    """Verify provenance, convert (`convert` may replace the converter: tests plant bugs so), build the capture.

    `numerics`: parity.check.numerics.configure's keywords (deterministic, allow_tf32); TF32 is off by default.
    """
    from .capture import Capture
    from .numerics import configure, environment

    configure(**(numerics or {}))
    say = progress or (lambda _msg: None)
    net = target.net()
    build = convert or target.converter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parity-sha256") as pool:
        # The sha256 of a 575 MB caffemodel takes 0.4 s; hashlib lets go of the GIL, so it runs beside
        # the conversion. Its verdict still comes first: wrong files explain a failed conversion.
        provenance = pool.submit(provenance_notes, target, allow_mismatch)
        say(f"converting {target.name} ...")
        try:
            weights = target.read_weights()
        except ParityError:
            provenance.result()
            raise
        try:
            converted = build(net, weights)
        except ParityError as exc:
            provenance.result()
            failure = target.conversion_failure(exc, net, build)
            if failure is exc:
                raise
            raise failure from None
        notes = provenance.result()
    left_out = left_out_notes(target, converted) if converted.left_out else {}  # reference dir -> notes
    target = target.after_conversion(converted)
    keys = list(dict.fromkeys((e.layer, e.top) for ref in target.references for e in ref.entries))
    keys += [k for k in decision_inputs(net, target, converted.tensors) if k not in keys]
    capture = Capture(converted, keys)
    return Prepared(target, net, converted, capture, notes, environment(), weights, build,
                    twin_for(capture, target, net, weights, build, keys), parents_of(net, keys),
                    left_out)


def left_out_notes(target: Target, converted) -> dict[Path, list[str]]:
    """Per reference: the entries a hand-written model has no tensor for, and why (a value inside a fused
    Keras layer, a Keras layer nothing in Caffe pairs with)."""
    result = {}
    for ref in target.references:
        found = [f"not compared: {layer} ({converted.left_out[(layer, top)]})" for layer, top in
                 dict.fromkeys((e.layer, e.top) for e in ref.entries)
                 if (layer, top) not in converted.tensors and (layer, top) in converted.left_out]
        found += [why for (layer, _), why in converted.left_out.items() if not layer]
        missing = [e.layer for e in ref.entries if (e.layer, e.top) not in converted.tensors
                   and (e.layer, e.top) not in converted.left_out]
        if missing:
            found.append(f"not compared: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} "
                         "(no Keras layer pairs with them)")
        result[ref.dir] = found
    return result


def decision_inputs(net: Net, target: Target, tensors: dict) -> list[Key]:
    """The bottoms of the decision layers (ArgMax, Threshold) compared, captured for their margins."""
    found = (key for ref in target.references for e in ref.entries if is_decision(e.type)
             for key in decision_bottoms(net, e.layer))
    return [key for key in dict.fromkeys(found) if key is not None and key in tensors]


def twin_for(capture, target: Target, net: Net, weights, build: Callable, keys: list[Key]):
    """The float64 twin: the checked model, with the target's fallback (parity's own conversion, where the
    checked model is another converter's and a Caffe net exists to convert) where its own twin cannot run."""
    from .capture import Capture
    from .noise import Twin

    convert = target.twin_fallback(net, weights, build) if weights is not None else None
    if convert is None:
        return Twin(capture)

    def fallback():
        own = convert()
        return Capture(own, [k for k in keys if k in own.tensors])

    return Twin(capture, fallback)


def parents_of(net: Net, keys: list[Key]) -> dict[Key, list[Key]]:
    """For each captured (layer, top): the captured outputs its in-place chain reads from outside."""
    writer: dict[str, str] = {}
    reads: dict[str, list[Key]] = {}  # layer -> (writer, blob) of each bottom as the layer reads it
    for layer in net.layers:
        reads[layer.name] = [(writer[b], b) for b in layer.bottoms if b in writer]
        writer.update((top, layer.name) for top in layer.tops)
    captured, referenced = set(keys), {layer for layer, _ in keys}
    parents = {}
    for layer_name, top in keys:
        chain = net.inplace_chain(layer_name, top, referenced)
        members = set(chain)
        parents[(layer_name, top)] = [k for name in chain for k in reads[name] if k in captured and k[0] not in members]
    return parents


def shape_divergence_reports(target: Target, tol, divergence: ShapeDivergence) -> list[Report]:
    """One failing report per sample when the conversion departs from Caffe's shapes before any numbers
    exist: the same verdict, JSON and HTML as any other failure, with no layer rows."""
    from .numerics import environment

    return [Report(target.name, ref.name, *_fixed_values(tol), [], divergence.layer,
                   _header(ref, tol, environment()), error=divergence.message)
            for ref in target.references]


def _fixed_values(tol) -> tuple[float | None, float | None]:
    """A report's atol and rtol: the fixed rule's, or (None, None) under the noise rule."""
    return (None, None) if getattr(tol, "atol", None) is None else (tol.atol, tol.rtol)


def _header(ref: Reference, tol, environment: dict, notes: list[str] | None = None, local: bool = False,
            baseline=None, noise: dict | None = None) -> dict:
    """A report's provenance header: where the reference came from, the numeric environment, the rules,
    and (`noise`) what measured the float32 noise."""
    return {"reference": str(ref.dir), "granularity": ref.granularity, "caffe": ref.manifest.get("caffe", {}),
            "environment": environment, "allow_mismatch": bool(notes), "notes": notes or [], "local": local,
            "tolerances": tol.describe(), "noise": noise,
            "baseline": None if baseline is None else {"path": str(baseline.path), "growth": baseline.growth,
                                                       "floor": baseline.floor}}


def provenance_notes(target: Target, allow_mismatch: bool) -> dict[Path, list[str]]:
    """Each reference's notes on files whose sha256 differs from its manifest's; without
    `allow_mismatch`, the first such difference is an error."""
    hashes: dict[Path, str] = {}
    notes = {}
    for ref in target.references:
        problems = source_mismatches(ref, target.sources(), hashes)
        if problems and not allow_mismatch:
            raise ParityError(f"{'; '.join(problems)} (pass --allow-mismatch to compare anyway)",
                              ref.dir / "manifest.json")
        notes[ref.dir] = [f"ALLOWED MISMATCH: {p}" for p in problems]
    return notes


def check_reference(prepared: Prepared, ref: Reference, tol, inputs: dict[str, np.ndarray] | None = None,
                    local: bool = False, baseline=None) -> Report:
    """One forward pass on `ref`'s input (or `inputs`), every entry compared, first divergence named.

    Under the noise rule (the default) the float64 twin measures every output's noise first (once per
    input; parity.check.noise caches it). With `local`, every layer is also run on Caffe's own bottoms
    (parity.check.local), and the report tells conversion bugs (failing locally) from accumulated drift
    (failing only when propagated). `tol`: a NoiseRule, a Tolerance or a parity.check.gate.TolerancePolicy (per
    layer pattern); `baseline`: a parity.check.gate.Baseline, whose limits fail a layer whose error grew even
    inside the tolerance.
    """
    feed = prepared.capture.feed(ref.inputs() if inputs is None else inputs, ref.dir / "manifest.json")
    outputs = prepared.capture.forward(feed)
    expected = {(e.layer, e.top): ref.load(e) for e in ref.entries}
    rules = {e.layer: tol.for_layer(e.layer) for e in ref.entries}
    noise, about = {}, None
    peaks = {key: peak(expected[key] if key in expected else outputs[key]) for key in prepared.capture.keys}
    if any(isinstance(rule, NoiseRule) for rule in rules.values()):
        noise, about = _noise(prepared, feed, outputs, peaks)
    local_run = prepared.local_runner(ref).run(ref, peaks if noise else None) if local else None
    results, arrays = [], {}
    referenced = {e.layer for e in ref.entries}
    for entry in ref.entries:
        key = (entry.layer, entry.top)
        result = LayerResult(entry.layer, entry.type, entry.top, entry.order, entry.shape)
        chain = prepared.net.inplace_chain(entry.layer, entry.top, referenced)
        result.covers = chain if len(chain) > 1 else None
        rule = _measurable(rules[entry.layer], key, noise)
        got = _compare(result, prepared, entry, expected[key], outputs, rule, noise)
        if baseline is not None:
            baseline.gate(prepared.target.name, ref.name, result)
        if local_run is not None:
            _measure_local(result, entry, expected[key], prepared, local_run, rule)
        arrays[entry.layer] = (expected[key], got)
        results.append(result)
    first = locate_first_divergence(results, prepared.net)
    header = _header(ref, tol, prepared.environment, prepared.notes.get(ref.dir, []), local, baseline, about)
    if prepared.converted.checked:
        header["checked"] = prepared.converted.checked
        header["notes"] = [*header["notes"], *prepared.left_out.get(ref.dir, [])]
    report = Report(prepared.target.name, ref.name, *_fixed_values(tol), results, first, header)
    _keep_evidence(report, arrays, local_run.outputs if local_run else {}, prepared, ref)
    if any(r.detections is not None for r in results):  # the HTML draws the boxes over what the net saw
        order = ref.manifest["input"].get("preprocessing", {}).get("channel_order", "RGB")
        report.picture = (next(iter((ref.inputs() if inputs is None else inputs).values())), order)
    return report


def _noise(prepared: Prepared, feed: list, outputs: dict, peaks: dict) -> tuple[dict, dict]:
    """Every captured output's effective noise for this input, and what measured it (for the header)."""
    from .noise import output_noise

    table = prepared.twin.table(feed, outputs)
    if table is None:
        return {}, {"source": None, "unavailable": prepared.twin.unavailable,
                    "fallback": f"the fixed rule, atol {FALLBACK.atol:g} rtol {FALLBACK.rtol:g}"}
    return output_noise(table, prepared.capture.keys, peaks, prepared.parents), {"source": table.source}


def _measurable(rule, key: Key, noise: dict):
    """`rule`, or the fixed FALLBACK where the noise rule applies but no noise was measured for `key`."""
    return FALLBACK if isinstance(rule, NoiseRule) and key not in noise else rule


def _compare(result: LayerResult, prepared: Prepared, entry, expected: np.ndarray, outputs: dict, rule,
             noise: dict) -> np.ndarray:
    """Measure one entry under its rule; returns what was compared (decisions settled where undecided)."""
    key = (entry.layer, entry.top)
    got = outputs[key]
    if entry.type == DETECTIONS:
        return _compare_detections(result, prepared, entry, expected, outputs, rule, noise)
    if entry.type in PROPOSALS and entry.top == prepared.net.layer(entry.layer).tops[0]:
        return _compare_proposals(result, prepared, entry, expected, outputs, rule, noise)
    if entry.type in PROPOSALS:  # its scores, in NMS order: element by element
        _measure_rule(result, expected, got, rule, noise.get(key) if isinstance(rule, NoiseRule) else None)
        return got
    if not isinstance(rule, NoiseRule):
        _measure_rule(result, expected, got, rule, None)
        return got
    if is_decision(entry.type) and got.shape == to_keras_layout(expected).shape:
        bottom = decision_bottom(prepared.net, entry.layer)
        if bottom in noise:
            settled, result.flips = settle(prepared.net.layer(entry.layer), to_caffe_layout(outputs[bottom]), expected,
                                           to_caffe_layout(got), rule.k * noise[bottom])
            got = to_keras_layout(settled).astype(got.dtype)
    _measure_rule(result, expected, got, rule, noise[key])
    return got


def _set_noise(prepared: Prepared, entry, rule, noise: dict, boxes: int, scores: int) -> tuple[float, float, float]:
    """(k, the noise of the bottom the boxes are decoded from, the noise of the scores' bottom) for a layer
    whose top is a set of boxes; under the fixed rule, its allowance at 1.0 stands in for both noises."""
    if not isinstance(rule, NoiseRule):
        return 1.0, rule.atol + rule.rtol, rule.atol + rule.rtol
    keys = [decision_bottom(prepared.net, entry.layer, i) for i in (boxes, scores)]
    return rule.k, noise.get(keys[0], 0.0), noise.get(keys[1], 0.0)


def _bottom(prepared: Prepared, entry, outputs: dict, index: int) -> np.ndarray | None:
    key = decision_bottom(prepared.net, entry.layer, index)
    return to_caffe_layout(outputs[key]) if key in outputs else None


def _compare_detections(result: LayerResult, prepared: Prepared, entry, expected: np.ndarray, outputs: dict, rule,
                        noise: dict) -> np.ndarray:
    """DetectionOutput's boxes paired and judged with its bottoms' noise (parity.check.detections)."""
    from .detections import compare_detections, settings_for

    layer = prepared.net.layer(entry.layer)
    k, loc_noise, conf_noise = _set_noise(prepared, entry, rule, noise, 0, 1)
    scores = _bottom(prepared, entry, outputs, 1)
    if scores is not None:
        scores = scores.reshape(scores.shape[0], -1, layer.param.detection_output_param.num_classes)
    settings = settings_for(layer, loc_noise, conf_noise, _bottom(prepared, entry, outputs, 2), k)
    got = outputs[(entry.layer, entry.top)]
    found = compare_detections(expected, to_caffe_layout(got), settings, scores)
    _judged_set(result, found, expected, got, conf_noise if isinstance(rule, NoiseRule) else None)
    result.atol = found.score_tol
    return got


def _compare_proposals(result: LayerResult, prepared: Prepared, entry, expected: np.ndarray, outputs: dict, rule,
                       noise: dict) -> np.ndarray:
    """Proposal's rois paired as boxes in pixels (parity.check.detections), with its deltas' and scores' noise."""
    from .detections import compare_detections, proposal_settings

    k, deltas_noise, scores_noise = _set_noise(prepared, entry, rule, noise, 1, 0)
    settings = proposal_settings(prepared.net.layer(entry.layer), deltas_noise, scores_noise,
                                 _bottom(prepared, entry, outputs, 1), k)
    got = outputs[(entry.layer, entry.top)]
    found = compare_detections(expected, to_caffe_layout(got), settings)
    _judged_set(result, found, expected, got, deltas_noise if isinstance(rule, NoiseRule) else None)
    result.detections["pixels"] = True
    result.max_abs = found.box_error
    return got


def _judged_set(result: LayerResult, found, expected: np.ndarray, got: np.ndarray, noise: float | None) -> None:
    """A set-of-boxes comparison (parity.check.detections) written onto the layer's result."""
    result.detections = found.to_dict()
    result.max_abs = max(found.score_error, found.box_error)
    result.noise, result.ratio = (noise, found.ratio) if noise is not None else (None, None)
    result.atol, result.rtol = 0.0, 0.0
    shape = to_caffe_layout(got).shape
    result.got_shape = shape if shape != tuple(expected.shape) else None
    result.status = FAIL if found.failed else PASS
    result.problem = found.summary() if found.failed else None


def _measure_local(result: LayerResult, entry, expected: np.ndarray, prepared: Prepared, local_run, rule) -> None:
    key = (entry.layer, entry.top)
    if key in local_run.outputs:
        own = LayerResult(entry.layer, entry.type, entry.top, entry.order, entry.shape)
        rule = _measurable(rule, key, local_run.noise)
        result.local = _measure_rule(own, expected, local_run.outputs[key], rule, local_run.noise.get(key))
    elif entry.type == "Input":
        result.local = replace(result, covers=None)  # what was fed is the input: nothing upstream to isolate
    else:
        result.local_note = local_run.skipped.get(entry.layer, "not run locally")


def _measure_rule(result: LayerResult, expected: np.ndarray, got: np.ndarray, rule, noise: float | None) -> LayerResult:
    """`measure` under `rule`, the allowed error it came to kept on the result (for hints and the report)."""
    measure(result, expected, got, rule, noise)
    if isinstance(rule, NoiseRule):
        result.atol, result.rtol = rule.k * noise, 0.0
    else:
        result.atol, result.rtol = rule.atol, rule.rtol
    return result


def _keep_evidence(report: Report, arrays: dict, local_outputs: dict, prepared: Prepared, ref: Reference) -> None:
    """Arrays and cause hints for the layers a reader will look at: roots and local failures. Causes
    verified by a rerun on Caffe's own bottoms (parity.diagnose.verify) come first, then what the arrays suggest."""
    from ..diagnose.hints import diagnose
    from ..diagnose.verify import verify

    for r in report.layers:
        local_fail = r.local is not None and r.local.status == FAIL
        if not (r.status == FAIL or local_fail):
            continue
        expected, got = arrays[r.layer]
        judged = r
        if local_fail and (r.layer, r.top) in local_outputs:
            got, judged = local_outputs[(r.layer, r.top)], r.local
        ref_keras = to_keras_layout(expected)
        report.arrays[r.layer] = (ref_keras, got)
        hints = diagnose(ref_keras, got, judged.atol, judged.rtol, layer_type=r.type,
                         flatten_source=_flatten_source(prepared, r.layer), is_input=r.type == "Input")
        if r.type != "Input" and judged.atol is not None:
            verified = verify(prepared.net, prepared.converted, ref, r.layer, r.top, expected, judged.atol,
                              judged.rtol or 0.0)
            hints = verified + [h for h in hints if h.cause not in {v.cause for v in verified}]
        if hints:
            report.hints[r.layer] = hints


def _flatten_source(prepared: Prepared, layer_name: str) -> tuple[int, int, int] | None:
    """(C, H, W) of a layer's spatial bottom, for the flatten-order hint."""
    layer = prepared.net.layer(layer_name)
    if not layer.bottoms:
        return None
    writer = prepared.net.writer_before(layer_name, layer.bottoms[0])
    shape = prepared.converted.caffe_shapes.get((writer.name, layer.bottoms[0])) if writer else None
    return tuple(int(d) for d in shape[1:]) if shape is not None and len(shape) == 4 else None


def gate_settings(target: Target, atol: float | None, rtol: float | None, baseline: str | Path | None,
                  growth: float | None, pyproject: Path | None = None):
    """The tolerance policy and baseline for `target`, from the command line, pyproject.toml (`pyproject`,
    else the nearest to the working directory) and the fixture."""
    from .gate import GROWTH, Baseline, growth_factor, project_settings, resolve_policy

    settings, where = project_settings(pyproject)
    policy = resolve_policy(target.name, target.tolerances, Tolerance(DEFAULT_ATOL, DEFAULT_RTOL), atol, rtol,
                            settings, where)
    growth = growth_factor(growth if growth is not None else settings.get("growth", GROWTH), "growth")
    return policy, (Baseline.load(baseline, growth) if baseline else None)


def check_target(target: Target, tol: Tolerance, **kwargs) -> list[Report]:
    """run_target, with a shape divergence (found before any numbers) as failing reports, not an error:
    it is the converter's fault, a verdict on the model, as a diverging layer is."""
    try:
        return run_target(target, tol, **kwargs)
    except ShapeDivergence as divergence:
        return shape_divergence_reports(target, tol, divergence)


def run_target(target: Target, tol: Tolerance, allow_mismatch: bool = False,
               convert: Callable | None = None, progress: Callable[[str], None] | None = None,
               local: bool = False, numerics: dict | None = None, baseline=None) -> list[Report]:
    """Check every reference sample of `target` (with `local`, each layer on Caffe's own inputs too)."""
    if local:
        target.require_local()
    prepared = prepare(target, allow_mismatch, convert, progress, numerics)
    reports = []
    for ref in prepared.target.references:
        if progress:
            progress(f"running {target.name} on {ref.name} and comparing {len(ref.entries)} outputs"
                     f"{', each layer also on Caffe inputs' if local else ''} ...")
        reports.append(check_reference(prepared, ref, tol, local=local, baseline=baseline))
    return reports
