"""`parity repro`: one layer's divergence as a small bundle a person can hand to someone else.

A failing check names a layer, but the evidence lives in a whole net, its (maybe 500 MB) weights and a
reference tree made by real Caffe. Whoever fixes the converter needs far less: the layer itself, its
weights, the values Caffe fed it and the value Caffe made. The bundle holds exactly that:

    net.prototxt        plain Input layer(s) with the bottoms' shapes, then the layer (at blob granularity,
                        the in-place chain its reference entry covers), re-serialized exactly as read
    weights.caffemodel  those layers' learned blobs only
    bottoms/<blob>.npy  Caffe's own bottoms (NCHW), from the reference entries of the layers that wrote them
    top.npy             Caffe's output for the layer's reference entry (NCHW)
    test_repro.py       a standalone pytest file: convert, run on the bottoms, compare under parity's rule
    README.txt          what this is, how to run it
    manifest.json       provenance (sha256 of the originals and of every file here), the rule, the verdict

The verdict recorded is measured on the fragment itself, fed Caffe's bottoms (what `check --local` calls
the layer's own error), by the same steps the generated test takes, so the test fails exactly when the
recorded verdict does, for as long as the conversion stays as it was.
"""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..caffe.graph import Net
from ..check.compare import PASS
from ..data.reference import Entry, Reference, safe_filename
from ..errors import ParityError, printable

BUNDLE_FORMAT = "parity-repro"
BUNDLE_VERSION = 1
TWIN_SOURCE = "the fragment, run again in float64"
PLUGIN_VARIABLE = "PARITY_REPRO_PLUGIN"


@dataclass(frozen=True)
class Plan:
    """What one bundle reproduces: a reference entry, the layers it covers, and where its bottoms come from."""

    layer: str  # the layer named on the command line
    type: str
    entry: Entry  # the reference entry of its output
    chain: tuple[str, ...]  # the layers that entry reflects, in Caffe's order (one, or an in-place chain)
    sources: dict[str, Entry]  # each blob the chain reads from outside -> the entry holding Caffe's value of it
    other_tops: tuple[str, ...] = ()  # the layer's other tops with entries (`--top` picks one of them instead)


def plan_bundle(net: Net, ref: Reference, layer: str, top: str | None = None) -> Plan:
    """The entry for `layer` (and `top`) in `ref`, its in-place chain and its bottoms' entries.

    Every refusal is one ParityError naming the file it concerns: a layer the net lacks (with the
    closest names), one without a reference entry of its own (at blob granularity: the entry that covers
    it), the net's Input (its value is what was fed), a bottom whose value Caffe's dump did not keep.
    """
    manifest = ref.dir / "manifest.json"
    names = [lay.name for lay in net.layers]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=3)
        shown = ", ".join(close or names[:8]) + ("" if close or len(names) <= 8 else " ...")
        hint = f"; did you mean {shown}?" if close else f" (its layers: {shown})"
        raise ParityError(f"no layer {layer!r} in the net{hint}", net.path)
    found = net.layer(layer)
    if found.type == "Input":
        raise ParityError(f"layer {layer!r} is the net's Input: its value is what was fed, there is no conversion "
                          "to reproduce (a divergence there is the preprocessing)", net.path, net.line_of(layer))
    entries = [e for e in ref.entries if e.layer == layer]
    if not entries:
        raise _no_entry(net, ref, layer)
    if top is not None:
        chosen = [e for e in entries if e.top == top]
        if not chosen:
            raise ParityError(f"layer {layer!r} has no reference entry for top {top!r} (its entries: "
                              f"{', '.join(e.top for e in entries)})", manifest)
        entry = chosen[0]
    else:
        entry = entries[0]
    referenced = {e.layer for e in ref.entries}
    chain = tuple(net.inplace_chain(entry.layer, entry.top, referenced))
    inputs = [name for name in chain if net.layer(name).type == "Input"]
    if inputs:
        raise ParityError(f"the reference entry of {layer!r} covers the net's Input {inputs[0]!r} (overwritten in "
                          "place): its value is what was fed, there is no fragment to cut out", manifest)
    sources = bottom_entries(net, ref, chain)
    return Plan(layer, found.type, entry, chain, sources, tuple(e.top for e in entries if e is not entry))


