"""`parity dump-tf` and `parity tf-import`: a frozen TensorFlow graph as the source of truth."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ParityError, require_file, require_writable
from . import add_preprocessing, preprocessing

DUMP_HELP = """Run a frozen TensorFlow graph (.pb) on images and save every op's float output as reference blobs.
  parity dump-tf graph.pb --input input --image cat.png --out refs/ [--channel-order RGB --raw-scale 1 ...]
  parity dump-tf --fixture tf_saliency
4-D outputs keep the graph's layout; each entry records it (NCHW ones are compared like Caffe's blobs)."""

IMPORT_HELP = """Move a frozen graph's Const weights into your hand-written Keras model, matched by name.
  parity tf-import graph.pb --keras-model mypkg.model:build -o model.keras [--weights-h5 W.weights.h5]
Const 'aspp/project/kernel' goes to Keras layer 'aspp_project', variable 'kernel' ('/' read as '_'), or to the
layer a mapping file {"keras layer": "graph scope"} names. Nothing is written unless every variable and every
weight finds its partner with the same shape; otherwise every unmatched one is listed."""


def add(sub) -> None:
    p = sub.add_parser("dump-tf", help="save a frozen TensorFlow graph's per-op outputs as reference blobs",
                       description=DUMP_HELP)
    p.add_argument("graph", nargs="?", type=Path, help="frozen GraphDef (.pb)")
    p.add_argument("--fixture", help="take the graph, input, preprocessing and images from this fixture")
    p.add_argument("--input", dest="input_name", help="the placeholder to feed (default: the only one)")
    p.add_argument("--image", action="append", type=Path, default=[], help="an image to preprocess (repeatable)")
    p.add_argument("--out", type=Path, help="output folder (default for a fixture: reference_blobs/<fixture>)")
    p.add_argument("--op", action="append", default=[], dest="ops", metavar="PATTERN",
                   help="dump only ops whose name matches this glob, e.g. 'aspp/*' (repeatable; default: every op "
                        "with a float output)")
    p.add_argument("--data-format", choices=("NCHW", "NHWC"),
                   help="the input's layout (default: its first consumer's data_format, else where its 3 channels are)")
    add_preprocessing(p, "graph")
    p.set_defaults(run=run_dump)
    q = sub.add_parser("tf-import", help="move a frozen graph's weights into a hand-written Keras model by name",
                       description=IMPORT_HELP)
    q.add_argument("graph", type=Path, help="frozen GraphDef (.pb)")
    q.add_argument("--keras-model", required=True, metavar="MODULE:FN", help="FN() returns the Keras model")
    q.add_argument("--mapping", type=Path, help='JSON {"keras layer": "graph scope"} where names differ')
    q.add_argument("-o", "--output", type=Path, help="write the model with its weights (.keras)")
    q.add_argument("--weights-h5", type=Path, help="write the weights only (.weights.h5)")
    q.set_defaults(run=run_import)


def _require_tensorflow() -> None:
    """dump-tf and tf-import run TensorFlow: in the pycaffe environment (which has none) say so in one line."""
    from importlib.util import find_spec

    if find_spec("tensorflow") is None:
        raise ParityError("TensorFlow is not installed here. dump-tf and tf-import run in parity's main environment "
                          "(with TensorFlow), not in the pycaffe one that `parity dump` uses")


def run_dump(args) -> int:
    _require_tensorflow()
    from ..atomic import sha256_file
    from ..caffe.dump import Sample, check_sample_names
    from ..caffe.fixtures import load_fixture
    from ..data.preprocess import Preprocessing, preprocess_image
    from ..tfgraph.dump import check_side_effect_free, dump_graph
    from ..tfgraph.fixture import fixture_graph
    from ..tfgraph.graph import guess_input_layout, load_graph, placeholder_shape, placeholders

    if args.fixture and args.graph:
        raise ParityError("give GRAPH.pb, or --fixture NAME, not both")
    fixture = load_fixture(args.fixture) if args.fixture else None
    if fixture is None and args.graph is None:
        raise ParityError("give GRAPH.pb, or --fixture NAME")
    if fixture is not None and fixture.kind != "tensorflow-graph":
        raise ParityError(f"fixture {fixture.name!r} is a Caffe fixture: use `parity dump`")
    graph = require_file(args.graph, "graph") if args.graph else fixture_graph(fixture)
    graph_def, net = load_graph(graph)
    check_side_effect_free(graph_def, graph)  # before anything runs: the graph is data
    spec = fixture.description["input"] if fixture else {}
    name = args.input_name or spec.get("name") or _only_placeholder(net, graph)
    layer = next((p for p in placeholders(net) if p.name == name), None)
    if layer is None:
        raise ParityError(f"the graph has no placeholder {name!r}", graph)
    layout = args.data_format or spec.get("layout") or guess_input_layout(net, layer)
    shape = placeholder_shape(layer, graph)
    nchw = shape if layout == "NCHW" else (shape[0], shape[3], shape[1], shape[2])
    prep = fixture.preprocessing if fixture else Preprocessing()
    prep = preprocessing(args, prep)
    prep.check_input(nchw, graph)  # the placeholder's shape, from the graph: a mismatch is said of it
    images = args.image or ([fixture.image_path(i) for i in fixture.images] if fixture else [])
    if not images:
        raise ParityError("nothing to run: give --image IMG")
    out = args.out or (fixture.references if fixture else None)
    if out is None:
        raise ParityError("give --out DIR")
    require_writable(out, "output folder", folder=True)
    check_sample_names(images, out)
    samples = [Sample(image.stem, {name: preprocess_image(image, prep, nchw)},
                      {"kind": "image", "file": image.name, "sha256": sha256_file(image),
                       "preprocessing": prep.to_dict()})
               for image in images]
    dump_graph(graph, name, samples, out, layout, args.ops, log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


def _only_placeholder(net, graph: Path) -> str:
    from ..tfgraph.graph import placeholders

    names = [p.name for p in placeholders(net)]
    if len(names) != 1:
        raise ParityError(f"the graph has {len(names)} placeholders ({', '.join(names)}): "
                          "say which with --input", graph)
    return names[0]


def run_import(args) -> int:
    _require_tensorflow()
    from ..targets.handwritten import read_mapping
    from ..tfgraph.graph import constants, read_graph_def
    from ..tfgraph.weights import load_graph_weights
    from ..user_modules import load_builder
    from .convert import _check_suffix, write_together

    if not (args.output or args.weights_h5):
        raise ParityError("nothing to write: give -o MODEL.keras or --weights-h5 PATH")
    _check_suffix(args.output, ".keras")
    _check_suffix(args.weights_h5, ".weights.h5")
    consts = constants(read_graph_def(args.graph), args.graph)
    model = load_builder(args.keras_model)()
    count = load_graph_weights(model, consts, read_mapping(args.mapping, names_only=True), args.graph)
    print(f"parity: matched {count} weights", file=sys.stderr)
    write_together({args.output: model.save, args.weights_h5: model.save_weights})
    return 0
