"""CI gating: the verdict's rule per model and per layer-name pattern, and a baseline of accepted errors.

A rule says what is acceptable; a baseline says what was accepted. A change that makes a layer's
error grow fivefold but stays inside the rule is still a regression worth stopping: the gate fails
when a layer's error grows past `growth` times its baseline. The error is the one the rule judges:
under the noise rule (the default) the error/noise ratio, under the fixed rule max_abs. Small errors
never trip it, since their last bits differ between CPUs: a ratio below k/3 (the noise band every
correct conversion stays in, parity.check.compare.K), or a max_abs below `floor` x atol.

The noise rule needs no settings. The fixed rule (atol + rtol * |ref|) is asked for explicitly, and
resolves, later winning: `[tool.parity]` in pyproject.toml, the fixture's own `tolerances`
(fixture.json), `[tool.parity.models.<name>]`; then layer patterns (fnmatch, e.g. "fc*") from the
fixture and from `[tool.parity.models.<name>.layers]`, the last matching pattern winning (the other
layers keep the noise rule when only patterns are given). `--atol`/`--rtol` on the command line
override all of them. Where only one of atol and rtol is given, the other is parity's fixed default.
"""
from __future__ import annotations

import fcntl
import fnmatch
import json
import math
import os
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..caffe.fixtures import fixtures_dir
from ..data.reference import shown
from ..errors import ParityError, parsing, require_file
from .compare import FAIL, PASS, K, NoiseRule, Tolerance

GROWTH = 4.0
FLOOR = 0.01  # of the layer's atol (the fixed rule)
RATIO_FLOOR = K / 3  # the noise rule: ratios below this are noise on any CPU
SETTINGS = ("atol", "rtol", "baseline", "growth", "models")  # [tool.parity]
MODEL_SETTINGS = ("atol", "rtol", "layers")  # [tool.parity.models.NAME] and a fixture's `tolerances`
BASELINE_LEVELS = ("model", "sample", "layer", "top")  # the baseline's tables, outermost first
UNRESOLVED = Tolerance(0.0, 0.0)  # the base when settings are only checked: resolve_policy gives the real one


