"""The plugin's options and project settings: normalized and checked once, before collection.

The options themselves are declared in parity.options, with `parity check`'s; what is here is what
only the suite needs: many models at once, the [tool.parity] file pytest runs under, and the rule
that a broken baseline stops `pytest parity/` but never `pytest tests/`.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..errors import ParityError, printable

SUITE = Path(__file__).resolve().parents[1]  # parity/, where test_parity.py lives


@contextmanager
def usage_errors() -> Iterator[None]:
    """A ParityError as pytest's usage error: one line, exit 4, no traceback."""
    try:
        yield
    except ParityError as exc:
        raise pytest.UsageError(printable(f"parity: {exc}")) from None


def prepare_options(config) -> None:
    """--model named once each, as a fixture's name (not its folder); then every option checked, once,
    in the controller or the single process (a worker has nothing new to say)."""
    config.option.model = list(dict.fromkeys(m.strip().rstrip("/") for m in config.option.model))
    if not hasattr(config, "workerinput"):
        with usage_errors():
            check_options(config)


def check_options(config) -> None:
    """Every parity option checked before collection, so a wrong value is one usage error (exit 4), not
    the same failure on every item after each model has been converted. The hand-written model itself
    is imported only where it runs: importing it here would load TensorFlow into xdist's controller."""
    from ..caffe.fixtures import list_fixtures
    from ..options import check_pytest

    known = set(list_fixtures())
    unknown = [m for m in config.option.model if m not in known]
    if unknown:
        raise ParityError(f"no fixture {', '.join(map(repr, unknown))} (fixtures: {', '.join(sorted(known))})")
    check_pytest(config)
    until = config.getoption("--until")
    if until is not None:
        _check_until(config.option.model or sorted(known), until)
    if runs_parity(config):  # not for `pytest tests/`: a broken baseline must not stop the unit tests
        _check_project(config)


def _check_until(models: list[str], until: str) -> None:
    from ..targets import from_fixture, up_to

    for model in models:
        up_to(from_fixture(model), until)


def _check_project(config) -> None:
    """[tool.parity] and the baseline file it (or --parity-baseline) names, read now to be refused now."""
    from ..check.gate import Baseline, project_settings

    project_settings(project_file(config))
    baseline = baseline_path(config)
    if baseline is not None:
        Baseline.load(baseline)


def runs_parity(config) -> bool:
    """Whether this run may collect the parity suite: a --model, or a path at, in or above parity/."""
    if config.option.model or config.getoption("--parity-baseline"):
        return True
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == SUITE or SUITE in path.parents or path in SUITE.parents:
            return True
    return False


def project_file(config) -> Path | None:
    """The pyproject.toml whose [tool.parity] applies: pytest's own config file when it is one, else the
    nearest above the rootdir, so running from another folder does not silently drop the baseline."""
    from ..check.gate import find_pyproject

    inipath = getattr(config, "inipath", None)
    return Path(inipath) if inipath and Path(inipath).name == "pyproject.toml" else find_pyproject(config.rootpath)


def baseline_path(config) -> Path | None:
    """--parity-baseline, 'none' for no gate, else [tool.parity] baseline of the project's pyproject.toml."""
    from ..check.gate import configured_baseline

    path = config.getoption("--parity-baseline")
    if path is None:
        return configured_baseline(project_file(config))
    return None if str(path).lower() == "none" else path
