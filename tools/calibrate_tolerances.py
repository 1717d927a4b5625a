"""Measure a correct conversion's error against real Caffe, to choose tolerances from data.

    python tools/calibrate_tolerances.py --model vgg19 [--blobs EXTRA_REFERENCE_DIR ...]

For every reference entry: the largest |ref|, the largest absolute error, and the largest error
among near-zero elements (|ref| < 1, where only an absolute tolerance helps). Then, for candidate
(atol, rtol) pairs, the worst ratio error / (atol + rtol*|ref|) over everything: below 1 passes,
and 1/ratio is the safety margin. README "Tolerances" records the run that chose the defaults.
"""
from __future__ import annotations

import argparse

import numpy as np

from parity.check import prepare, target_from_fixture
from parity.layout import to_keras_layout
from parity.reference import find_references

CANDIDATES = [(1e-4, 1e-4), (1e-3, 1e-4), (1e-3, 1e-3), (5e-3, 1e-4), (1e-2, 1e-4), (1e-2, 1e-3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--blobs", action="append", default=[], help="extra reference folders (same net/weights)")
    args = parser.parse_args()
    target = target_from_fixture(args.model)
    target.references += [r for d in args.blobs for r in find_references(d)]
    prepared = prepare(target)
    worst = dict.fromkeys(CANDIDATES, 0.0)
    print(f"{'sample':<10} {'layer':<14} {'max|ref|':>9} {'max err':>9} {'max err, |ref|<1':>17}")
    for ref in target.references:
        outputs = prepared.capture.run(ref.inputs())
        for entry in ref.entries:
            want = to_keras_layout(ref.load(entry)).astype(np.float64)
            err = np.abs(outputs[(entry.layer, entry.top)].astype(np.float64) - want)
            near_zero = np.abs(want) < 1
            print(f"{ref.name:<10} {entry.layer:<14} {np.abs(want).max():9.3g} {err.max():9.2e} "
                  f"{err[near_zero].max() if near_zero.any() else 0:17.2e}")
            for atol, rtol in CANDIDATES:
                worst[(atol, rtol)] = max(worst[(atol, rtol)], float((err / (atol + rtol * np.abs(want))).max()))
    for (atol, rtol), ratio in worst.items():
        print(f"atol {atol:g}, rtol {rtol:g}: worst error/allowance {ratio:.3f} -> margin {1 / ratio:.1f}x"
              if ratio else f"atol {atol:g}, rtol {rtol:g}: exact")


if __name__ == "__main__":
    main()