@dataclass(frozen=True)
class TolerancePolicy:
    """A model's rule with per-layer-pattern exceptions, and where each came from (for the report).

    `atol`/`rtol` None: the noise rule for every layer without a pattern; otherwise the fixed rule."""

    atol: float | None
    rtol: float | None
    patterns: tuple[tuple[str, Tolerance], ...] = ()
    sources: tuple[str, ...] = ()
    rule: NoiseRule = NoiseRule()

    def for_layer(self, name: str) -> Tolerance | NoiseRule:
        chosen = self.rule if self.atol is None else Tolerance(self.atol, self.rtol)
        for pattern, tol in self.patterns:
            if fnmatch.fnmatchcase(name, pattern):
                chosen = tol
        return chosen

    def describe(self) -> dict:
        base = self.rule.describe() if self.atol is None else Tolerance(self.atol, self.rtol).describe()
        return {**base, "sources": list(self.sources),
                "layers": {p: {"atol": t.atol, "rtol": t.rtol} for p, t in self.patterns}}


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above `start` (the working directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
    return None


def project_settings(pyproject: Path | None = None) -> tuple[dict, Path | None]:
    """`[tool.parity]` of the nearest pyproject.toml ({} when none), checked whole, and the file it came from."""
    path = pyproject or find_pyproject()
    if path is None:
        return {}, None
    try:
        with parsing(path, "pyproject.toml"):
            data = tomllib.loads(require_file(path, "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ParityError(f"cannot read [tool.parity] ({exc})", path) from None
    settings = data.get("tool", {}).get("parity", {})
    if not isinstance(settings, dict):
        raise ParityError("[tool.parity] must be a table", path)
    return check_settings(settings, path), path


def configured_baseline(pyproject: Path | None = None) -> Path | None:
    """The baseline file `[tool.parity] baseline` names (relative to its pyproject.toml), if any."""
    settings, where = project_settings(pyproject)
    return where.parent / settings["baseline"] if where is not None and settings.get("baseline") else None


def check_settings(settings: dict, path: str | Path | None) -> dict:
    """`settings` ([tool.parity] of the pyproject.toml at `path`), every key and value checked as it is read.

    Why all at once: a value of the wrong type was found only where it was used, as a traceback (growth,
    models), only by `baseline update` (baseline), or never (a NaN tolerance failed every layer).
    """
    where = _settings_label(path)
    _tolerance(_table(settings, where, SETTINGS), UNRESOLVED, where)
    if "growth" in settings:
        growth_factor(settings["growth"], f"{where}: growth")
    if "baseline" in settings and not (isinstance(settings["baseline"], str) and settings["baseline"].strip()):
        raise ParityError(f"{where}: baseline must be a file name, got {shown(settings['baseline'])}")
    models = settings.get("models", {})
    if not isinstance(models, dict):
        raise ParityError(f"{where}: models must be a table of [tool.parity.models.NAME] tables, got {shown(models)}")
    for model, spec in models.items():
        _scoped(spec, UNRESOLVED, _model_label(path, model))
    return settings


def _settings_label(path: str | Path | None) -> str:
    return f"{path or 'pyproject.toml'} [tool.parity]"


def _model_label(path: str | Path | None, model: str) -> str:
    return f"{path or 'pyproject.toml'} [tool.parity.models.{model}]"


def finite_number(value, what: str, least: float = 0.0, path: Path | None = None) -> float:
    """`value` as a float of at least `least`, and finite: a NaN tolerance fails every layer, an infinite
    one passes any, and a NaN growth factor turns the baseline gate off; none of them is meant."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < least:
        raise ParityError(f"{what} must be a finite number >= {least:g}, got {shown(value)}", path)
    return float(value)


def growth_factor(value, what: str) -> float:
    """A baseline growth factor: at least 1, as a factor below 1 would fail the very errors it accepted."""
    return finite_number(value, what, least=1.0)


def _table(value, where: str, known: tuple[str, ...]) -> dict:
    """`value` as a table holding only `known` keys."""
    if not isinstance(value, dict):
        raise ParityError(f"{where}: must be a table of settings ({', '.join(known)}), got {shown(value)}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ParityError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return value


def _tolerance(spec: dict, base: Tolerance, where: str) -> Tolerance:
    """`base` with the atol and rtol `spec` gives, each a finite non-negative number."""
    return replace(base, **{key: finite_number(spec[key], f"{where}: {key}")
                            for key in ("atol", "rtol") if key in spec})


def _scoped(spec, base: Tolerance, where: str) -> tuple[Tolerance, list[tuple[str, Tolerance]]]:
    """A fixture's `tolerances` or a [tool.parity.models.NAME] table: its tolerance over `base`, and the
    tolerances of its layer patterns over that."""
    tol = _tolerance(_table(spec, where, MODEL_SETTINGS), base, where)
    layers = spec.get("layers", {})
    if not isinstance(layers, dict):
        raise ParityError(f"{where}: layers must map name patterns to {{atol, rtol}}")
    label = f"{where} layers"
    return tol, [(pattern, _tolerance(_table(value, f"{label} {pattern!r}", ("atol", "rtol")), tol,
                                      f"{label} {pattern!r}")) for pattern, value in layers.items()]


def resolve_policy(model: str, fixture_tolerances: dict | None, defaults: Tolerance,
                   atol: float | None = None, rtol: float | None = None,
                   settings: dict | None = None, settings_path: Path | None = None) -> TolerancePolicy:
    """The rule for `model` from every source, in the order the module docstring gives: the noise rule
    unless some source gives atol or rtol. `defaults` fill in the fixed rule's value a source leaves out.

    `fixture_tolerances` is fixtures/<model>/fixture.json's `tolerances`; `atol`/`rtol`, the command line's.
    """
    settings = check_settings(settings or {}, settings_path)
    fixed = _fixed(settings)
    tol = _tolerance(settings, defaults, _settings_label(settings_path))
    sources, patterns = ["parity defaults"], []
    if settings:
        sources.append(_settings_label(settings_path))
    for spec, label in ((fixture_tolerances, f"{fixtures_dir() / model / 'fixture.json'} tolerances"),
                        (settings.get("models", {}).get(model), _model_label(settings_path, model))):
        if spec is None or spec == {}:
            continue
        tol, scoped = _scoped(spec, tol, label)
        fixed = fixed or _fixed(spec)
        patterns += scoped
        sources.append(label)
    if atol is not None or rtol is not None:  # the command line wins over everything
        given = {key: value for key, value in (("atol", atol), ("rtol", rtol)) if value is not None}
        tol = _tolerance(given, tol, "command line")
        fixed, patterns, sources = True, [], [*sources, "command line"]
    if not fixed:
        return TolerancePolicy(None, None, tuple(patterns), tuple(sources))
    return TolerancePolicy(tol.atol, tol.rtol, tuple(patterns), tuple(sources))


def _fixed(spec: dict) -> bool:
    """Whether a settings table asks for the fixed rule (gives atol or rtol itself)."""
    return "atol" in spec or "rtol" in spec


# -- the baseline -------------------------------------------------------------------------------------
@dataclass
class Baseline:
    """Accepted per-layer errors: {model: {image: {layer: {top: {"max_abs": x, "rel_l2": y}}}}}."""

    path: Path
    models: dict = field(default_factory=dict)
    growth: float = GROWTH
    floor: float = FLOOR

    def __post_init__(self) -> None:
        self.growth = growth_factor(self.growth, "the baseline growth factor")

    @classmethod
    def load(cls, path: str | Path, growth: float = GROWTH, floor: float = FLOOR) -> "Baseline":
        """The baseline at `path`, its structure checked now: a wrong type deep inside it otherwise
        surfaced as a traceback only after every model had run."""
        path = Path(path)
        if not path.exists():
            raise ParityError("no such baseline (make one with `parity baseline update`)", path)
        try:
            with parsing(path, "baseline"):
                data = json.loads(require_file(path, "baseline").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ParityError(f"cannot read the baseline ({exc})", path) from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ParityError('not a parity baseline (expected {"models": {...}})', path)
        _check_accepted(data["models"], path)
        return cls(path, data["models"], growth, floor)

    def accepted(self, model: str, image: str, layer: str, top: str, key: str = "max_abs") -> float | None:
        entry = self.models.get(model, {}).get(image, {}).get(layer, {}).get(top)
        return None if entry is None or entry.get(key) is None else float(entry[key])

    def limit(self, accepted: float, atol: float | None = None) -> float:
        """The largest error the gate lets pass: `growth` x the accepted one, and never below the noise
        band (RATIO_FLOOR for a ratio, `floor` x atol for a max_abs under the fixed rule)."""
        least = RATIO_FLOOR if atol is None else self.floor * atol
        return max(self.growth * accepted, least)

    def gate(self, model: str, image: str, result) -> None:
        """Fail `result` if its error, though inside the rule, grew past the baseline's limit. Under the
        noise rule the ratio is gated (a baseline without ratios gates nothing there); else max_abs."""
        noise_rule = result.ratio is not None
        accepted = self.accepted(model, image, result.layer, result.top, "ratio" if noise_rule else "max_abs")
        if accepted is None:
            return
        result.baseline = accepted
        error, atol = (result.ratio, None) if noise_rule else (result.max_abs, result.atol)
        if result.status == PASS and error > self.limit(accepted, atol):
            result.status, result.grew = FAIL, True

    def record(self, report) -> None:
        """Accept `report`'s errors (a passing report only: a failure is not a baseline)."""
        if report.status != PASS:
            raise ParityError(f"{report.model}/{report.image} fails; fix it before accepting its errors as a baseline")
        layers: dict = {}
        for r in report.layers:
            accepted = {"max_abs": r.max_abs, "rel_l2": r.rel_l2}
            if r.ratio is not None:
                accepted["ratio"] = r.ratio
            layers.setdefault(r.layer, {})[r.top] = accepted
        self.models.setdefault(report.model, {})[report.image] = layers

    def write(self) -> Path:
        from ..diagnose.report import write_json

        return write_json(self.path, {"about": "parity's accepted per-layer errors (`parity baseline update`); "
                                               "the gate fails a layer whose error/noise ratio (the fixed rule: "
                                               "max_abs) grows past growth x this",
                                      "models": {m: self.models[m] for m in sorted(self.models)}})


def record_baseline(path: Path, reports) -> Baseline:
    """Accept the passing `reports` into the baseline at `path`, keeping every other entry it holds.

    Read, merged and written under a lock: two `parity baseline update` runs at once each read the file
    before their (long) checks, and the second to write dropped the first one's models while both said
    "recorded". Re-read inside the lock, the file holds whatever the other run wrote; the write is atomic."""
    with _locked(path):
        baseline = Baseline.load(path) if path.exists() else Baseline(path)
        for report in reports:
            baseline.record(report)
        baseline.write()
    return baseline


@contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on `path`.lock (beside it), one holder at a time across processes.

    The lock file is removed by its holder, so none is left beside the baseline; a waiter that then gets
    the lock on the removed file sees the path now names another file (or none), and locks again."""
    lock_path = path.with_name(f"{path.name}.lock")
    while True:
        lock = open(lock_path, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _same_file(os.stat(lock_path), os.fstat(lock.fileno())):
                break
        except FileNotFoundError:
            pass
        lock.close()
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        lock.close()


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _check_accepted(node, path: Path, keys: tuple[str, ...] = ()) -> None:
    """The baseline's `models` below `keys`: tables by model, sample, layer and top, down to each top's
    accepted max_abs (a finite number >= 0)."""
    where = "models" + "".join(f"[{key!r}]" for key in keys)
    if len(keys) < len(BASELINE_LEVELS):
        if not isinstance(node, dict):
            raise ParityError(f"{where} must be a table by {BASELINE_LEVELS[len(keys)]}, got {shown(node)}", path)
        for key, value in node.items():
            _check_accepted(value, path, (*keys, key))
    elif not isinstance(node, dict):
        raise ParityError(f'{where} must be {{"max_abs": ..., "rel_l2": ...}}, got {shown(node)}', path)
    elif "max_abs" not in node:
        raise ParityError(f"{where} misses max_abs", path)
    else:
        finite_number(node["max_abs"], f"{where}['max_abs']", path=path)
        if "ratio" in node:
            finite_number(node["ratio"], f"{where}['ratio']", path=path)
