"""Verified causes: each suspected cause of a layer's divergence tried, one at a time.

A hint (parity.diagnose.hints) reads a cause off two arrays; it can be wrong, and some causes leave no pattern
to read (a stride-2 convolution padded on the wrong side shifts its grid by half a pixel, an LRN alpha
not divided by n is no constant factor). Here the failing layer's Keras computation is cut out of the
checked model (from the tensors holding its Caffe bottoms to its output), fed Caffe's own bottoms from
the dump, and rerun with ONE change applied: the kernel flipped, the channels reversed, Caffe's pooling
window and stride, the InnerProduct rows in the other flatten order, Caffe's padding on both sides,
LRN's alpha times or over n, Caffe's BatchNorm eps. A change after which the layer passes (within its
limit, and cutting its error at least tenfold) is the cause, verified; the report says so.

Works on any Keras model parity checks (its own conversion or a hand-written one): it changes layer
attributes and weights for one eager call and puts them back.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..caffe.graph import Net
from ..caffe.shapes import conv_geometry, pool_geometry
from ..check.local import CutUnit, cut_unit
from ..data.layout import to_keras_layout
from .hints import EXPLAINS, Hint


@dataclass(frozen=True)
class Trial:
    cause: str  # a parity.diagnose.hints cause
    change: str  # the one change, as a sentence fragment: "the kernel flipped in H and W"
    run: Callable[[], np.ndarray | None]  # the unit's output with the change applied (None: not applicable)


# -- the changes ----------------------------------------------------------------------------------
@contextlib.contextmanager
def changed(obj, **attributes):
    """`obj`'s attributes set for the duration, then put back."""
    old = {name: getattr(obj, name) for name in attributes}
    try:
        for name, value in attributes.items():
            setattr(obj, name, value)
        yield
    finally:
        for name, value in old.items():
            setattr(obj, name, value)


@contextlib.contextmanager
def changed_weight(variable, value: np.ndarray):
    old = np.asarray(variable.numpy())
    variable.assign(value.astype(old.dtype))
    try:
        yield
    finally:
        variable.assign(old)


def _under(context_factory, unit: CutUnit, feeds=None) -> Callable[[], np.ndarray]:
    def run():
        with context_factory():
            return unit(feeds)
    return run


def _caffe(net: Net, unit: CutUnit, *types: str) -> list:
    return [net.layer(name) for name in unit.chain if net.layer(name).type in types]


def trials(net: Net, unit: CutUnit, want_shape: tuple[int, ...]) -> Iterator[Trial]:
    """Every single change that applies to this unit, each a cause the issue tracker has seen."""
    yield from _channel_trials(net, unit)
    for layer in unit.keras_layers():
        kernel = _variable(layer, "kernel", ndim=4)
        if kernel is not None:
            flipped = np.asarray(kernel.numpy())[::-1, ::-1]
            yield Trial("kernel-flip", f"{layer.name}'s kernel flipped in H and W (Caffe correlates; a "
                                       "convolution in the mathematical sense flips)",
                        _under(lambda k=kernel, f=flipped: changed_weight(k, f), unit))
    yield from _pooling_trials(net, unit)
    yield from _flatten_trials(unit)
    yield from _padding_trials(net, unit, want_shape)
    yield from _lrn_trials(net, unit)
    yield from _batchnorm_trials(net, unit)


def _variable(layer, name: str, ndim: int):
    found = [v for v in layer.weights if v.name == name and len(v.shape) == ndim]
    return found[0] if found else None


def _channel_trials(net: Net, unit: CutUnit) -> Iterator[Trial]:
    """Channels reversed inside the model (a permutation: `layout`, as the hint says), or the network's
    input reversed before the layer (RGB where Caffe expects BGR: `channel-order`)."""
    yield Trial("layout", f"{unit.layer}'s output channels reversed", lambda: unit()[..., ::-1])
    if len(unit.feeds) == 1 and unit.feeds[0].ndim >= 2:
        feeds = [unit.feeds[0][..., ::-1].copy()]
        writer = net.layer(unit.sources[0][0])
        cause = "channel-order" if writer.type == "Input" else "layout"
        yield Trial(cause, f"the channels of {unit.bottoms[0]} reversed before {unit.layer}", lambda: unit(feeds))


