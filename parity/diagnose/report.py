"""Reports: one per (model, sample). Terminal table, JSON (written atomically), pytest messages."""
from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_path
from ..check.compare import DOWNSTREAM, FAIL, PASS, LayerResult
from ..errors import printable


@dataclass
class Report:
    model: str
    image: str
    atol: float | None  # the fixed rule's; None under the noise rule (header["tolerances"] says which)
    rtol: float | None
    layers: list[LayerResult]
    first_divergence: str | None
    header: dict = field(default_factory=dict)  # provenance: Caffe build, TF/Keras, mismatches
    hints: dict[str, list] = field(default_factory=dict)  # layer -> [parity.diagnose.hints.Hint], likely causes
    # layer -> (Caffe's output, the converted output), both channels-last; kept for failing layers only,
    # for pictures (never serialized: the JSON carries metrics, not arrays)
    arrays: dict[str, tuple] = field(default_factory=dict, repr=False)
    # the net's input as fed (Caffe's layout) and its channel order, kept where detections are drawn (HTML)
    picture: tuple | None = field(default=None, repr=False)
    # set when the check stopped before any numbers: the converted net departs from Caffe's shapes at
    # first_divergence (parity.errors.ShapeDivergence), so there are no layer rows to show
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return FAIL
        return PASS if all(r.status == PASS for r in self.layers) and not self.conversion_bugs else FAIL

    @property
    def local(self) -> bool:
        return bool(self.header.get("local"))

    @property
    def rule(self) -> str:
        """Which rule judged the layers: a one-line summary for headers and verdicts."""
        return rule_words(self.header.get("tolerances"), self.atol, self.rtol)

    @property
    def conversion_bugs(self) -> list[str]:
        """--local: layers that fail on Caffe's own inputs, in Caffe's order: each is a bug of its own."""
        return [r.layer for r in sorted(self.layers, key=lambda r: r.order)
                if r.local is not None and r.local.status == FAIL]

    @property
    def first_divergence_covers(self) -> list[str] | None:
        """The layers the first divergent reference reflects (more than one for an in-place chain)."""
        first = next((r for r in self.layers if r.layer == self.first_divergence and r.status == FAIL), None)
        if first is None:
            return [self.first_divergence] if self.error and self.first_divergence else None
        return first.covers or [first.layer]

    def to_dict(self, only: Collection[str] | None = None) -> dict:
        """The JSON form. With `only`, just those layers' rows and hints, every other field still the
        whole report's (its status too): each pytest item sends its own layers so, since a whole report
        per item would grow with the square of the layer count; merge_parts joins them again."""
        hints = {layer: hs for layer, hs in self.hints.items() if only is None or layer in only}
        return {"model": self.model, "image": self.image, "atol": self.atol, "rtol": self.rtol,
                "status": self.status, "first_divergence": self.first_divergence,
                "first_divergence_covers": self.first_divergence_covers, "error": self.error, **self.header,
                "conversion_bugs": self.conversion_bugs,
                "hints": {layer: [h.to_dict() for h in hs] for layer, hs in hints.items()},
                "layers": [r.to_dict() for r in self.layers if only is None or r.layer in only]}


def merge_parts(parts: list[dict]) -> dict:
    """One report's dict from parts of it (Report.to_dict(only=...), in any order): the rows in Caffe's
    order, the hints that say something; every other field is the whole report's, the same in each part."""
    whole = dict(parts[0])
    whole["layers"] = sorted((row for part in parts for row in part["layers"]), key=lambda row: row["order"])
    whole["hints"] = {layer: hints for part in parts for layer, hints in part["hints"].items() if hints}
    return whole


def number(value: float | None, fmt: str = "{:.2e}") -> str:
    """A metric as the terminal table, the HTML page and the messages print it ('-' for none)."""
    return "-" if value is None else fmt.format(value)


