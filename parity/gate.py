"""CI gating: tolerances per model and per layer-name pattern, and a baseline of accepted errors.

A tolerance says what is acceptable; a baseline says what was accepted. A change that makes a layer's
error grow fivefold but stays inside the tolerance is still a regression worth stopping: the gate
fails when a layer's max_abs grows past `growth` times its baseline (errors below `floor` x atol
never trip it: last-bit noise differs between CPUs).

Tolerances resolve, later winning: parity's defaults, `[tool.parity]` in pyproject.toml, the
fixture's own `tolerances` (fixture.json), `[tool.parity.models.<name>]`; then layer patterns
(fnmatch, e.g. "fc*") from the fixture and from `[tool.parity.models.<name>.layers]`, the last
matching pattern winning. `--atol`/`--rtol` on the command line override all of them.
"""
from __future__ import annotations

import fnmatch
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .compare import FAIL, PASS, Tolerance
from .errors import ParityError

GROWTH = 4.0
FLOOR = 0.01  # of the layer's atol


@dataclass(frozen=True)
class TolerancePolicy:
    """A model's tolerance with per-layer-pattern exceptions, and where each came from (for the report)."""

    atol: float
    rtol: float
    patterns: tuple[tuple[str, Tolerance], ...] = ()
    sources: tuple[str, ...] = ()

    def for_layer(self, name: str) -> Tolerance:
        chosen = Tolerance(self.atol, self.rtol)
        for pattern, tol in self.patterns:
            if fnmatch.fnmatchcase(name, pattern):
                chosen = tol
        return chosen

    def describe(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "sources": list(self.sources),
                "layers": {p: {"atol": t.atol, "rtol": t.rtol} for p, t in self.patterns}}


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above `start` (the working directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
    return None


def project_settings(pyproject: Path | None = None) -> tuple[dict, Path | None]:
    """`[tool.parity]` of the nearest pyproject.toml ({} when none), and the file it came from."""
    path = pyproject or find_pyproject()
    if path is None:
        return {}, None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ParityError(f"cannot read [tool.parity] ({exc})", path) from None
    settings = data.get("tool", {}).get("parity", {})
    if not isinstance(settings, dict):
        raise ParityError("[tool.parity] must be a table", path)
    return settings, path


def configured_baseline(pyproject: Path | None = None) -> Path | None:
    """The baseline file `[tool.parity] baseline` names (relative to its pyproject.toml), if any."""
    settings, where = project_settings(pyproject)
    return where.parent / settings["baseline"] if where is not None and settings.get("baseline") else None


def _tolerance(spec: dict, base: Tolerance, where: str) -> Tolerance:
    unknown = set(spec) - {"atol", "rtol", "layers"}
    if unknown:
        raise ParityError(f"{where}: unknown tolerance key(s) {', '.join(sorted(unknown))} (atol, rtol, layers)")
    values = {}
    for key in ("atol", "rtol"):
        value = spec.get(key, getattr(base, key))
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ParityError(f"{where}: {key} must be a non-negative number, got {value!r}")
        values[key] = float(value)
    return Tolerance(**values)


def _patterns(spec: dict, base: Tolerance, where: str) -> list[tuple[str, Tolerance]]:
    layers = spec.get("layers", {})
    if not isinstance(layers, dict):
        raise ParityError(f"{where}: layers must map name patterns to {{atol, rtol}}")
    return [(pattern, _tolerance(value, base, f"{where} layers {pattern!r}")) for pattern, value in layers.items()]


def resolve_policy(model: str, fixture_tolerances: dict | None, defaults: Tolerance,
                   atol: float | None = None, rtol: float | None = None,
                   settings: dict | None = None, settings_path: Path | None = None) -> TolerancePolicy:
    """The tolerance policy for `model` from every source, in the order the module docstring gives."""
    tol, sources, patterns = defaults, ["parity defaults"], []
    where = str(settings_path or "pyproject.toml")
    layers = [(settings or {}, f"{where} [tool.parity]", False), (fixture_tolerances or {}, f"fixture {model}", True),
              ((settings or {}).get("models", {}).get(model, {}), f"{where} [tool.parity.models.{model}]", True)]
    for spec, label, has_layers in layers:
        if not spec:
            continue
        allowed = {"atol", "rtol", "layers"} if has_layers else {"atol", "rtol", "baseline", "growth", "models"}
        if not isinstance(spec, dict) or set(spec) - allowed:
            raise ParityError(f"{label}: unknown setting(s) {', '.join(sorted(set(spec) - allowed))} "
                              f"(known: {', '.join(sorted(allowed))})" if isinstance(spec, dict) else
                              f"{label}: must be a table of settings")
        scoped = {k: v for k, v in spec.items() if k in ("atol", "rtol") or (has_layers and k == "layers")}
        tol = _tolerance(scoped, tol, label)
        if has_layers:
            patterns += _patterns(scoped, tol, label)
        sources.append(label)
    if atol is not None or rtol is not None:  # the command line wins over everything
        tol = Tolerance(tol.atol if atol is None else atol, tol.rtol if rtol is None else rtol)
        patterns, sources = [], [*sources, "command line"]
    return TolerancePolicy(tol.atol, tol.rtol, tuple(patterns), tuple(sources))


# -- the baseline -------------------------------------------------------------------------------------
@dataclass
class Baseline:
    """Accepted per-layer errors: {model: {image: {layer: {top: {"max_abs": x, "rel_l2": y}}}}}."""

    path: Path
    models: dict = field(default_factory=dict)
    growth: float = GROWTH
    floor: float = FLOOR

    @classmethod
    def load(cls, path: str | Path, growth: float = GROWTH, floor: float = FLOOR) -> "Baseline":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ParityError("no such baseline (make one with `parity baseline update`)", path) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ParityError(f"cannot read the baseline ({exc})", path) from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ParityError('not a parity baseline (expected {"models": {...}})', path)
        return cls(path, data["models"], growth, floor)

    def accepted(self, model: str, image: str, layer: str, top: str) -> float | None:
        entry = self.models.get(model, {}).get(image, {}).get(layer, {}).get(top)
        return None if entry is None else float(entry["max_abs"])

    def limit(self, accepted: float, atol: float) -> float:
        return max(self.growth * accepted, self.floor * atol)

    def gate(self, model: str, image: str, result) -> None:
        """Fail `result` if its error, though inside the tolerance, grew past the baseline's limit."""
        accepted = self.accepted(model, image, result.layer, result.top)
        if accepted is None or result.max_abs is None:
            return
        result.baseline = accepted
        if result.status == PASS and result.max_abs > self.limit(accepted, result.atol):
            result.status, result.grew = FAIL, True

    def record(self, report) -> None:
        """Accept `report`'s errors (a passing report only: a failure is not a baseline)."""
        if report.status != "pass":
            raise ParityError(f"{report.model}/{report.image} fails; fix it before accepting its errors as a baseline")
        layers: dict = {}
        for r in report.layers:
            layers.setdefault(r.layer, {})[r.top] = {"max_abs": r.max_abs, "rel_l2": r.rel_l2}
        self.models.setdefault(report.model, {})[report.image] = layers

    def write(self) -> Path:
        from .report import write_json

        return write_json(self.path, {"about": "parity's accepted per-layer errors (`parity baseline update`); "
                                               "the gate fails a layer whose max_abs grows past growth x this",
                                      "models": {m: self.models[m] for m in sorted(self.models)}})
