"""One module per `parity` sub-command: each has `add(subparsers)` and a `run(args) -> exit code`."""
from __future__ import annotations

import argparse
import math


def floats(text: str) -> tuple[float, ...]:
    """Comma-separated finite numbers: a NaN mean would turn every input value into NaN."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def size(text: str) -> tuple[int, int]:
    """H,W: exactly two positive integers (PIL's resize would fail on 0 and read only two of three)."""
    try:
        values = ints(text)
    except argparse.ArgumentTypeError:
        values = ()
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W (two positive integers), got {text!r}")
    return values


def finite(text: str) -> float:
    """A finite number: NaN or infinity would silently poison every input value."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive(text: str) -> float:
    """A finite number above 0: pixels scaled to [0, 0] or [0, -1] are no image."""
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def add_preprocessing(p, what: str) -> None:
    """The image preprocessing options `dump` and `dump-tf` share (`what`: "net" or "graph")."""
    p.add_argument("--mean", type=floats, help=f"per-channel mean in the {what}'s channel order, e.g. 104,117,123")
    p.add_argument("--scale", type=finite, help="multiply after mean subtraction (default 1)")
    p.add_argument("--raw-scale", type=positive, help="scale pixels to [0, RAW_SCALE] first (default 255)")
    p.add_argument("--channel-order", choices=("BGR", "RGB", "GRAY"),
                   help=f"the {what}'s input channel order (default BGR; GRAY: one channel of luma)")
    p.add_argument("--resize", type=size, metavar="H,W", help="resize images to H,W first")


def preprocessing(args, base):
    """`base` (a Preprocessing: the fixture's, or the defaults) with the options given on the command line."""
    from dataclasses import replace

    given = {k: v for k, v in (("mean", args.mean), ("scale", args.scale), ("raw_scale", args.raw_scale),
                               ("channel_order", args.channel_order), ("resize", args.resize)) if v is not None}
    return replace(base, **given)