def _pooling_trials(net: Net, unit: CutUnit) -> Iterator[Trial]:
    for caffe in _caffe(net, unit, "Pooling"):
        p = caffe.param.pooling_param
        if p.global_pooling or unit.feeds[0].ndim != 4:
            continue
        kernel, stride, _ = (tuple(int(v) for v in pair) for pair in pool_geometry(p, *unit.feeds[0].shape[1:3]))
        for layer in unit.keras_layers():
            names = ("pool_size", "strides") if hasattr(layer, "pool_size") else ("kernel", "stride") \
                if hasattr(layer, "kernel") and hasattr(layer, "ceil_mode") else None
            if names is None or (tuple(getattr(layer, names[0])), tuple(getattr(layer, names[1]))) == (kernel, stride):
                continue
            yield Trial("pooling", f"{layer.name} with Caffe's window {kernel[0]}x{kernel[1]} and stride "
                                   f"{stride[0]}x{stride[1]} (it has {tuple(getattr(layer, names[0]))} and "
                                   f"{tuple(getattr(layer, names[1]))})",
                        _under(lambda lay=layer, n=names: changed(lay, **{n[0]: kernel, n[1]: stride}), unit))


def _flatten_trials(unit: CutUnit) -> Iterator[Trial]:
    """A Dense after a flatten of a (H, W, C) bottom: its rows reordered between C,H,W and H,W,C."""
    if len(unit.feeds) != 1 or unit.feeds[0].ndim != 4:
        return
    _, h, w, c = unit.feeds[0].shape
    chw_of_hwc = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)  # hwc position -> chw row
    for layer in unit.keras_layers():
        kernel = _variable(layer, "kernel", ndim=2)
        if kernel is None or kernel.shape[0] != c * h * w:
            continue
        rows = np.asarray(kernel.numpy())
        for order, value in (("C,H,W", rows[chw_of_hwc]), ("H,W,C", rows[np.argsort(chw_of_hwc)])):
            yield Trial("layout", f"{layer.name}'s weight rows reordered as if taken in {order} order (the "
                                  "flatten order of Caffe and the model differ)",
                        _under(lambda k=kernel, v=value: changed_weight(k, v), unit))


def _padding_trials(net: Net, unit: CutUnit, want_shape: tuple[int, ...]) -> Iterator[Trial]:
    """Caffe pads the top and left by `pad`, and the bottom and right by `pad` too, or by what its output
    size needs (a ceil-rounded pool's overhang). 'same' with a stride of 2, and ZeroPadding2D((1, 1)) before
    a floor-rounded pool, put it elsewhere."""
    import keras

    if unit.feeds[0].ndim != 4 or len(want_shape) != 4:
        return
    height, width = unit.feeds[0].shape[1:3]
    for caffe in _caffe(net, unit, "Convolution", "Pooling"):
        if caffe.type == "Convolution":
            kernel, stride, pad, dilation = conv_geometry(caffe.param.convolution_param)
            kernel = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
        elif not caffe.param.pooling_param.global_pooling:
            kernel, stride, pad = pool_geometry(caffe.param.pooling_param, height, width)
        else:
            continue
        ends = [(o - 1) * s + k - n - p for o, s, k, n, p in zip(want_shape[1:3], stride, kernel, (height, width), pad)]
        caffes = ((pad[0], max(ends[0], 0)), (pad[1], max(ends[1], 0)))
        for layer in unit.keras_layers():
            if isinstance(layer, keras.layers.ZeroPadding2D) and tuple(map(tuple, layer.padding)) != caffes:
                yield Trial("padding", f"{layer.name} padding {caffes} as Caffe's window placement needs (it "
                                       f"pads {tuple(map(tuple, layer.padding))})",
                            _under(lambda lay=layer: changed(lay, padding=caffes), unit))
            elif getattr(layer, "padding", None) == "same" and max(getattr(layer, "strides", (1,))) > 1:
                original = layer.call

                def padded_call(x, *args, _call=original, **kwargs):
                    return _call(keras.ops.pad(x, [[0, 0], list(caffes[0]), list(caffes[1]), [0, 0]]), *args, **kwargs)

                yield Trial("padding", f"{layer.name} padded {caffes} as Caffe does ('same' with a stride of 2 pads "
                                       "the bottom and right more than the top and left)",
                            _under(lambda lay=layer, c=padded_call: changed(lay, padding="valid", call=c), unit))


