"""The `parity` command: convert, export-weights, dump, dump-tf, tf-import, check, baseline update.

Exit codes: 0 every layer within tolerance (or the command succeeded); 1 a layer diverges (its
tolerance is exceeded, it fails on Caffe's own inputs under --local, or its error grew past the
baseline's limit), or `baseline update` found a failing model; 2 bad usage or bad input (one line on
stderr naming the file, no traceback).
"""
from __future__ import annotations

import argparse
import sys

from .atomic import exit_cleanly_on_sigterm
from .errors import EXIT_BAD_INPUT, ParityError, printable
from .user_modules import import_user_module

EXIT_OK, EXIT_DIVERGED = 0, 1


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)  # keep examples as written
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's own usage errors: exit 2 as well, one line
        for line in self.format_usage().splitlines():  # line by line: stderr escapes newlines inside a write
            print(line, file=sys.stderr)
        raise ParityError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="parity", description="Check a Caffe -> Keras conversion layer by layer against real Caffe.")
    parser.add_argument("--version", action="version", version=f"parity {_version()}")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import this module (or file.py) first, e.g. one that registers converters for "
                             "your own layer types (repeatable; before the command: parity --plugin M check ...)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from .commands import baseline, check, convert, dump, repro, tf

    for add in (convert.add, convert.add_export, dump.add, tf.add, check.add, baseline.add, repro.add):
        add(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


class EscapingStream:
    """sys.stdout or sys.stderr while a command runs: whatever is written leaves with its control
    characters escaped (parity.errors.printable), so a layer name or type from a file cannot clear the
    screen or forge a line, whichever command printed it (progress, dump's log, the report).

    stdout keeps its newlines: the report is many lines, each escaped as it was made (report.render).
    stderr holds one message per write (print's newline comes as a write of its own), so a newline
    inside a write is escaped too: a name cannot start a second `parity: error:` line there."""

    def __init__(self, stream, multiline: bool):
        self._stream, self._multiline = stream, multiline

    def write(self, text: str) -> int:
        if self._multiline:
            self._stream.write(printable(text, keep="\n"))
        else:
            body, end = (text[:-1], "\n") if text.endswith("\n") else (text, "")
            self._stream.write(printable(body) + end)
        return len(text)

    def __getattr__(self, name):  # flush, isatty, fileno, encoding...: the stream's own
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    exit_cleanly_on_sigterm(owns_process=argv is None)  # SIGTERM cleans up as Ctrl-C does, exit 143
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingStream(stdout, multiline=True), EscapingStream(stderr, multiline=False)
    try:
        args = build_parser().parse_args(argv)
        for module in args.plugin:
            import_user_module(module)
        return args.run(args)
    except ParityError as exc:
        print(f"parity: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # the disk or the file system said no (full, read-only, vanished): not a bug in parity
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"parity: error: {printable(f'{where}{exc.strerror or exc}')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("parity: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout, sys.stderr = stdout, stderr


if __name__ == "__main__":
    sys.exit(main())
