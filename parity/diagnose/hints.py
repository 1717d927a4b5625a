"""Cause hints: why one layer's converted output differs from Caffe's, read off the two arrays.

`diagnose(ref, got, atol, rtol)` runs a fixed list of detectors (DETECTORS, strongest evidence first)
on one layer's reference (Caffe's output, channels-last) and converted output. A detector states a
cause only when a check on the arrays backs it, and returns the numbers of that check as evidence:

- nonfinite      NaN/Inf in the converted output where Caffe's is finite.
- rounding       H and/or W off by exactly one, in the same direction: ceil versus floor output size.
- padding        (a) the spatial size off by more than one (pad or stride); (b) the error sits in the
                 outer 1-3 rows/columns (what the padding holds: zeros versus -inf for MAX pooling, AVE
                 pooling's divisor, the ceil overhang), with the sides if it is one-sided; (c) the output
                 is Caffe's shifted by whole pixels (at stride 1, padding moved to one side, as
                 ZeroPadding2D((0, 2p)) + 'valid' does).
- layout         the output is Caffe's with axes transposed (H<->W, channels-first), with its flattened
                 features in H,W,C instead of C,H,W order (`flatten_source`), or with its channels
                 permuted (reversed, blocks swapped as by a Concat in the wrong order, any permutation).
- channel-order  the network's input with its channels reversed (RGB fed where Caffe expects BGR),
                 possibly with the per-channel mean then subtracted in the other order.
- scale          the output is a*Caffe's + b, with one (a, b) or one per channel (least squares).

"Explains" is the same for every candidate: the candidate reproduces the converted output within
the tolerance rule |got - candidate| <= atol + rtol*|candidate| (or to a relative L2 error below
1e-3), AND its error is at most a tenth of the raw error. The second condition keeps a hint from
firing on noise: a least-squares fit or a permutation search always finds *something*, but on an
unrelated error it does not cut the error tenfold.

At most one hint per cause is returned (the first detector of a cause that fires wins), and [] when
the layer is within tolerance or nothing explains its error. Pure NumPy: runs where TensorFlow
does not (the pycaffe environment) and costs little next to the forward pass: every check is a few
passes over the arrays, searches (permutations, shifts) run on a deterministic subsample and the
winner is then verified on the whole arrays.

Known blind spots (no hint rather than a guess): padding put on the wrong side of a stride-2
convolution shifts the sampling grid by half an output pixel, so the error is everywhere and no
whole-pixel shift reproduces it; an InnerProduct whose weight rows were not reordered from C,H,W
is not a permutation of its output; LRN with a wrong alpha is not a constant factor (see
tests/test_hints.py for what is reported there).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..check.compare import json_safe
from ..data.layout import caffe_shape, to_caffe_layout

DETECTED_CAUSES = ("padding", "layout", "channel-order", "scale", "rounding", "nonfinite")
VERIFIED_CAUSES = ("kernel-flip", "pooling", "lrn-alpha", "batchnorm-eps")  # only by a rerun (parity.diagnose.verify)
CAUSES = DETECTED_CAUSES + VERIFIED_CAUSES

MATCH_REL_L2 = 1e-3  # a candidate this close (relative L2) reproduces the output even outside atol/rtol
EXPLAINS = 10.0  # ... and it must cut the raw error norm at least this many times
BORDER_WIDTHS = (1, 2, 3)
BORDER_SHARE = 0.8  # share of the squared error AND of the elements outside tolerance in the border
BORDER_MAX_AREA = 0.5  # the border may hold at most this share of the map (else it proves nothing)
MAX_SHIFT = 3  # whole-pixel shifts searched, each way
SHIFT_CHANNELS = 16  # channels the shift search looks at (all are verified afterwards)
PERM_BUDGET = 5e7  # C*C*samples multiply-adds for the channel matching
MIN_FIT = 8  # elements a (per-channel) linear fit needs


@dataclass(frozen=True)
class Hint:
    cause: str  # one of CAUSES
    message: str  # one sentence for a human, naming what to look at
    evidence: dict  # JSON-serializable numbers that back it

    def __post_init__(self):
        if self.cause not in CAUSES:
            raise ValueError(f"unknown cause {self.cause!r}; known: {', '.join(CAUSES)}")

    def to_dict(self) -> dict:
        return {"cause": self.cause, "message": self.message, "evidence": json_safe(self.evidence)}


def _rounded(x: float, digits: int = 6) -> float:
    """A float for evidence: finite, rounded to `digits` significant digits (readable JSON)."""
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def _norm(a: np.ndarray) -> float:
    return float(np.sqrt(np.sum(np.square(a)))) if a.size else 0.0


@dataclass
class Case:
    """One layer's arrays, cleaned once for all detectors.

    `ref`/`got` are float64 with every position where either is non-finite set to 0 in both: the
    nonfinite detector reports those positions, the others judge the rest.
    """

    ref_raw: np.ndarray
    got_raw: np.ndarray
    ref: np.ndarray
    got: np.ndarray
    atol: float
    rtol: float
    layer_type: str
    flatten_source: tuple[int, int, int] | None
    is_input: bool

    @property
    def same_shape(self) -> bool:
        return self.ref.shape == self.got.shape

    @property
    def spatial(self) -> bool:
        return self.same_shape and self.ref.ndim == 4

    def allowed(self, candidate: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(candidate)

    def outside(self) -> np.ndarray:
        return ~(np.abs(self.got - self.ref) <= self.allowed(self.ref))

    def raw_norm(self) -> float:
        return _norm(self.got - self.ref)

    def reproduces(self, candidate: np.ndarray, target: np.ndarray, raw: float | None,
                   diff: np.ndarray | None = None) -> tuple[bool, float]:
        """Does `candidate` reproduce `target` (within tolerance or rel L2 < 1e-3) and cut the raw
        error (`raw`, None when shapes differ and there is none) tenfold? Returns (verdict, rel L2)."""
        diff = target - candidate if diff is None else diff
        dnorm, cnorm = _norm(diff), _norm(candidate)
        rel = dnorm / cnorm if cnorm > 0 else (0.0 if dnorm == 0 else math.inf)
        within = bool(np.all(np.abs(diff) <= self.allowed(candidate)))
        better = raw is None or (raw > 0 and dnorm * EXPLAINS <= raw)
        return (within or rel < MATCH_REL_L2) and better, rel


def _channels_last(a: np.ndarray) -> np.ndarray:
    """The channel axis last: 4-D blobs already are (NHWC); other ranks keep Caffe's order (axis 1)."""
    return a if a.ndim == 4 or a.ndim < 2 else np.moveaxis(a, 1, -1)


