"""Reports: one per (model, sample). Terminal table, JSON (written atomically), pytest messages."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_path
from .compare import DOWNSTREAM, FAIL, PASS, LayerResult


@dataclass
class Report:
    model: str
    image: str
    atol: float
    rtol: float
    layers: list[LayerResult]
    first_divergence: str | None
    header: dict = field(default_factory=dict)  # provenance: Caffe build, TF/Keras, mismatches
    hints: dict[str, list] = field(default_factory=dict)  # layer -> [parity.hints.Hint], likely causes
    # layer -> (Caffe's output, the converted output), both channels-last; kept for failing layers only,
    # for pictures (never serialized: the JSON carries metrics, not arrays)
    arrays: dict[str, tuple] = field(default_factory=dict, repr=False)

    @property
    def status(self) -> str:
        return PASS if all(r.status == PASS for r in self.layers) else FAIL

    @property
    def first_divergence_covers(self) -> list[str] | None:
        """The layers the first divergent reference reflects (more than one for an in-place chain)."""
        first = next((r for r in self.layers if r.layer == self.first_divergence and r.status == FAIL), None)
        return (first.covers or [first.layer]) if first else None

    def to_dict(self) -> dict:
        return {"model": self.model, "image": self.image, "atol": self.atol, "rtol": self.rtol,
                "status": self.status, "first_divergence": self.first_divergence,
                "first_divergence_covers": self.first_divergence_covers, **self.header,
                "hints": {layer: [h.to_dict() for h in hs] for layer, hs in self.hints.items()},
                "layers": [r.to_dict() for r in self.layers]}


def _num(value: float | None, fmt: str = "{:.2e}") -> str:
    return "-" if value is None else fmt.format(value)


def layer_line(r: LayerResult, first: str | None) -> str:
    status = {PASS: "ok", FAIL: "FAIL", DOWNSTREAM: "downstream"}[r.status]
    mark = "  <== first divergence" if r.layer == first and r.status == FAIL else ""
    shape = "x".join(str(s) for s in r.shape)
    return (f"{r.order:>4} {r.layer[:24]:<24} {r.type[:12]:<12} {shape:<16} {_num(r.max_abs):>9} "
            f"{_num(r.rel_l2):>9} {_num(r.cosine, '{:.6f}'):>9}  {status}{mark}")


def describe(r: LayerResult, tol_atol: float, tol_rtol: float) -> str:
    """A failing layer in words: what is off, by how much, where."""
    if r.problem:
        text = f"{r.layer} ({r.type}): {r.problem}"
    else:
        text = (f"{r.layer} ({r.type}, top {r.top}): max_abs {_num(r.max_abs)}, max_rel {_num(r.max_rel)}, "
                f"rel_l2 {_num(r.rel_l2)}, cosine {_num(r.cosine, '{:.6f}')}; {100 * (r.outside or 0):.3g}% of "
                f"elements outside atol {tol_atol:g} + rtol {tol_rtol:g}*|ref|; worst at (n, c, h, w) = "
                f"{r.worst}: Caffe {r.worst_ref:.6g}, Keras {r.worst_got:.6g}")
    if r.covers:
        text += (f"; this reference is taken after the in-place chain {' -> '.join(r.covers)}, so the error "
                 f"entered in one of those layers (dump with --granularity layer to tell them apart)")
    if r.downstream_of:
        text += f"; downstream of the first divergence at {r.downstream_of}"
    return text


def render(report: Report) -> str:
    lines = [f"parity: {report.model} / {report.image}  (atol {report.atol:g}, rtol {report.rtol:g})"]
    for note in report.header.get("notes", []):
        lines.append(f"  note: {note}")
    lines.append(f"{'#':>4} {'layer':<24} {'type':<12} {'shape':<16} {'max_abs':>9} {'rel_l2':>9} {'cosine':>9}  status")
    lines += [layer_line(r, report.first_divergence) for r in report.layers]
    if report.first_divergence:
        root = next(r for r in report.layers if r.layer == report.first_divergence and r.status == FAIL)
        downstream = sum(r.status == DOWNSTREAM for r in report.layers)
        lines.append(f"FAIL: first divergence at {describe(root, report.atol, report.rtol)}"
                     + (f" ({downstream} later layer(s) downstream of it)" if downstream else ""))
    else:
        lines.append(f"PASS: all {len(report.layers)} outputs within tolerance")
    return "\n".join(lines)


def write_json(path: str | Path, payload) -> Path:
    """Write JSON atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1, allow_nan=False)
        fh.write("\n")
    return path
