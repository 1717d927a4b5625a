"""`parity repro`: one layer's divergence as a standalone bundle (fragment, weights, Caffe's arrays, a test)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ParityError, require_file, require_writable

HELP = """Write the smallest bundle that shows one layer's divergence, to hand to someone else.
  parity repro tiny conv1 -o conv1-repro                                   (a fixture by name)
  parity repro deploy.prototxt w.caffemodel --blobs DIR conv3_2 -o repro   (your own net and dump)
The bundle: net.prototxt (Input layer(s) + the layer), weights.caffemodel (its weights only), bottoms/*.npy and
top.npy (Caffe's own arrays), test_repro.py (a standalone pytest file that fails while the conversion is wrong:
pytest DIR/test_repro.py), README.txt and manifest.json (provenance, rule, verdict).
Exit code: 0 the bundle was written (its verdict, PASS or FAIL, is printed last), 2 bad usage or input."""

USAGE = ("parity repro (MODEL | PROTOTXT CAFFEMODEL --blobs DIR) LAYER -o DIR [--image SAMPLE] [--top BLOB] "
         "[--allow-mismatch]")


def add(sub) -> None:
    p = sub.add_parser("repro", help="write a standalone bundle that reproduces one layer's divergence",
                       description=HELP, usage=USAGE)
    p.add_argument("names", nargs="+", metavar="MODEL LAYER | PROTOTXT CAFFEMODEL LAYER",
                   help="a fixture and a layer, or (with --blobs) a prototxt, a caffemodel and a layer")
    p.add_argument("--blobs", type=Path, metavar="DIR",
                   help="with PROTOTXT CAFFEMODEL: the reference folder (`parity dump --out`)")
    p.add_argument("--image", metavar="SAMPLE", help="the reference sample to take Caffe's arrays from (default: the "
                   "first)")
    p.add_argument("--top", metavar="BLOB", help="for a layer with several tops: the one to reproduce (default: the "
                   "first with a reference entry)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="the bundle's folder; replaced only if parity wrote it (or it is empty)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="write even if the files' sha256 differ from the reference manifest's (recorded)")
    p.set_defaults(run=run)


def _target(args):
    """The Caffe target and the layer, from MODEL LAYER or PROTOTXT CAFFEMODEL --blobs DIR LAYER."""
    from ..caffe.fixtures import load_fixture
    from ..data.reference import find_references
    from ..targets import from_files, from_fixture

    if args.blobs is not None:
        if len(args.names) != 3:
            raise ParityError("with --blobs DIR give PROTOTXT CAFFEMODEL LAYER")
        prototxt, caffemodel, layer = args.names
        if find_references(args.blobs)[0].source != "caffe":
            raise ParityError("is a TensorFlow-graph reference (`parity dump-tf`); repro cuts layers out of Caffe nets "
                              "only", args.blobs)
        return from_files(require_file(prototxt, "prototxt"), require_file(caffemodel, "caffemodel"),
                                 args.blobs), layer
    if len(args.names) != 2:
        raise ParityError("give MODEL LAYER (a fixture by name), or PROTOTXT CAFFEMODEL --blobs DIR LAYER")
    model, layer = args.names
    if load_fixture(model).kind == "tensorflow-graph":
        raise ParityError(f"fixture {model!r} is a TensorFlow graph; repro cuts layers out of Caffe nets only")
    return from_fixture(model), layer


def _sample(target, image: str | None):
    refs = target.references
    if image is None:
        return refs[0]
    for ref in refs:
        if ref.name == image:
            return ref
    raise ParityError(f"no reference sample {image!r} (samples: {', '.join(r.name for r in refs)})", refs[0].dir.parent)


def run(args) -> int:
    from ..caffe.graph import Net
    from ..caffe.reading.prototxt import parse_prototxt, read_prototxt
    from ..check.numerics import configure
    from ..check.pipeline import gate_settings, source_mismatches
    from ..diagnose.repro import check_output, fragment, judge, plan_bundle, verdict_line

    out = args.output
    require_writable(out, "output folder", folder=True)
    target, layer = _target(args)
    ref = _sample(target, args.image)
    net = target.net()
    chosen = plan_bundle(net, ref, layer, args.top)
    check_output(out, ref, [target.prototxt, target.caffemodel, *([args.blobs] if args.blobs else [])])
    hashes: dict[Path, str] = {}
    problems = source_mismatches(ref, target.sources(), hashes)
    if problems and not args.allow_mismatch:
        raise ParityError(f"{'; '.join(problems)} (pass --allow-mismatch to write the bundle anyway)",
                          ref.dir / "manifest.json")
    policy, _ = gate_settings(target, None, None, None, None)
    configure()  # TF32 off, as in `parity check`
    weights = target.read_weights()
    comment = (f"parity repro: layer {layer} of {target.name} ({target.prototxt.name}), sample {ref.name}.\n"
               "Plain Input layer(s) holding Caffe's own bottoms (bottoms/*.npy), then the layer(s) exactly as in "
               "the original prototxt.")
    proto, text = fragment(net, chosen, comment, read_prototxt(target.prototxt).state)
    piece = Net.from_proto(parse_prototxt(text, target.prototxt), net.path, net.text)
    expected_layers = [lay.name for lay in proto.layer]
    if [lay.name for lay in piece.layers] != expected_layers:  # parity's own mistake, not the user's input
        raise RuntimeError(f"the fragment reads back as {[lay.name for lay in piece.layers]}, not {expected_layers}")
    bottoms = {blob: ref.load(entry) for blob, entry in chosen.sources.items()}
    expected = ref.load(chosen.entry)
    verdict = judge(piece, weights, chosen, bottoms, expected, policy.for_layer(chosen.entry.layer))
    written = _write(out, args, target, ref, chosen, proto, text, weights, bottoms, expected, verdict, hashes, problems)
    for rel, what in written:
        print(f"wrote {out / rel} ({what})")
    print(verdict_line(verdict))
    if chosen.other_tops:
        print(f"note: {layer} has other tops with reference entries ({', '.join(chosen.other_tops)}); --top BLOB "
              "reproduces one of them")
    return 0


def _write(out: Path, args, target, ref, chosen, proto, text: str, weights, bottoms: dict, expected, verdict,
           hashes: dict, problems: list[str]) -> list[tuple[str, str]]:
    """Every file of the bundle into a staged folder that replaces `out` whole (parity.atomic), or nothing."""
    import numpy as np

    from .. import __version__
    from ..atomic import atomic_directory, sha256_file
    from ..caffe.reading.caffemodel_writer import write_caffemodel
    from ..check.compare import json_safe
    from ..check.numerics import environment
    from ..diagnose.repro import (
        BUNDLE_FORMAT,
        BUNDLE_VERSION,
        bundle_names,
        generated_test,
        readme_text,
        written_by_repro,
    )

    files = bundle_names(bottoms)
    blobs = {name: weights.get(name) for name in chosen.chain if weights.get(name)}
    entry = chosen.entry
    manifest = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
        "created_by": f"parity {__version__} repro", "parity_version": __version__,
        "model": target.name, "sample": ref.name,
        "layer": chosen.layer, "type": chosen.type, "top_blob": entry.top,
        "covers": list(chosen.chain) if len(chosen.chain) > 1 else None,
        "sources": {key: {"file": path.name, "sha256": hashes[path]} for key, path in target.sources().items()},
        "reference": {"folder": ref.dir.name, "granularity": ref.granularity,
                      "manifest_sha256": sha256_file(ref.dir / "manifest.json"), "input": ref.manifest.get("input"),
                      "caffe": ref.manifest.get("caffe")},
        "bottoms": {blob: {"file": files[blob], "shape": list(src.shape),
                           "entry": {"layer": src.layer, "top": src.top, "file": src.file}}
                    for blob, src in chosen.sources.items()},
        "top": {"file": "top.npy", "shape": list(entry.shape),
                "entry": {"layer": entry.layer, "top": entry.top, "file": entry.file}},
        "weights": {name: [list(a.shape) for a in arrays] for name, arrays in blobs.items()},
        "rule": verdict.rule.describe(),
        "verdict": json_safe(verdict.to_dict()),
        "notes": [f"ALLOWED MISMATCH: {p}" for p in problems],
        "plugins": list(getattr(args, "plugin", []) or []),
        "environment": environment(),
    }
    written = [("net.prototxt", f"{len(proto.layer) - len(chosen.chain)} Input layer(s) + "
                                f"{' -> '.join(chosen.chain)}"),
               ("weights.caffemodel", f"learned blobs of {', '.join(blobs)}" if blobs else
                f"no learned blobs: {' -> '.join(chosen.chain)} has none")]
    written += [(files[blob], f"Caffe's {blob} as {chosen.sources[blob].layer} left it, "
                              f"{'x'.join(map(str, bottoms[blob].shape))}") for blob in files]
    written += [("top.npy", f"Caffe's output {entry.top} of {entry.layer}, {'x'.join(map(str, expected.shape))}"),
                ("test_repro.py", f"pytest {out / 'test_repro.py'}"), ("README.txt", "what this is, how to run it"),
                ("manifest.json", f"provenance, rule, verdict {verdict.result.status.upper()}")]
    with atomic_directory(out, written_by_repro) as stage:
        (stage / "net.prototxt").write_text(text, encoding="utf-8")
        write_caffemodel(stage / "weights.caffemodel", proto, blobs)
        (stage / "bottoms").mkdir()
        for blob, rel in files.items():
            np.save(stage / rel, bottoms[blob], allow_pickle=False)
        np.save(stage / "top.npy", expected, allow_pickle=False)
        (stage / "test_repro.py").write_text(generated_test(manifest), encoding="utf-8")
        (stage / "README.txt").write_text(readme_text(manifest, out.name), encoding="utf-8")
        manifest["files"] = {rel: {"sha256": sha256_file(stage / rel)} for rel, _ in written if rel != "manifest.json"}
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n",
                                              encoding="utf-8")
    return written