def _caffe_coords(mask: np.ndarray, limit: int) -> list[list[int]]:
    """The first `limit` True positions of `mask` in Caffe's (n, c, h, w) order and coordinates."""
    caffe = to_caffe_layout(mask)
    flat = np.flatnonzero(caffe.ravel())[:limit]
    return [[int(i) for i in idx] for idx in zip(*np.unravel_index(flat, caffe.shape))]


# -- detectors ------------------------------------------------------------------------------------
def nonfinite(case: Case) -> Hint | None:
    """NaN/Inf where Caffe is finite: a division by zero, sqrt/log of a negative, an overflow, or
    MAX pooling's -inf padding leaking out. Counted per kind; the first positions in Caffe's order."""
    if not case.same_shape:
        return None
    bad = ~np.isfinite(case.got_raw) & np.isfinite(case.ref_raw)
    count = int(bad.sum())
    if not count:
        return None
    values = case.got_raw[bad]
    first = _caffe_coords(bad, 5)
    evidence = {"count": count, "share": _rounded(count / bad.size), "nan": int(np.isnan(values).sum()),
                "posinf": int(np.isposinf(values).sum()), "neginf": int(np.isneginf(values).sum()),
                "first": first}
    kinds = ", ".join(f"{evidence[k]} {name}" for k, name in (("nan", "NaN"), ("posinf", "+Inf"), ("neginf", "-Inf"))
                      if evidence[k])
    return Hint("nonfinite", f"{count} non-finite value(s) ({kinds}) where Caffe's output is finite, first at "
                f"(n, c, h, w) = {tuple(first[0])}: look for a division by zero or a sqrt/log of a negative "
                f"(BatchNorm variance/eps/scale_factor, LRN, Power), an overflow, or -inf padding leaking out "
                f"of MAX pooling", evidence)


