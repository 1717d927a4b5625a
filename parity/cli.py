"""The `parity` command: convert, export-weights, dump, dump-tf, tf-import, check, baseline update.

Exit codes: 0 every layer within tolerance (or the command succeeded); 1 a layer diverges (its
tolerance is exceeded, it fails on Caffe's own inputs under --local, or its error grew past the
baseline's limit), or `baseline update` found a failing model; 2 bad usage or bad input (one line on stderr naming the file,
no traceback).
"""
from __future__ import annotations

import argparse
import sys

from .errors import EXIT_BAD_INPUT, ParityError
from .user_modules import import_user_module

EXIT_OK, EXIT_DIVERGED = 0, 1


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)  # keep examples as written
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's own usage errors: exit 2 as well, one line
        self.print_usage(sys.stderr)
        raise ParityError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="parity", description="Check a Caffe -> Keras conversion layer by layer against real Caffe.")
    parser.add_argument("--version", action="version", version=f"parity {_version()}")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import this module (or file.py) first, e.g. one that registers converters for "
                             "your own layer types (repeatable; before the command: parity --plugin M check ...)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from .commands import baseline, check, convert, dump, tf

    for add in (convert.add, convert.add_export, dump.add, tf.add, check.add, baseline.add):
        add(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        for module in args.plugin:
            import_user_module(module)
        return args.run(args)
    except ParityError as exc:
        print(f"parity: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # the disk or the file system said no (full, read-only, vanished): not a bug in parity
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"parity: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("parity: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