def _lrn_trials(net: Net, unit: CutUnit) -> Iterator[Trial]:
    for caffe in _caffe(net, unit, "LRN"):
        n = caffe.param.lrn_param.local_size
        for layer in unit.keras_layers():
            if hasattr(layer, "alpha") and hasattr(layer, "beta"):
                for alpha, how in ((layer.alpha * n, "times"), (layer.alpha / n, "over")):
                    yield Trial("lrn-alpha", f"{layer.name}'s alpha {how} local_size {n} (Caffe divides alpha "
                                             "by n across channels)",
                                _under(lambda lay=layer, a=alpha: changed(lay, alpha=a), unit))


def _batchnorm_trials(net: Net, unit: CutUnit) -> Iterator[Trial]:
    for caffe in _caffe(net, unit, "BatchNorm"):
        eps = float(caffe.param.batch_norm_param.eps)
        for layer in unit.keras_layers():
            if hasattr(layer, "epsilon") and hasattr(layer, "moving_variance") and layer.epsilon != eps:
                yield Trial("batchnorm-eps", f"{layer.name}'s epsilon {eps:g}, Caffe's (it has {layer.epsilon:g})",
                            _under(lambda lay=layer: changed(lay, epsilon=eps), unit))


# -- judging ------------------------------------------------------------------------------------------
def verify(net: Net, converted, ref, layer: str, top: str, expected_nchw: np.ndarray, atol: float,
           rtol: float) -> list[Hint]:
    """The changes after which `layer` passes on Caffe's own bottoms, as verified hints (strongest first)."""
    unit = cut_unit(net, converted, ref, layer, top)
    if unit is None:
        return []
    want = to_keras_layout(np.asarray(expected_nchw, np.float64))
    base = _error(unit(), want)
    if base is None or _passes(unit(), want, atol, rtol):
        return []  # the layer passes on Caffe's bottoms: its divergence was inherited, nothing to fix here
    found = []
    for trial in trials(net, unit, want.shape):
        try:
            out = trial.run()
        except Exception:  # a change the layer cannot take (a shape it refuses): not this cause
            continue
        error = _error(out, want)
        if error is not None and _passes(out, want, atol, rtol) and error * EXPLAINS <= base:
            found.append(Hint(trial.cause, f"with {trial.change}, {layer} passes on Caffe's own "
                                           f"bottoms (max_abs {base:.3g} -> {error:.3g})",
                              {"verified": True, "change": trial.change, "max_abs_before": base,
                               "max_abs_after": error}))
    return found


def _error(out, want: np.ndarray) -> float | None:
    out = np.asarray(out, np.float64)
    if out.shape != want.shape:
        return None
    return float(np.max(np.abs(out - want))) if out.size else 0.0


def _passes(out, want: np.ndarray, atol: float, rtol: float) -> bool:
    out = np.asarray(out, np.float64)
    return out.shape == want.shape and bool(np.all(np.abs(out - want) <= atol + rtol * np.abs(want)))
