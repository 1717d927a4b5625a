"""What a test session keeps, and how the reports reach the controller.

Each process (the single one, or each xdist worker) keeps its converted models and reports in a
Session, and lets each go once no item of it is left. Every item sends its own layers' part of the
report (Report.to_dict(only=...)) on its user_properties, which pytest-xdist carries to the
controller; there the Gatherer joins the parts (report.merge_parts), prints each model's verdict
and writes --parity-json and --parity-html. Status and verdict are report.py's, never re-derived here.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ..diagnose.report import Report, merge_parts, summary_line
from ..errors import ParityError, printable
from .items import LayerCheck, check_of
from .settings import baseline_path, project_file

PROPERTY = "parity_layer"  # the user_properties name the parts travel under


class Session:
    """Per-process cache: converted models by name, reports by (model, sample), errors too."""

    def __init__(self, config, items: list):
        self.config = config
        self.prepared: dict[str, object] = {}
        self.gates: dict[str, tuple] = {}  # model -> (policy, baseline): read once, not once per sample
        self.reports: dict[tuple[str, str], Report | ParityError] = {}
        self.articles_sent: set[tuple[str, str]] = set()
        self.errors_sent: dict[tuple[str, str], str] = {}  # (model, sample) -> the item that reported its error
        self.pending: dict[tuple[str, str], set[str]] = {}  # (model, sample) -> node ids not yet run
        for item in items:
            if (c := check_of(item)) is not None:
                self.pending.setdefault((c.model, c.image), set()).add(item.nodeid)

    def finished(self, check: LayerCheck) -> None:
        """After each item: its node id leaves the pending set. A set, not a count: a rerun plugin
        (pytest-rerunfailures, flaky) runs the same item again, and a count taken down twice said
        "none left" one item early, so the model was let go and converted and captured again."""
        self.pending.get((check.model, check.image), set()).discard(check.item.nodeid)

    def release(self, keep: tuple[str, str] | None = None) -> None:
        """Let go of the arrays of every (model, sample) with no item left here, and of a converted
        model once its last sample is done; `keep` is the (model, sample) about to run. Why: the whole
        zoo held at once peaked at 4.4 GB, and every garbage collection and the interpreter's exit
        walked all of it. Called when the next item starts (and at the end), not as the last one
        ends: a rerun of that last item comes first and still finds its report."""
        for key in [k for k in self.reports if k != keep and not self.pending.get(k)]:
            del self.reports[key]
        for model in [m for m in self.prepared if keep is None or m != keep[0]]:
            if not any(left for (m, _), left in self.pending.items() if m == model):
                self.gates.pop(model, None)
                del self.prepared[model]
                _trace("release", model)

    def gate(self, target):
        """The tolerance policy and baseline for `target`: options, then pyproject.toml, then the fixture."""
        from ..check.pipeline import gate_settings

        return gate_settings(target, self.config.getoption("--atol"), self.config.getoption("--rtol"),
                             baseline_path(self.config), self.config.getoption("--parity-growth"),
                             project_file(self.config))

    def target(self, model: str):
        """The fixture's target up to --until; with --keras-model, checked against the user's model."""
        from ..targets import from_fixture, up_to

        target = up_to(from_fixture(model), self.config.getoption("--until"))
        spec = self.config.getoption("--keras-model")
        return target.with_keras_model(spec, self.config.getoption("--mapping")) if spec else target

    def send(self, item, report: Report, layer: str) -> None:
        """This item's part of the report, for the controller's summary, JSON and HTML."""
        _send(item, report.to_dict(only={layer}), self._article(report))

    def _article(self, report: Report) -> str | None:
        """With --parity-html: this report's HTML article, rendered where its arrays live, sent once."""
        key = (report.model, report.image)
        if not self.config.getoption("--parity-html") or key in self.articles_sent:
            return None
        from ..diagnose.html import render_report, report_key

        self.articles_sent.add(key)
        return render_report(report_key(report.model, report.image), report)

    def report(self, model: str, image: str, item) -> Report:
        """The report of (model, sample), computed by its first item; an error fails that item, skips the rest."""
        key = (model, image)
        if key not in self.reports:
            try:
                self.reports[key] = self._compute(model, image)
            except ParityError as exc:
                self.reports[key] = exc
        result = self.reports[key]
        if isinstance(result, ParityError):
            if key in self.errors_sent:  # one error per (model, sample), not one per layer
                pytest.skip(printable(f"{model}/{image} could not be checked: see {self.errors_sent[key]}"))
            self._send_error(key, result, item)
            pytest.fail(printable(f"parity: {result}"), pytrace=False)
        return result

    def _send_error(self, key: tuple[str, str], error: ParityError, item) -> None:
        """Once per (model, sample): the error as a report of its own for --parity-json/--parity-html, as
        the CLI writes it (a shape divergence names its layer), so CI never keeps an old report instead."""
        self.errors_sent[key] = item.nodeid
        model, image = key
        failed = Report(model, image, None, None, [], getattr(error, "layer", None), error=str(error))
        _send(item, failed.to_dict(), None)

    def _compute(self, model: str, image: str) -> Report:
        from ..check.pipeline import check_reference, prepare

        if model not in self.prepared:
            _trace("prepare", model)
            numerics = {"deterministic": self.config.getoption("--deterministic"),
                        "allow_tf32": self.config.getoption("--allow-tf32")}
            self.prepared[model] = prepare(self.target(model), numerics=numerics)
        _trace("capture", model, image)
        prepared = self.prepared[model]
        ref = next(r for r in prepared.target.references if r.name == image)
        if model not in self.gates:
            self.gates[model] = self.gate(prepared.target)
        policy, baseline = self.gates[model]
        return check_reference(prepared, ref, policy, local=self.config.getoption("--local"), baseline=baseline)