def rounding(case: Case) -> Hint | None:
    """H and/or W off by exactly one, the same way (N and C equal): the output size was rounded the
    other way (Caffe's Pooling rounds up, Convolution down). The overlapping top-left part agreeing
    supports it: ceil and floor windows start at the same places."""
    ref, got = case.ref, case.got
    if case.same_shape or ref.ndim != 4 or got.ndim != 4:
        return None
    (n, h, w, c), (gn, gh, gw, gc) = ref.shape, got.shape
    dh, dw = gh - h, gw - w
    if (n, c) != (gn, gc) or max(abs(dh), abs(dw)) != 1 or dh * dw < 0:
        return None
    oh, ow = min(h, gh), min(w, gw)
    r, g = ref[:, :oh, :ow], got[:, :oh, :ow]
    agrees, rel = case.reproduces(r, g, None)
    evidence = {"ref_shape": list(caffe_shape(ref.shape)), "got_shape": list(caffe_shape(got.shape)),
                "rows": dh, "cols": dw, "overlap_rel_l2": _rounded(rel), "overlap_matches": agrees}
    what = " and ".join(f"one {axis} {'more' if d > 0 else 'fewer'}" for axis, d in (("row", dh), ("column", dw)) if d)
    why = ROUNDING_CAUSES.get(case.layer_type, ROUNDING_CAUSES[""])
    return Hint("rounding", f"the output has {what} than Caffe's ({tuple(evidence['got_shape'])} vs "
                f"{tuple(evidence['ref_shape'])}): {why}" + ("; the overlapping part agrees" if agrees else ""),
                evidence)


# What an output size off by one means, by Caffe layer type (the arrays alone say only "off by one").
ROUNDING_CAUSES = {
    "": "ceil versus floor rounding of the output size (Caffe's Pooling rounds up and drops a last window "
        "starting in the padding, Convolution rounds down)",
    "Pooling": "ceil versus floor rounding of the output size (Caffe's Pooling rounds up unless ceil_mode is "
               "false, and drops a last window starting in the padding on both axes if either axis is padded)",
    "Deconvolution": "the transposed convolution's output size (Caffe's is s(i-1) + d(k-1) + 1 - 2p; a 'valid' "
                     "Keras Conv2DTranspose gives s*i where the dilated kernel is shorter than the stride, and "
                     "'same' padding or an output_padding shift it too)",
}


def padding_size(case: Case) -> Hint | None:
    """The spatial size off by more than one (N and C equal, not merely H and W swapped): more than
    rounding can do; pad (each unit changes the size by 2/stride) or stride differ."""
    ref, got = case.ref, case.got
    if case.same_shape or ref.ndim != 4 or got.ndim != 4:
        return None
    (n, h, w, c), (gn, gh, gw, gc) = ref.shape, got.shape
    dh, dw = gh - h, gw - w
    if (n, c) != (gn, gc) or (gh, gw) == (w, h) or max(abs(dh), abs(dw)) < 2:
        return None
    evidence = {"ref_shape": list(caffe_shape(ref.shape)), "got_shape": list(caffe_shape(got.shape)),
                "rows": dh, "cols": dw}
    return Hint("padding", f"the output is {dh:+d} row(s), {dw:+d} column(s) off Caffe's size "
                f"({tuple(evidence['got_shape'])} vs {tuple(evidence['ref_shape'])}), more than rounding does: "
                f"check pad (each unit adds 2/stride rows and columns), stride, kernel size and dilation", evidence)


_SIDES = ("top", "bottom", "left", "right")