def rule_words(tolerances: dict | None, atol: float | None, rtol: float | None) -> str:
    """'k x float32 noise' under the noise rule, else 'atol A, rtol R'."""
    tolerances = tolerances or {}
    if tolerances.get("rule") == "noise":
        return f"{tolerances['k']:g} x float32 noise"
    return f"atol {atol:g}, rtol {rtol:g}" if atol is not None else "tolerance"


STATUS_WORDS = {PASS: "ok", FAIL: "FAIL", DOWNSTREAM: "downstream"}


def layer_line(r: LayerResult, first: str | None, local: bool = False) -> str:
    status = "drift" if local and r.drift else STATUS_WORDS[r.status]
    mark = "  <== first divergence" if r.layer == first and r.status == FAIL else ""
    if r.local is not None and r.local.status == FAIL:
        mark += "  <== conversion bug (fails on Caffe's inputs)"
    if r.flips:
        mark += f"  ({r.flips} decision(s) flipped within noise)"
    shape = "x".join(str(s) for s in r.shape)
    name, kind = printable(r.layer)[:24], printable(r.type)[:12]  # escaped before cut, so columns stay aligned
    similarity = f"{number(r.rel_l2):>9} {number(r.cosine, '{:.6f}'):>9}"
    if r.detections is not None:  # a set of boxes: how many paired, in place of rel_l2 and cosine
        similarity = f"{paired_words(r.detections):>19}"
    line = (f"{r.order:>4} {name:<24} {kind:<12} {shape:<16} {number(r.max_abs):>9} "
            f"{number(r.noise):>9} {times(r.ratio):>8} {similarity}")
    if local:
        own = "-" if r.local is None else f"{number(r.local.max_abs)} {STATUS_WORDS[r.local.status]}"
        line += f"  {own:>14}"
    return f"{line}  {status}{mark}"


def paired_words(d: dict) -> str:
    return f"{d['paired']}/{d['caffe']} boxes paired"


def detection_lines(report: Report, most: int = 5) -> list[str]:
    """Each DetectionOutput's comparison: counts, worst errors against their limits, and (failing) the
    first detections found on one side only."""
    lines = []
    for r in report.layers:
        d = r.detections
        if d is None:
            continue
        lines.append(f"  detections at {r.layer}: Caffe {d['caffe']}, Keras {d['keras']}, paired {d['paired']}; "
                     f"worst score error {number(d['score_error'])} (limit {number(d['score_tolerance'])}), worst "
                     f"corner error {number(d['box_error'])}; {d['off_pairs']} pair(s) off")
        one_sided = [("missing", x) for x in d["missing"]] + [("extra", x) for x in d["extra"]]
        for side, x in sorted(one_sided, key=lambda item: item[1]["tolerated"] is not None)[:most]:
            box = ", ".join(f"{v:.3f}" for v in x["box"])
            why = f" (tolerated: {x['tolerated']})" if x["tolerated"] else ""
            lines.append(f"    {side} in Keras: image {x['image']} label {x['label']} score {x['score']:.4g} "
                         f"box ({box}){why}")
        if len(one_sided) > most:
            lines.append(f"    ... {len(one_sided) - most} more on one side only (JSON: layers[].detections)")
    return lines


def times(value: float | None) -> str:
    """An error/noise ratio as people read it: '2.1x', '31x', 'inf'."""
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    return f"{value:.2g}x" if value < 10 else f"{value:.0f}x"


