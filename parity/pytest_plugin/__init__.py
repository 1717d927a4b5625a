"""pytest plugin: the parity suite as one test item per (model, sample, Caffe layer).

Active from the repository root (conftest.py names it). The expensive part, converting a model and
running its one-pass capture, happens once per model and sample; items only read the result.
Under pytest-xdist the items of one (model, sample) form one xdist group, and `--dist load` is
turned into `--dist loadgroup`, so no worker computes a model twice. Reports travel back to the
controller as user_properties, which builds the summary and `--parity-json`.

This module holds only the hooks, each handing its work to the modules beside it:
  settings.py    the options (declared in parity.options) and [tool.parity], checked once
  collection.py  which items there are: the fixtures' layers, each a LayerCheck
  items.py       what one item checks, and how xdist groups and orders the items
  session.py     per-process models and reports; the reports' way to the controller; JSON and HTML
"""
from __future__ import annotations

import pytest

from ..options import add_to_pytest
from .collection import parametrize
from .items import configure_grouping, costliest_first, tell_worker, warn_if_ungrouped
from .session import Gatherer, finish, serve
from .settings import prepare_options


def pytest_addoption(parser) -> None:
    add_to_pytest(parser)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "caffe: needs real pycaffe (tools/build_caffe.sh)")
    configure_grouping(config)
    prepare_options(config)
    config.pluginmanager.register(Gatherer(config), "parity-collector")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    tell_worker(node)


def pytest_generate_tests(metafunc) -> None:
    parametrize(metafunc)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids) -> None:
    warn_if_ungrouped(node, ids)


def pytest_collection_modifyitems(config, items: list) -> None:
    costliest_first(config, items)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session) -> None:
    finish(session.config)


@pytest.fixture
def parity_case(request):
    """The LayerCheck this item checks, tied to this process's Session (test_parity.py's one argument)."""
    yield from serve(request)