def padding_border(case: Case) -> Hint | None:
    """Error concentrated in the outer k rows/columns (smallest k of 1-3 where >= 80% of both the
    squared error and the elements outside tolerance lie in a border covering <= half the map):
    what the padding holds or how the border windows are counted. Which sides hold it says more:
    one or two sides is the ceil overhang or one-sided padding, all four the pad value/divisor."""
    if not case.spatial:
        return None
    err = np.square(case.got - case.ref).sum(axis=(0, 3))  # (H, W)
    out = case.outside().sum(axis=(0, 3))
    total_err, total_out = float(err.sum()), float(out.sum())
    if total_out == 0 or total_err == 0:
        return None
    h, w = err.shape
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    for k in BORDER_WIDTHS:
        sides = {"top": rows < k, "bottom": rows >= h - k, "left": cols < k, "right": cols >= w - k}
        sides = {s: np.broadcast_to(m, (h, w)) for s, m in sides.items()}
        border = sides["top"] | sides["bottom"] | sides["left"] | sides["right"]
        area = float(border.mean())
        if 2 * k >= min(h, w) or area > BORDER_MAX_AREA:
            return None
        err_share, out_share = err[border].sum() / total_err, out[border].sum() / total_out
        if err_share >= BORDER_SHARE and out_share >= BORDER_SHARE:
            break
    else:
        return None
    chosen = _fewest_sides(sides, err, out, total_err, total_out)
    evidence = {"border_width": k, "border_share": _rounded(err_share), "outside_share": _rounded(out_share),
                "area_share": _rounded(area), "sides": list(chosen),
                "side_shares": {s: _rounded(err[m].sum() / total_err) for s, m in sides.items()}}
    where = f"{k}-pixel border ({100 * err_share:.0f}% of the squared error in {100 * area:.0f}% of the area)"
    if len(chosen) == 4:
        return Hint("padding", f"error concentrated in the {where}: check pad and what the padding holds (zeros "
                    f"versus -inf for MAX pooling, whether AVE pooling's divisor counts padded cells)", evidence)
    return Hint("padding", f"error concentrated in the {'/'.join(chosen)} side(s) of the {where}: padding on one "
                f"side only (TF 'same' pads bottom/right) or the ceil-mode overhang of pooling (Caffe pads both "
                f"sides, clips the last window and leaves the overhang out of AVE's divisor)", evidence)


def _fewest_sides(sides: dict, err: np.ndarray, out: np.ndarray, total_err: float, total_out: float) -> tuple:
    """The fewest sides whose union holds >= BORDER_SHARE of the squared error and of the outside count."""
    for count in (1, 2, 3):
        best = None
        for combo in itertools.combinations(_SIDES, count):
            mask = np.logical_or.reduce([sides[s] for s in combo])
            share = err[mask].sum() / total_err
            if share >= BORDER_SHARE and out[mask].sum() / total_out >= BORDER_SHARE and (
                    best is None or share > best[0]):
                best = (share, combo)
        if best:
            return best[1]
    return _SIDES


def padding_shift(case: Case) -> Hint | None:
    """The output is Caffe's shifted by whole pixels: got[h, w] = ref[h + dy, w + dx] on the overlap.
    At stride 1, padding moved to one side (ZeroPadding2D((0, 2p)), TF 'same' for even kernels) or
    a Crop offset does exactly this. Searched on batch 0 and a few channels, verified on all."""
    if not case.spatial:
        return None
    _, h, w, c = case.ref.shape
    picks = np.unique(np.linspace(0, c - 1, min(c, SHIFT_CHANNELS)).astype(int))
    r, g = case.ref[0][..., picks], case.got[0][..., picks]
    best = None
    for dy, dx in itertools.product(range(-MAX_SHIFT, MAX_SHIFT + 1), repeat=2):
        if (dy, dx) == (0, 0) or (h - abs(dy)) * (w - abs(dx)) < 0.5 * h * w:
            continue
        gsl, rsl = _overlap(dy, dx, h, w, axis=0)
        gs, rs = g[gsl], r[rsl]
        err = _norm(gs - rs) / max(_norm(rs), 1e-300)
        if best is None or err < best[0]:
            best = (err, dy, dx)
    if best is None:
        return None
    _, dy, dx = best
    gsl, rsl = _overlap(dy, dx, h, w, axis=1)
    gs, rs = case.got[gsl], case.ref[rsl]
    raw = _norm(gs - case.ref[gsl])  # the same region, unshifted
    ok, rel = case.reproduces(rs, gs, raw)
    if not ok or raw == 0:
        return None
    moved = [f"{abs(d)} {unit}(s) {'from the ' + a + ' to the ' + b if d > 0 else 'from the ' + b + ' to the ' + a}"
             for d, unit, a, b in ((dy, "row", "top", "bottom"), (dx, "column", "left", "right")) if d]
    evidence = {"shift": [dy, dx], "overlap_rel_l2": _rounded(rel),
                "raw_overlap_rel_l2": _rounded(raw / max(_norm(rs), 1e-300))}
    return Hint("padding", f"the output is Caffe's shifted by {dy} row(s) and {dx} column(s) (got[h, w] = "
                f"ref[h{dy:+d}, w{dx:+d}]): padding moved {' and '.join(moved)} (one-sided padding as TF 'same' or "
                f"ZeroPadding2D((0, 2p)) does; Caffe pads p on both sides) or a Crop offset", evidence)


