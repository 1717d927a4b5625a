"""Measure how far correct conversions sit from real Caffe in units of their float32 noise, to choose k.

    python tools/calibrate_tolerances.py [--model NAME ...] [--root DIR ...] [--json OUT]

Every fixture (or each --model) is checked under parity's noise rule against its committed references
and against the same fixture's references under every --root (a folder laid out like reference_blobs/,
e.g. one dump per OpenBLAS kernel: `parity dump --fixture NAME --blas-core Sandybridge --out ROOT/NAME`).
For each it prints the largest error/noise ratio and where; the last line gives the largest ratio of
all, which every correct conversion must keep below k/3 (parity.check.compare.K). README "Tolerances"
records the run that chose k. Run it again under ONEDNN_MAX_CPU_ISA=AVX2 to vary TensorFlow's side.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from parity.caffe.fixtures import list_fixtures, load_fixture
from parity.check.compare import K, NoiseRule
from parity.check.pipeline import check_reference, prepare
from parity.data.reference import find_references
from parity.targets import from_fixture


def caffe_fixtures() -> list[str]:
    return [name for name in list_fixtures() if load_fixture(name).kind == "caffe"]


def rows_for(model: str, roots: list[Path]) -> list[dict]:
    """One row per (reference root, sample, entry) of `model`: its noise, error and ratio."""
    target = from_fixture(model)
    sets = [("committed", target.references)]
    sets += [(str(root), find_references(root / model)) for root in roots if (root / model).is_dir()]
    prepared = prepare(replace(target, references=[r for _, refs in sets for r in refs]), allow_mismatch=True)
    rows = []
    for label, refs in sets:
        for ref in refs:
            report = check_reference(prepared, ref, NoiseRule())
            rows += [{"model": model, "references": label, "sample": ref.name, "layer": r.layer, "type": r.type,
                      "noise": r.noise, "max_abs": r.max_abs, "ratio": r.ratio, "flips": r.flips}
                     for r in report.layers]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="a fixture (repeatable; default: every Caffe one)")
    parser.add_argument("--root", action="append", default=[], type=Path,
                        help="another reference tree, laid out like reference_blobs/ (repeatable)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    rows = []
    for model in args.model or caffe_fixtures():
        found = rows_for(model, args.root)
        for label in dict.fromkeys(r["references"] for r in found):
            mine = [r for r in found if r["references"] == label and r["ratio"] is not None]
            worst = max(mine, key=lambda r: r["ratio"])
            print(f"{model:<24} {label:<28} worst {worst['ratio']:6.2f}x at {worst['layer']} ({worst['type']}), "
                  f"noise {worst['noise']:.2e}", flush=True)
        rows += found
    ratios = [r for r in rows if r["ratio"] is not None]
    worst = max(ratios, key=lambda r: r["ratio"])
    print(f"largest ratio of all: {worst['ratio']:.2f}x ({worst['model']} {worst['layer']}, {worst['references']}); "
          f"k = {K:g}, so the margin to k/3 is {K / 3 / worst['ratio']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    sys.exit(0 if worst["ratio"] < K / 3 else 1)


if __name__ == "__main__":
    main()
