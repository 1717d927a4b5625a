"""Caffe's shape arithmetic, numpy-free and Keras-free.

One place for the output-size formulas, shared by the converters (to check and build Keras layers)
and by weight recipes (which must size every blob without Keras, inside the pycaffe environment).
"""
from __future__ import annotations

import math
from typing import Sequence


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Convolution rounds down: floor((size + 2p - d(k-1) - 1) / s) + 1 (conv_layer.cpp)."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool, clip: bool) -> int:
    """Pooling rounds up (unless `ceil_mode` is off), and drops a last window that would start in the
    padding. Caffe (pooling_layer.cpp) applies that drop rule to both axes as soon as either axis is
    padded (`if (pad_h_ || pad_w_)`), so `clip` says whether the layer is padded at all (pooled_hw)."""
    span = (size + 2 * pad - kernel) / stride
    out = (math.ceil(span) if ceil_mode else math.floor(span)) + 1
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pooled_hw(hw: Sequence[int], kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int],
              ceil_mode: bool = True) -> tuple[int, int]:
    """Pooled (height, width): each axis by pooled_size, the drop rule on both if either is padded."""
    clip = any(pad)
    return tuple(pooled_size(n, k, s, p, ceil_mode, clip) for n, k, s, p in zip(hw, kernel, stride, pad))


def hw_pair(message, single: str, h: str, w: str, default: int) -> tuple[int, int]:
    """Caffe's 'x' (repeated or scalar) or 'x_h'/'x_w' parameter as (h, w). Raises ValueError if both or >2."""
    value = getattr(message, single)
    repeated = hasattr(value, "__len__")
    has_single = (len(value) > 0) if repeated else message.HasField(single)
    if has_single and (message.HasField(h) or message.HasField(w)):
        raise ValueError(f"give either {single} or {h}/{w}, not both")
    if message.HasField(h) or message.HasField(w):
        return int(getattr(message, h)), int(getattr(message, w))
    if not has_single:
        return default, default
    values = list(value) if repeated else [value]
    if len(values) > 2:
        raise ValueError(f"{single} has {len(values)} values: only 2-D spatial data is supported")
    return int(values[0]), int(values[-1])


def conv_geometry(param) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, pad, dilation) of a ConvolutionParameter as (h, w) pairs, Caffe's defaults."""
    kernel = hw_pair(param, "kernel_size", "kernel_h", "kernel_w", 0)
    if min(kernel) <= 0:
        raise ValueError("kernel size must be given and positive")
    stride = hw_pair(param, "stride", "stride_h", "stride_w", 1)
    if min(stride) <= 0:
        raise ValueError(f"stride {stride} must be positive")
    pad = hw_pair(param, "pad", "pad_h", "pad_w", 0)
    dil = list(param.dilation) or [1]
    if len(dil) > 2:
        raise ValueError("dilation: only 2-D spatial data is supported")
    return kernel, stride, pad, (int(dil[0]), int(dil[-1]))


def pool_geometry(param, height: int, width: int):
    """(kernel, stride, pad) of a PoolingParameter as (h, w) pairs; global pooling takes the input size.

    Pooling, unlike Convolution, wants pad_h with pad_w and stride_h with stride_w (pooling_layer.cpp
    CHECKs it): one alone would leave the other axis 0, and a stride of 0 divides by zero."""
    for h, w in (("pad_h", "pad_w"), ("stride_h", "stride_w"), ("kernel_h", "kernel_w")):
        if param.HasField(h) != param.HasField(w):
            raise ValueError(f"{h} and {w} go together (Caffe's Pooling refuses one without the other)")
    stride = hw_pair(param, "stride", "stride_h", "stride_w", 1)
    if min(stride) <= 0:
        raise ValueError(f"stride {stride} must be positive")
    pad = hw_pair(param, "pad", "pad_h", "pad_w", 0)
    if param.global_pooling:
        if any(param.HasField(f) for f in ("kernel_size", "kernel_h", "kernel_w")):
            raise ValueError("global_pooling takes no kernel size")
        if any(pad) or any(s != 1 for s in stride):
            raise ValueError("global_pooling needs pad 0 and stride 1")
        return (height, width), stride, pad
    kernel = hw_pair(param, "kernel_size", "kernel_h", "kernel_w", 0)
    if min(kernel) <= 0:
        raise ValueError("kernel size must be given and positive")
    if any(p >= k for p, k in zip(pad, kernel)):
        raise ValueError(f"pad {pad} must be smaller than kernel {kernel}")
    return kernel, stride, pad


def conv_output_shape(bottom: Sequence[int], param) -> tuple[int, ...]:
    n, _, h, w = bottom
    kernel, stride, pad, dilation = conv_geometry(param)
    oh, ow = (conv_output_size(s, k, st, p, d) for s, k, st, p, d in zip((h, w), kernel, stride, pad, dilation))
    return (n, int(param.num_output), oh, ow)


def pool_output_shape(bottom: Sequence[int], param) -> tuple[int, ...]:
    n, c, h, w = bottom
    kernel, stride, pad = pool_geometry(param, h, w)
    oh, ow = pooled_hw((h, w), kernel, stride, pad, param.ceil_mode)
    return (n, c, oh, ow)
