"""pytest plugin: the parity suite as one test item per (model, sample, Caffe layer).

Active from the repository root (conftest.py names it). The expensive part, converting a model and
running its one-pass capture, happens once per model and sample; items only read the result.
Under pytest-xdist the items of one (model, sample) form one xdist group, and `--dist load` is
turned into `--dist loadgroup`, so no worker computes a model twice. Reports travel back to the
controller as user_properties, which builds the summary and `--parity-json`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import pytest

from .compare import DOWNSTREAM, FAIL
from .errors import ParityError, printable

PROPERTY = "parity_layer"


def pytest_addoption(parser):
    group = parser.getgroup("parity", "parity: Caffe -> Keras layer-by-layer checks")
    group.addoption("--model", action="append", default=[], help="fixture to check (repeatable; default: all)")
    group.addoption("--atol", type=float, default=None,
                    help="judge every layer by the fixed rule with this absolute tolerance (default: the noise rule)")
    group.addoption("--rtol", type=float, default=None,
                    help="judge every layer by the fixed rule with this relative tolerance (default: the noise rule)")
    group.addoption("--parity-json", default=None, metavar="PATH", help="write one JSON report per model and sample")
    group.addoption("--parity-html", default=None, metavar="PATH",
                    help="write one HTML page: tables, first divergences, hints, error heatmaps")
    group.addoption("--parity-baseline", default=None, metavar="PATH",
                    help="gate: fail a layer whose error grew past --parity-growth x its accepted value "
                         "(default: [tool.parity] baseline, when set); 'none' turns the gate off")
    group.addoption("--parity-growth", type=float, default=None, metavar="F",
                    help="the gate's growth factor (default: [tool.parity] growth, else 4)")
    group.addoption("--until", default=None, metavar="LAYER", help="check each model only up to this layer")
    group.addoption("--local", action="store_true", default=False,
                    help="also run every layer on Caffe's own inputs: conversion bugs vs accumulated drift")
    group.addoption("--deterministic", action="store_true", default=False, help="turn on TensorFlow's op determinism")
    group.addoption("--allow-tf32", action="store_true", default=False, help="let GPUs use TF32 (off by default)")
    group.addoption("--keras-model", default=None, metavar="MODULE:FN",
                    help="check your own Keras model (FN() returns it) instead of parity's conversion")
    group.addoption("--mapping", default=None, metavar="PATH",
                    help='with --keras-model: JSON {"keras layer": "caffe layer"} where names differ')


def pytest_configure(config):
    config.addinivalue_line("markers", "caffe: needs real pycaffe (tools/build_caffe.sh)")
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"  # keep each (model, sample) on one worker
    if getattr(config.option, "dist", "no") == "loadgroup" and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # hand groups out in collection order: costliest first
    if getattr(config, "workerinput", {}).get("parity_loadgroup"):
        config.option.loadgroup = True  # the worker tags node ids with their group for the scheduler
    config.option.model = list(dict.fromkeys(m.strip().rstrip("/") for m in config.option.model))
    if not hasattr(config, "workerinput"):  # once, in the controller or the single process
        try:
            check_options(config)
        except ParityError as exc:
            raise pytest.UsageError(printable(f"parity: {exc}")) from None
    config.pluginmanager.register(_Collector(config), "parity-collector")


def project_file(config):
    """The pyproject.toml whose [tool.parity] applies: pytest's own config file when it is one, else the
    nearest above the rootdir, so running from another folder does not silently drop the baseline."""
    from pathlib import Path

    from .gate import find_pyproject

    inipath = getattr(config, "inipath", None)
    return Path(inipath) if inipath and Path(inipath).name == "pyproject.toml" else find_pyproject(config.rootpath)


def check_options(config) -> None:
    """Every parity option checked before collection, so a wrong value is one usage error (exit 4), not
    the same failure on every item after each model has been converted. The hand-written model itself
    is imported only where it runs: importing it here would load TensorFlow into xdist's controller."""
    from .errors import require_writable
    from .fixtures import list_fixtures
    from .gate import Baseline, finite_number, project_settings

    known = set(list_fixtures())
    unknown = [m for m in config.option.model if m not in known]
    if unknown:
        raise ParityError(f"no fixture {', '.join(map(repr, unknown))} (fixtures: {', '.join(sorted(known))})")
    for option, least in (("--atol", 0.0), ("--rtol", 0.0), ("--parity-growth", 1.0)):
        if config.getoption(option) is not None:
            finite_number(config.getoption(option), option, least)
    if config.getoption("--mapping") and not config.getoption("--keras-model"):
        raise ParityError("--mapping needs --keras-model")
    until = config.getoption("--until")
    if until is not None:
        _check_until(config.option.model or sorted(known), until)
    for option, what in (("--parity-json", "JSON report"), ("--parity-html", "HTML report")):
        if config.getoption(option):
            require_writable(config.getoption(option), what)
    if _runs_parity(config):  # not for `pytest tests/`: a broken baseline must not stop the unit tests
        project_settings(project_file(config))
        baseline = baseline_path(config)
        if baseline is not None:
            Baseline.load(baseline)


