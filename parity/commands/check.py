"""`parity check`: convert, run once, compare every layer with Caffe's blobs, name the first divergence."""
from __future__ import annotations

import sys
from pathlib import Path

from ..check.compare import PASS
from ..errors import ParityError, printable, require_file, require_writable
from ..options import check_argparse

HELP = """Check a conversion layer by layer against real Caffe's blobs (or a frozen TensorFlow graph's).
  parity check --model vgg19                      (a fixture by name)
  parity check deploy.prototxt w.caffemodel --blobs DIR
  parity check --keras-model mypkg.model:build --weights model.keras --blobs DIR   (a `parity dump-tf` folder)
Exit code: 0 all layers within tolerance, 1 a layer diverges, 2 bad usage or input."""


def add(sub) -> None:
    from ..options import add_to_argparse

    p = sub.add_parser("check", help="compare a conversion with Caffe's blobs layer by layer", description=HELP)
    p.add_argument("prototxt", nargs="?", type=Path)
    p.add_argument("caffemodel", nargs="?", type=Path)
    add_to_argparse(p)  # the options the pytest plugin takes too (parity.options)
    p.add_argument("--image", action="append", help="with --model: only these reference samples (repeatable)")
    p.add_argument("--blobs", type=Path, help="reference folder (one with manifest.json, or one per sample below it)")
    p.add_argument("--save-mapping", type=Path, metavar="PATH", help="with --keras-model: write the pairing parity "
                   "made as a mapping file (JSON), to review or edit and pass back with --mapping")
    p.add_argument("--weights", type=Path, help="with --keras-model and a TensorFlow-graph reference: the model's "
                   "weights (a `parity tf-import` output, .keras or .weights.h5)")
    p.add_argument("--graph", type=Path, help="with a TensorFlow-graph reference: the frozen graph (.pb); its sha256 "
                   "is verified, and its weights are used when --weights is not given")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare even if the files' sha256 differ from the manifest's (said in the report)")
    p.add_argument("-q", "--quiet", action="store_true", help="print one line per sample: MODEL/SAMPLE: the verdict "
                   "(PASS or FAIL first, so a log grepped for FAIL finds it)")
    p.set_defaults(run=run)


def quiet_line(report) -> str:
    """-q's line: which model and sample, then the verdict (never a hint that follows it)."""
    from ..diagnose.report import verdict_lines

    return printable(f"{report.model}/{report.image}: {verdict_lines(report)[0]}")


def _check_options(args) -> None:
    """Options that only mean something beside another are refused alone, not silently ignored; output
    files are checked writable before the run, so a finished check never ends on a bad path. The
    options the plugin shares are checked as it checks them (parity.options); these are the CLI's own."""
    for option, needs, given in (("--image", "--model", args.model),
                                 ("--save-mapping", "--keras-model", args.keras_model),
                                 ("--growth", "--baseline", args.baseline)):
        if getattr(args, option[2:].replace("-", "_")) is not None and not given:
            raise ParityError(f"{option} goes with {needs}")
    check_argparse(args)
    if args.save_mapping is not None:
        require_writable(args.save_mapping, "mapping")


def _check_reports_apart(args, target) -> None:
    """A report written into a reference folder replaced its manifest.json or a blob (or would sit among
    them), and one written over an input replaced the prototxt, weights or baseline: refuse both, before
    the run, naming the report's path."""
    folders = [ref.dir.resolve() for ref in target.references]
    inputs = {Path(p).resolve() for p in (args.prototxt, args.caffemodel, args.graph, args.weights, args.mapping,
                                          args.baseline, *target.sources().values()) if p}
    for path, option in ((args.json, "--json"), (args.html, "--html")):
        if path is None:
            continue
        resolved = path.resolve()
        inside = next((f for f in folders if f == resolved or f in resolved.parents), None)
        if inside is not None:
            raise ParityError(f"{option} would write into the reference folder {inside}; write the report "
                              "elsewhere", path)
        if resolved in inputs:
            raise ParityError(f"{option} would overwrite one of the check's own input files", path)


def _graph_references(args) -> list:
    """The references of --blobs when a frozen TensorFlow graph made them (`parity dump-tf`), else []."""
    if args.model or args.prototxt or not args.blobs:
        if args.weights or args.graph:
            raise ParityError("--weights and --graph go with a TensorFlow-graph reference: "
                              "--keras-model ... --blobs DIR")
        return []
    from ..data.reference import find_references

    refs = find_references(args.blobs)
    if refs[0].source != "tensorflow-graph":
        return []
    return refs


def run(args) -> int:
    from ..check.pipeline import check_target, gate_settings
    from ..diagnose.report import render, write_json
    from ..targets import from_files, from_fixture, up_to

    _check_options(args)
    graph_refs = _graph_references(args)
    if args.model:
        if args.prototxt or args.caffemodel or args.blobs:
            raise ParityError("give either --model NAME or PROTOTXT CAFFEMODEL --blobs DIR, not both")
        target = from_fixture(args.model, args.image)
    elif graph_refs:
        from ..targets.tfgraph import GraphTarget

        graph = require_file(args.graph, "graph") if args.graph else None
        target = GraphTarget(args.blobs.name, graph_refs, graph=graph, weights=args.weights)  # + --keras-model
    else:
        if not (args.prototxt and args.caffemodel and args.blobs):
            raise ParityError("give PROTOTXT CAFFEMODEL --blobs DIR, or --model NAME")

        target = from_files(require_file(args.prototxt, "prototxt"), require_file(args.caffemodel, "caffemodel"),
                                   args.blobs)
    target = up_to(target, args.until)
    _check_reports_apart(args, target)
    policy, baseline = gate_settings(target, args.atol, args.rtol, args.baseline, args.growth)
    progress = None if args.quiet else (lambda m: print(f"parity: {m}", file=sys.stderr, flush=True))
    if args.keras_model:
        target = target.with_keras_model(args.keras_model, args.mapping, args.save_mapping)
    reports = check_target(target, policy, allow_mismatch=args.allow_mismatch, progress=progress,
                           local=args.local,
                           numerics={"deterministic": args.deterministic, "allow_tf32": args.allow_tf32},
                           baseline=baseline)
    for report in reports:
        text = render(report)
        print(quiet_line(report) if args.quiet else text)
    if args.json:
        payload = reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports]
        write_json(args.json, payload)
    if args.html:
        from ..diagnose.html import write_html

        write_html(args.html, reports)
    return 0 if all(r.status == PASS for r in reports) else 1
