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

Registering a type that already has a converter replaces it only with `replace=True`. To try a
converter for a while (a test planting a bug, a user comparing two conversions) without leaving the
registry changed, use `override` in a `with` block.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


@contextmanager
def override(type_name: str, converter: Callable | type | None) -> Iterator[Callable | None]:
    """Within the `with` block, `converter` is the converter for `type_name` (None: the type has none);
    afterwards the one it had before is back, or the entry is gone if it had none, even if the block
    raised. Yields the converter installed (a handler class is instantiated, as `register` does).

    Why: tests that plant a bug in one converter, and users who try a converter of their own, must not
    leave the registry changed for whatever converts next in the same process. Anything `register`
    puts under `type_name` inside the block is undone too, so `override(name, None)` scopes a
    registration made there (a plugin loaded by the CLI, say).
    """
    installed = converter() if isinstance(converter, type) else converter
    had, before = type_name in _CONVERTERS, _CONVERTERS.get(type_name)
    if installed is None:
        _CONVERTERS.pop(type_name, None)
    else:
        _CONVERTERS[type_name] = installed
    try:
        yield installed
    finally:
        if had:
            _CONVERTERS[type_name] = before
        else:
            _CONVERTERS.pop(type_name, None)


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
