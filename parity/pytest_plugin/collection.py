"""Which items there are: one LayerCheck per (model, sample, Caffe layer) of the fixtures asked for.

Collection reads nets and reference manifests only: nothing is converted or run here, and xdist's
controller, which collects too, never imports TensorFlow.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from ..errors import ParityError
from .items import LayerCheck, grouped
from .settings import usage_errors


def parametrize(metafunc) -> None:
    """test_parity.py's `parity_case`: one parameter per LayerCheck, each in its (model, sample)'s xdist group."""
    if "parity_case" not in metafunc.fixturenames:
        return
    with usage_errors():
        checks = list(layer_checks(metafunc.config))
    metafunc.parametrize(
        "parity_case", [pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(c.group)) for c in checks],
        indirect=True)


def layer_checks(config) -> Iterator[LayerCheck]:
    """Every layer of every model (--model, else all fixtures) on every sample, in Caffe's order."""
    from ..caffe.fixtures import list_fixtures
    from ..targets import from_fixture, up_to

    for model in config.getoption("--model") or list_fixtures():
        target = up_to(from_fixture(model), config.getoption("--until"))
        net_layers = [(layer.name, layer.tops) for layer in target.net().layers]
        cost = estimated_cost(target) if grouped(config) else 0.0
        for ref in target.references:
            by_layer: dict[str, list[str]] = {}
            for entry in ref.entries:
                by_layer.setdefault(entry.layer, []).append(entry.top)
            for name, tops in net_layers:
                yield LayerCheck(model, ref.name, name, tuple(by_layer.get(name, ())), ref.granularity,
                                 _overwritten_by(name, tops, by_layer, net_layers), cost)


def _overwritten_by(name: str, tops: tuple[str, ...], by_layer: dict[str, list[str]],
                    net_layers: list[tuple[str, tuple[str, ...]]]) -> str | None:
    """For a layer without its own reference: the later layer whose entry holds its (in-place) top."""
    if name in by_layer:
        return None
    seen = False
    for other, _ in net_layers:
        if other == name:
            seen = True
        elif seen and other in by_layer and set(tops) & set(by_layer[other]):
            return other
    return None


def estimated_cost(target) -> float:
    """Rough seconds to check `target` here: weights copied, values compared, layers built.

    Only an ordering key: it must be the same in every xdist worker, so it reads nothing that a
    running check writes (weights are built on first use).
    """
    from ..caffe.recipes import learned_blobs

    net = target.net()
    try:
        params = sum(math.prod(p.shape) for blobs in learned_blobs(net).values() for p in blobs)
    except ParityError:  # the check itself will say what is wrong with the net
        params = 0
    values = sum(math.prod(e.shape) for ref in target.references for e in ref.entries)
    return 1e-8 * params + 2e-8 * values + 1e-2 * len(net.layers)
