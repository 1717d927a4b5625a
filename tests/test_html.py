"""The HTML report: a planted error must show up where it was planted, and a real browser must draw it.

Reports are built by hand (metrics from parity.check.compare.measure, so they are real) with errors whose
place is known: only on a 13x19 map's border, only in one channel. The pictures are decoded back
from the page and checked pixel by pixel. A headless Chromium then loads the page (skipped where no
Chromium is installed), and an integration test draws a planted conversion bug in the `tiny` net.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import plant, with_param

from parity.check.compare import DOWNSTREAM, FAIL, LayerResult, Tolerance, measure
from parity.check.divergence import locate_first_divergence
from parity.data.layout import keras_shape, to_caffe_layout, to_keras_layout
from parity.diagnose import html as page
from parity.diagnose.report import Report

TOL = Tolerance(1e-2, 1e-4)
PNG_PREFIX = "data:image/png;base64,"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@dataclass
class Hint:
    """Shaped like parity.diagnose.hints.Hint (duck-typed by the page, so not imported)."""

    cause: str
    message: str
    evidence: dict

    def to_dict(self) -> dict:
        return {"cause": self.cause, "message": self.message, "evidence": self.evidence}


class Images(HTMLParser):
    """Every <img>'s attributes, and the page's text (to search without markup)."""

    def __init__(self, text: str):
        super().__init__()
        self.imgs: list[dict] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)

    def kind(self, kind: str) -> list[dict]:
        return [i for i in self.imgs if i.get("data-kind") == kind]


def decode(img: dict) -> Image.Image:
    assert img["src"].startswith(PNG_PREFIX)
    image = Image.open(io.BytesIO(base64.b64decode(img["src"][len(PNG_PREFIX):], validate=True)))
    assert image.format == "PNG"
    return image.convert("RGB")


def measured(layer: str, order: int, ref: np.ndarray, got: np.ndarray, type_="Convolution") -> LayerResult:
    """A LayerResult with real metrics, for channels-last `ref`/`got`."""
    r = LayerResult(layer, type_, layer, order, tuple(to_caffe_layout(ref).shape))
    return measure(r, to_caffe_layout(ref), got, TOL)


def border_report(layer: str = "conv1", hints=None, channels: int = 8) -> tuple[Report, np.ndarray, np.ndarray]:
    """conv1 (1x13x19xC) wrong only on its border (padding on the wrong side looks so); fc1 downstream."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 13, 19, channels)).astype(np.float32)
    got = ref.copy()
    got[:, [0, -1], :, :] += 1.0
    got[:, :, [0, -1], :] += 1.0
    fc_ref = rng.standard_normal((1, 10)).astype(np.float32)
    data = rng.standard_normal((1, 17, 23, 3)).astype(np.float32)
    layers = [measured("data", 0, data, data, "Input"), measured(layer, 1, ref, got),
              measured("fc1", 2, fc_ref, fc_ref + 0.5, "InnerProduct")]
    first = locate_first_divergence(layers, None)
    hints = {layer: [Hint("padding", "error only on the border <2 px>: padding on one side?",
                          {"border_share": 0.97})]} \
        if hints is None else hints
    report = Report("tinynet", "chelsea", TOL.atol, TOL.rtol, layers, first,
                    {"environment": {"tensorflow": "2.x", "keras": "3.x"}, "notes": []}, hints,
                    {layer: (ref, got), "fc1": (fc_ref, fc_ref + 0.5)})
    return report, ref, got


# -- what the page says --------------------------------------------------------------------------
def test_page_has_the_table_the_verdict_and_the_hint():
    report, _, _ = border_report()
    text = page.render_html([report])
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text  # nothing external to fetch
    for column in ("#", "layer", "type", "shape", "max_abs", "rel_l2", "cosine", "status"):
        assert f"<th>{column}</th>" in text
    assert report.first_divergence == "conv1" and report.layers[2].status == DOWNSTREAM
    assert '<tr class="fail first">' in text and '<tr class="downstream">' in text
    assert "first divergence" in text and "1x8x13x19" in text and "2.00e+00" in text
    assert "FAIL: first divergence at conv1 (Convolution, top conv1)" in text
    assert "(1 later layer(s) downstream of it)" in text
    assert "padding" in text and "error only on the border &lt;2 px&gt;: padding on one side?" in text
    assert "border_share" in text and "0.97" in text
    assert "tinynet" in text and "chelsea" in text and "atol 0.01, rtol 0.0001" in text and "tensorflow" in text


