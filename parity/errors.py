"""The one error type for bad user input.

Anything the user handed us that we cannot use (a missing file, a malformed prototxt, a truncated
caffemodel, a reference folder without manifest) becomes a ParityError. The CLI prints it as a
single line and exits with code 2; the pytest plugin turns it into a usage error. Bugs in parity
itself stay ordinary exceptions, so their tracebacks are not hidden.
"""
from __future__ import annotations

from pathlib import Path

EXIT_BAD_INPUT = 2


class ParityError(Exception):
    """A user-facing problem, located at a file (and optionally a line) when there is one."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line

    def __str__(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}" if where else self.message


class ShapeDivergence(ParityError):
    """The converted net departs from Caffe's shapes before it can even load the weights.

    Raised instead of the weight-shape error it explains: the layer named here is where the bug
    entered (a pooling rounded the other way, say), not the InnerProduct whose weights no longer fit.
    """

    def __init__(self, message: str, layer: str, path=None):
        super().__init__(message, path)
        self.layer = layer


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return `path` as a Path, or raise ParityError naming it when it is not a readable file."""
    p = Path(path)
    if not p.exists():
        raise ParityError(f"{what} not found", p)
    if not p.is_file():
        raise ParityError(f"{what} is not a regular file", p)
    return p


def require_writable(path: str | Path, what: str = "output", folder: bool = False) -> Path:
    """Return `path`, or raise ParityError if it cannot be written: checked before the work that
    produces it, so a long conversion or Caffe run does not end in a traceback about a bad path.

    The nearest existing parent must take a new file (tried, not guessed from permission bits, which
    root, read-only mounts and immutable folders all make misleading).
    """
    import tempfile

    p = Path(path)
    if p.exists() and p.is_dir() != folder:
        raise ParityError(f"{what} {'is not a folder' if folder else 'is a folder'}", p)
    parent = p if folder and p.is_dir() else p.parent  # an existing output folder must take files itself
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ParityError(f"cannot write the {what}: {parent} is not a folder", p)
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ParityError(f"cannot write the {what} in {parent} ({exc.strerror or exc})", p) from None
    return p


def is_int(value) -> bool:
    """An integer read from JSON or TOML (where True and False would otherwise count as 1 and 0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float read from JSON or TOML, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
