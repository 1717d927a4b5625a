"""Where the bug entered: every rule parity uses to name the first divergence, in one place.

- Among compared outputs (`locate_first_divergence`): a failing layer whose ancestors in the net's graph
  all pass is a root, the place a bug entered; a failing layer downstream of a root is marked
  "downstream", not failed on its own account; the first divergence is the earliest root in Caffe's
  execution order.
- Before any output exists, from shapes: Keras refusing to build a converted layer (`keras_refusal`) is a
  divergence at that layer; weights that no longer fit are traced back to the first layer whose output
  shape departs from Caffe's (`explain_shape_conflict`), since a shape error upstream (pooling rounded the
  other way) breaks the first weight matrix far downstream.
"""
from __future__ import annotations

import itertools
from typing import Callable

from ..caffe.graph import Net
from ..errors import ParityError, ShapeDivergence
from .compare import DOWNSTREAM, FAIL, PASS, LayerResult


def locate_first_divergence(results: list[LayerResult], net: Net | None) -> str | None:
    """Mark failures downstream of an earlier failing ancestor; return the first divergent layer.

    `failing` fills in order, so its earliest entry among a layer's ancestors is the root (the earliest
    by order, ties to the first seen). The net answers that for every layer in one pass over it
    (Net.earliest_ancestors): the root when it has already failed, else no failing ancestor yet.
    Without a net, the root is the first failure before this one in order: one of failing's first two.
    """
    ordered = sorted(results, key=lambda r: r.order)
    earliest = net.earliest_ancestors(r.layer for r in ordered if r.status != PASS) if net is not None else None
    failing: dict[str, int] = {}
    for r in ordered:
        if r.status == PASS:
            continue
        if earliest is not None:
            root = earliest[r.layer]
            roots = [root] if root is not None and root in failing and root != r.layer else []
        else:
            roots = [name for name in itertools.islice(failing, 2) if failing[name] < r.order and name != r.layer]
        if roots:
            r.status = DOWNSTREAM
            r.downstream_of = min(roots, key=failing.get)
        failing.setdefault(r.layer, r.order)
    firsts = [r for r in results if r.status == FAIL]
    return min(firsts, key=lambda r: r.order).layer if firsts else None


def keras_refusal(layer, exc: ValueError, net: Net) -> ShapeDivergence:
    """Keras refused to build a converted layer: its bottoms' shapes no longer fit it, so the divergence is
    here (an error of parity's own, LayerError, is raised as what it is before this is asked)."""
    return ShapeDivergence(f"first divergence at {layer.name} ({layer.type}): Keras could not build the "
                           f"converted layer ({exc})", layer.name, net.path)


def explain_shape_conflict(exc: ParityError, net: Net, references: list, build: Callable) -> ParityError:
    """When the weights do not fit, look for the layer whose output shape first departs from Caffe's.

    A converter bug upstream (pooling rounded down) changes every later shape, and the first thing to
    break is an InnerProduct's weight matrix, far from the cause. A shape-only conversion (zero
    weights) compared with the reference shapes finds the cause; without such a layer, the weights
    really are wrong and the original error stands.

    The zero weights are sized first from the converters' pure-Python shapes: past ZERO_WEIGHTS_LIMIT
    the diagnosis is skipped (the original error stands), as a huge Input would otherwise turn a
    one-line error into tens of GiB of zeros. Converters without such shapes are held to the same
    limit by Context as they ask for their blobs.
    """
    from ..convert.context import ZERO_WEIGHTS_LIMIT  # these imports need no Keras
    from ..convert.sizing import zero_weights_bytes

    if zero_weights_bytes(net) > ZERO_WEIGHTS_LIMIT:
        return exc
    try:
        shapes = build(net, None).caffe_shapes
    except ShapeDivergence as divergence:
        return divergence
    except ParityError:
        return exc
    entries = sorted({(e.order, e.layer, e.top, e.type, e.shape) for ref in references for e in ref.entries})
    for _, layer, top, layer_type, want in entries:
        got = shapes.get((layer, top))
        if got is not None and tuple(got[1:]) != tuple(want[1:]):
            return ShapeDivergence(
                f"first divergence at {layer} ({layer_type}): output shape {tuple(got)} differs from Caffe's "
                f"{tuple(want)}, and later weights no longer fit ({exc})", layer, net.path)
    return exc
