"""The one error type for bad user input.

Anything the user handed us that we cannot use (a missing file, a malformed prototxt, a truncated
caffemodel, a reference folder without manifest) becomes a ParityError. The CLI prints it as a
single line and exits with code 2; the pytest plugin turns it into a usage error. Bugs in parity
itself stay ordinary exceptions, so their tracebacks are not hidden.
"""
from __future__ import annotations

import re
import stat
from contextlib import contextmanager
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
    """Return `path` as a Path, or raise ParityError naming it when it is not a readable file.

    Checked before anything opens it: opening a FIFO for reading waits for a writer that never comes,
    and calling a FIFO or a folder "not found" sends the user looking for the wrong problem."""
    p = Path(path)
    if not p.exists():
        raise ParityError(f"{what} not found", p)
    if not p.is_file():
        raise ParityError(f"{what} is not a regular file (it is {file_kind(p)})", p)
    return p


def file_kind(path: Path) -> str:
    """What sits at `path`, in words, for an error about a file that is not a regular one."""
    mode = path.stat().st_mode
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return "neither a file nor a folder"


@contextmanager
def parsing(path: str | Path, what: str):
    """Read and parse a JSON or TOML file inside this: the two failures every such file shares become
    one line naming it. Bytes that are not UTF-8 (with the line they are on), and nesting deeper than
    Python's recursion limit: json and tomllib recurse once per level, so a file of a few thousand
    '[' raises RecursionError, which would otherwise end the command in a traceback."""
    try:
        yield
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1 if isinstance(exc.object, bytes) else None
        raise ParityError(f"{what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded)",
                          path, line) from None
    except RecursionError:
        raise ParityError(f"{what} nests too deeply to read (more levels than Python's recursion limit)",
                          path) from None


# Characters a terminal acts on instead of showing: C0 controls (newline, carriage return, tab, ESC...),
# DEL, C1 controls, the Unicode line and paragraph separators (str.splitlines breaks lines at them), and
# the bidirectional embeddings, overrides and isolates (they reorder the text that follows).
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, keep: str = "") -> str:
    """`text` with every UNPRINTABLE character but those in `keep` written as an escape (\\n, \\x1b,
    \\u202e), for the terminal.

    Why: layer names and types come from files, and reach stdout and stderr. A newline in one forges a
    line of its own (a second `parity: error:`), an ESC sequence clears the screen or recolours it, a
    bidi override reorders what follows. Applied where text leaves parity (the CLI's streams and error
    line, the terminal report, the pytest plugin's messages), never to the HTML, JSON or JUnit files,
    which escape in their own way and keep names as they are."""
    return UNPRINTABLE.sub(lambda m: m[0] if m[0] in keep else _escape(m[0]), text)


def _escape(char: str) -> str:
    code = ord(char)
    return NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


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
