"""Importing the user's own Python code: converters (`parity --plugin`) and hand-written models.

Both name code either as an importable module or as a path to a .py file. A module that cannot be
imported is the user's input gone wrong, so it becomes a ParityError naming it (with the file and
line of a syntax error), not a traceback through parity.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Callable

from .errors import ParityError


def import_user_module(spec: str) -> ModuleType:
    """'package.module' or 'path/to/file.py' -> the imported module (a file is imported once per path).

    A module is looked for in the working folder first, as `python -m` would; a file sees its own folder,
    so its sibling imports work as they do when it is run as a script."""
    try:
        if spec.endswith(".py"):
            with _on_path(Path(spec).resolve().parent):
                return _module_from_file(spec)
        with _on_path(Path.cwd()):
            return importlib.import_module(spec)
    except SyntaxError as exc:
        raise ParityError(f"cannot import {spec!r}: {exc.msg}", exc.filename, exc.lineno) from None
    except ImportError as exc:
        raise ParityError(f"cannot import {spec!r} ({exc})") from None
    except Exception as exc:  # the module's own code failed while importing
        raise user_code_error(f"importing {spec!r}", exc, _file_of(spec)) from None


@contextlib.contextmanager
def _on_path(folder: Path):
    """`folder` first on sys.path for the duration (left as it was if it was there already)."""
    entry = str(folder)
    if entry in sys.path:
        yield
        return
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def call_user_code(what: str, fn: Callable, *args, returns: type | None = None):
    """fn(*args), with its failure (or a result that is not a `returns`) as one ParityError located
    in the user's file, not a traceback through parity."""
    try:
        result = fn(*args)
    except Exception as exc:
        raise user_code_error(what, exc, getattr(inspect.getmodule(fn), "__file__", None)) from None
    if returns is not None and not isinstance(result, returns):
        raise ParityError(f"{what} returned {type(result).__name__}, not a {returns.__module__.split('.')[0]}."
                          f"{returns.__name__}", *_definition(fn))
    return result


def user_code_error(what: str, exc: BaseException, user_file: str | None) -> ParityError:
    """`what` raised `exc`: the message, at the innermost line of the user's file in its traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if user_file and f.filename == user_file]
    path, line = (frames[-1].filename, frames[-1].lineno) if frames else (user_file, None)
    return ParityError(f"{what} raised {type(exc).__name__}: {exc}", path, line)


def _definition(fn: Callable) -> tuple[str | None, int | None]:
    try:
        return inspect.getsourcefile(fn), inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):
        return None, None


def _file_of(spec: str) -> str | None:
    if spec.endswith(".py"):
        return str(Path(spec).resolve())
    try:
        found = importlib.util.find_spec(spec)
    except Exception:  # its parent package failed to import: no file to point at
        return None
    return found.origin if found else None


def _module_from_file(path: str) -> ModuleType:
    p = Path(path).resolve()
    if not p.is_file():
        raise ImportError(f"no such file {p}")
    name = f"parity_user_{p.stem}_{hashlib.sha256(str(p).encode()).hexdigest()[:8]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, p)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def load_builder(spec: str, model: bool = True) -> Callable:
    """'package.module:function' or 'path/to/file.py:function' -> that function, wrapped so that its
    failure, or (with `model`) a result that is not a keras.Model, is one clear error in the user's file."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ParityError(f"--keras-model wants 'package.module:build_fn' or 'file.py:build_fn', got {spec!r}")
    module = import_user_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ParityError(f"{module_name!r} has no function {attr!r}")

    def build(*args):
        import keras

        return call_user_code(f"{spec}()", fn, *args, returns=keras.Model if model else None)

    return build