def test_pictures_are_pngs_of_the_expected_sizes():
    report, _, _ = border_report()
    imgs = Images(page.render_html([report]))
    k = page.upscale_factor(13, 19)
    assert k >= 4, "a 13x19 map must be enlarged to be seen"
    for kind in ("error", "ref", "got"):
        (img,) = imgs.kind(kind)
        assert decode(img).size == (19 * k, 13 * k)
        assert (int(img["width"]), int(img["height"])) == (19 * k, 13 * k)
    (conv_chart,) = imgs.kind("channels")  # conv1's 8 channels (fc1 is downstream: not pictured)
    assert decode(conv_chart).size == (8 * page.MAX_BAR_W, page.CHART_H)
    assert decode(imgs.kind("colorbar")[0]).size == (256, 12)


def test_only_failing_layers_are_pictured():
    report, _, _ = border_report()
    imgs = Images(page.render_html([report]))
    # fc1 is downstream, so its arrays (kept in the report) are not drawn: one chart, conv1's
    assert len(imgs.kind("channels")) == 1 and len(imgs.kind("error")) == 1


def test_heatmap_is_bright_on_the_border_and_dark_inside():
    report, _, _ = border_report()
    (img,) = Images(page.render_html([report])).kind("error")
    k = page.upscale_factor(13, 19)
    pixels = np.asarray(decode(img), np.float64)[::k, ::k]  # back to one pixel per cell
    luminance = pixels @ np.array([0.2126, 0.7152, 0.0722])
    inner = luminance[1:-1, 1:-1]
    border = np.concatenate([luminance[0], luminance[-1], luminance[:, 0], luminance[:, -1]])
    assert border.min() > inner.max() + 50
    assert (pixels[1:-1, 1:-1] == page.LUT[0]).all()  # zero error: the bottom of the scale
    assert (pixels[0, 0] == page.LUT[-1]).all()  # corners are off twice: the top of the scale


def test_reference_and_converted_maps_share_one_scale():
    report, ref, got = border_report()
    text = page.render_html([report])
    lo = min(ref[0].mean(-1).min(), got[0].mean(-1).min())
    hi = max(ref[0].mean(-1).max(), got[0].mean(-1).max())
    assert text.count(f'<span class="lo">{lo:.3g}</span>') == 2 and text.count(f'<span class="hi">{hi:.3g}</span>') == 2
    imgs = Images(text)
    ref_px, got_px = (np.asarray(decode(imgs.kind(k)[0])) for k in ("ref", "got"))
    kk = page.upscale_factor(13, 19)
    assert (ref_px[kk * 3, kk * 5] == got_px[kk * 3, kk * 5]).all()  # equal inside, so equal colours
    assert not (ref_px[0, kk * 5] == got_px[0, kk * 5]).all()  # +1 on the border shows


def bar_heights(chart: Image.Image, n: int) -> np.ndarray:
    pixels = np.asarray(chart)
    bar_w = chart.width // n
    columns = pixels[:, [i * bar_w for i in range(n)]]
    return (columns != page.CHART_BG).any(axis=-1).sum(axis=0)


def test_channel_chart_singles_out_the_bad_channel():
    ref = np.random.default_rng(1).standard_normal((1, 5, 7, 8)).astype(np.float32)
    got = ref.copy()
    got[..., 5] += 0.5
    layer = measured("conv", 0, ref, got)
    report = Report("m", "i", TOL.atol, TOL.rtol, [layer], "conv", arrays={"conv": (ref, got)})
    text = page.render_html([report])
    heights = bar_heights(decode(Images(text).kind("channels")[0]), 8)
    assert heights[5] == page.CHART_H and (np.delete(heights, 5) == 0).all()
    assert "worst channel 5: 0.5" in text


