"""Importing the user's own Python code: converters (`parity --plugin`) and hand-written models.

Both name code either as an importable module or as a path to a .py file. A module that cannot be
imported is the user's input gone wrong, so it becomes a ParityError naming it (with the file and
line of a syntax error), not a traceback through parity.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .errors import ParityError


def import_user_module(spec: str) -> ModuleType:
    """'package.module' or 'path/to/file.py' -> the imported module (a file is imported once per path)."""
    try:
        return _module_from_file(spec) if spec.endswith(".py") else importlib.import_module(spec)
    except SyntaxError as exc:
        raise ParityError(f"cannot import {spec!r}: {exc.msg}", exc.filename, exc.lineno) from None
    except ImportError as exc:
        raise ParityError(f"cannot import {spec!r} ({exc})") from None


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