def describe(r: LayerResult, tol_atol: float | None, tol_rtol: float | None) -> str:
    """A failing layer in words: what is off, by how much, where."""
    tol_atol = tol_atol if r.atol is None else r.atol  # the layer's own allowed error, where known
    tol_rtol = tol_rtol if r.rtol is None else r.rtol
    if r.problem:
        text = f"{r.layer} ({r.type}): {r.problem}"
    else:
        if r.noise is not None:
            size = (f"max_abs {number(r.max_abs)} = {times(r.ratio)} its float32 noise {number(r.noise)} "
                    f"(limit {times(tol_atol / r.noise if r.noise else None)}), ")
            outside = "over the limit"
        else:
            size = f"max_abs {number(r.max_abs)}, "
            outside = f"outside atol {tol_atol:g} + rtol {tol_rtol:g}*|ref|"
        text = (f"{r.layer} ({r.type}, top {r.top}): {size}max_rel {number(r.max_rel)}, rel_l2 {number(r.rel_l2)}, "
                f"cosine {number(r.cosine, '{:.6f}')}; {100 * (r.outside or 0):.3g}% of elements {outside}; worst "
                f"at (n, c, h, w) = {r.worst}: Caffe {r.worst_ref:.6g}, Keras {r.worst_got:.6g}")
        if r.worst_ref is not None and not math.isfinite(r.worst_ref):
            text += " (Caffe's reference itself holds NaN or Inf there)"
    if r.flips:
        text += f"; {r.flips} decision(s) within noise of flipping differ (not counted)"
    if r.covers:
        text += (f"; this reference is taken after the in-place chain {' -> '.join(r.covers)}, so the error "
                 f"entered in one of those layers (dump with --granularity layer to tell them apart)")
    if r.grew:
        accepted = f"ratio {times(r.baseline)}" if r.ratio is not None else f"max_abs {number(r.baseline)}"
        text += f"; inside the rule, but its error grew past the baseline's limit (accepted {accepted})"
    if r.downstream_of:
        text += f"; downstream of the first divergence at {r.downstream_of}"
    return text


def render(report: Report) -> str:
    """The terminal report: header, one row per layer, the verdict. Each line is escaped on its own
    (parity.errors.printable): names from files can hold a newline that would forge a line."""
    lines = [f"parity: {report.model} / {report.image}  ({report.rule})"]
    env = report.header.get("environment")
    if env:
        lines.append(f"  numerics: {environment_line(env)}")
    checked = report.header.get("checked")
    if checked:
        lines.append(f"  checked: {checked_line(checked)}")
    noise = report.header.get("noise") or {}
    if noise.get("source"):
        lines.append(f"  noise: measured by {noise['source']}")
    elif noise.get("unavailable"):
        lines.append(f"  noise: not measured: {noise['unavailable']}; used {noise['fallback']}")
    tolerances = report.header.get("tolerances") or {}
    if tolerances.get("layers"):
        exceptions = ", ".join(f"{p}: atol {t['atol']:g} rtol {t['rtol']:g}" for p, t in tolerances["layers"].items())
        lines.append(f"  tolerances by layer: {exceptions} (from {', '.join(tolerances.get('sources', []))})")
    if report.header.get("baseline"):
        b = report.header["baseline"]
        measure = "error/noise ratio" if tolerances.get("rule") == "noise" else "max_abs"
        lines.append(f"  baseline: {b['path']} (a layer fails when its {measure} exceeds {b['growth']:g}x the "
                     f"accepted one)")
    for note in report.header.get("notes", []):
        lines.append(f"  note: {note}")
    local_head = f"  {'local (own)':>14}" if report.local else ""
    lines.append(f"{'#':>4} {'layer':<24} {'type':<12} {'shape':<16} {'max_abs':>9} {'noise':>9} {'x noise':>8} "
                 f"{'rel_l2':>9} {'cosine':>9}{local_head}  status")
    lines += [layer_line(r, report.first_divergence, report.local) for r in report.layers]
    lines += detection_lines(report)
    lines += verdict_lines(report)
    return "\n".join(printable(line) for line in lines)


def checked_line(checked: dict) -> str:
    """What was checked when it is not parity's own conversion: the hand-written model and its pairing."""
    mapping = f"mapping {checked['mapping']}" if checked.get("mapping") else "no mapping"
    return f"hand-written Keras model {checked.get('model')} ({mapping}; layers paired: {checked.get('pairing')})"