def _overlap(dy: int, dx: int, h: int, w: int, axis: int) -> tuple[tuple, tuple]:
    """Index tuples pairing got[h, w] with ref[h + dy, w + dx] where both exist (H, W at `axis`, `axis` + 1)."""
    pre = (slice(None),) * axis
    gsl = pre + (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    rsl = pre + (slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx)))
    return gsl, rsl


_AXES = {(0, 2, 1, 3): "H and W swapped", (0, 3, 1, 2): "channels-first (N, C, H, W) instead of channels-last",
         (0, 1, 3, 2): "W and C swapped", (0, 2, 3, 1): "axes in (N, W, C, H) order",
         (0, 3, 2, 1): "axes in (N, C, W, H) order"}


def layout_axes(case: Case) -> Hint | None:
    """The output is Caffe's with its axes transposed: H<->W (a spatial transpose of the weights or
    the data), or channels-first data where channels-last is expected. Tried only where the shapes
    allow it; a transpose that does not change the array (H == W == 1) cannot explain anything."""
    ref, got = case.ref, case.got
    if ref.ndim != 4 or got.ndim != 4 or ref.shape[0] != got.shape[0]:
        return None
    raw = case.raw_norm() if case.same_shape else None
    for axes, words in _AXES.items():
        candidate = ref.transpose(axes)
        if candidate.shape != got.shape:
            continue
        ok, rel = case.reproduces(candidate, got, raw)
        if ok:
            return Hint("layout", f"the output is Caffe's with {words}: check the transposes of the data and of the "
                        f"kernel (Caffe's (O, I, kh, kw) becomes (kh, kw, I, O))",
                        {"transpose": list(axes), "rel_l2": _rounded(rel), "ref_shape": list(caffe_shape(ref.shape)),
                         "got_shape": list(caffe_shape(got.shape))})
    return None


def layout_flatten(case: Case) -> Hint | None:
    """With `flatten_source` = (C, H, W): the 2-D output holds Caffe's features (C,H,W order) listed
    in H,W,C order (a Flatten of the channels-last tensor: the classic bug), or the reverse reorder."""
    if case.flatten_source is None or not case.same_shape or case.ref.ndim != 2:
        return None
    c, h, w = (int(v) for v in case.flatten_source)
    n, f = case.ref.shape
    if c * h * w != f or c == 1 or h * w == 1:
        return None
    raw = case.raw_norm()
    orders = {"H,W,C": case.ref.reshape(n, c, h, w).transpose(0, 2, 3, 1).reshape(n, f),
              "C,H,W from H,W,C": case.ref.reshape(n, h, w, c).transpose(0, 3, 1, 2).reshape(n, f)}
    for order, candidate in orders.items():
        ok, rel = case.reproduces(candidate, case.got, raw)
        if ok:
            what = ("in H,W,C order instead of Caffe's C,H,W: the channels-last tensor was flattened without moving "
                    "it to Caffe's order first" if order == "H,W,C" else
                    "reordered from H,W,C to C,H,W although they already were in C,H,W: the reorder ran the wrong "
                    "way (or twice)")
            return Hint("layout", f"the flattened features are Caffe's {what} (check Flatten/Reshape and the "
                        f"InnerProduct row order)",
                        {"flatten_source": [c, h, w], "got_order": order, "rel_l2": _rounded(rel)})
    return None


