"""One self-contained HTML page for parity reports: what diverged, why it might have, and where.

The terminal table says *which* layer diverges; a picture says *where* its error lies: a frame of
error along the border points at padding, a half-pixel smear at pooling rounding, a few bad
channels at a channel order or a weight layout. So for each failing layer whose arrays the report
kept, the page shows the |error| heatmap beside Caffe's and the converted activations, and the
mean |error| per channel.

Everything is inline (CSS, PNGs as base64 data URIs) and nothing needs JavaScript, so the file can
be attached to a CI run or mailed and opened offline. Pictures are drawn with Pillow and numpy only.
Hints (parity.diagnose.hints.Hint) are duck-typed: any object, or dict, with cause, message and evidence.
"""
from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_path
from ..check.compare import DOWNSTREAM, FAIL, PASS, LayerResult
from .report import Report, describe, environment_line, number, paired_words, times, verdict_lines

# Viridis at nine evenly spaced points: perceptually uniform, luminance rises monotonically (so
# "brighter" always means "larger", also in greyscale print), readable with colour blindness.
VIRIDIS_ANCHORS = ((68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142),
                   (31, 158, 137), (53, 183, 121), (110, 206, 88), (253, 231, 37))
NONFINITE_RGB = (255, 0, 255)  # NaN / inf: a colour outside the map, impossible to mistake for a value
MAP_TARGET = 192  # small maps are enlarged (whole pixels) until their longer side nears this
MAX_SCALE = 32
MAP_MAX_SIDE = 512  # larger maps are reduced block-wise, so the page stays light
CHART_W, CHART_H, MAX_BARS, MAX_BAR_W = 512, 120, 256, 24
CHART_BG, BAR_RGB, WORST_RGB = (250, 250, 250), (49, 104, 142), (214, 39, 40)
MAX_PICTURED = 32  # failing layers drawn per report; roots are few, this only guards the page size
STATUS_WORD = {PASS: "ok", FAIL: "FAIL", DOWNSTREAM: "downstream"}


def _lut(anchors: Iterable[tuple[int, int, int]], size: int = 256) -> np.ndarray:
    """A (size, 3) uint8 colour table, linearly interpolated between the anchors."""
    points = np.asarray(list(anchors), dtype=np.float64)
    where, t = np.linspace(0, 1, len(points)), np.linspace(0, 1, size)
    return np.stack([np.interp(t, where, points[:, i]) for i in range(3)], axis=1).round().astype(np.uint8)


LUT = _lut(VIRIDIS_ANCHORS)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


# -- pictures ------------------------------------------------------------------------------------
def png_data_uri(image: Image.Image) -> str:
    """A PNG as a data URI: the page carries its pictures, no side files to lose."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def finite_range(*arrays: np.ndarray) -> tuple[float, float]:
    """min and max over the finite values (NaN/inf are drawn apart, they must not stretch the scale)."""
    values = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)


def colorize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 through the colour table, lo..hi; non-finite in magenta."""
    finite = np.isfinite(values)
    span = hi - lo
    t = (np.where(finite, values, lo) - lo) / span if span > 0 else np.zeros(values.shape)
    rgb = LUT[np.clip(np.round(t * 255), 0, 255).astype(np.intp)]
    rgb[~finite] = NONFINITE_RGB
    return rgb


