"""Comparing a converted layer's output with Caffe's, and finding where divergence entered.

Per layer: max abs error, max rel error, relative L2 error, cosine similarity, the share of
elements outside `atol + rtol * |ref|` (np.allclose's rule), and the worst element in Caffe's
(n, c, h, w) coordinates. A layer passes when no element is outside.

A failing layer whose ancestors (in the net's graph) all pass is a root: the bug entered there.
A failing layer downstream of a root is reported as "downstream", not as a failure of its own.
The first divergence is the earliest root in Caffe's execution order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .graph import Net
from .layout import caffe_index, caffe_shape, to_keras_layout

PASS, FAIL, DOWNSTREAM = "pass", "fail", "downstream"


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float

    def for_layer(self, _name: str) -> "Tolerance":
        """One tolerance for every layer (parity.gate.TolerancePolicy varies it by layer name)."""
        return self


@dataclass
class LayerResult:
    layer: str
    type: str
    top: str
    order: int
    shape: tuple[int, ...]  # Caffe's (reference) shape
    status: str = PASS
    max_abs: float | None = None
    max_rel: float | None = None
    rel_l2: float | None = None
    cosine: float | None = None
    outside: float | None = None  # share of elements outside atol + rtol*|ref|
    worst: tuple[int, ...] | None = None  # Caffe coordinates
    worst_ref: float | None = None
    worst_got: float | None = None
    problem: str | None = None  # e.g. a shape mismatch, where metrics cannot be computed
    downstream_of: str | None = None
    covers: list[str] | None = None  # layers this reference reflects (an in-place chain), if more than one
    got_shape: tuple[int, ...] | None = field(default=None)
    # --local: the same layer run on Caffe's own bottoms (its error in isolation), or why it could not be
    local: "LayerResult | None" = None
    local_note: str | None = None
    atol: float | None = None  # this layer's tolerance, where a pattern made it differ from the report's
    rtol: float | None = None
    baseline: float | None = None  # the accepted max_abs (parity.gate), when a baseline was given
    grew: bool = False  # within tolerance, but its error grew past the baseline's limit

    @property
    def drift(self) -> bool:
        """Failing when propagated, yet exact on Caffe's own inputs: inherited float drift, not a bug here."""
        return self.status != PASS and self.local is not None and self.local.status == PASS

    def to_dict(self) -> dict:
        d = _json_safe(asdict(self))
        if self.local is not None:
            d["local"] = {k: d["local"][k] for k in LOCAL_KEYS}
        d["drift"] = self.drift
        return d


LOCAL_KEYS = ("status", "max_abs", "max_rel", "rel_l2", "cosine", "outside", "worst", "worst_ref", "worst_got",
              "problem", "got_shape")


def _json_safe(value):
    """Tuples as lists, inf/nan as strings: strict JSON has no such numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def measure(result: LayerResult, ref_nchw: np.ndarray, got: np.ndarray, tol: Tolerance) -> LayerResult:
    """Fill `result`'s metrics; `got` is the converted output in parity's (channels-last) layout."""
    ref = to_keras_layout(ref_nchw)
    if ref.shape != got.shape:
        result.got_shape = caffe_shape(got.shape)
        result.problem = f"shape {result.got_shape} differs from Caffe's {tuple(ref_nchw.shape)}"
        result.status = FAIL
        return result
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(got64 - ref64)
    diff[np.isnan(diff)] = np.inf  # a NaN is as wrong as it gets
    aref = np.abs(ref64)
    allowed = tol.atol + tol.rtol * aref
    result.max_abs = float(diff.max()) if diff.size else 0.0
    result.max_rel = float((diff / (aref + tol.atol)).max()) if diff.size else 0.0
    ref_norm = float(np.sqrt(np.sum(ref64 * ref64)))
    diff_norm = float(np.sqrt(np.sum(diff * diff)))  # inf where a NaN was (diff holds inf there)
    result.rel_l2 = diff_norm / ref_norm if ref_norm > 0 else diff_norm
    got_norm = float(np.sqrt(np.sum(got64 * got64)))
    if ref_norm > 0 and got_norm > 0 and np.isfinite(got_norm):
        result.cosine = float(np.sum(ref64 * got64) / (ref_norm * got_norm))
    else:
        result.cosine = 1.0 if ref_norm == got_norm == 0 else 0.0
    outside = ~(diff <= allowed)
    result.outside = float(outside.mean()) if diff.size else 0.0
    if diff.size:
        flat = int(np.argmax(diff / allowed))
        idx = np.unravel_index(flat, diff.shape)
        result.worst = tuple(int(i) for i in caffe_index(idx))
        result.worst_ref, result.worst_got = float(ref[idx]), float(got[idx])
    result.status = FAIL if outside.any() else PASS
    return result


def attribute(results: list[LayerResult], net: Net | None) -> str | None:
    """Mark failures downstream of an earlier failing ancestor; return the first divergent layer."""
    failing: dict[str, int] = {}
    for r in sorted(results, key=lambda r: r.order):
        if r.status == PASS:
            continue
        ancestors = net.ancestors(r.layer) if net is not None else {
            name for name, order in failing.items() if order < r.order}
        roots = [name for name in failing if name in ancestors and name != r.layer]
        if roots:
            r.status = DOWNSTREAM
            r.downstream_of = min(roots, key=failing.get)
        failing.setdefault(r.layer, r.order)
    firsts = [r for r in results if r.status == FAIL]
    return min(firsts, key=lambda r: r.order).layer if firsts else None