def _no_entry(net: Net, ref: Reference, layer: str) -> ParityError:
    """Why `layer` has no entry, and what to do: the entry covering it (blob granularity), or a new dump."""
    manifest = ref.dir / "manifest.json"
    referenced = {e.layer for e in ref.entries}
    for e in ref.entries:
        chain = net.inplace_chain(e.layer, e.top, referenced)
        if layer in chain:
            return ParityError(f"layer {layer!r} has no reference entry of its own: this {ref.granularity}-granularity "
                               f"dump saved its output only after {e.layer!r} overwrote it in place; reproduce "
                               f"{e.layer!r} (its bundle covers {' -> '.join(chain)}), or dump at layer granularity "
                               "(`parity dump --granularity layer`) for this layer alone", manifest)
    return ParityError(f"layer {layer!r} has no reference entry (the dump saved no output of it)", manifest)


def bottom_entries(net: Net, ref: Reference, chain: tuple[str, ...]) -> dict[str, Entry]:
    """For each blob `chain` reads from outside, the entry of its last writer before the chain (as
    parity.check.local finds a unit's bottoms); a blob whose value as read here is in no entry is refused."""
    from ..check.local import bottom_sources

    by_key = {(e.layer, e.top): e for e in ref.entries}
    sources, missing = bottom_sources(net, chain, by_key)
    if missing:
        blob = missing[0]
        writer = net.writer_before(chain[0], blob)
        later = ""
        if ref.granularity == "blob" and writer is not None:
            later = (": this blob-granularity dump keeps each blob's value only after the last layer of an in-place "
                     "chain, and a later layer overwrote it in place; dump at layer granularity "
                     "(`parity dump --granularity layer`) to reproduce this layer")
        raise ParityError(f"Caffe's value of bottom {blob!r} as {chain[0]!r} reads it (written by "
                          f"{writer.name if writer else 'no layer'!r}) has no reference entry{later}",
                          ref.dir / "manifest.json")
    return sources


def fragment(net: Net, chosen: Plan, comment: str, state: object | None = None) -> tuple[object, str]:
    """The fragment's NetParameter and its prototxt text: a plain Input layer per outside bottom (shaped
    as Caffe's value of it), then the chain's layers copied as parity read them (upgraded from V1 where
    the original was V1), their bottoms and tops unchanged, so the converter finds their weights by name.

    `state`: the original net's NetState, kept because a layer's include/exclude rules (kept as written)
    may name its stages; without them the fragment would filter that layer out."""
    from google.protobuf import text_format

    from ..caffe.schema import caffe_pb2

    proto = caffe_pb2.NetParameter(name=f"{net.name or 'net'}_repro_{chosen.layer}")
    if state is not None and state.ListFields():
        proto.state.CopyFrom(state)
    taken = set(chosen.chain)
    for i, (blob, entry) in enumerate(chosen.sources.items()):
        name = "input" if i == 0 else f"input_{i + 1}"
        while name in taken:
            name = f"repro_{name}"
        taken.add(name)
        lp = proto.layer.add(name=name, type="Input", top=[blob])
        lp.input_param.shape.add(dim=list(entry.shape))
    for name in chosen.chain:
        proto.layer.add().CopyFrom(net.layer(name).param)
    header = "".join(f"# {printable(line)}\n" for line in comment.splitlines())
    return proto, header + text_format.MessageToString(proto)


@dataclass
class Verdict:
    """The fragment judged on Caffe's bottoms: parity.check.compare's LayerResult, the rule it was judged by
    (the requested one, or the fixed fallback where no float64 twin runs) and what measured the noise."""

    result: object  # parity.check.compare.LayerResult
    rule: object  # NoiseRule or Tolerance
    noise_source: str | None = None
    unavailable: str | None = None  # why no twin ran, where none did

    def to_dict(self) -> dict:
        r = self.result
        return {"status": r.status, "max_abs": r.max_abs, "noise": r.noise, "ratio": r.ratio,
                "limit": r.atol, "max_rel": r.max_rel, "rel_l2": r.rel_l2, "cosine": r.cosine,
                "outside": r.outside, "worst": list(r.worst) if r.worst else None, "problem": r.problem,
                "noise_source": self.noise_source, "noise_unavailable": self.unavailable, "line": verdict_line(self),
                "measured_on": "the fragment (net.prototxt + weights.caffemodel), fed Caffe's bottoms"}