def upscale_factor(height: int, width: int) -> int:
    """Whole-pixel enlargement: a 13x19 map becomes 130x190, each cell still one sharp square."""
    return max(1, min(MAX_SCALE, MAP_TARGET // max(height, width, 1)))


def shrink(values: np.ndarray, reduce: Callable = np.mean) -> np.ndarray:
    """Block-reduce a map larger than MAP_MAX_SIDE (np.max keeps a thin error line visible)."""
    k = -(-max(values.shape) // MAP_MAX_SIDE)
    if k <= 1:
        return values
    h, w = values.shape
    padded = np.pad(values, ((0, -h % k), (0, -w % k)), mode="edge")
    return reduce(padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k), axis=(1, 3))


def map_image(values: np.ndarray, lo: float, hi: float) -> Image.Image:
    """A 2-D map as a colour image, enlarged with nearest-neighbour (no invented in-between values)."""
    image = Image.fromarray(colorize(values, lo, hi), "RGB")
    k = upscale_factor(*values.shape)
    return image.resize((values.shape[1] * k, values.shape[0] * k), Image.NEAREST)


@functools.lru_cache(maxsize=1)
def colorbar_uri() -> str:
    """The colour table as a horizontal strip (one for every map: they share the table)."""
    return png_data_uri(Image.fromarray(np.repeat(LUT[None], 12, axis=0), "RGB"))


def aggregate(values: np.ndarray, max_bars: int = MAX_BARS) -> tuple[np.ndarray, int]:
    """At most max_bars bars, each the worst of `group` consecutive channels: a mean would dilute
    the one bad channel among 2048 that the chart is there to show."""
    values = np.asarray(values, np.float64).ravel()
    group = max(1, -(-values.size // max_bars))
    padded = np.concatenate([values, np.full(-values.size % group, -np.inf)])
    return padded.reshape(-1, group).max(axis=1), group


def bar_chart(values: np.ndarray) -> Image.Image:
    """Bars from 0 to the largest finite value; the worst bar in red, non-finite ones full and magenta."""
    n = max(1, len(values))
    bar_w = max(1, min(MAX_BAR_W, CHART_W // n))
    image = Image.new("RGB", (n * bar_w, CHART_H), CHART_BG)
    draw = ImageDraw.Draw(image)
    top = finite_range(values)[1] if len(values) else 0.0
    worst = int(np.argmax(np.where(np.isfinite(values), values, -np.inf))) if len(values) else -1
    gap = 1 if bar_w >= 4 else 0
    for i, v in enumerate(values):
        finite = bool(np.isfinite(v))
        height = round(CHART_H * v / top) if finite and top > 0 else (0 if finite else CHART_H)
        colour = NONFINITE_RGB if not finite else WORST_RGB if i == worst else BAR_RGB
        if height > 0:
            draw.rectangle([i * bar_w, CHART_H - height, (i + 1) * bar_w - 1 - gap, CHART_H - 1], fill=colour)
    return image


def _img(image: Image.Image, kind: str, alt: str) -> str:
    return (f'<img class="pic" data-kind="{_e(kind)}" src="{png_data_uri(image)}" width="{image.width}" '
            f'height="{image.height}" alt="{_e(alt)}">')


def _scale(lo: float, hi: float) -> str:
    return (f'<div class="scale"><span class="lo">{lo:.3g}</span><img class="bar" data-kind="colorbar" '
            f'src="{colorbar_uri()}" width="128" height="12" alt="colour scale">'
            f'<span class="hi">{hi:.3g}</span></div>')


def _figure(values: np.ndarray, lo: float, hi: float, kind: str, caption: str) -> str:
    return (f'<figure class="map">{_img(map_image(values, lo, hi), kind, caption)}{_scale(lo, hi)}'
            f'<figcaption>{_e(caption)}</figcaption></figure>')


def per_channel(diff: np.ndarray) -> tuple[np.ndarray, str]:
    """Mean |error| of sample 0 per channel (4-D, channels-last), per feature (2-D), else per index
    on axis 1 (Caffe's channel axis, which parity leaves in place below 4-D)."""
    if diff.ndim == 4:
        return diff[0].mean(axis=(0, 1)), "channel"
    if diff.ndim == 2:
        return diff[0], "feature"
    if diff.ndim >= 3:
        return diff[0].reshape(diff.shape[1], -1).mean(axis=1), "index on axis 1"
    return diff.ravel(), "element"


def _chart_figure(diff: np.ndarray) -> str:
    values, unit = per_channel(diff)
    bars, group = aggregate(values)
    worst = int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))
    per_bar = f"each bar the largest of {group} consecutive {unit}s; " if group > 1 else ""
    caption = (f"mean |error| per {unit} ({len(values)} {unit}s; {per_bar}0 to {finite_range(values)[1]:.3g}); "
               f"worst {unit} {worst}: {values[worst]:.3g}")
    return (f'<figure class="chart">{_img(bar_chart(bars), "channels", caption)}'
            f'<figcaption>{_e(caption)}</figcaption></figure>')


def _maps(ref: np.ndarray, got: np.ndarray, diff: np.ndarray) -> str:
    """Error heatmap, Caffe's and the converted activation (one shared scale), all over (h, w)."""
    err = shrink(diff[0].mean(axis=-1), np.max)
    ref_map, got_map = shrink(ref[0].mean(axis=-1)), shrink(got[0].mean(axis=-1))
    lo, hi = finite_range(ref_map, got_map)
    channels = ref.shape[-1]
    return ('<div class="maps">'
            + _figure(err, 0.0, finite_range(err)[1], "error", f"|Keras - Caffe|, mean over {channels} channels")
            + _figure(ref_map, lo, hi, "ref", f"Caffe, mean over {channels} channels")
            + _figure(got_map, lo, hi, "got", f"Keras, mean over {channels} channels")
            + "</div>")


def pictures(ref: np.ndarray, got: np.ndarray) -> str:
    """Pictures of one layer's error, or a note saying why there can be none."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return (f'<p class="note">No pictures: Caffe\'s output has shape {_e(ref.shape)} but the converted one '
                f'{_e(got.shape)} (both channels-last), so they cannot be compared element by element.</p>')
    if ref.size == 0:
        return '<p class="note">No pictures: the output is empty.</p>'
    with np.errstate(invalid="ignore", over="ignore"):
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        diff = np.abs(got64 - ref64)
        sample = f'<p class="note">Sample 0 of {ref.shape[0]}.</p>' if ref.ndim >= 2 and ref.shape[0] > 1 else ""
        maps = _maps(ref64, got64, diff) if ref.ndim == 4 else ""
        return sample + maps + _chart_figure(diff) + (
            '<p class="note">Magenta: NaN or inf.</p>' if not np.isfinite(diff).all() else "")


# -- hints ---------------------------------------------------------------------------------------
def _hint_fields(hint: object) -> tuple[str, str, Mapping]:
    """cause, message, evidence from a Hint-like object or a plain dict."""
    get = hint.get if isinstance(hint, Mapping) else lambda key, default=None: getattr(hint, key, default)
    return str(get("cause", "") or ""), str(get("message", "") or ""), get("evidence", None) or {}


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_value(v) for v in value) + ")"
    return str(value)


def render_hints(hints: list) -> str:
    if not hints:
        return ""
    items = []
    for hint in hints:
        cause, message, evidence = _hint_fields(hint)
        facts = "".join(f"<li><code>{_e(k)}</code> {_e(_value(v))}</li>" for k, v in evidence.items())
        items.append(f'<li class="hint"><strong>{_e(cause)}</strong>: {_e(message)}'
                     + (f'<ul class="evidence">{facts}</ul>' if facts else "") + "</li>")
    return f'<div class="hints"><h4>Likely causes</h4><ul>{"".join(items)}</ul></div>'


# -- the page ------------------------------------------------------------------------------------
def _anchor(index: int, report: Report, r: LayerResult) -> str:
    """An id made of positions only: layer names may hold any character."""
    return f"r{index}-{next(i for i, x in enumerate(report.layers) if x is r)}"


def _pictured(report: Report) -> list[LayerResult]:
    """Failing layers to show in detail: the first divergence first, then the others in order."""
    failing = sorted((r for r in report.layers if r.status == FAIL or r.layer in report.conversion_bugs),
                     key=lambda r: r.order)
    failing.sort(key=lambda r: r.layer != report.first_divergence)
    return failing[:MAX_PICTURED]


def _header_value(value: object) -> str:
    if isinstance(value, Mapping):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_header_value(v)}</td></tr>" for k, v in value.items())
        return f'<table class="kv">{rows}</table>'
    if isinstance(value, (list, tuple)):
        return "<ul>" + "".join(f"<li>{_header_value(v)}</li>" for v in value) + "</ul>" if value else "-"
    return _e(value)


def render_header(report: Report) -> str:
    """Model, sample, tolerances, status, then every provenance field the check recorded."""
    rows = [("model", _e(report.model)), ("image", _e(report.image)),
            ("rule", _e(report.rule)),
            ("status", f'<span class="badge {_e(report.status)}">{_e(report.status.upper())}</span>'),
            ("first divergence", _e(report.first_divergence or "none"))]
    for key, value in report.header.items():
        if key == "notes":
            continue  # shown above the table, as warnings
        body = _header_value(value)
        if key == "caffe" and isinstance(value, Mapping):
            summary = f"{value.get('distribution', 'caffe')} {value.get('version', '')}"
            body = f"<details><summary>{_e(summary)}</summary>{body}</details>"  # long: folded
        elif key == "environment" and isinstance(value, Mapping):
            summary = environment_line(value)
            body = f"<details><summary>{_e(summary)}</summary>{body}</details>"
        elif key == "checked" and isinstance(value, Mapping):
            summary = f"hand-written Keras model {value.get('model')} (pairing: {value.get('pairing')})"
            body = f"<details><summary>{_e(summary)}</summary>{body}</details>"
        rows.append((_e(key), body))
    notes = "".join(f'<p class="warn">note: {_e(n)}</p>' for n in report.header.get("notes", []) or [])
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'{notes}<table class="kv header">{table}</table>'


def _row(index: int, r: LayerResult, report: Report, linked: set[str]) -> str:
    first = r.layer == report.first_divergence and r.status == FAIL
    anchor = _anchor(index, report, r)
    name = f'<a href="#{anchor}">{_e(r.layer)}</a>' if anchor in linked else _e(r.layer)
    status = _e(STATUS_WORD.get(r.status, r.status))
    if r.downstream_of:
        status += f' <span class="of">of {_e(r.downstream_of)}</span>'
    if first:
        status += ' <span class="mark">&larr; first divergence</span>'
    if report.local and r.drift:
        status = 'drift <span class="of">(passes on Caffe\'s inputs)</span>'
    cells = [_e(r.order), name, _e(r.type), _e("x".join(str(s) for s in r.shape)), _e(number(r.max_abs)),
             _e(number(r.noise)), _e(times(r.ratio)), _e(number(r.rel_l2)), _e(number(r.cosine, "{:.6f}"))]
    if r.detections is not None:  # a set of boxes: how many paired, in place of rel_l2 and cosine
        cells[-2:] = [_e(paired_words(r.detections)), ""]
    if report.local:
        cells.append("-" if r.local is None else _e(f"{number(r.local.max_abs)} {STATUS_WORD[r.local.status]}"))
    cells.append(status)
    classes = f"{_e(r.status)}{' first' if first else ''}"
    return f'<tr class="{classes}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_table(index: int, report: Report, linked: set[str]) -> str:
    columns = ("#", "layer", "type", "shape", "max_abs", "noise", "x noise", "rel_l2", "cosine") + (
        ("local (own)",) if report.local else ())
    head = "".join(f"<th>{h}</th>" for h in columns + ("status",))
    body = "".join(_row(index, r, report, linked) for r in report.layers)
    return f'<table class="layers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def verdict(report: Report) -> str:
    """The terminal's verdict lines (parity.diagnose.report.verdict_lines), so both say the same thing."""
    css = "pass" if report.status == PASS else "fail"
    return "".join(f'<p class="verdict {css}">{_e(line.strip())}</p>' for line in verdict_lines(report))


def _hint_layers(r: LayerResult) -> list[str]:
    """The layers whose hints belong with `r`: its in-place chain, when the reference covers one."""
    return list(dict.fromkeys([*(r.covers or []), r.layer]))


def render_layer(index: int, report: Report, r: LayerResult) -> str:
    title = ("Conversion bug (fails on Caffe's own inputs)" if r.layer in report.conversion_bugs
             else "First divergence" if r.layer == report.first_divergence else "Failing layer")
    hints = [h for layer in _hint_layers(r) for h in report.hints.get(layer, [])]
    arrays = report.arrays.get(r.layer)
    body = pictures(*arrays) if arrays is not None else (
        '<p class="note">No pictures: the report kept no arrays for this layer.</p>')
    return (f'<section class="layer" id="{_anchor(index, report, r)}"><h3>{title}: {_e(r.layer)} ({_e(r.type)})</h3>'
            f'<p class="describe">{_e(_described(r, report))}</p>{render_hints(hints)}{body}</section>')


def _described(r: LayerResult, report: Report) -> str:
    """A conversion bug is described by its error on Caffe's own inputs (what its pictures show)."""
    if r.layer in report.conversion_bugs:
        return "on Caffe's own inputs: " + describe(r.local, report.atol, report.rtol)
    return describe(r, report.atol, report.rtol)


def _other_hints(report: Report, shown: set[str]) -> str:
    rest = {layer: hs for layer, hs in report.hints.items() if layer not in shown and hs}
    if not rest:
        return ""
    parts = "".join(f"<h4>{_e(layer)}</h4>{render_hints(hs)}" for layer, hs in rest.items())
    return f'<section class="other-hints"><h3>Other hints</h3>{parts}</section>'


def render_report(index: int, report: Report) -> str:
    pictured = _pictured(report)
    shown = {layer for r in pictured for layer in _hint_layers(r)}
    more = sum(r.status == FAIL for r in report.layers) - len(pictured)
    return (f'<article class="report" id="r{index}"><h2>{_e(report.model)} / {_e(report.image)} '
            f'<span class="badge {_e(report.status)}">{_e(report.status.upper())}</span></h2>'
            + verdict(report) + render_header(report)
            + render_table(index, report, {_anchor(index, report, r) for r in pictured})
            + "".join(detection_figure(report, r) for r in report.layers if r.detections is not None)
            + "".join(render_layer(index, report, r) for r in pictured)
            + (f'<p class="note">{more} more failing layer(s) not shown.</p>' if more > 0 else "")
            + _other_hints(report, shown) + "</article>")


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h2{border-bottom:2px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse}
table.layers td,table.layers th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right;font-family:monospace}
table.layers :is(td,th):is(:nth-child(2),:nth-child(3),:nth-child(8)){text-align:left}
tr.fail{background:#fdd}tr.downstream{background:#fff1dc}
tr.first td{font-weight:bold;border-top:2px solid #c00;border-bottom:2px solid #c00}
.mark{color:#c00}.of{color:#876}
table.kv th{text-align:left;vertical-align:top;padding:1px 8px 1px 0;font-weight:600}table.kv td{padding:1px 0}
table.kv ul{margin:0;padding-left:1.2em}
.badge{padding:1px 6px;border-radius:3px;color:#fff;font-size:80%}\
.badge.pass{background:#2a7}.badge.fail{background:#c22}
.verdict.fail{color:#a00;font-weight:600}.verdict.pass{color:#272;font-weight:600}.warn{color:#a50}
section.layer{margin:1.5em 0;padding:.5em 1em;border-left:4px solid #c22;background:#fcfcfc}
.maps{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:.5em 0}
figcaption{font-size:85%;color:#555;max-width:36em}
img.pic{image-rendering:pixelated;image-rendering:crisp-edges;border:1px solid #ccc}
.scale{display:flex;align-items:center;gap:.4em;font:12px monospace}.scale img{image-rendering:pixelated}
.note{color:#666;font-style:italic}.hints li.hint{margin:.3em 0}.evidence{font-size:90%;color:#444}
"""


def report_key(model: str, image: str) -> str:
    """A page-unique id fragment for a report, made safe for id attributes and URL fragments."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{model}-{image}")


def summary_item(anchor: str, model: str, image: str, status: str, first_divergence: str | None) -> str:
    return (f'<li><a href="#{_e(anchor)}">{_e(model)} / {_e(image)}</a> '
            f'<span class="badge {_e(status)}">{_e(status.upper())}</span>'
            f'{" first divergence at " + _e(first_divergence) if first_divergence else ""}</li>')


def page(summaries: list[str], articles: list[str]) -> str:
    """The page around ready-made report articles (the pytest plugin assembles workers' articles so)."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>parity report</title><style>{STYLE}</style></head><body>'
            f'<h1>parity report</h1><ul class="summary">{"".join(summaries)}</ul>{"".join(articles)}</body></html>\n')


def render_html(reports: list[Report] | Report) -> str:
    """The whole page: one article per report, with a summary of all of them on top."""
    reports = [reports] if isinstance(reports, Report) else list(reports)
    summaries = [summary_item(f"r{i}", r.model, r.image, r.status, r.first_divergence) for i, r in enumerate(reports)]
    return page(summaries, [render_report(i, r) for i, r in enumerate(reports)])


def write_html(path: str | Path, reports: list[Report] | Report | str) -> Path:
    """Write the page (or ready HTML text) atomically: a browser or CI artifact step sees the old file or the
    whole new one."""
    path = Path(path)
    text = reports if isinstance(reports, str) else render_html(reports)
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# -- detections ----------------------------------------------------------------------------------
CAFFE_BOX, KERAS_BOX, MISSING_BOX, EXTRA_BOX = (40, 170, 90), (200, 60, 200), (220, 30, 30), (240, 150, 0)
MAX_BOXES = 12  # per side, by score: a detector's 200 low-score boxes would hide the picture


def _display(picture: tuple) -> Image.Image:
    """The net's input (Caffe layout, sample 0) as a picture: each channel stretched to 0-255, BGR turned
    to RGB; preprocessing (mean, scale) is not undone, so colours are approximate."""
    array, order = picture
    chw = np.asarray(array, np.float64)[0]
    if chw.shape[0] == 3 and order == "BGR":
        chw = chw[::-1]
    chw = chw[:3] if chw.shape[0] >= 3 else np.repeat(chw[:1], 3, axis=0)
    lo, hi = np.nanmin(chw, axis=(1, 2), keepdims=True), np.nanmax(chw, axis=(1, 2), keepdims=True)
    rgb = np.nan_to_num((chw - lo) / np.where(hi > lo, hi - lo, 1.0)) * 255
    image = Image.fromarray(rgb.transpose(1, 2, 0).astype(np.uint8))
    side = max(image.size)
    return image.resize((image.width * 400 // side, image.height * 400 // side), Image.NEAREST)


def _draw(image: Image.Image, boxes: list[dict], colour: tuple, width: int) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    w, h = image.size
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        x0, x1 = (min(max(x * w, -w), 2 * w) for x in (x0, x1))  # boxes far outside stay drawable
        y0, y1 = (min(max(y * h, -h), 2 * h) for y in (y0, y1))
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=colour, width=width)


def detection_figure(report: Report, r: LayerResult) -> str:
    """Caffe's and Keras' boxes over the input: green Caffe, magenta Keras (each side's best MAX_BOXES by
    score), then thick red for Caffe's boxes Keras lacks and thick orange for Keras' extra ones."""
    d = r.detections
    if report.picture is None or d is None:
        return ""
    image = _display(report.picture)
    if d.get("pixels"):  # Proposal's rois are in input pixels: drawn as fractions of the input's size
        height, width = np.asarray(report.picture[0]).shape[-2:]
        scale = np.array([width, height, width, height], np.float64)
        d = {key: [{**b, "box": list(np.asarray(b["box"]) / scale)} for b in d[key]]
             for key in ("caffe_boxes", "keras_boxes", "missing", "extra")} | {
                 "caffe": d["caffe"], "keras": d["keras"], "paired": d["paired"]}
    top = lambda boxes: sorted(boxes, key=lambda b: -b["score"])[:MAX_BOXES]  # noqa: E731
    _draw(image, [b for b in top(d["caffe_boxes"]) if b["image"] == 0], CAFFE_BOX, 3)
    _draw(image, [b for b in top(d["keras_boxes"]) if b["image"] == 0], KERAS_BOX, 1)
    _draw(image, [b for b in d["missing"] if b["image"] == 0], MISSING_BOX, 4)
    _draw(image, [b for b in d["extra"] if b["image"] == 0], EXTRA_BOX, 4)
    caption = (f"{_e(r.layer)}: Caffe {d['caffe']} detections (green), Keras {d['keras']} (magenta), "
               f"{d['paired']} paired; the {MAX_BOXES} best by score of each are drawn. Thick red: Caffe's boxes "
               f"Keras lacks ({len(d['missing'])}); thick orange: Keras' extra boxes ({len(d['extra'])}). "
               "Image 0, the input as the net saw it, stretched for display.")
    return (f'<section class="detections"><h3>Detections: {_e(r.layer)}</h3><figure>'
            f'{_img(image, "detections", "detected boxes")}<figcaption>{caption}</figcaption></figure></section>')
