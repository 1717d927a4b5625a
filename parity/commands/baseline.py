"""`parity baseline update`: accept the current per-layer errors as the baseline the CI gate compares against."""
from __future__ import annotations

import sys
from pathlib import Path

from ..check.compare import PASS
from ..errors import ParityError, printable, require_writable

HELP = """Record the accepted per-layer errors of fixtures (all by default) for the CI gate.
  parity baseline update                          (every fixture, into [tool.parity] baseline)
  parity baseline update --model vgg19 --baseline parity-baseline.json
Every model checked must pass: a failure is not a baseline. If any fails, they are all listed, the
file is left as it was, and the exit code is 1. Other models' entries in the file are kept, also those
another `baseline update` records at the same time (the file is merged under a lock)."""


def add(sub) -> None:
    p = sub.add_parser("baseline", help="record accepted per-layer errors for the CI gate", description=HELP)
    actions = p.add_subparsers(dest="action", required=True)
    u = actions.add_parser("update", help="check fixtures and record their per-layer errors", description=HELP)
    u.add_argument("--model", action="append", help="a fixture (repeatable; default: every fixture)")
    u.add_argument("--baseline", type=Path, help="the baseline file (default: [tool.parity] baseline)")
    u.set_defaults(run=run)


def run(args) -> int:
    from ..caffe.fixtures import list_fixtures
    from ..check.gate import Baseline, configured_baseline, record_baseline
    from ..check.pipeline import check_target, gate_settings
    from ..targets import from_fixture

    path = args.baseline or configured_baseline()
    if path is None:
        raise ParityError("no baseline file: pass --baseline PATH or set baseline in [tool.parity] of pyproject.toml")
    path = require_writable(path, "baseline")
    if path.exists():
        Baseline.load(path)  # a broken file is said now, not after every model has run
    models = args.model or list_fixtures()
    targets = {model: from_fixture(model) for model in models}  # every name checked before any model runs
    failing, passing = [], []
    for i, model in enumerate(models, 1):
        print(f"parity: [{i}/{len(models)}] checking {model} ...", file=sys.stderr, flush=True)
        target = targets[model]
        policy, _ = gate_settings(target, None, None, None, None)
        for report in check_target(target, policy):
            if report.status == PASS:
                passing.append(report)
            else:
                where = f" (first divergence at {report.first_divergence})" if report.first_divergence else ""
                failing.append(printable(f"{report.model}/{report.image}{where}"))
    if failing:
        print(f"parity: {path} left unchanged; these checks fail, and a failure is not a baseline: "
              + ", ".join(failing), file=sys.stderr)
        return 1
    record_baseline(path, passing)
    print(f"parity: recorded {len(models)} model(s) in {path}")
    return 0