def test_many_channels_are_capped_and_keep_a_single_bad_one_visible():
    ref = np.zeros((1, 4, 4, 1000), np.float32)
    got = ref.copy()
    got[..., 998] = 1.0
    report = Report("m", "i", TOL.atol, TOL.rtol, [measured("c", 0, ref, got)], "c", arrays={"c": (ref, got)})
    text = page.render_html([report])
    chart = decode(Images(text).kind("channels")[0])
    bars = -(-1000 // 4)
    assert chart.width == bars * (page.CHART_W // bars) <= page.CHART_W and bars <= page.MAX_BARS
    heights = bar_heights(chart, bars)
    assert heights[998 // 4] == page.CHART_H and heights.sum() == page.CHART_H  # the max, not a diluted mean
    assert "each bar the largest of 4 consecutive channels" in text


def test_a_2d_output_gets_a_feature_chart_only():
    ref = np.linspace(-1, 1, 10, dtype=np.float32)[None]
    got = ref.copy()
    got[0, 3] += 1
    report = Report("m", "i", TOL.atol, TOL.rtol, [measured("fc", 0, ref, got, "InnerProduct")], "fc",
                    arrays={"fc": (ref, got)})
    imgs = Images(page.render_html([report]))
    assert not imgs.kind("error") and not imgs.kind("ref") and not imgs.kind("got")
    (chart,) = imgs.kind("channels")
    heights = bar_heights(decode(chart), 10)
    assert decode(chart).size == (10 * page.MAX_BAR_W, page.CHART_H) and heights.argmax() == 3
    assert "per feature" in chart["alt"]


def test_a_shape_mismatch_gets_a_note_instead_of_pictures():
    ref = np.zeros((1, 5, 7, 8), np.float32)
    got = np.zeros((1, 4, 6, 8), np.float32)
    layer = measure(LayerResult("pool1", "Pooling", "pool1", 3, (1, 8, 5, 7)), to_caffe_layout(ref), got, TOL)
    report = Report("m", "i", TOL.atol, TOL.rtol, [layer], "pool1", arrays={"pool1": (ref, got)})
    text = page.render_html([report])
    assert not Images(text).kind("error") and not Images(text).kind("channels")
    assert "No pictures: Caffe's output has shape (1, 5, 7, 8) but the converted one (1, 4, 6, 8)" in text
    assert "differs from Caffe" in text  # the LayerResult's problem, described


def test_non_finite_values_are_marked_not_hidden():
    ref = np.ones((1, 6, 6, 2), np.float32)
    got = ref.copy()
    got[0, 2, 3, :] = np.nan
    got[0, 0, 0, :] = 3.0
    report = Report("m", "i", TOL.atol, TOL.rtol, [measured("c", 0, ref, got)], "c", arrays={"c": (ref, got)})
    text = page.render_html([report])
    k = page.upscale_factor(6, 6)
    error = np.asarray(decode(Images(text).kind("error")[0]))[::k, ::k]
    assert (error[2, 3] == page.NONFINITE_RGB).all() and (error[0, 0] == page.LUT[-1]).all()
    assert "Magenta: NaN or inf." in text


def test_text_is_escaped_and_dict_hints_are_accepted():
    report, _, _ = border_report(layer="conv<script>alert(1)</script>",
                                 hints={"conv<script>alert(1)</script>": [
                                     {"cause": "weights & bias", "message": "a \"quoted\" <b>message</b>",
                                      "evidence": {"ratio": 1.01, "axes": [0, 1]}}]})
    text = page.render_html([report])
    assert "<script" not in text and "<b>message" not in text
    assert "conv&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "weights &amp; bias" in text and "a &quot;quoted&quot; &lt;b&gt;message&lt;/b&gt;" in text
    assert "(0, 1)" in text and "1.01" in text


def test_hints_of_layers_without_pictures_are_still_shown():
    report, _, _ = border_report()
    report.hints["fc1"] = [Hint("flatten order", "rows in C,H,W order?", {})]
    assert "rows in C,H,W order?" in page.render_html([report])


def test_several_reports_on_one_page_and_a_passing_one():
    failing, _, _ = border_report()
    ok = np.ones((1, 3, 3, 2), np.float32)
    passing = Report("tinynet", "astronaut", TOL.atol, TOL.rtol, [measured("c", 0, ok, ok)], None)
    text = page.render_html([failing, passing])
    assert text.count('<article class="report"') == 2
    assert 'href="#r0"' in text and 'href="#r1"' in text and 'id="r1"' in text
    assert "PASS: all 1 outputs within atol 0.01, rtol 0.0001" in text and "astronaut" in text
    assert "No pictures" not in text.split('id="r1"')[1]


def test_failing_layer_without_arrays_says_so():
    report, _, _ = border_report()
    report.arrays.clear()
    text = page.render_html([report])
    assert "No pictures: the report kept no arrays for this layer." in text and not Images(text).kind("error")


def test_write_html_is_atomic_and_returns_the_path(tmp_path):
    report, _, _ = border_report()
    path = page.write_html(tmp_path / "out" / "report.html", [report])
    assert path == tmp_path / "out" / "report.html"
    assert path.read_text(encoding="utf-8") == page.render_html([report])
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary left behind


def test_large_maps_are_reduced_not_dropped():
    ref = np.zeros((1, 1100, 700, 1), np.float32)
    got = ref.copy()
    got[0, 600, 100, 0] = 1.0  # one bad element: max-reduction must keep it visible
    report = Report("m", "i", TOL.atol, TOL.rtol, [measured("c", 0, ref, got)], "c", arrays={"c": (ref, got)})
    error = decode(Images(page.render_html([report])).kind("error")[0])
    assert max(error.size) <= page.MAP_MAX_SIDE
    assert (np.asarray(error) == page.LUT[-1]).all(axis=-1).sum() == 1


# -- a real browser ------------------------------------------------------------------------------
PROBE = """<script>
window.addEventListener('load', () => {
  const sizes = [...document.images].map(i => [i.dataset.kind, i.complete, i.naturalWidth, i.naturalHeight]);
  const out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(sizes);
  document.body.appendChild(out);
});
</script></body>"""


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={cwd / 'profile'}", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium to run this)")
def test_chromium_decodes_every_picture(tmp_path):
    """The page's own PNGs, decoded by a browser: every <img> loads with its natural size (a probe
    script is added to a copy for the test; the report itself has none)."""
    report, _, _ = border_report()
    html_path = page.write_html(tmp_path / "report.html", [report])
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    result = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert '<pre id="probe">' in dom, dom[-2000:]
    seen = json.loads(dom.split('<pre id="probe">')[1].split("</pre>")[0].replace("&quot;", '"'))
    expected = Images(html_path.read_text(encoding="utf-8")).imgs
    assert len(seen) == len(expected) >= 5
    for (kind, complete, width, height), img in zip(seen, expected):
        assert complete and (width, height) == decode(img).size, (kind, width, height)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium to run this)")
def test_chromium_screenshot_shows_the_heatmap(tmp_path):
    """Without any script: the rendered page holds the heatmap's colours, top and bottom of the scale,
    in blocks as large as the enlarged cells (nearest-neighbour, not smoothed away)."""
    report, _, _ = border_report()
    html_path = page.write_html(tmp_path / "report.html", [report])
    shot = tmp_path / "shot.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,1600", html_path.as_uri(), cwd=tmp_path)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert (pixels != 255).any(axis=-1).mean() > 0.02, "the screenshot is blank"

    def near(colour) -> np.ndarray:
        return (np.abs(pixels - np.asarray(colour)) <= 3).all(axis=-1)

    k = page.upscale_factor(13, 19)
    dark, bright = near(page.LUT[0]), near(page.LUT[-1])
    # the error map's inside: 11x17 cells of zero error, one dark block (wider than any bar in the chart)
    assert dark.sum() >= 11 * 17 * k * k * 0.9, dark.sum()
    assert bright.sum() >= 4 * k * k * 0.9  # the four corners, off on two sides
    rows = np.flatnonzero(dark.any(axis=1))
    assert rows.max() - rows.min() + 1 >= 11 * k  # one tall block, not scattered pixels


