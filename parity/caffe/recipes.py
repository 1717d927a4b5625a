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

import fnmatch
import zlib

import numpy as np

from .. import convert as _converters  # noqa: F401  (registers the converters, whose shapes size the blobs)
from ..convert.handler import checked_shapes
from ..convert.registry import shapes_for
from ..errors import ParityError
from .graph import Net

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


def learned_blobs(net: Net) -> dict[str, list]:
    """Every layer's learned blobs (shape and role), from its converter's shape rules, without Keras."""
    shapes: dict[str, tuple[int, ...]] = {}
    blobs: dict[str, list] = {}
    for layer in net.layers:
        handler = shapes_for(layer.type)
        if handler is None:
            raise ParityError(f"no converter knows the shapes of layer {layer.name!r} ({layer.type})",
                              net.path, net.line_of(layer.name))
        try:
            result = checked_shapes(handler, layer, [shapes[b] for b in layer.bottoms])
        except ValueError as exc:
            raise net.error(layer.name, str(exc)) from None
        shapes.update(zip(layer.tops, result.tops))
        if result.params:
            blobs[layer.name] = list(result.params)
    return blobs


def he_uniform(net: Net, seed: int, gains: dict[str, float] | None = None) -> dict[str, list[np.ndarray]]:
    """Seeded weights for every layer of `net` that has learned blobs. `gains` (layer name or glob
    pattern -> factor) scale a layer's weight bound or its Scale gamma: a small gamma on each residual
    branch's last Scale keeps a deep ResNet's activations from growing block by block."""
    return {name: [draw(seed, name, param, gain_for(name, gains or {})) for param in params]
            for name, params in learned_blobs(net).items()}


def gain_for(layer_name: str, gains: dict[str, float]) -> float:
    if layer_name in gains:
        return float(gains[layer_name])
    return next((float(g) for pattern, g in gains.items() if fnmatch.fnmatchcase(layer_name, pattern)), 1.0)


# Non-weight blobs: role -> (centre, half-width) of a uniform draw. Variances stay positive and the
# BatchNorm scale_factor stays away from 1, so a converter that ignores it is caught.
ROLE_RANGES = {"bias": (0.0, BIAS_BOUND), "mean": (0.0, 1.0), "variance": (1.25, 0.75), "scale_factor": (2.0, 0.5),
               "gamma": (1.0, 0.5), "beta": (0.0, 0.5), "slope": (0.25, 0.25)}


def draw(seed: int, layer_name: str, param, gain: float) -> np.ndarray:
    """One blob by its role. Stream keys: the weight uses the layer name, others '<layer>/<role>'."""
    if param.role == "weight":
        fan_in = int(np.prod(param.shape[1:]))
        return uniform(seed, layer_name, param.shape, gain * float(np.sqrt(6.0 / fan_in)))
    if param.role not in ROLE_RANGES:
        raise ParityError(f"the he-uniform recipe has no rule for a {param.role!r} blob (layer {layer_name!r})")
    centre, half = ROLE_RANGES[param.role]
    values = uniform(seed, f"{layer_name}/{param.role}", param.shape, half)
    values = values if centre == 0 else values + np.float32(centre)
    return values * np.float32(gain) if param.role == "gamma" and gain != 1.0 else values


RECIPES = {"he-uniform": he_uniform}
