"""Converters keyed by Caffe layer type, in the style of tf2onnx's handler registry.

A converter turns one Caffe layer into Keras layers. parity's own are LayerHandler classes (see
`handler`), which also know their shapes without Keras, so weight recipes can size them. A plain
function works too: it receives the layer, its bottom blobs as Keras tensors and the conversion
context (weights, naming, error helpers), and returns one Blob per top:

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
        converter = fn() if isinstance(fn, type) else fn  # a handler class registers one instance
        for name in type_names:
            if name in _CONVERTERS and not replace and _CONVERTERS[name] is not converter:
                raise ValueError(f"a converter for Caffe type {name!r} is already registered; pass replace=True")
            _CONVERTERS[name] = converter
        return fn
    return decorate


_NOT_CONVERTIBLE: dict[str, str] = {}


def not_convertible(type_name: str, why: str) -> None:
    """Record why a Caffe type has no converter on purpose, so that a net using it is refused with the
    reason instead of a bare 'unsupported'."""
    _NOT_CONVERTIBLE[type_name] = why


def why_not_convertible(type_name: str) -> str | None:
    return _NOT_CONVERTIBLE.get(type_name)


def converter_for(type_name: str) -> Callable | None:
    return _CONVERTERS.get(type_name)


def shapes_for(type_name: str):
    """The handler that can compute this type's shapes without Keras, or None."""
    converter = _CONVERTERS.get(type_name)
    return converter if callable(getattr(converter, "shapes", None)) else None


def supported_types() -> list[str]:
    return sorted(_CONVERTERS)
