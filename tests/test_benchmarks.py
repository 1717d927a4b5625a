"""The committed benchmark report cannot drift from the committed run.

benchmarks/RESULTS.md is rendered from benchmarks/RESULTS.json (benchmarks/render.py), and the README
quotes its targets table. A hand edit of either, a renderer change without a re-render, or a
RESULTS.json in another form than run.py writes fails here, without measuring anything.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import record  # noqa: E402  (benchmarks/ is scripts, not a package)
import render  # noqa: E402

RUN = record.load(BENCH / "RESULTS.json")


def test_results_md_is_what_results_json_renders():
    assert (BENCH / "RESULTS.md").read_text(encoding="utf-8") == render.markdown(RUN)


def test_results_json_is_in_the_form_run_py_writes():
    written = json.dumps(record.encode(RUN), indent=2) + "\n"
    assert (BENCH / "RESULTS.json").read_text(encoding="utf-8") == written


def test_readme_quotes_the_runs_targets():
    readme = (BENCH.parent / "README.md").read_text(encoding="utf-8")
    assert render.readme_excerpt(RUN) in readme
