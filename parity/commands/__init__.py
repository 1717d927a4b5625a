"""One module per `parity` sub-command: each has `add(subparsers)` and a `run(args) -> exit code`."""
from __future__ import annotations

import argparse


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_preprocessing(p, what: str) -> None:
    """The image preprocessing options `dump` and `dump-tf` share (`what`: "net" or "graph")."""
    p.add_argument("--mean", type=floats, help=f"per-channel mean in the {what}'s channel order, e.g. 104,117,123")
    p.add_argument("--scale", type=float, help="multiply after mean subtraction (default 1)")
    p.add_argument("--raw-scale", type=float, help="scale pixels to [0, RAW_SCALE] first (default 255)")
    p.add_argument("--channel-order", choices=("BGR", "RGB"), help=f"the {what}'s input channel order (default BGR)")
    p.add_argument("--resize", type=ints, metavar="H,W", help="resize images to H,W first")


def preprocessing(args, base):
    """`base` (a Preprocessing: the fixture's, or the defaults) with the options given on the command line."""
    from dataclasses import replace

    given = {k: v for k, v in (("mean", args.mean), ("scale", args.scale), ("raw_scale", args.raw_scale),
                               ("channel_order", args.channel_order), ("resize", args.resize)) if v is not None}
    return replace(base, **given)