def environment_line(env: dict) -> str:
    """The numeric environment in one line: what a reader needs to compare two reports' last bits."""
    onednn = env.get("onednn", {})
    threads = env.get("threads", {})
    devices = ", ".join(env.get("devices", [])) or "?"
    tf32 = "allowed" if env.get("tf32_allowed") else "off"
    return (f"TensorFlow {env.get('tensorflow')}, Keras {env.get('keras')}; {devices}; "
            f"oneDNN {'on' if onednn.get('enabled') else 'off'}; TF32 {tf32}; "
            f"deterministic ops {'on' if env.get('deterministic_ops') else 'off'}; "
            f"intra-op threads {threads.get('intra_op', '?')} of {threads.get('cpu_count', '?')} cores")


def verdict_lines(report: Report) -> list[str]:
    """The verdict last, as people read it: where the bug is, what it looks like, what followed from it."""
    if report.error:
        return [f"FAIL: {report.error}"]
    by_name = {r.layer: r for r in report.layers}
    bugs = report.conversion_bugs
    if bugs:
        first = by_name[bugs[0]]
        lines = [f"FAIL: conversion bug at {describe(first.local, report.atol, report.rtol)} "
                 f"(on Caffe's own inputs, so not inherited)"]
        lines += hint_lines(report, first.layer)
        if len(bugs) > 1:
            lines.append(f"  also failing on Caffe's own inputs: {', '.join(bugs[1:])}")
        return lines
    if report.first_divergence:
        root = by_name[report.first_divergence]
        downstream = sum(r.status == DOWNSTREAM for r in report.layers)
        if report.local and root.drift:
            return [f"FAIL: accumulated drift, not a conversion bug: every layer passes on Caffe's own inputs, but "
                    f"propagated error first exceeds the tolerance at {describe(root, report.atol, report.rtol)}"]
        return ([f"FAIL: first divergence at {describe(root, report.atol, report.rtol)}"
                 + (f" ({downstream} later layer(s) downstream of it)" if downstream else "")]
                + hint_lines(report, root.layer))
    return [f"PASS: {_all_within(report.layers, report.rule)}"
            + (", each also on Caffe's own inputs" if report.local else "")]


def summary_line(d: dict) -> str:
    """'MODEL/SAMPLE: STATUS: verdict' from a report's dict (to_dict, or merge_parts): verdict_lines' first
    line in brief, naming the layer without its numbers, for a summary that lists many models."""
    if d["error"]:
        verdict = d["error"]
    elif d["conversion_bugs"]:
        verdict = f"conversion bug at {d['conversion_bugs'][0]} (fails on Caffe's own inputs)"
    elif d["first_divergence"]:
        verdict = f"first divergence at {d['first_divergence']}"
    else:
        verdict = _all_within(d["layers"], rule_words(d.get("tolerances"), d["atol"], d["rtol"]))
    return f"{d['model']}/{d['image']}: {d['status'].upper()}: {verdict}"


def _all_within(layers: list, rule: str) -> str:
    """A passing model's verdict: how many outputs, under which rule, and how close the closest came."""
    return f"all {len(layers)} outputs within {rule}{worst_ratio(layers)}"


def worst_ratio(layers: list) -> str:
    """' (largest: 2.1x at relu3_2)' under the noise rule: how close a passing model came (rows or dicts)."""
    rows = [(r["ratio"], r["layer"]) if isinstance(r, dict) else (r.ratio, r.layer) for r in layers]
    rows = [(ratio, layer) for ratio, layer in rows if isinstance(ratio, (int, float))]
    if not rows:
        return ""
    ratio, layer = max(rows)
    return f" (largest: {times(ratio)} at {layer})"


def hint_lines(report: Report, layer: str) -> list[str]:
    """One line per likely cause (parity.diagnose.hints.Hint, or its dict form from JSON)."""
    hints = [h if isinstance(h, dict) else h.to_dict() for h in report.hints.get(layer, [])]
    return [f"  {'verified' if (h.get('evidence') or {}).get('verified') else 'likely'} cause ({h['cause']}): "
            f"{h['message']}" for h in hints]


def write_json(path: str | Path, payload) -> Path:
    """Write JSON atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1, allow_nan=False)
        fh.write("\n")
    return path
