"""Weight recipes: deterministic, seeded weights for fixtures, written with parity's caffemodel writer.

Why not numpy's `Generator.uniform`: numpy does not promise that distribution methods keep their
streams across releases. Bit generators do, so values come from PCG64's raw 64-bit output turned
into floats here, which makes the weights the same on every machine and numpy version (the
reference manifest's sha256 proves it). Each layer seeds its own stream from (seed, crc32(name)),
so editing one layer leaves the others' weights unchanged.

"he-uniform" is variance preserving for ReLU nets: U(-b, b) with b = gain * sqrt(6 / fan_in);
biases are U(-0.1, 0.1) so that a dropped bias is visible.
"""
from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

from .errors import ParityError
from .graph import Net
from .shapes import conv_geometry, conv_output_shape, pool_output_shape

CHUNK = 1 << 22
BIAS_BOUND = 0.1


def uniform(seed: int, name: str, shape: tuple[int, ...], bound: float) -> np.ndarray:
    """U(-bound, bound) float32 from PCG64 raw bits (24-bit mantissa, exact in float32)."""
    bits = np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))
    out = np.empty(int(np.prod(shape)), np.float32)
    for start in range(0, out.size, CHUNK):
        raw = bits.random_raw(min(CHUNK, out.size - start))
        u = (raw >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
        out[start:start + raw.size] = (u * np.float32(2.0) - np.float32(1.0)) * np.float32(bound)
    return out.reshape(shape)


def _same_shape(bottom, layer):
    return bottom


def _input(bottom, layer):
    return tuple(int(d) for d in layer.param.input_param.shape[0].dim)


def _inner_product(bottom, layer):
    return (bottom[0], int(layer.param.inner_product_param.num_output))


SHAPERS: dict[str, Callable] = {
    "Convolution": lambda b, l: conv_output_shape(b, l.param.convolution_param),
    "Pooling": lambda b, l: pool_output_shape(b, l.param.pooling_param),
    "InnerProduct": _inner_product, "ReLU": _same_shape, "Dropout": _same_shape, "Softmax": _same_shape,
}


def he_uniform(net: Net, seed: int, gains: dict[str, float] | None = None) -> dict[str, list[np.ndarray]]:
    """Seeded weights for every Convolution and InnerProduct layer of `net`."""
    gains = gains or {}
    shapes: dict[str, tuple[int, ...]] = {}
    weights: dict[str, list[np.ndarray]] = {}
    for layer in net.layers:
        if layer.type == "Input":
            for top, s in zip(layer.tops, layer.param.input_param.shape):
                shapes[top] = tuple(int(d) for d in s.dim)
            continue
        if layer.type not in SHAPERS:
            raise ParityError(f"the he-uniform recipe cannot size layer {layer.name!r} of type {layer.type}", net.path)
        bottom = shapes[layer.bottoms[0]]
        top = SHAPERS[layer.type](bottom, layer)
        shapes[layer.tops[0]] = top
        if layer.type in ("Convolution", "InnerProduct"):
            weights[layer.name] = _layer_weights(layer, bottom, top, seed, gains.get(layer.name, 1.0))
    return weights


def _layer_weights(layer, bottom, top, seed, gain) -> list[np.ndarray]:
    if layer.type == "Convolution":
        p = layer.param.convolution_param
        kh, kw = conv_geometry(p)[0]
        shape = (top[1], bottom[1], kh, kw)
        bias = p.bias_term
    else:
        p = layer.param.inner_product_param
        shape = (top[1], int(np.prod(bottom[1:])))
        bias = p.bias_term
    fan_in = int(np.prod(shape[1:]))
    blobs = [uniform(seed, layer.name, shape, gain * float(np.sqrt(6.0 / fan_in)))]
    if bias:
        blobs.append(uniform(seed, layer.name + "/bias", (shape[0],), BIAS_BOUND))
    return blobs


RECIPES = {"he-uniform": he_uniform}