def _runs_parity(config) -> bool:
    """Whether this run may collect the parity suite: a --model, or a path at, in or above parity/."""
    from pathlib import Path

    if config.option.model or config.getoption("--parity-baseline"):
        return True
    here = Path(__file__).resolve().parent
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == here or here in path.parents or path in here.parents:
            return True
    return False


def _check_until(models: list[str], until: str) -> None:
    from .check import target_from_fixture, up_to

    for model in models:
        up_to(target_from_fixture(model), until)


def baseline_path(config):
    """--parity-baseline, 'none' for no gate, else [tool.parity] baseline of the project's pyproject.toml."""
    from .gate import configured_baseline

    path = config.getoption("--parity-baseline")
    if path is None:
        return configured_baseline(project_file(config))
    return None if path.lower() == "none" else path


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller: workers see the original command line, so tell them about loadgroup."""
    node.workerinput["parity_loadgroup"] = node.config.option.dist == "loadgroup"


# -- collection ---------------------------------------------------------------------------------
def pytest_generate_tests(metafunc):
    if "parity_case" not in metafunc.fixturenames:
        return
    try:
        cases = list(_cases(metafunc.config))
    except ParityError as exc:
        raise pytest.UsageError(printable(f"parity: {exc}")) from None
    metafunc.parametrize(
        "parity_case",
        [pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(f"parity-{c.model}-{c.image}")) for c in cases],
        indirect=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """xdist controller: a worker's collected ids must carry their group ("...@parity-MODEL-SAMPLE"), or
    the scheduler hands one model's items to every worker and each converts it (pytest 9.2 with
    pytest-xdist 3.8: xdist renames a node id attribute pytest no longer reads). Said once, loudly."""
    config = node.config
    if not _grouped(config) or getattr(config, "_parity_ungrouped_said", False):
        return
    ours = [i for i in ids if "test_parity.py::test_layer[" in i]
    if ours and not any("@parity-" in i for i in ours):
        config._parity_ungrouped_said = True
        message = (f"parity: pytest-xdist's groups are ignored with pytest {pytest.__version__}: every worker "
                   "will convert every model (slower, same verdicts). Install pytest<9.2 (pip install -e '.[test]').")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(message, yellow=True, bold=True)


def _grouped(config) -> bool:
    """Whether pytest-xdist hands out whole groups: in the controller, or told so in a worker."""
    return (getattr(config.option, "dist", "no") == "loadgroup"
            or bool(getattr(config, "workerinput", {}).get("parity_loadgroup")))


def case_of(item) -> "Case | None":
    """The parity Case a collected item checks (None for items that are not parity's)."""
    return getattr(getattr(item, "callspec", None), "params", {}).get("parity_case")


def pytest_collection_modifyitems(config, items):
    """Under xdist, run the parity groups first, costliest first (longest-processing-time-first
    scheduling): a worker that starts VGG-19 last would finish long after the other went idle."""
    if not _grouped(config):
        return
    cases = [case_of(item) for item in items]
    costs = {c.model: c.cost for c in cases if c is not None}
    order = sorted(range(len(items)), key=lambda i: (0, -costs[cases[i].model], cases[i].model, i)
                   if cases[i] is not None else (1, 0, "", i))
    items[:] = [items[i] for i in order]


def estimated_cost(target) -> float:
    """Rough seconds to check `target` here: weights copied, values compared, layers built.

    Only an ordering key: it must be the same in every xdist worker, so it reads nothing that a
    running check writes (weights are built on first use).
    """
    from .recipes import learned_blobs

    net = target.net()
    try:
        params = sum(math.prod(p.shape) for blobs in learned_blobs(net).values() for p in blobs)
    except ParityError:  # the check itself will say what is wrong with the net
        params = 0
    values = sum(math.prod(e.shape) for ref in target.references for e in ref.entries)
    return 1e-8 * params + 2e-8 * values + 1e-2 * len(net.layers)


def _cases(config):
    from .check import target_from_fixture, up_to
    from .fixtures import list_fixtures

    models = config.getoption("--model") or list_fixtures()
    for model in models:
        target = up_to(target_from_fixture(model), config.getoption("--until"))
        net_layers = [(layer.name, layer.tops) for layer in target.net().layers]
        cost = estimated_cost(target) if _grouped(config) else 0.0
        for ref in target.references:
            by_layer: dict[str, list[str]] = {}
            for entry in ref.entries:
                by_layer.setdefault(entry.layer, []).append(entry.top)
            for name, tops in net_layers:
                yield Case(model, ref.name, name, tuple(by_layer.get(name, ())), ref.granularity,
                           _overwritten_by(name, tops, by_layer, net_layers), cost)


def _overwritten_by(name, tops, by_layer, net_layers) -> str | None:
    """For a layer without its own reference: the later layer whose entry holds its (in-place) top."""
    if name in by_layer:
        return None
    seen = False
    for other, other_tops in net_layers:
        if other == name:
            seen = True
        elif seen and other in by_layer and set(tops) & set(by_layer[other]):
            return other
    return None


# -- running --------------------------------------------------------------------------------------
class _Session:
    """Per-process cache: converted models by name, reports by (model, sample), errors too."""

    def __init__(self, config, items):
        self.config = config
        self.prepared: dict[str, object] = {}
        self.gates: dict[str, tuple] = {}  # model -> (policy, baseline): read once, not once per sample
        self.reports: dict[tuple[str, str], object] = {}
        self.articles_sent: set[tuple[str, str]] = set()
        self.errors_sent: dict[tuple[str, str], str] = {}  # (model, sample) -> the item that reported its error
        self.pending: dict[tuple[str, str], set[str]] = {}  # (model, sample) -> node ids not yet run
        for item in items:
            if (c := case_of(item)) is not None:
                self.pending.setdefault((c.model, c.image), set()).add(item.nodeid)

    def finished(self, case) -> None:
        """After each item: its node id leaves the pending set. A set, not a count: a rerun plugin
        (pytest-rerunfailures, flaky) runs the same item again, and a count taken down twice said
        "none left" one item early, so the model was let go and converted and captured again."""
        self.pending.get((case.model, case.image), set()).discard(case.item.nodeid)

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
        from .check import gate_settings

        return gate_settings(target, self.config.getoption("--atol"), self.config.getoption("--rtol"),
                             baseline_path(self.config), self.config.getoption("--parity-growth"),
                             project_file(self.config))

    def converter(self):
        """None (parity's converter), or the user's hand-written model with Caffe's weights loaded by name."""
        spec = self.config.getoption("--keras-model")
        if not spec:
            return None
        from .handwritten import handwritten_converter, load_builder, read_mapping

        return handwritten_converter(load_builder(spec), read_mapping(self.config.getoption("--mapping")))

    def article(self, report) -> str | None:
        """With --parity-html: this report's HTML article, rendered where its arrays live, sent once."""
        key = (report.model, report.image)
        if not self.config.getoption("--parity-html") or key in self.articles_sent:
            return None
        from .html import render_report, report_key

        self.articles_sent.add(key)
        return render_report(report_key(report.model, report.image), report)

    def report(self, model: str, image: str, item):
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
            self._record_error(key, result, item)
            pytest.fail(printable(f"parity: {result}"), pytrace=False)
        return result

    def _record_error(self, key: tuple[str, str], error: ParityError, item) -> None:
        """Once per (model, sample): the error as a report of its own for --parity-json/--parity-html, as
        the CLI writes it (a shape divergence names its layer), so CI never keeps an old report instead."""
        self.errors_sent[key] = item.nodeid
        layer = getattr(error, "layer", None)
        item.user_properties.append((PROPERTY, {
            "model": key[0], "image": key[1], "atol": None, "rtol": None, "first_divergence": layer,
            "first_divergence_covers": [layer] if layer else None, "error": str(error), "header": {},
            "hints": {}, "layers": [], "html": None}))

    def _compute(self, model: str, image: str):
        from .check import check_reference, prepare, target_from_fixture, up_to

        if model not in self.prepared:
            _trace("prepare", model)
            target = up_to(target_from_fixture(model), self.config.getoption("--until"))
            numerics = {"deterministic": self.config.getoption("--deterministic"),
                        "allow_tf32": self.config.getoption("--allow-tf32")}
            self.prepared[model] = prepare(target, convert=self.converter(), numerics=numerics)
        _trace("capture", model, image)
        prepared = self.prepared[model]
        ref = next(r for r in prepared.target.references if r.name == image)
        if model not in self.gates:
            self.gates[model] = self.gate(prepared.target)
        policy, baseline = self.gates[model]
        return check_reference(prepared, ref, policy, local=self.config.getoption("--local"), baseline=baseline)


def _trace(*what: str) -> None:
    """With PARITY_TRACE=FILE, log each expensive step with the process id (tests check for repeats)."""
    path = os.environ.get("PARITY_TRACE")
    if path:
        with open(path, "a") as fh:
            fh.write(" ".join((str(os.getpid()),) + what) + "\n")


_SESSION_KEY = pytest.StashKey[_Session]()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """Where models ran: collect garbage once, then freeze what is left (TensorFlow's and Keras' own
    objects, some 400,000). Why: pytest's clean-up then collects five times more, and each full
    pass over that heap cost 0.24 s, 1.2 s in all, before every run could end."""
    if _SESSION_KEY in session.config.stash:
        import gc

        session.config.stash[_SESSION_KEY].release()  # the last model: no next item lets it go
        gc.collect()
        gc.freeze()


@pytest.fixture
def parity_case(request):
    case = request.param
    config = request.config
    if _SESSION_KEY not in config.stash:
        config.stash[_SESSION_KEY] = _Session(config, request.session.items)
    case.session = config.stash[_SESSION_KEY]
    case.item = request.node
    case.session.release(keep=(case.model, case.image))
    yield case
    case.session.finished(case)


@dataclass
class Case:
    model: str
    image: str
    layer: str
    tops: tuple[str, ...]
    granularity: str
    overwritten_by: str | None
    cost: float = 0.0  # estimated_cost of the model, under xdist
    session: object = field(default=None, repr=False)
    item: object = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"{self.model}-{self.image}-{self.layer}"

    def check(self) -> None:
        if not self.tops:
            holder = f"; its output is checked at {self.overwritten_by} (in place)" if self.overwritten_by else ""
            pytest.skip(printable(f"no reference entry for {self.layer} at {self.granularity} granularity{holder}"))
        report = self.session.report(self.model, self.image, self.item)
        results = [r for r in report.layers if r.layer == self.layer]
        if not results:  # a graph op no layer of the hand-written Keras model is paired with
            pytest.skip(printable(f"no layer of the checked model is paired with {self.layer}: nothing to compare"))
        self.item.user_properties.append((PROPERTY, {
            "model": report.model, "image": report.image, "atol": report.atol, "rtol": report.rtol,
            "first_divergence": report.first_divergence,
            "first_divergence_covers": report.first_divergence_covers, "error": report.error, "header": report.header,
            "hints": {r.layer: [h.to_dict() for h in report.hints.get(r.layer, [])] for r in results},
            "layers": [r.to_dict() for r in results], "html": self.session.article(report)}))
        lines = [line for r in results for line in failure_lines(r, report)]
        if lines and all(r.status == DOWNSTREAM and not (r.local is not None and r.local.status == FAIL)
                         for r in results):
            # not a failure of its own: the model's first divergence fails, once, at its own layer
            pytest.xfail(printable(f"downstream of the first divergence of {self.model}/{self.image} at "
                                   f"{report.first_divergence}: {lines[0]}"))
        if lines:
            if report.first_divergence and all(r.layer != report.first_divergence for r in results):
                lines.append(f"first divergence of {self.model}/{self.image}: {report.first_divergence}")
            pytest.fail("\n".join(map(printable, lines)), pytrace=False)  # a name's newline forges no line


def failure_lines(r, report) -> list[str]:
    """Why this layer's item fails: its own bug (with --local), drift, or a (propagated) divergence."""
    from .report import describe, hint_lines

    if r.local is not None and r.local.status == "fail":
        return ([f"conversion bug, on Caffe's own inputs: {describe(r.local, report.atol, report.rtol)}"]
                + hint_lines(report, r.layer))
    if r.status == "pass":
        return []
    if report.local and r.drift:
        return [f"accumulated drift (passes on Caffe's own inputs): {describe(r, report.atol, report.rtol)}"]
    return [describe(r, report.atol, report.rtol)] + hint_lines(report, r.layer)


# -- reporting (runs in the controller under xdist) ----------------------------------------------
class _Collector:
    def __init__(self, config):
        self.config = config
        self.reports: dict[tuple[str, str], dict] = {}
        self.articles: dict[tuple[str, str], str] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report):
        """Take the report data off the item's last report, before junitxml writes its properties: JUnit
        files get one short line per layer instead of the whole header and HTML (1.6 MB for the zoo)."""
        if report.when != "teardown" or hasattr(self.config, "workerinput"):  # read once, where reports end up
            return
        properties = getattr(report, "user_properties", [])
        ours = [value for name, value in properties if name == PROPERTY and isinstance(value, dict)]
        properties[:] = [(name, value) for name, value in properties if name != PROPERTY]
        properties += [(PROPERTY, f"{v['model']}/{v['image']} {r['layer']}: {r['status']}, max_abs "
                                  f"{'-' if r['max_abs'] is None else format(r['max_abs'], '.3g')}"
                                  + (f", {format(r['ratio'], '.3g')}x noise" if isinstance(r.get("ratio"), float) else ""))
                       for v in ours for r in v["layers"]]
        for value in ours:
            key = (value["model"], value["image"])
            entry = self.reports.setdefault(key, {
                "model": value["model"], "image": value["image"], "atol": value["atol"], "rtol": value["rtol"],
                "first_divergence": value["first_divergence"],
                "first_divergence_covers": value["first_divergence_covers"], "error": value.get("error"),
                **value["header"], "layers": [], "hints": {}})
            entry["layers"].extend(value["layers"])
            if value.get("html"):
                self.articles[key] = value["html"]
            entry["hints"].update({layer: hs for layer, hs in value.get("hints", {}).items() if hs})

    def payload(self) -> list[dict]:
        out = []
        for key in sorted(self.reports):
            entry = dict(self.reports[key])
            entry["layers"] = sorted(entry["layers"], key=lambda r: r["order"])
            entry["conversion_bugs"] = [r["layer"] for r in entry["layers"] if (r.get("local") or {}).get("status") == "fail"]
            # the first divergence counts even where -k left its item out: the model does not pass
            fine = (all(r["status"] == "pass" for r in entry["layers"]) and not entry["conversion_bugs"]
                    and not entry["first_divergence"] and not entry["error"])
            entry["status"] = "pass" if fine else "fail"
            out.append(entry)
        return out

    def pytest_terminal_summary(self, terminalreporter):
        payload = self.payload()
        if payload:
            terminalreporter.section("parity")
        for r in payload:
            terminalreporter.write_line(printable(f"{r['model']}/{r['image']}: {r['status'].upper()}: {_verdict(r)}"))
        try:  # written even when empty: CI must never upload an older run's report as this one's
            self._write_reports(payload, terminalreporter)
        except (OSError, ParityError) as exc:  # checked writable at start; the disk can still say no
            terminalreporter.write_line(printable(f"parity: error: cannot write the report: {exc}"), red=True)

    def _write_reports(self, payload: list[dict], terminalreporter) -> None:
        path = self.config.getoption("--parity-json")
        if path:
            from .report import write_json

            write_json(path, payload)
            terminalreporter.write_line(printable(f"parity: wrote {path}"))
        html_path = self.config.getoption("--parity-html")
        if html_path:
            from .html import page, report_key, summary_item, write_html

            keys = sorted(self.reports)
            summaries = [summary_item(f"r{report_key(r['model'], r['image'])}", r["model"], r["image"], r["status"],
                                      r["first_divergence"]) for r in payload]
            write_html(html_path, page(summaries, [self.articles.get(k, "") for k in keys]))
            terminalreporter.write_line(printable(f"parity: wrote {html_path}"))


def _verdict(r: dict) -> str:
    if r["error"]:
        return r["error"]
    if r["conversion_bugs"]:
        return f"conversion bug at {r['conversion_bugs'][0]} (fails on Caffe's own inputs)"
    if r["first_divergence"]:
        return f"first divergence at {r['first_divergence']}"
    from .report import rule_words, worst_ratio

    return f"all {len(r['layers'])} outputs within {rule_words(r.get('tolerances'), r['atol'], r['rtol'])}" \
           f"{worst_ratio(r['layers'])}"
