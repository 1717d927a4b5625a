"""Converters keyed by Caffe layer type, in the style of tf2onnx's handler registry.

A converter turns one Caffe layer into Keras layers. It receives the layer, its bottom blobs as
Keras tensors, and the conversion context (weights, naming, error helpers), and returns one Blob
per top. Users add converters for custom Caffe types the same way parity's own are added:

    from parity.convert import register, Blob

    @register("MyScale")
    def convert_my_scale(layer, bottoms, ctx):
        ...
        return [Blob(keras_tensor, caffe_shape)]

Registering a type that already has a converter replaces it only with `replace=True`.
"""
from __future__ import annotations

from typing import Callable

_CONVERTERS: dict[str, Callable] = {}


def register(*type_names: str, replace: bool = False):
    """Class/function decorator: make the decorated callable the converter for `type_names`."""
    def decorate(fn: Callable) -> Callable:
        for name in type_names:
            if name in _CONVERTERS and not replace and _CONVERTERS[name] is not fn:
                raise ValueError(f"a converter for Caffe type {name!r} is already registered; pass replace=True")
            _CONVERTERS[name] = fn
        return fn
    return decorate


def converter_for(type_name: str) -> Callable | None:
    return _CONVERTERS.get(type_name)


def supported_types() -> list[str]:
    return sorted(_CONVERTERS)