# -- the pipeline --------------------------------------------------------------------------------
def fill_arrays(report: Report, target, converted) -> None:
    """Keep Caffe's and the converted outputs of the failing layers, unless the pipeline already did."""
    from parity.check.capture import Capture

    ref = next(r for r in target.references if r.name == report.image)
    entries = {e.layer: e for e in ref.entries}
    wanted = [r for r in report.layers if r.status == FAIL and r.layer not in report.arrays]
    if not wanted:
        return
    keys = [(r.layer, r.top) for r in wanted]
    outputs = Capture(converted, keys).run(ref.inputs())
    for r in wanted:
        report.arrays[r.layer] = (to_keras_layout(ref.load(entries[r.layer])), outputs[(r.layer, r.top)])


def test_a_planted_weight_bug_in_tiny_is_drawn(tmp_path):
    from parity.check.pipeline import run_target
    from parity.convert import convert_net
    from parity.targets import from_fixture

    built = []

    def perturbed(net, weights):
        converted = convert_net(net, weights)
        if weights is not None:
            conv = converted.model.get_layer(converted.keras_names["conv2"])
            kernel, *rest = conv.get_weights()
            conv.set_weights([kernel * 1.01, *rest])
            built.append(converted)
        return converted

    target = from_fixture("tiny")
    (report,) = run_target(target, TOL, convert=perturbed)
    assert report.first_divergence == "conv2"
    fill_arrays(report, target, built[-1])
    text = page.write_html(tmp_path / "tiny.html", [report]).read_text(encoding="utf-8")
    imgs = Images(text)
    conv2 = next(r for r in report.layers if r.layer == "conv2")
    _, c, h, w = conv2.shape
    k = page.upscale_factor(h, w)
    for kind in ("error", "ref", "got"):
        assert decode(imgs.kind(kind)[0]).size == (w * k, h * k)
    assert decode(imgs.kind("channels")[0]).width == c * min(page.MAX_BAR_W, page.CHART_W // c)
    assert "First divergence: conv2 (Convolution)" in text and "&larr; first divergence" in text
    assert text.count('<tr class="downstream">') == sum(r.status == DOWNSTREAM for r in report.layers) > 0
    for hint in report.hints.get("conv2", []):  # whatever parity.diagnose.hints said, the page shows it
        message = hint["message"] if isinstance(hint, dict) else hint.message
        assert page._e(message) in text


def test_a_planted_shape_bug_in_tiny_gets_a_note(tmp_path):
    from parity.check.pipeline import run_target
    from parity.convert import convert_net
    from parity.targets import from_fixture

    built = []
    target = from_fixture("tiny")
    with plant("Pooling", with_param(lambda p: setattr(p.pooling_param, "ceil_mode", False))):
        (report,) = run_target(target, TOL, convert=lambda net, w: built.append(convert_net(net, w)) or built[-1])
        assert report.first_divergence == "pool1"
        fill_arrays(report, target, built[-1])
        text = page.render_html([report])
        pool1 = next(r for r in report.layers if r.layer == "pool1")
        ref, got = report.arrays["pool1"]
        assert ref.shape != got.shape and tuple(got.shape) == keras_shape(pool1.got_shape)
        section = text.split("First divergence: pool1")[1].split("</section>")[0]
        assert (f"No pictures: Caffe's output has shape {tuple(ref.shape)} "
                f"but the converted one {tuple(got.shape)}") in section
        assert "<img" not in section


def test_a_shrunk_heatmap_keeps_a_single_bad_elements_full_error_on_its_scale():
    """Maps over MAP_MAX_SIDE are block-reduced by max, so one bad element keeps its full |error|: the error
    map's colour scale must still top out at 1.0. A mean would dilute it to 1/k^2 (here 1/9) and the page
    would claim the worst error is 0.111. (Only the scale shows this: the one brightest pixel is the top
    colour either way, the scale being stretched to the map's own maximum.)"""
    import re

    ref = np.zeros((1, 1030, 20, 1), np.float32)  # 1030 rows: reduced 3x3 blocks, to 344 x 7
    got = ref.copy()
    got[0, 500, 10, 0] = 1.0
    assert -(-1030 // page.MAP_MAX_SIDE) == 3
    figures = re.findall(r'data-kind="(error|ref|got)".*?<span class="lo">([^<]*)</span>.*?'
                         r'<span class="hi">([^<]*)</span>', page.pictures(ref, got), re.S)
    assert [(kind, lo, hi) for kind, lo, hi in figures if kind == "error"] == [("error", "0", "1")]
    error = decode(Images(page.pictures(ref, got)).kind("error")[0])
    assert max(error.size) <= page.MAP_MAX_SIDE


def test_the_page_shows_each_layer_s_noise_and_its_error_in_units_of_it():
    """Under the noise rule (the default) the table carries noise and x noise, as the terminal does."""
    from parity.check.compare import NoiseRule
    from parity.check.pipeline import run_target
    from parity.diagnose.report import times
    from parity.targets import from_fixture

    (report,) = run_target(from_fixture("tiny"), NoiseRule())
    text = page.render_html([report])
    assert "<th>noise</th><th>x noise</th>" in text and "12 x float32 noise" in text
    for r in report.layers:
        assert f"<td>{page._e(times(r.ratio))}</td>" in text


def test_the_verdict_comes_before_the_header_and_the_environment_is_folded():
    report, _, _ = border_report()
    text = page.render_html([report])
    assert text.index("FAIL: first divergence at conv1") < text.index('<table class="kv header">')
    folded = text[text.index("<th>environment</th>"):]
    assert folded.index("<details>") < folded.index("tensorflow") < folded.index("</details>")


def test_every_layer_that_fails_on_its_own_gets_its_heatmap(tmp_path):
    """Two roots (conv1 and conv2 on two branches of the input): both pictured, not only the first."""
    from parity.caffe.graph import Net

    prototxt = tmp_path / "two.prototxt"
    prototxt.write_text('layer { name: "data" type: "Input" top: "data" }\n'
                        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" }\n'
                        'layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2" }\n')
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((1, 9, 11, 4)).astype(np.float32)
    layers = [measured("conv1", 1, ref, ref + 1.0), measured("conv2", 2, ref, ref - 1.0)]
    first = locate_first_divergence(layers, Net.from_prototxt(prototxt))
    assert [r.status for r in layers] == ["fail", "fail"]
    report = Report("tinynet", "chelsea", TOL.atol, TOL.rtol, layers, first, {"notes": []}, {},
                    {"conv1": (ref, ref + 1.0), "conv2": (ref, ref - 1.0)})
    imgs = Images(page.render_html([report]))
    assert len(imgs.kind("error")) == 2