def _match_channels(ref: np.ndarray, got: np.ndarray) -> np.ndarray | None:
    """For each got channel the ref channel nearest to it (rows: positions, columns: channels),
    as a bijection; ties prefer the identity. Positions subsampled deterministically."""
    m, c = ref.shape
    if m == 1:  # one value per channel: matching by rank is the only information there is
        perm = np.empty(c, dtype=int)
        perm[np.argsort(got[0], kind="stable")] = np.argsort(ref[0], kind="stable")
        same = np.isclose(got[0], ref[0], rtol=0, atol=0)
        perm[same] = np.arange(c)[same]
        return perm if len(np.unique(perm)) == c else None
    k = int(min(m, max(64, PERM_BUDGET // (c * c))))
    rows = np.sort(np.random.default_rng(0).choice(m, size=k, replace=False)) if k < m else slice(None)
    r, g = ref[rows], got[rows]
    rn, gn = np.sum(r * r, axis=0), np.sum(g * g, axis=0)
    perm = np.empty(c, dtype=int)
    for start in range(0, c, 512):
        block = slice(start, min(c, start + 512))
        dist = gn[block, None] + rn[None, :] - 2 * (g[:, block].T @ r)
        best = np.argmin(dist, axis=1)
        own = np.arange(block.start, block.stop)
        keep = dist[np.arange(len(own)), own] <= dist[np.arange(len(own)), best] * (1 + 1e-9) + 1e-12
        perm[block] = np.where(keep, own, best)
    if len(np.unique(perm)) == c:
        return perm
    # ties (e.g. several all-zero channels): keep first claims, hand the rest the unclaimed channels
    taken, free_got = set(), []
    for j, i in enumerate(perm):
        if i in taken:
            free_got.append(j)
        else:
            taken.add(int(i))
    unclaimed = [i for i in range(c) if i not in taken]
    for j, i in zip(free_got, unclaimed):
        perm[j] = i
    return perm


def _blocks(perm: np.ndarray) -> list[list[int]]:
    """Runs of consecutive channels: [got_start, ref_start, length]."""
    runs = []
    for j, i in enumerate(perm):
        if runs and i == runs[-1][1] + runs[-1][2] and j == runs[-1][0] + runs[-1][2]:
            runs[-1][2] += 1
        else:
            runs.append([j, int(i), 1])
    return runs


def layout_channels(case: Case) -> Hint | None:
    """The output is Caffe's with its channels permuted: each got channel matched to its nearest ref
    channel, the permutation verified on all elements. Reversed on the network's input is left to
    channel_order (BGR/RGB); contiguous blocks point at a Concat's bottom order."""
    if not case.same_shape or case.ref.ndim < 2:
        return None
    ref, got = _channels_last(case.ref), _channels_last(case.got)
    c = ref.shape[-1]
    if c < 2:
        return None
    perm = _match_channels(ref.reshape(-1, c), got.reshape(-1, c))
    if perm is None or np.array_equal(perm, np.arange(c)):
        return None
    reversed_ = np.array_equal(perm, np.arange(c)[::-1])
    if reversed_ and case.is_input:
        return None
    ok, rel = case.reproduces(ref[..., perm], got, case.raw_norm())
    if not ok:
        return None
    moved = int(np.sum(perm != np.arange(c)))
    runs = _blocks(perm)
    evidence = {"channels": c, "moved": moved, "rel_l2": _rounded(rel),
                "permutation": "reversed" if reversed_ else (perm.tolist() if c <= 64 else None),
                "pairs": [[j, int(i)] for j, i in enumerate(perm) if i != j][:8]}
    if evidence["permutation"] is None:
        del evidence["permutation"]
    if reversed_:
        text = "in reverse order: a channel axis flipped (a BGR<->RGB swap inside the net, or reversed weights)"
    elif 2 <= len(runs) <= 8:
        evidence["blocks"] = runs
        text = (f"in {len(runs)} blocks in another order ([got start, Caffe start, length]: {runs}): check the bottom "
                f"order and axis of Concat (or Slice points)")
    else:
        j, i = evidence["pairs"][0]
        text = (f"permuted ({moved} of {c} moved, e.g. channel {j} holds Caffe's channel {i}): check the channel axis "
                f"of the kernel and of Concat/Reshape/Permute")
    return Hint("layout", f"the output channels are Caffe's {text}", evidence)


def channel_order(case: Case) -> Hint | None:
    """The network's input with its channels reversed: RGB fed where Caffe expects BGR (or the
    reverse). With per-channel mean subtraction after the swap, each channel is also off by a
    constant (the means subtracted in the other order): the offsets are fitted and reported."""
    if not case.is_input or not case.same_shape or case.ref.ndim < 2:
        return None
    ref, got = _channels_last(case.ref), _channels_last(case.got)
    c = ref.shape[-1]
    if c < 2:
        return None
    flipped = ref[..., ::-1]
    raw = case.raw_norm()
    offsets = np.zeros(c)
    ok, rel = case.reproduces(flipped, got, raw)
    if not ok:
        offsets = (got - flipped).reshape(-1, c).mean(axis=0)
        ok, rel = case.reproduces(flipped + offsets, got, raw)
        unflipped = ref + (got - ref).reshape(-1, c).mean(axis=0)
        if not ok or case.reproduces(unflipped, got, raw)[0]:
            return None  # offsets alone explain it (channels alike, e.g. grey): that is scale's case
    shifted = bool(np.any(np.abs(offsets) > case.atol))
    evidence = {"channels": c, "permutation": "reversed", "offsets": [_rounded(o) for o in offsets],
                "rel_l2": _rounded(rel)}
    return Hint("channel-order", "the input's channels are reversed: RGB fed where Caffe expects BGR (or the other "
                "way); check the image loader and the preprocessing's channel order"
                + (f"; the per-channel offsets {evidence['offsets']} are the mean subtracted in the other channel order"
                   if shifted else ""), evidence)


def scale(case: Case) -> Hint | None:
    """got = a*ref + b, one (a, b) for the blob or one per channel, by least squares. Fitted only
    where both outputs are non-zero: a ReLU after the layer (an in-place chain at blob granularity)
    makes both ReLU(a*x + b)-like, and the clipped zeros carry no information about a and b. When
    both outputs are non-negative with zeros (ReLU-clipped), the zeros are still checked: where
    only got is 0, a*ref + b must be <= 0 (clipped); where only ref is 0, got must be <= b."""
    if not case.same_shape or case.ref.size < MIN_FIT:
        return None
    ref, got = _channels_last(case.ref), _channels_last(case.got)
    c = ref.shape[-1] if ref.ndim >= 2 else 1
    r, g = ref.reshape(-1, c), got.reshape(-1, c)
    clipped = bool(r.min() >= 0 and g.min() >= 0 and np.any((r == 0) ^ (g == 0)))
    fit = (r != 0) & (g != 0)
    if fit.sum() < MIN_FIT:
        return None
    raw = case.raw_norm()
    a, b = _fit(r.reshape(-1, 1), g.reshape(-1, 1), fit.reshape(-1, 1))
    candidate = (float(a[0]), float(b[0]))
    ok, rel = _check_fit(case, r, g, np.full(c, a[0]), np.full(c, b[0]), clipped, raw)
    per_channel = False
    if not ok and c > 1 and np.all(fit.sum(axis=0) >= MIN_FIT):
        aa, bb = _fit(r, g, fit)
        ok, rel = _check_fit(case, r, g, aa, bb, clipped, raw)
        per_channel, candidate = True, (aa, bb)
    if not ok:
        return None
    return _scale_hint(case, candidate, per_channel, clipped, rel, raw / max(_norm(r), 1e-300), float(fit.mean()))


def _fit(r: np.ndarray, g: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares a, b of g = a*r + b per column over `mask` (rows: positions, columns: channels).
    A column with a constant r gets a = 1 and the mean offset; one without points a = 1, b = 0."""
    w = mask.astype(np.float64)
    n = np.maximum(w.sum(axis=0), 1)
    rm, gm = (r * w).sum(axis=0) / n, (g * w).sum(axis=0) / n
    rc, gc = (r - rm) * w, (g - gm) * w
    var, cov = (rc * rc).sum(axis=0) / n, (rc * gc).sum(axis=0) / n
    flat = var <= 1e-30 * np.maximum(rm * rm, 1e-300)
    a = np.where(flat, 1.0, cov / np.where(flat, 1.0, var))
    b = np.where(w.sum(axis=0) > 0, gm - a * rm, 0.0)
    return a, b


def _check_fit(case: Case, r: np.ndarray, g: np.ndarray, a: np.ndarray, b: np.ndarray, clipped: bool,
               raw: float) -> tuple[bool, float]:
    pred = r * a + b
    diff = g - pred
    if clipped:
        if np.any(a <= 0):
            return False, math.inf
        only_got_zero = (g == 0) & (r != 0)
        only_ref_zero = (r == 0) & (g != 0)
        both_zero = (r == 0) & (g == 0)
        diff = np.where(only_got_zero, np.minimum(diff, 0), diff)  # clipped: pred <= 0 is consistent
        diff = np.where(only_ref_zero, np.maximum(g - np.broadcast_to(b, g.shape), 0), diff)  # got <= b
        diff = np.where(both_zero, 0.0, diff)
        pred = np.where(only_ref_zero | both_zero, g, np.maximum(pred, 0))
    return case.reproduces(pred, g, raw, diff=diff)


def _summary(values: np.ndarray, same_within: float):
    """One value if constant across channels (within `same_within`), else min/median/max."""
    if float(np.ptp(values)) <= same_within:
        return _rounded(np.median(values))
    return {"min": _rounded(values.min()), "median": _rounded(np.median(values)), "max": _rounded(values.max())}


def _scale_hint(case: Case, fitted, per_channel: bool, clipped: bool, rel: float, raw_rel: float,
                fit_share: float) -> Hint:
    a, b = (np.atleast_1d(np.asarray(v, dtype=float)) for v in fitted)
    peak = max(float(np.abs(case.ref).max()), 1e-300)
    factor_off = bool(np.any(np.abs(a - 1) * peak > case.atol))
    offset_off = bool(np.any(np.abs(b) > case.atol))
    evidence = {"per_channel": per_channel, "factor": _summary(a, case.atol / peak),
                "offset": _summary(b, case.atol), "residual_rel_l2": _rounded(rel), "raw_rel_l2": _rounded(raw_rel),
                "fit_share": _rounded(fit_share), "relu_clipped": clipped}
    if per_channel:
        evidence["channels"] = len(a)
        evidence["channels_off"] = int(np.sum((np.abs(a - 1) * peak > case.atol) | (np.abs(b) > case.atol)))
        if len(a) <= 64:
            evidence["factors"], evidence["offsets"] = [_rounded(v) for v in a], [_rounded(v) for v in b]
    each = " per channel" if per_channel else ""

    def show(key):
        v = evidence[key]
        return f"{v:.4g}" if isinstance(v, float) else f"{v['min']:.4g}..{v['max']:.4g}"

    if factor_off and not offset_off:
        what = (f"times {show('factor')}{each}: a scale is off (input scale/raw_scale, LRN alpha (Caffe divides it by "
                f"local_size) or k, BatchNorm's scale_factor or eps, a Scale layer's gamma, the weights)")
    elif offset_off and not factor_off:
        what = (f"plus {show('offset')}{each}: an offset is off (mean subtraction missing or in another channel order, "
                f"a bias / bias_term, BatchNorm's mean)")
    else:
        what = (f"times {show('factor')} plus {show('offset')}{each}: BatchNorm's scale_factor (Caffe divides mean and "
                f"variance by it) or eps, mean subtraction together with a scale, LRN alpha/k, the weights with a bias")
    fitted_where = " (fitted where both are non-zero: a ReLU follows)" if clipped else ""
    return Hint("scale", f"the output is Caffe's {what}{fitted_where}", evidence)


Detector = Callable[[Case], "Hint | None"]
# (cause, detector) in the order diagnose() runs them: strongest evidence first; within a cause the
# more specific check first, and a cause's later detectors are skipped once one of them fired.
DETECTORS: list[tuple[str, Detector]] = [
    ("nonfinite", nonfinite), ("rounding", rounding), ("padding", padding_size), ("padding", padding_border),
    ("padding", padding_shift), ("layout", layout_axes), ("layout", layout_flatten), ("layout", layout_channels),
    ("channel-order", channel_order), ("scale", scale)]


def diagnose(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, *,
             layer_type: str = "", flatten_source: tuple[int, int, int] | None = None,
             is_input: bool = False) -> list[Hint]:
    """Likely causes of one layer's divergence, strongest evidence first; [] when the layer is within
    tolerance or nothing explains it.

    ref, got: channels-last arrays (N, H, W, C) for 4-D blobs, (N, C) for 2-D; shapes may differ.
    `layer_type` (Caffe's type) is informational; `flatten_source` = (C, H, W) of the spatial blob a
    2-D output was flattened from enables the flatten-order check; `is_input` marks the network's
    input blob (where reversed channels mean RGB fed as BGR).
    """
    ref_raw, got_raw = np.asarray(ref), np.asarray(got)
    ref64, got64 = ref_raw.astype(np.float64), got_raw.astype(np.float64)
    if ref64.shape == got64.shape:
        finite = np.isfinite(ref64) & np.isfinite(got64)
        if not finite.all():
            ref64, got64 = np.where(finite, ref64, 0.0), np.where(finite, got64, 0.0)
    else:
        ref64, got64 = (np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0) for a in (ref64, got64))
    case = Case(ref_raw, got_raw, ref64, got64, float(atol), float(rtol), layer_type,
                tuple(flatten_source) if flatten_source is not None else None, is_input)
    finite_error = not case.same_shape or bool(case.outside().any())
    hints: list[Hint] = []
    for cause, detect in DETECTORS:
        if any(h.cause == cause for h in hints) or (cause != "nonfinite" and not finite_error):
            continue  # one hint per cause; only non-finite values wrong: nothing else to explain
        hint = detect(case)
        if hint is not None:
            hints.append(hint)
    return hints
