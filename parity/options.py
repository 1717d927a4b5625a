"""The check's options, declared once for `parity check` (argparse) and the pytest plugin (addoption).

Both front ends show the same help and refuse a bad value with the same one-line error, because both
read this list. Where a front end means more, its note says so: pytest takes --model many times and
gates on [tool.parity]'s baseline by default. pytest's option namespace is shared with other plugins
(pytest-html has --html), so the report and gate options are spelled --parity-NAME there.
"""
from __future__ import annotations

from argparse import ArgumentParser, Namespace
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .check.gate import GROWTH, finite_number
from .errors import ParityError, require_writable

Check = Callable[[Any, str], None]  # (the value given, the flag as the user typed it): raises ParityError


@dataclass(frozen=True)
class CheckOption:
    """One option of the check, as both front ends take it."""

    flag: str  # as `parity check` spells it
    help: str
    type: Callable[[str], Any] | None = None  # None: a switch
    metavar: str | None = None
    prefixed: bool = False  # pytest spells it --parity-NAME
    check: Check | None = None
    needs: str | None = None  # the flag of the option this one means nothing without
    cli_note: str = ""  # appended to the help where only the front end's meaning differs
    pytest_note: str = ""
    repeated_in_pytest: bool = False  # the suite checks many models at once, `parity check` one

    def name(self, pytest: bool) -> str:
        """The flag as the user types it in this front end."""
        return f"--parity-{self.flag[2:]}" if pytest and self.prefixed else self.flag

    @property
    def dest(self) -> str:
        """argparse's attribute for the CLI's spelling."""
        return self.flag[2:].replace("-", "_")

    def arguments(self, pytest: bool) -> dict[str, Any]:
        """add_argument's (and addoption's) keywords in this front end."""
        note = self.pytest_note if pytest else self.cli_note
        kwargs: dict[str, Any] = {"help": f"{self.help} {note}".rstrip()}
        if self.type is None:
            kwargs.update(action="store_true", default=False)
        elif pytest and self.repeated_in_pytest:
            kwargs.update(action="append", default=[], type=self.type)
        else:
            kwargs.update(default=None, type=self.type)
        if self.metavar:
            kwargs["metavar"] = self.metavar
        return kwargs


def at_least(least: float) -> Check:
    """A finite number >= least: a NaN tolerance fails every layer, an infinite one passes any."""
    def check(value: float, flag: str) -> None:
        finite_number(value, flag, least, "command line")

    return check


def writable(what: str) -> Check:
    """An output path checked before the run, so a finished check never ends on a bad path."""
    def check(value: Path, flag: str) -> None:
        require_writable(value, what)

    return check


CHECK_OPTIONS: tuple[CheckOption, ...] = (
    CheckOption("--model", "a fixture by name, as in fixtures/<name>", str,
                cli_note="(instead of PROTOTXT CAFFEMODEL --blobs)", pytest_note="(repeatable; default: every fixture)",
                repeated_in_pytest=True),
    CheckOption("--atol", "judge every layer by the fixed rule with this absolute tolerance (default: [tool.parity] "
                "and the fixture's settings, else the noise rule)", float, check=at_least(0.0)),
    CheckOption("--rtol", "judge every layer by the fixed rule with this relative tolerance (default: likewise)",
                float, check=at_least(0.0)),
    CheckOption("--baseline", "fail a layer whose error grew past the growth factor x its accepted value in this "
                "baseline (`parity baseline update`), even inside the tolerance", Path, "PATH", prefixed=True,
                pytest_note="(default: [tool.parity] baseline, when set; 'none' turns the gate off)"),
    CheckOption("--growth", f"the baseline gate's growth factor, by default [tool.parity] growth, else {GROWTH:g}",
                float, "F", prefixed=True, check=at_least(1.0), cli_note="(with --baseline)"),
    CheckOption("--json", "also write the reports as JSON here (one per model and sample)", Path, "PATH",
                prefixed=True, check=writable("JSON report")),
    CheckOption("--html", "also write one self-contained HTML page here: the layer table, the first divergence and "
                "its likely causes, error heatmaps and per-channel error charts", Path, "PATH", prefixed=True,
                check=writable("HTML report")),
    CheckOption("--until", "convert and check each model only up to this layer (inclusive)", str, "LAYER"),
    CheckOption("--keras-model", "check your own Keras model (FN() returns it) instead of parity's conversion; "
                "Caffe's weights are loaded into it by layer name", str, "MODULE:FN"),
    CheckOption("--mapping", 'with --keras-model: JSON {"keras layer": "caffe layer"} (or graph op or scope), or '
                '{"keras layer": {"weights": "caffe layer", "output": "caffe layer"}}, where the automatic pairing '
                "(names, then type and shape in graph order) needs help", Path, "PATH", needs="--keras-model"),
    CheckOption("--local", "also run every layer on Caffe's own inputs (its bottoms from the dump): tells a layer's "
                "own conversion bug from error inherited from upstream"),
    CheckOption("--deterministic", "turn on TensorFlow's op determinism"),
    CheckOption("--allow-tf32", "let GPUs use TF32 matmuls/convolutions (off by default: about 1e-3 relative error)"),
)

_BY_FLAG = {option.flag: option for option in CHECK_OPTIONS}


def add_to_argparse(parser: ArgumentParser) -> None:
    """`parity check`'s share of the options."""
    for option in CHECK_OPTIONS:
        parser.add_argument(option.flag, **option.arguments(pytest=False))


def add_to_pytest(parser) -> None:
    """The plugin's options, in their own group of `pytest --help` (parser: pytest's, in pytest_addoption)."""
    group = parser.getgroup("parity", "parity: Caffe -> Keras layer-by-layer checks")
    for option in CHECK_OPTIONS:
        group.addoption(option.name(pytest=True), **option.arguments(pytest=True))


def check_argparse(args: Namespace) -> None:
    """`parity check`'s values, refused as the plugin refuses them."""
    _check(lambda option: getattr(args, option.dest), pytest=False)


def check_pytest(config) -> None:
    """The plugin's values (config: pytest's), refused as `parity check` refuses them."""
    _check(lambda option: config.getoption(option.name(pytest=True)), pytest=True)


def _check(value_of: Callable[[CheckOption], Any], pytest: bool) -> None:
    """Every given option's own check, and an option given without the one it needs: one ParityError
    before any model runs, never the same failure on every layer after converting."""
    for option in CHECK_OPTIONS:
        value = value_of(option)
        if value is None or value is False or value == []:
            continue
        if option.needs and not value_of(_BY_FLAG[option.needs]):
            raise ParityError(f"{option.name(pytest)} goes with {_BY_FLAG[option.needs].name(pytest)}")
        if option.check is not None:
            option.check(value, option.name(pytest))
