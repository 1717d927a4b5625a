"""CI gating: tolerances from pyproject.toml and fixtures by layer pattern, and the baseline gate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from parity.check.compare import K, Tolerance
from parity.check.gate import Baseline, resolve_policy
from parity.check.pipeline import DEFAULT_ATOL, DEFAULT_RTOL, gate_settings, run_target
from parity.cli import main
from parity.convert import convert_net
from parity.diagnose.report import render
from parity.errors import ParityError
from parity.targets import from_fixture

DEFAULTS = Tolerance(DEFAULT_ATOL, DEFAULT_RTOL)


def nudged(layer: str, offset: float):
    """A converter whose `layer` bias is off by `offset`: a regression of known size."""
    def convert(net, weights):
        converted = convert_net(net, weights)
        target = converted.model.get_layer(converted.keras_names[layer])
        kernel, bias = target.get_weights()
        target.set_weights([kernel, bias + offset])
        return converted

    return convert


def test_tolerances_resolve_in_order_and_by_layer_pattern():
    settings = {"atol": 0.5, "models": {"m": {"rtol": 0.25, "layers": {"fc*": {"atol": 2.0}, "fc8": {"atol": 3.0}}}}}
    policy = resolve_policy("m", {"atol": 0.75, "layers": {"conv*": {"rtol": 0.0}}}, DEFAULTS, settings=settings)
    assert (policy.atol, policy.rtol) == (0.75, 0.25)  # fixture over [tool.parity], model table over both
    assert policy.for_layer("conv1") == Tolerance(0.75, 0.0)
    assert policy.for_layer("fc7") == Tolerance(2.0, 0.25)
    assert policy.for_layer("fc8") == Tolerance(3.0, 0.25)  # the last matching pattern wins
    assert policy.for_layer("pool1") == Tolerance(0.75, 0.25)
    assert policy.sources[-1].endswith("[tool.parity.models.m]")
    cli = resolve_policy("m", None, DEFAULTS, atol=1e-3, settings=settings)
    assert cli.for_layer("fc8") == Tolerance(1e-3, 0.25) and cli.sources[-1] == "command line"  # patterns off


@pytest.mark.parametrize("bad", [{"atol": -1}, {"atol": "x"}, {"tol": 1}, {"layers": []}])
def test_bad_tolerance_settings_are_clear_errors(bad):
    with pytest.raises(ParityError):
        resolve_policy("m", bad, DEFAULTS)


def test_a_layer_pattern_tolerance_decides_that_layers_verdict():
    target = from_fixture("tiny")
    convert = nudged("conv1", 0.05)
    (strict,) = run_target(target, resolve_policy("tiny", None, DEFAULTS), convert=convert)
    assert strict.first_divergence == "conv1"
    loose = resolve_policy("tiny", {"layers": {"conv1": {"atol": 0.1}, "relu1": {"atol": 0.1}}}, DEFAULTS)
    (report,) = run_target(target, loose, convert=convert)
    conv1 = next(r for r in report.layers if r.layer == "conv1")
    assert conv1.status == "pass" and conv1.atol == 0.1
    assert report.first_divergence != "conv1"
    assert "tolerances by layer: conv1: atol 0.1" in render(report)


def test_the_gate_fails_an_error_that_grew_past_its_baseline_inside_the_tolerance(tmp_path):
    """The fixed rule, asked for: its gate compares max_abs."""
    target = from_fixture("tiny")
    policy = resolve_policy("tiny", None, DEFAULTS, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL)
    baseline = Baseline(tmp_path / "b.json")
    (clean,) = run_target(target, policy)
    baseline.record(clean)
    baseline.write()
    gate = Baseline.load(tmp_path / "b.json", growth=4.0)
    (same,) = run_target(target, policy, baseline=gate)
    assert same.status == "pass"  # passes against its own baseline
    (grown,) = run_target(target, policy, convert=nudged("conv1", 0.2 * DEFAULT_ATOL), baseline=gate)
    conv2 = next(r for r in grown.layers if r.layer == "conv1")
    assert conv2.max_abs < DEFAULT_ATOL  # still inside the tolerance ...
    assert conv2.status == "fail" and conv2.grew and grown.first_divergence == "conv1"  # ... but a regression
    assert "grew past the baseline's limit" in render(grown)
    (ungated,) = run_target(target, policy, convert=nudged("conv1", 0.2 * DEFAULT_ATOL))
    assert ungated.status == "pass"  # without the baseline, the tolerance alone lets it through


def test_under_the_noise_rule_the_gate_compares_the_error_noise_ratio(tmp_path):
    """The default rule: a ratio that grew past growth x its accepted one (and past the noise band, k/3)
    fails even below k."""
    target = from_fixture("tiny")
    policy = resolve_policy("tiny", None, DEFAULTS)
    (clean,) = run_target(target, policy)
    conv1 = next(r for r in clean.layers if r.layer == "conv1")
    baseline = Baseline(tmp_path / "b.json")
    baseline.record(clean)
    baseline.write()
    assert json.loads((tmp_path / "b.json").read_text())["models"]["tiny"]["chelsea"]["conv1"]["conv1"]["ratio"] \
        == conv1.ratio
    gate = Baseline.load(tmp_path / "b.json", growth=4.0)
    limit = gate.limit(conv1.ratio)
    assert limit >= K / 3 and limit + 2 * conv1.ratio < K  # room between the gate's limit and the rule's
    offset = (limit + (K - limit) / 2) * conv1.noise
    (grown,) = run_target(target, policy, convert=nudged("conv1", offset), baseline=gate)
    moved = next(r for r in grown.layers if r.layer == "conv1")
    assert limit < moved.ratio < K  # inside the noise rule ...
    assert moved.status == "fail" and moved.grew and grown.first_divergence == "conv1"  # ... but a regression
    assert "grew past the baseline's limit (accepted ratio" in render(grown)
    (ungated,) = run_target(target, policy, convert=nudged("conv1", offset))
    assert next(r for r in ungated.layers if r.layer == "conv1").status == "pass"


def test_a_failing_check_is_never_recorded_as_a_baseline(tmp_path):
    (bad,) = run_target(from_fixture("tiny"), DEFAULTS, convert=nudged("conv1", 1.0))
    with pytest.raises(ParityError, match="fix it before accepting"):
        Baseline(tmp_path / "b.json").record(bad)


def test_cli_baseline_update_refuses_failing_models_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import parity.check.pipeline

    real = parity.check.pipeline.run_target

    def failing_tiny(target, policy, **kwargs):
        convert = nudged("conv1", 1.0) if target.name == "tiny" else None
        return real(target, policy, **({"convert": convert} if convert else {}), **kwargs)

    monkeypatch.setattr(parity.check.pipeline, "run_target", failing_tiny)
    path = tmp_path / "b.json"
    path.write_text('{"models": {}}')
    assert main(["baseline", "update", "--model", "tiny_v1", "--model", "tiny", "--baseline", str(path)]) == 1
    err = capsys.readouterr().err
    assert "left unchanged" in err and "tiny/chelsea (first divergence at conv1)" in err and "tiny_v1/" not in err
    assert path.read_text() == '{"models": {}}'


def test_cli_baseline_update_then_gate(tmp_path, capsys):
    path = tmp_path / "b.json"
    assert main(["baseline", "update", "--model", "tiny", "--baseline", str(path)]) == 0
    recorded = json.loads(path.read_text())["models"]
    assert set(recorded) == {"tiny"} and "conv2" in recorded["tiny"]["chelsea"]
    assert main(["check", "--model", "tiny", "--baseline", str(path), "-q"]) == 0
    assert main(["check", "--model", "tiny", "--baseline", str(tmp_path / "missing.json"), "-q"]) == 2
    assert "no such baseline" in capsys.readouterr().err


def test_the_committed_baseline_covers_every_fixture():
    from parity.caffe.fixtures import list_fixtures
    from parity.check.gate import configured_baseline

    path = configured_baseline(Path(__file__).resolve().parents[1] / "pyproject.toml")
    assert path is not None and path.is_file()
    baseline = Baseline.load(path)
    assert set(baseline.models) == set(list_fixtures())
    tops = [top for samples in baseline.models.values() for layers in samples.values() for tops in layers.values()
            for top in tops.values()]
    assert all("ratio" in top for top in tops)  # the noise rule's measure is gated, not only max_abs
    policy, gate = gate_settings(from_fixture("tiny"), None, None, path, None)
    assert gate.growth == 4.0 and policy.atol is None and policy.describe()["rule"] == "noise"


def gated(baseline: Baseline, accepted: float, max_abs: float, atol: float = DEFAULT_ATOL):
    """Baseline.gate on one passing layer whose accepted max_abs is `accepted` and whose error now is `max_abs`."""
    from parity.check.compare import LayerResult

    baseline.models = {"m": {"img": {"conv1": {"conv1": {"max_abs": accepted, "rel_l2": 0.0}}}}}
    result = LayerResult("conv1", "Convolution", "conv1", 1, (1, 2, 3, 4), max_abs=max_abs, atol=atol)
    baseline.gate("m", "img", result)
    return result


def test_the_gate_ignores_errors_below_the_floor_even_over_an_exact_baseline(tmp_path):
    """An exactly-zero baseline times any growth is zero: without the floor (FLOOR x atol) the last-bit
    noise of another CPU would fail it. Below the floor it passes; above it, it is a real growth."""
    from parity.check.gate import FLOOR

    baseline = Baseline(tmp_path / "b.json", growth=4.0)
    under = gated(baseline, 0.0, 0.5 * FLOOR * DEFAULT_ATOL)
    assert under.status == "pass" and not under.grew and under.baseline == 0.0
    over = gated(baseline, 0.0, 2 * FLOOR * DEFAULT_ATOL)
    assert over.status == "fail" and over.grew


def test_the_gate_limit_is_exactly_growth_times_the_accepted_error(tmp_path):
    """growth 4 means 4x the accepted max_abs (well above the floor here), not 5x: 3.5x passes, 4.5x fails."""
    from parity.check.gate import FLOOR

    accepted = 10 * FLOOR * DEFAULT_ATOL  # 4.5x of it is still inside atol: only the gate can fail it
    baseline = Baseline(tmp_path / "b.json", growth=4.0)
    passing = gated(baseline, accepted, 3.5 * accepted)
    assert passing.status == "pass" and not passing.grew
    failing = gated(baseline, accepted, 4.5 * accepted)
    assert failing.max_abs < DEFAULT_ATOL and failing.status == "fail" and failing.grew
    assert baseline.limit(accepted, DEFAULT_ATOL) == pytest.approx(4 * accepted)


def test_baseline_update_lists_a_shape_divergence_with_the_other_failures(tmp_path, capsys, monkeypatch):
    """A conversion that departs from Caffe's shapes is a failing model like any other: listed, exit 1."""
    import parity.check.pipeline
    from parity.errors import ShapeDivergence

    def diverging(target, policy, **kwargs):
        raise ShapeDivergence("first divergence at pool1 (Pooling): output shape differs", "pool1")

    monkeypatch.setattr(parity.check.pipeline, "run_target", diverging)
    path = tmp_path / "b.json"
    assert main(["baseline", "update", "--model", "tiny", "--baseline", str(path)]) == 1
    err = capsys.readouterr().err
    assert "tiny/chelsea (first divergence at pool1)" in err and not path.exists()