def judge(net: Net, weights, chosen: Plan, bottoms: dict[str, np.ndarray], expected: np.ndarray, rule) -> Verdict:
    """Convert the fragment, feed it Caffe's bottoms, compare the entry's output with Caffe's under `rule`:
    the generated test's steps (parity.check.compare.measure; under the noise rule, k times the output's
    float32 noise from the fragment's float64 twin, parity.check.noise). A converter whose Keras layer cannot
    even be built (ShapeDivergence) is a failing verdict, not an error: that is the bug to hand over."""
    from ..check.capture import Capture
    from ..check.compare import FAIL, LayerResult, NoiseRule, effective_noise, measure
    from ..check.noise import TwinUnavailable, estimate, peak
    from ..check.pipeline import FALLBACK
    from ..convert import convert_net
    from ..errors import ShapeDivergence

    entry = chosen.entry
    key = (entry.layer, entry.top)
    result = LayerResult(entry.layer, entry.type, entry.top, entry.order, tuple(entry.shape))
    result.covers = list(chosen.chain) if len(chosen.chain) > 1 else None
    try:
        converted = convert_net(net, weights)
    except ShapeDivergence as exc:
        result.status, result.problem = FAIL, exc.message
        return Verdict(result, rule)
    capture = Capture(converted, [key])
    feed = capture.feed(bottoms)  # NCHW by blob -> channels-last, in the model's input order
    got = capture.forward(feed)[key]
    verdict = Verdict(result, rule)
    noise = None
    if isinstance(rule, NoiseRule):
        try:
            table = estimate(capture.model, capture.keys, feed, {key: got}, TWIN_SOURCE, use_cache=False)
        except TwinUnavailable as exc:
            verdict.rule = FALLBACK
            verdict.unavailable = f"the fragment cannot compute in float64 ({exc})"
        else:
            noise = effective_noise(table.noise[key], peak(expected))
            verdict.noise_source = TWIN_SOURCE
    measure(result, expected, got, verdict.rule, noise)
    if isinstance(verdict.rule, NoiseRule):
        result.atol, result.rtol = verdict.rule.k * noise, 0.0
    else:
        result.atol, result.rtol = verdict.rule.atol, verdict.rule.rtol
    return verdict


def verdict_line(verdict: Verdict) -> str:
    """PASS or FAIL first (a log grepped for FAIL finds it), then the numbers, as `check` words a layer."""
    from .report import describe, number, times

    r = verdict.result
    where = "on Caffe's own bottoms"
    if r.status != PASS:
        return f"FAIL: {describe(r, r.atol, r.rtol)} ({where})"
    if r.noise is not None:
        size = f"max_abs {number(r.max_abs)} = {times(r.ratio)} its float32 noise {number(r.noise)} " \
               f"(limit {times(verdict.rule.k)})"
    else:
        size = f"max_abs {number(r.max_abs)} within atol {r.atol:g} + rtol {r.rtol:g}*|ref|"
    return (f"PASS: {r.layer} ({r.type}, top {r.top}) matches Caffe {where}: {size}; this bundle shows no "
            "divergence (a propagated failure here is inherited error, not this layer's)")


def written_by_repro(folder: Path) -> bool:
    """Whether `-o` may replace `folder`: nothing there, an empty folder, or a folder holding a repro
    bundle's manifest. A file, a link or anything else is never replaced (its owner is not parity)."""
    if not os.path.lexists(folder):
        return True
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        if not any(folder.iterdir()):
            return True
        manifest = folder / "manifest.json"
        if manifest.is_symlink() or not manifest.is_file() or manifest.stat().st_size > 1 << 22:
            return False
        content = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and content.get("format") == BUNDLE_FORMAT


def check_output(out: Path, ref: Reference, inputs: list[Path]) -> None:
    """Refuse, before any work, an -o that is a link, holds something parity did not write, lies inside
    the reference folder, or is one of the input files."""
    if out.is_symlink():
        raise ParityError("is a symbolic link: parity replaces only a folder it wrote, never what a link points to; "
                          "remove the link or choose another output folder", out)
    if not written_by_repro(out):
        raise ParityError("exists and is not a repro bundle parity wrote (no parity-repro manifest.json in it), so "
                          "it is not replaced; move it away or choose another output folder", out)
    resolved = out.resolve()
    folder = ref.dir.resolve()
    if resolved == folder or folder in resolved.parents or resolved in folder.parents:
        raise ParityError(f"-o would write into (or replace) the reference folder {folder}; write the bundle "
                          "elsewhere", out)
    if any(resolved == Path(p).resolve() for p in inputs):
        raise ParityError("-o would replace one of the command's own input files", out)


def bundle_names(blobs) -> dict[str, str]:
    """bottoms/<blob>.npy for each blob: names made file-safe, a clash (a/b and a_b) numbered apart."""
    files, used = {}, set()
    for blob in blobs:
        stem = safe_filename(blob) or "blob"
        name, n = f"{stem}.npy", 1
        while name.lower() in used:
            n += 1
            name = f"{stem}_{n}.npy"
        used.add(name.lower())
        files[blob] = f"bottoms/{name}"
    return files


