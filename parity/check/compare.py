"""Comparing a converted layer's output with Caffe's, and finding where divergence entered.

Per layer: max abs error, max rel error, relative L2 error, cosine similarity, the share of
elements outside the allowed error, and the worst element in Caffe's (n, c, h, w) coordinates.
A layer passes when no element is outside. The allowed error comes from one of two rules:

- the noise rule (the default, `NoiseRule`): |got - ref| <= k * noise, where noise is the float32
  rounding noise of that output on that input (parity.check.noise measures it; `effective_noise` adds what
  it inherits and one float32 step of the output's largest value). The report gives each layer's
  noise and its error as a multiple of it (`ratio`);
- the fixed rule (`Tolerance`, asked for with atol/rtol): |got - ref| <= atol + rtol * |ref|
  (np.allclose's rule).

Outputs that are decisions (ArgMax's indices, Threshold's 0/1) are compared only where the decision
is clear of the noise (parity.check.decisions); flips inside the noise are counted, not failed.

Which failing layer is the first divergence is parity.check.divergence's business.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.layout import caffe_index, caffe_shape, to_keras_layout

PASS, FAIL, DOWNSTREAM = "pass", "fail", "downstream"
EPS32 = float(np.finfo(np.float32).eps)  # 2**-23, float32's step at 1.0

# A layer diverges when its error exceeds K times its noise. Chosen from measured data (README,
# "Tolerances"): every correct conversion of the zoo, against references from three OpenBLAS kernels
# and with TensorFlow's AVX2 and AVX-512 kernels, stays below K/3; a bug is named from K up.
K = 12.0


@dataclass(frozen=True)
class Tolerance:
    """The fixed rule: an element passes when |got - ref| <= atol + rtol * |ref|."""

    atol: float
    rtol: float

    def for_layer(self, _name: str) -> "Tolerance":
        """One tolerance for every layer (parity.check.gate.TolerancePolicy varies it by layer name)."""
        return self

    def describe(self) -> dict:
        return {"rule": "fixed", "atol": self.atol, "rtol": self.rtol}


@dataclass(frozen=True)
class NoiseRule:
    """The noise rule: an element passes when |got - ref| <= k * noise, noise measured per output."""

    k: float = K

    def for_layer(self, _name: str) -> "NoiseRule":
        return self

    def tolerance(self, noise: float) -> Tolerance:
        """The fixed rule this is for one output whose noise is `noise`."""
        return Tolerance(self.k * noise, 0.0)

    def describe(self) -> dict:
        return {"rule": "noise", "k": self.k}


def effective_noise(twin: float, peak: float, inherited: float = 0.0) -> float:
    """One output's noise: what the float64 twin measured (`twin`, max |float32 - float64|), at least
    the relative noise its inputs carried (`inherited`) times its largest value (`peak`), plus one
    float32 step of that value.

    Why the two additions: rounding error does not vanish between layers, but a layer of a few
    elements can by chance show the twin almost none (MobileNet-sized nets have 2-element
    InnerProducts); and an exact layer (an Input, a copy) has no twin noise at all, while Caffe and
    TensorFlow may still round its last bit apart.
    """
    return max(twin, inherited * peak) + EPS32 * peak


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
    noise: float | None = None  # noise rule: this output's float32 noise (effective_noise)
    ratio: float | None = None  # noise rule: max_abs / noise; the layer diverges above k
    flips: int | None = None  # decisions (ArgMax, Threshold) that differ where noise can flip them: not failed
    baseline: float | None = None  # the accepted max_abs, or ratio under the noise rule (parity.check.gate)
    grew: bool = False  # within tolerance, but its error grew past the baseline's limit
    detections: dict | None = None  # DetectionOutput: the boxes paired and judged (parity.check.detections)

    @property
    def drift(self) -> bool:
        """Failing when propagated, yet exact on Caffe's own inputs: inherited float drift, not a bug here."""
        return self.status != PASS and self.local is not None and self.local.status == PASS

    def to_dict(self) -> dict:
        d = json_safe(asdict(self))
        if self.local is not None:
            d["local"] = {k: d["local"][k] for k in LOCAL_KEYS}
        d["drift"] = self.drift
        return d


LOCAL_KEYS = ("status", "max_abs", "max_rel", "rel_l2", "cosine", "outside", "worst", "worst_ref", "worst_got",
              "problem", "got_shape", "noise", "ratio", "flips")


