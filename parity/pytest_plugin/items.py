"""What one parity item checks (a LayerCheck), and how pytest-xdist groups and orders the items.

All items of one (model, sample) share one conversion and one capture, so under xdist they form one
group that a single worker runs, and the groups go out costliest first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ..check.compare import DOWNSTREAM, FAIL, PASS
from ..errors import printable

WORKER_FLAG = "parity_loadgroup"  # the controller's word to its workers: tag node ids with their group
SUITE_ITEM = "test_parity.py::test_layer["


@dataclass
class LayerCheck:
    """One Caffe layer of one model on one sample: what one item checks, and the item's parameter."""

    model: str
    image: str
    layer: str
    tops: tuple[str, ...]  # the layer's reference entries (none: skipped, saying where it is checked)
    granularity: str
    overwritten_by: str | None  # the later layer whose entry holds this one's in-place top
    cost: float = 0.0  # estimated_cost of the model, under xdist
    session: object = field(default=None, repr=False)  # parity.pytest_plugin.session.Session
    item: object = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"{self.model}-{self.image}-{self.layer}"

    @property
    def group(self) -> str:
        """Its xdist group: the items that share one conversion and capture."""
        return f"parity-{self.model}-{self.image}"

    def check(self) -> None:
        """Pass, skip, xfail (downstream of the model's first divergence) or fail with why, in words."""
        if not self.tops:
            holder = f"; its output is checked at {self.overwritten_by} (in place)" if self.overwritten_by else ""
            pytest.skip(printable(f"no reference entry for {self.layer} at {self.granularity} granularity{holder}"))
        report = self.session.report(self.model, self.image, self.item)
        results = [r for r in report.layers if r.layer == self.layer]
        if not results:  # a graph op no layer of the hand-written Keras model is paired with
            pytest.skip(printable(f"no layer of the checked model is paired with {self.layer}: nothing to compare"))
        self.session.send(self.item, report, self.layer)
        lines = [line for r in results for line in failure_lines(r, report)]
        if lines and all(r.status == DOWNSTREAM and not _own_bug(r) for r in results):
            # not a failure of its own: the model's first divergence fails, once, at its own layer
            pytest.xfail(printable(f"downstream of the first divergence of {self.model}/{self.image} at "
                                   f"{report.first_divergence}: {lines[0]}"))
        if lines:
            if report.first_divergence and all(r.layer != report.first_divergence for r in results):
                lines.append(f"first divergence of {self.model}/{self.image}: {report.first_divergence}")
            pytest.fail("\n".join(map(printable, lines)), pytrace=False)  # a name's newline forges no line


def _own_bug(r) -> bool:
    """--local: the layer fails on Caffe's own inputs, a conversion bug of its own."""
    return r.local is not None and r.local.status == FAIL


def failure_lines(r, report) -> list[str]:
    """Why this layer's item fails: its own bug (with --local), drift, or a (propagated) divergence."""
    from ..diagnose.report import describe, hint_lines

    if _own_bug(r):
        return ([f"conversion bug, on Caffe's own inputs: {describe(r.local, report.atol, report.rtol)}"]
                + hint_lines(report, r.layer))
    if r.status == PASS:
        return []
    if report.local and r.drift:
        return [f"accumulated drift (passes on Caffe's own inputs): {describe(r, report.atol, report.rtol)}"]
    return [describe(r, report.atol, report.rtol)] + hint_lines(report, r.layer)


def check_of(item) -> LayerCheck | None:
    """The LayerCheck a collected item checks (None for items that are not parity's)."""
    return getattr(getattr(item, "callspec", None), "params", {}).get("parity_case")


# -- xdist --------------------------------------------------------------------------------------------
def configure_grouping(config) -> None:
    """`--dist load` becomes loadgroup, groups go out in collection order, and a worker told so tags
    its node ids with their group for the scheduler."""
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"  # keep each (model, sample) on one worker
    if getattr(config.option, "dist", "no") == "loadgroup" and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # hand groups out in collection order: costliest first
    if getattr(config, "workerinput", {}).get(WORKER_FLAG):
        config.option.loadgroup = True


def tell_worker(node) -> None:
    """xdist controller: workers see the original command line, so tell them about loadgroup."""
    node.workerinput[WORKER_FLAG] = node.config.option.dist == "loadgroup"


def grouped(config) -> bool:
    """Whether pytest-xdist hands out whole groups: in the controller, or told so in a worker."""
    return (getattr(config.option, "dist", "no") == "loadgroup"
            or bool(getattr(config, "workerinput", {}).get(WORKER_FLAG)))


def warn_if_ungrouped(node, ids: list[str]) -> None:
    """xdist controller: a worker's collected ids must carry their group ("...@parity-MODEL-SAMPLE"), or
    the scheduler hands one model's items to every worker and each converts it (pytest 9.2 with
    pytest-xdist 3.8: xdist renames a node id attribute pytest no longer reads). Said once, loudly."""
    config = node.config
    if not grouped(config) or getattr(config, "_parity_ungrouped_said", False):
        return
    ours = [i for i in ids if SUITE_ITEM in i]
    if ours and not any("@parity-" in i for i in ours):
        config._parity_ungrouped_said = True
        message = (f"parity: pytest-xdist's groups are ignored with pytest {pytest.__version__}: every worker "
                   "will convert every model (slower, same verdicts). Install pytest<9.2 (pip install -e '.[test]').")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(message, yellow=True, bold=True)


def costliest_first(config, items: list) -> None:
    """Under xdist, run the parity groups first, costliest first (longest-processing-time-first
    scheduling): a worker that starts VGG-19 last would finish long after the other went idle."""
    if not grouped(config):
        return
    checks = [check_of(item) for item in items]
    costs = {c.model: c.cost for c in checks if c is not None}
    order = sorted(range(len(items)), key=lambda i: (0, -costs[checks[i].model], checks[i].model, i)
                   if checks[i] is not None else (1, 0, "", i))
    items[:] = [items[i] for i in order]