def _docstring_safe(text: str) -> str:
    """A name from a file inside the generated test's docstring: control characters escaped, then
    backslashes and quotes escaped so no name can end the docstring or form a Python escape."""
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


def generated_test(manifest: dict) -> str:
    """The standalone pytest file. It reads everything it needs from manifest.json beside it; names
    appear in its docstring only, escaped."""
    rule = manifest["rule"]
    layer, layer_type, top = (_docstring_safe(manifest[k]) for k in ("layer", "type", "top_blob"))
    covers = manifest.get("covers")
    chain = f" (with the in-place chain {_docstring_safe(' -> '.join(covers))})" if covers else ""
    if rule["rule"] == "noise":
        how = f"""parity's noise rule, with parity's own code: every element of the output must lie within
k = {rule['k']:g} times the output's float32 rounding noise (parity.check.compare.measure), the noise measured
now by running the same converted fragment once more in float64 (parity.check.noise.estimate, plus one
float32 step of Caffe's largest value: parity.check.compare.effective_noise). Where the fragment cannot
compute in float64, the noise recorded in manifest.json when the bundle was written is used instead:
a fixed limit of k x that noise (verdict.noise), stated in the failure message."""
    else:
        how = f"""the fixed rule parity applied to this layer when the bundle was written (no float64 twin
ran, or the project asked for it): every element within atol {rule['atol']:g} + rtol {rule['rtol']:g} * |Caffe|
(parity.check.compare.measure)."""
    return f'''"""Reproduces one layer of a Caffe -> Keras conversion against real Caffe.

Layer {layer} ({layer_type}, top {top}){chain} of model {_docstring_safe(manifest["model"])}, \
sample {_docstring_safe(manifest["sample"])}.
Written by `parity repro` (parity {manifest["parity_version"]}); verdict then: {manifest["verdict"]["status"].upper()}.

Needs only numpy, TensorFlow/Keras and parity (no fixtures, no reference folder). It converts
net.prototxt + weights.caffemodel with parity.convert.convert_net, feeds the converted fragment
Caffe's own bottoms (bottoms/*.npy, NCHW as Caffe holds them, fed channels-last: parity.data.layout), and
compares its output with Caffe's (top.npy) by
{how}
It fails while the conversion of this layer is wrong, and passes once it is right.

    pytest test_repro.py                                   # from this folder, or give its path
    PARITY_REPRO_PLUGIN=fix.py pytest test_repro.py        # import fix.py first (e.g. your converter,
                                                           # registered with parity.convert.register)

PARITY_REPRO_PLUGIN takes a file.py or a module name (several separated by "{os.pathsep}"), imported
before the conversion, as `parity --plugin` does: a net with your own layer types needs its plugin here too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from parity.caffe.graph import Net
from parity.caffe.reading.caffemodel import read_caffemodel
from parity.check.capture import Capture
from parity.check.compare import LayerResult, NoiseRule, Tolerance, effective_noise, measure
from parity.check.noise import TwinUnavailable, estimate, peak
from parity.check.numerics import configure
from parity.convert import convert_net
from parity.data.reference import load_npy
from parity.diagnose.report import describe
from parity.user_modules import import_user_module

HERE = Path(__file__).resolve().parent
MANIFEST = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))

for _plugin in filter(None, os.environ.get("{PLUGIN_VARIABLE}", "").split(os.pathsep)):
    import_user_module(_plugin)  # e.g. one that registers a converter with parity.convert.register(..., replace=True)


def test_layer_matches_caffe():
    configure()  # parity's numerics: TF32 off, as in `parity check`
    layer, top = MANIFEST["layer"], MANIFEST["top_blob"]
    key = (layer, top)
    net = Net.from_prototxt(HERE / "net.prototxt")
    converted = convert_net(net, read_caffemodel(HERE / "weights.caffemodel"))
    capture = Capture(converted, [key])
    bottoms = {{blob: load_npy(HERE / spec["file"], tuple(spec["shape"])) \
for blob, spec in MANIFEST["bottoms"].items()}}
    feed = capture.feed(bottoms)  # NCHW -> channels-last, in the model's input order
    got = capture.forward(feed)[key]
    expected = load_npy(HERE / MANIFEST["top"]["file"], tuple(MANIFEST["top"]["shape"]))  # Caffe's, NCHW
    result = LayerResult(layer, MANIFEST["type"], top, 0, tuple(expected.shape))
    rule = MANIFEST["rule"]
    if rule["rule"] == "noise":
        try:
            twin = estimate(capture.model, capture.keys, feed, {{key: got}}, "{TWIN_SOURCE}", use_cache=False)
            noise, source = effective_noise(twin.noise[key], peak(expected)), "measured now"
        except TwinUnavailable as exc:
            noise, source = MANIFEST["verdict"]["noise"], f"recorded when written (no float64 twin runs: {{exc}})"
            assert noise is not None, "no float64 twin runs, and the bundle recorded no noise to fall back on"
        measure(result, expected, got, NoiseRule(rule["k"]), noise)
        result.atol, result.rtol = rule["k"] * noise, 0.0
        how = f"noise rule, k = {{rule['k']:g}}, noise {{source}}"
    else:
        tolerance = Tolerance(rule["atol"], rule["rtol"])
        measure(result, expected, got, tolerance)
        result.atol, result.rtol = tolerance.atol, tolerance.rtol
        how = f"fixed rule, atol {{tolerance.atol:g}} rtol {{tolerance.rtol:g}}"
    assert result.status == "pass", (
        f"{{describe(result, result.atol, result.rtol)}} (on Caffe's own bottoms; {{how}}). "
        f"When the bundle was written: {{MANIFEST['verdict']['line']}}")
'''