def json_safe(value):
    """Plain JSON values, the one sanitizer of every report: tuples and numpy arrays as lists, numpy scalars as
    Python numbers, inf/nan as strings (strict JSON has no such numbers)."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else str(float(value))
    return value


def measure(result: LayerResult, ref_nchw: np.ndarray, got: np.ndarray, tol: "Tolerance | NoiseRule",
            noise: float | None = None) -> LayerResult:
    """Fill `result`'s metrics; `got` is the converted output in parity's (channels-last) layout.

    Under a NoiseRule, `noise` is the output's noise (effective_noise), and the ratio is set too."""
    if isinstance(tol, NoiseRule):
        if noise is None:
            raise ValueError(f"{result.layer}: the noise rule needs the output's noise")
        result.noise = noise
        measure(result, ref_nchw, got, tol.tolerance(noise))
        if result.max_abs is not None:
            result.ratio = noise_ratio(result.max_abs, noise)
        return result
    ref = to_keras_layout(ref_nchw)
    if ref.shape != got.shape:
        result.got_shape = caffe_shape(got.shape)
        result.problem = f"shape {result.got_shape} differs from Caffe's {tuple(ref_nchw.shape)}"
        result.status = FAIL
        return result
    if got.size:
        _fill_metrics(result, ref, got, tol)
    else:
        result.max_abs = result.max_rel = result.rel_l2 = result.outside = 0.0
        result.cosine = 1.0
    result.status = FAIL if result.outside else PASS
    return result


def noise_ratio(error: float, noise: float) -> float:
    """`error` in units of `noise`: 0 for no error, inf for any error where no noise can be (or a NaN)."""
    if error == 0:
        return 0.0
    return error / noise if noise > 0 and np.isfinite(error) else float("inf")


CHUNK = 1 << 16  # elements per block: a block's float64 temporaries stay in a core's L2 cache


@dataclass
class _Totals:
    """Running metrics over the blocks of one layer's output."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    outside: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros(4))  # ref.ref, diff.diff, got.got, ref.got
    worst_ratio: float = -np.inf
    worst_at: int = 0

    def add(self, start: int, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> None:
        diff = got - ref
        np.abs(diff, out=diff)
        if np.isnan(diff.max()):
            diff[np.isnan(diff)] = np.inf  # a NaN is as wrong as it gets
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.sums += (np.dot(ref, ref), np.dot(diff, diff), np.dot(got, got), np.dot(ref, got))
        unmatched = ~np.isfinite(ref) & (got != ref)  # an inf allowance (rtol x |inf|) must not excuse these
        diff[unmatched] = np.inf
        aref = np.abs(ref, out=ref)
        allowed = aref * tol.rtol
        allowed += tol.atol
        self.outside += int(np.count_nonzero(~(diff <= allowed)))
        aref += tol.atol
        self.max_rel = float(np.maximum(self.max_rel, np.divide(diff, aref, out=aref).max()))  # NaN wins, as in max()
        ratio = np.divide(diff, allowed, out=allowed)
        at = int(np.argmax(ratio))  # np.argmax's rule across blocks: the first NaN, else the first maximum
        if (np.isnan(ratio[at]) and not np.isnan(self.worst_ratio)) or ratio[at] > self.worst_ratio:
            self.worst_ratio, self.worst_at = float(ratio[at]), start + at


def _fill_metrics(result: LayerResult, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> None:
    """The metrics in float64 (a float32 difference is exact there), block by block.

    Why blocks: a check compares every layer of the net, 16 M values for a 224 px VGG, and whole-array
    float64 temporaries made comparing cost more than the forward pass; in cache-sized blocks the
    arrays are read from memory once.
    """
    flat_ref = np.ascontiguousarray(ref).reshape(-1)  # Caffe's blob lined up with `got`
    flat_got = np.ascontiguousarray(got).reshape(-1)
    totals = _Totals()
    # 0/0 (atol 0 where Caffe's output is 0) and NaN or inf outputs make NaN/inf metrics by design ("NaN wins");
    # numpy's RuntimeWarnings about them would only be noise on stderr
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, flat_ref.size, CHUNK):
            block = slice(start, start + CHUNK)
            totals.add(start, flat_ref[block].astype(np.float64), flat_got[block].astype(np.float64), tol)
    ref_norm, diff_norm, got_norm = (float(np.sqrt(v)) for v in totals.sums[:3])
    result.max_abs, result.max_rel = totals.max_abs, totals.max_rel
    result.rel_l2 = diff_norm / ref_norm if ref_norm > 0 else diff_norm  # inf where a NaN was
    if ref_norm > 0 and got_norm > 0 and np.isfinite(got_norm):
        with np.errstate(invalid="ignore", over="ignore"):  # an Inf in Caffe's output: inf/inf, a NaN cosine
            result.cosine = float(totals.sums[3] / (ref_norm * got_norm))
    else:
        result.cosine = 1.0 if ref_norm == got_norm == 0 else 0.0
    result.outside = totals.outside / flat_ref.size
    idx = np.unravel_index(totals.worst_at, got.shape)
    result.worst = tuple(int(i) for i in caffe_index(idx))
    result.worst_ref, result.worst_got = float(ref[idx]), float(got[idx])