def _send(item, part: dict, article: str | None) -> None:
    """A part of a report (and its HTML article, once) on the item's way to the controller."""
    item.user_properties.append((PROPERTY, {"report": part, "html": article}))


def _trace(*what: str) -> None:
    """With PARITY_TRACE=FILE, log each expensive step with the process id (tests check for repeats)."""
    path = os.environ.get("PARITY_TRACE")
    if path:
        with open(path, "a") as fh:
            fh.write(" ".join((str(os.getpid()),) + what) + "\n")


_SESSION_KEY = pytest.StashKey[Session]()


def serve(request) -> Iterator[LayerCheck]:
    """The `parity_case` fixture: the item's LayerCheck, with this process's Session; what no item
    needs any longer is let go as the next one starts."""
    check, config = request.param, request.config
    if _SESSION_KEY not in config.stash:
        config.stash[_SESSION_KEY] = Session(config, request.session.items)
    check.session, check.item = config.stash[_SESSION_KEY], request.node
    check.session.release(keep=(check.model, check.image))
    yield check
    check.session.finished(check)


def finish(config) -> None:
    """Where models ran: collect garbage once, then freeze what is left (TensorFlow's and Keras' own
    objects, some 400,000). Why: pytest's clean-up then collects five times more, and each full
    pass over that heap cost 0.24 s, 1.2 s in all, before every run could end."""
    if _SESSION_KEY in config.stash:
        import gc

        config.stash[_SESSION_KEY].release()  # the last model: no next item lets it go
        gc.collect()
        gc.freeze()


# -- the controller's side (the single process, or xdist's controller) ------------------------------
def _junit_line(part: dict, row: dict) -> str:
    """What JUnit XML keeps of a layer: one short line instead of the whole header and HTML."""
    ratio = f", {format(row['ratio'], '.3g')}x noise" if isinstance(row.get("ratio"), float) else ""
    max_abs = "-" if row["max_abs"] is None else format(row["max_abs"], ".3g")
    return f"{part['model']}/{part['image']} {row['layer']}: {row['status']}, max_abs {max_abs}{ratio}"


class Gatherer:
    """Joins the items' parts into one report per (model, sample), then prints and writes them."""

    def __init__(self, config):
        self.config = config
        self.parts: dict[tuple[str, str], list[dict]] = {}
        self.articles: dict[tuple[str, str], str] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report) -> None:
        """Take the parts off the item's last report, before junitxml writes its properties: JUnit files
        get one short line per layer instead of the whole header and HTML (1.6 MB for the zoo)."""
        if report.when != "teardown" or hasattr(self.config, "workerinput"):  # read once, where reports end up
            return
        properties = getattr(report, "user_properties", [])
        ours = [value for name, value in properties if name == PROPERTY and isinstance(value, dict)]
        properties[:] = [(name, value) for name, value in properties if name != PROPERTY]
        properties += [(PROPERTY, _junit_line(v["report"], row)) for v in ours for row in v["report"]["layers"]]
        for value in ours:
            key = (value["report"]["model"], value["report"]["image"])
            self.parts.setdefault(key, []).append(value["report"])
            if value["html"]:
                self.articles[key] = value["html"]

    def payload(self) -> list[dict]:
        """One report dict per (model, sample), sorted: the JSON file's list."""
        return [merge_parts(self.parts[key]) for key in sorted(self.parts)]

    def pytest_terminal_summary(self, terminalreporter) -> None:
        payload = self.payload()
        if payload:
            terminalreporter.section("parity")
        for r in payload:
            terminalreporter.write_line(printable(summary_line(r)))
        try:  # written even when empty: CI must never upload an older run's report as this one's
            self._write_reports(payload, terminalreporter)
        except (OSError, ParityError) as exc:  # checked writable at start; the disk can still say no
            terminalreporter.write_line(printable(f"parity: error: cannot write the report: {exc}"), red=True)

    def _write_reports(self, payload: list[dict], terminalreporter) -> None:
        path = self.config.getoption("--parity-json")
        if path:
            from ..diagnose.report import write_json

            write_json(path, payload)
            terminalreporter.write_line(printable(f"parity: wrote {path}"))
        html_path = self.config.getoption("--parity-html")
        if html_path:
            from ..diagnose.html import page, report_key, summary_item, write_html

            summaries = [summary_item(f"r{report_key(r['model'], r['image'])}", r["model"], r["image"], r["status"],
                                      r["first_divergence"]) for r in payload]
            write_html(html_path, page(summaries, [self.articles.get(key, "") for key in sorted(self.parts)]))
            terminalreporter.write_line(printable(f"parity: wrote {html_path}"))