def readme_text(manifest: dict, folder: str) -> str:
    """README.txt: what the bundle is, where it came from, how to run it (`folder`: the bundle's own name)."""
    covers = manifest.get("covers")
    v = manifest["verdict"]
    if v.get("problem"):
        numbers = v["problem"]
    elif v.get("noise") is not None:
        numbers = f"max_abs {_shown(v['max_abs'])} = {_shown(v['ratio'])}x its float32 noise {_shown(v['noise'])}"
    else:
        numbers = f"max_abs {_shown(v['max_abs'])}"
    rows = [("net.prototxt", "plain Input layer(s) for the bottoms, then the layer(s) as in the original prototxt"),
            ("weights.caffemodel", "the learned blobs of those layers only")]
    rows += [(spec["file"], f"Caffe's {printable(blob)}, {spec['shape']} NCHW (reference entry of "
                            f"{printable(spec['entry']['layer'])})") for blob, spec in manifest["bottoms"].items()]
    rows += [("top.npy", f"Caffe's output, {manifest['top']['shape']} NCHW"),
             ("test_repro.py", "the test (its docstring says how it judges)"),
             ("manifest.json", "provenance (sha256 of the originals and of these files), rule, verdict, numbers' "
                               "environment")]
    width = max(len(name) for name, _ in rows) + 2
    files = "\n".join(f"  {name.ljust(width)}{what}" for name, what in rows)
    chain = f" (its reference entry covers the in-place chain {printable(' -> '.join(covers))})" if covers else ""
    plugins = ""
    if manifest.get("plugins"):
        plugins = (f"\nThe bundle was written with `parity --plugin {printable(' '.join(manifest['plugins']))}`: "
                   f"give the same to {PLUGIN_VARIABLE} if the net needs it (your own layer types).\n")
    return f"""parity repro bundle: one layer of a Caffe -> Keras conversion, against real Caffe

Layer:    {printable(manifest['layer'])} ({printable(manifest['type'])}, top {printable(manifest['top_blob'])}){chain}
Model:    {printable(manifest['model'])} ({printable(manifest['sources']['prototxt']['file'])}), \
sample {printable(manifest['sample'])}
Verdict:  {v['status'].upper()} when written ({numbers}), on Caffe's own bottoms
Made by:  parity {manifest['parity_version']}, `parity repro`

test_repro.py converts net.prototxt + weights.caffemodel with parity, runs the converted fragment on
Caffe's own bottoms and compares its output with Caffe's under parity's rule. It fails while the
conversion of this layer is wrong and passes once it is right. Nothing else is needed: no fixture, no
reference folder, no Caffe.

Files
{files}

Run (with parity {manifest['parity_version']} installed, e.g. `pip install -e <parity checkout>`, which brings
numpy and TensorFlow/Keras):
  pytest {folder}/test_repro.py

To try a fix without editing parity, register your converter in a file (parity.convert.register(TYPE,
replace=True), as `parity --plugin` files do) and name it:
  {PLUGIN_VARIABLE}=fix.py pytest {folder}/test_repro.py
{plugins}"""


def _shown(value) -> str:
    """A number of the manifest as people read it (non-finite ones arrive as the strings "inf", "nan")."""
    return f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
