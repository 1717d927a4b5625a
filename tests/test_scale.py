"""Scale: reading, the Net and the check's bookkeeping cost time and memory linear in the net's size.

No wall-clock assertions (the machines are shared and noisy): each test counts the work done (text
characters scanned, layers touched, calls made) or the memory allocated (tracemalloc), against a budget
linear in the net, and checks that the answers are the ones the old quadratic code gave, whose
algorithms are kept here, verbatim in substance, as the oracles.
"""
from __future__ import annotations

import random
import re
import tracemalloc
from types import SimpleNamespace

import pytest

import parity.caffe.reading.prototxt as prototxt_module
import parity.tfgraph.graph as tfgraph_module
from parity.caffe.fixtures import list_fixtures, load_fixture
from parity.caffe.graph import Layer, Net
from parity.caffe.reading.prototxt import layer_name_lines, parse_prototxt, read_prototxt
from parity.check.compare import DOWNSTREAM, FAIL, PASS, LayerResult
from parity.check.decisions import decision_bottom
from parity.check.divergence import locate_first_divergence
from parity.check.pipeline import _flatten_source, parents_of
from parity.errors import ParityError
from parity.tfgraph.fixture import fixture_graph


# -- nets and texts --------------------------------------------------------------------------------
def chain_layers(n: int, layers_type=list) -> list[Layer]:
    """Input, then InnerProduct and in-place ReLU taking turns: n layers."""
    layers = layers_type([Layer(0, "data", "Input", (), ("data",), None)])
    blob = "data"
    for i in range(1, n):
        if i % 2:
            layers.append(Layer(i, f"ip{i}", "InnerProduct", (blob,), (f"ip{i}",), None))
            blob = f"ip{i}"
        else:
            layers.append(Layer(i, f"relu{i}", "ReLU", (blob,), (blob,), None))
    return layers


def v1_chain_text(n: int) -> str:
    out = ['name: "chain"', 'input: "data"', "input_dim: 1", "input_dim: 8", "input_dim: 1", "input_dim: 1"]
    blob = "data"
    for i in range(1, n):
        if i % 2:
            out.append(f'layers {{\n  name: "ip{i}"\n  type: INNER_PRODUCT\n  bottom: "{blob}"\n  top: "ip{i}"\n'
                       "  inner_product_param { num_output: 8 }\n}")
            blob = f"ip{i}"
        else:
            out.append(f'layers {{\n  name: "relu{i}"\n  type: RELU\n  bottom: "{blob}"\n  top: "{blob}"\n}}')
    return "\n".join(out) + "\n"


def blob_keys(net: Net) -> list[tuple[str, str]]:
    """The reference entries of a blob-granularity dump: each blob after its last writer, in order."""
    last: dict[str, str] = {}
    for layer in net.layers:
        last.update((top, layer.name) for top in layer.tops)
    position = {layer.name: i for i, layer in enumerate(net.layers)}
    return sorted(((name, top) for top, name in last.items()), key=lambda k: position[k[0]])


class CountingList(list):
    """A list that counts the elements read from it: iterating, indexing and slicing."""

    touched = 0

    def __iter__(self):
        CountingList.touched += len(self)
        return super().__iter__()

    def __reversed__(self):
        CountingList.touched += len(self)
        return super().__reversed__()

    def __getitem__(self, key):
        item = super().__getitem__(key)
        CountingList.touched += len(item) if isinstance(key, slice) else 1
        return item


class CountingStr(str):
    """A str that counts the characters its count() scans."""

    scanned = 0

    def count(self, sub, start=None, end=None):
        lo, hi, _ = slice(start, end).indices(len(self))
        CountingStr.scanned += max(0, hi - lo)
        return super().count(sub, start, end)


# -- the old algorithms, as oracles ------------------------------------------------------------------
def old_ancestors(net: Net) -> dict[str, frozenset[str]]:
    sources: dict[str, frozenset[str]] = {}
    result = {}
    for layer in net.layers:
        deps: frozenset[str] = frozenset()
        for bottom in layer.bottoms:
            deps |= sources[bottom]
        result[layer.name] = deps
        for top in layer.tops:
            sources[top] = deps | {layer.name}
    return result


def old_attribute(results: list[LayerResult], ancestors: dict | None) -> str | None:
    failing: dict[str, int] = {}
    for r in sorted(results, key=lambda r: r.order):
        if r.status == PASS:
            continue
        found = ancestors[r.layer] if ancestors is not None else {
            name for name, order in failing.items() if order < r.order}
        roots = [name for name in failing if name in found and name != r.layer]
        if roots:
            r.status = DOWNSTREAM
            r.downstream_of = min(roots, key=failing.get)
        failing.setdefault(r.layer, r.order)
    firsts = [r for r in results if r.status == FAIL]
    return min(firsts, key=lambda r: r.order).layer if firsts else None


def old_inplace_chain(net: Net, layer_name: str, top: str, referenced: set[str]) -> list[str]:
    chain = [layer_name]
    index = next(layer for layer in net.layers if layer.name == layer_name).index
    for layer in reversed(net.layers[:index]):
        if top not in layer.tops:
            continue
        if layer.name in referenced:
            break
        chain.insert(0, layer.name)
        if top not in layer.bottoms:
            break
    return chain


def old_writer_before(net: Net, layer_name: str, blob: str):
    layer = next(layer for layer in net.layers if layer.name == layer_name)
    return next((lay for lay in reversed(net.layers[:layer.index]) if blob in lay.tops), None)


_OLD_TOKENS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|#[^\n]*|[{}:]|[A-Za-z_]\w*|\S')


def old_layer_name_lines(text: str) -> list[tuple[str, int]]:
    found = []
    depth, block, previous = 0, None, []
    for m in _OLD_TOKENS.finditer(text):
        token = m.group()
        if token.startswith("#"):
            continue
        if token == "{":
            if depth == 0:
                block = previous[-1] if previous else None
            depth += 1
        elif token == "}":
            depth = max(depth - 1, 0)
        elif (depth == 1 and block in ("layer", "layers") and token[0] in "\"'"
              and previous[-2:] == ["name", ":"]):
            found.append((token[1:-1], text.count("\n", 0, m.start()) + 1))
        previous = (previous + [token])[-2:]
    return found


def old_execution_order(graph_def) -> list | str:
    """The node names in order, or the error message."""
    producer = tfgraph_module.producer
    nodes = {n.name: n for n in graph_def.node}
    done: set[str] = set()
    order = []
    pending = list(graph_def.node)
    while pending:
        ready = [n for n in pending if all(producer(i.lstrip("^"))[0] in done for i in n.input)]
        if not ready:
            missing = sorted({producer(i.lstrip("^"))[0] for n in pending for i in n.input} - set(nodes))
            what = f"inputs from missing nodes: {', '.join(missing[:5])}" if missing else "a cycle"
            return f"the graph cannot be ordered ({what})"
        for n in ready:
            done.add(n.name)
        order.extend(ready)
        pending = [n for n in pending if n.name not in done]
    return [n.name for n in order]


def caffe_fixtures() -> list[str]:
    names = []
    for name in list_fixtures():
        fixture = load_fixture(name)
        if fixture.kind == "caffe" and fixture.prototxt.is_file():
            names.append(name)
    return names


# -- the Net: ancestry, chains, writers ----------------------------------------------------------------
@pytest.mark.parametrize("n", [2_000, 20_000])
def test_a_long_chain_builds_and_answers_ancestry_in_linear_memory(n):
    """The old Net held every layer's full ancestor set: n^2/2 names (200 M for 20k layers, over 8 GB)."""
    layers = chain_layers(n)
    tracemalloc.start()
    try:
        net = Net.from_layers("chain", layers)
        last = net.ancestors(layers[-1].name)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 1_000 * n, f"{peak / 1e6:.1f} MB for a {n}-layer chain"  # the linear structures: ~0.3 kB a layer
        tracemalloc.reset_peak()
        # what locate_first_divergence() asks, for every layer at once
        earliest = net.earliest_ancestors(["ip3", "ip1"])
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 1_000 * n
    finally:
        tracemalloc.stop()
    assert len(last) == n - 1 and layers[0].name in last
    assert earliest["ip1"] is None and earliest["relu2"] == "ip1" and earliest[layers[-1].name] == "ip3"


@pytest.mark.parametrize("n", [2_000, 20_000])
def test_the_check_bookkeeping_touches_each_layer_a_bounded_number_of_times(n):
    """parents_of, check_reference's in-place chains, decision_bottom, _flatten_source and attribute
    over every entry of a chain: the old code scanned back through the layers per entry (n^2/2)."""
    CountingList.touched = 0
    net = Net.from_layers("chain", chain_layers(n, CountingList))
    keys = blob_keys(net)
    referenced = {name for name, _ in keys}
    CountingList.touched = 0
    parents = parents_of(net, keys)
    chains = [net.inplace_chain(name, top, referenced) for name, top in keys]
    prepared = SimpleNamespace(net=net, converted=SimpleNamespace(caffe_shapes={}))
    writers = [decision_bottom(net, layer.name) for layer in net.layers]
    sources = [_flatten_source(prepared, layer.name) for layer in net.layers]
    results = [LayerResult(name, "", top, order, (1, 8)) for order, (name, top) in enumerate(keys)]
    for r in results[2:]:
        r.status = FAIL
    first = locate_first_divergence(results, net)
    assert CountingList.touched < 20 * n, f"{CountingList.touched} layer reads for {n} layers"
    assert parents[("relu4", "ip3")] == [("relu2", "ip1")] and chains[2] == ["ip3", "relu4"]
    assert writers[4] == ("ip3", "ip3") and writers[0] is None and sources == [None] * n
    assert first == results[2].layer and all(r.downstream_of == first for r in results[3:])


def _planted(keys, ranks, rng, share):
    return [LayerResult(name, "", top, ranks[(name, top)], (1,), status=FAIL if rng.random() < share else PASS)
            for name, top in keys]


@pytest.mark.parametrize("name", caffe_fixtures())
def test_the_zoo_gets_the_old_answers(name):
    """Every fixture: ancestry, attribution of planted failures (with and without a net), in-place chains,
    parents and writers are what the old code computed, and every layer's line is where it was."""
    path = load_fixture(name).prototxt
    net = Net.from_prototxt(path)
    oracle = old_ancestors(net)
    assert all(net.ancestors(layer.name) == oracle[layer.name] for layer in net.layers)
    layer_keys = [(layer.name, top) for layer in net.layers for top in layer.tops]
    rng = random.Random(name)
    for keys in (blob_keys(net), layer_keys):
        ranks = {key: i for i, key in enumerate(keys)}
        for share in (0.02, 0.2, 0.7, 1.0):
            for use_net in (True, False):
                planted = _planted(keys, ranks, random.Random(f"{name}{share}"), share)
                expected = _planted(keys, ranks, random.Random(f"{name}{share}"), share)
                ties = rng.random() < 0.5  # repeated orders, as two entries of one layer may have
                if ties:
                    for r, e in zip(planted, expected):
                        r.order = e.order = r.order // 3
                assert (locate_first_divergence(planted, net if use_net else None)
                        == old_attribute(expected, oracle if use_net else None))
                assert [(r.status, r.downstream_of) for r in planted] == [(e.status, e.downstream_of) for e in expected]
        referenced = {layer for layer, _ in keys}
        for layer, top in keys:
            assert net.inplace_chain(layer, top, referenced) == old_inplace_chain(net, layer, top, referenced)
    text = path.read_text(encoding="utf-8")
    lines = old_layer_name_lines(text)
    assert layer_name_lines(text) == lines
    for layer in net.layers:
        same = [line for found, line in lines if found == layer.name]
        assert net.line_of(layer.name) == (same[0] if same else None)
        assert net.line_of(layer.name, 2) == (same[1] if len(same) > 1 else None)
    for layer in net.layers:  # decision_bottom's and _flatten_source's writer, by bisection now
        for blob in layer.bottoms:
            assert net.writer_before(layer.name, blob) is old_writer_before(net, layer.name, blob)


def test_until_keeps_the_ancestry_and_writers_of_the_layers_it_keeps():
    net = Net.from_prototxt(load_fixture("googlenet").prototxt)
    middle = net.layers[len(net.layers) // 2].name
    part = net.until(middle)
    assert [layer.name for layer in part.layers][-1] == middle
    for layer in part.layers:
        assert part.ancestors(layer.name) == net.ancestors(layer.name)
        for blob in layer.bottoms:
            assert part.writer_before(layer.name, blob) is net.writer_before(layer.name, blob)
    with pytest.raises(KeyError):
        part.ancestors(net.layers[-1].name)


# -- the prototxt: line numbers --------------------------------------------------------------------
@pytest.mark.parametrize("n", [300, 5_000])
def test_reading_a_v1_prototxt_scans_its_text_a_bounded_number_of_times(n, monkeypatch):
    """The V1 upgrade looked up each layer's line (for errors it might raise) by rescanning the text from
    the start, and counting newlines from the start for each layer found: cubic in the layers."""
    text = CountingStr(v1_chain_text(n))
    scans = []
    real = prototxt_module.layer_name_lines
    monkeypatch.setattr(prototxt_module, "layer_name_lines", lambda t: scans.append(1) or real(t))
    CountingStr.scanned = 0
    net = parse_prototxt(text)
    assert len(net.layer) == n and net.layer[1].type == "InnerProduct" and net.layer[2].type == "ReLU"
    assert len(scans) <= 1 and CountingStr.scanned <= 2 * len(text)


def test_a_v1_error_still_names_the_layers_line(tmp_path):
    text = v1_chain_text(50).replace('name: "relu10"\n  type: RELU', 'name: "relu10"\n  type: RELU\n  layer { }')
    path = tmp_path / "v0.prototxt"
    path.write_text(text)
    with pytest.raises(ParityError, match="V0 prototxt") as info:
        read_prototxt(path)
    assert info.value.line == old_layer_name_lines(text)[[n for n, _ in old_layer_name_lines(text)].index("relu10")][1]


@pytest.mark.parametrize("n", [2_000, 20_000])
def test_line_numbers_count_each_newline_once(n, monkeypatch):
    """layer_name_lines counts newlines on from the previous name, and Net.line_of scans the text once for
    every layer it is asked about (error messages of a net that is read once)."""
    text = CountingStr(v1_chain_text(n).replace("layers {", "layer {"))
    CountingStr.scanned = 0
    lines = layer_name_lines(text)
    assert CountingStr.scanned <= len(text)
    assert lines[:2] == [("ip1", 8), ("relu2", 15)] and len(lines) == n - 1
    scans = []
    real = prototxt_module.layer_name_lines
    counting = lambda t: scans.append(1) or real(t)  # noqa: E731
    monkeypatch.setattr(prototxt_module, "layer_name_lines", counting)
    monkeypatch.setattr("parity.caffe.graph.layer_name_lines", counting, raising=False)
    net = Net.from_layers("chain", chain_layers(n), text=text)
    CountingStr.scanned = 0
    assert [net.line_of(name) for name, _ in lines] == [line for _, line in lines]
    assert len(scans) <= 1 and CountingStr.scanned <= len(text)


# -- the frozen graph: execution order -------------------------------------------------------------
def _graph(nodes: list[tuple[str, list[str]]]):
    return SimpleNamespace(node=[SimpleNamespace(name=name, input=list(inputs), op="Relu") for name, inputs in nodes])


@pytest.mark.parametrize("n", [2_000, 20_000])
def test_ordering_a_deep_graph_looks_at_each_input_a_bounded_number_of_times(n, monkeypatch):
    """A chain written last op first: the old order rescanned every pending node each round (n^2/2)."""
    nodes = [("x", [])] + [(f"op{i}", [f"op{i - 1}" if i > 1 else "x", f"c{i}", "^x"]) for i in range(1, n)]
    nodes += [(f"c{i}", []) for i in range(1, n)]
    graph = _graph(list(reversed(nodes)))
    calls = []
    real = tfgraph_module.producer
    monkeypatch.setattr(tfgraph_module, "producer", lambda t: calls.append(1) or real(t))
    order = [node.name for node in tfgraph_module.execution_order(graph)]
    # round one: every node without inputs, in file order; then one op of the chain per round
    assert order == [f"c{i}" for i in range(n - 1, 0, -1)] + ["x"] + [f"op{i}" for i in range(1, n)]
    assert len(calls) <= 2 * sum(len(inputs) for _, inputs in nodes)


def test_the_execution_order_is_the_old_one():
    """Random graphs (control inputs, repeated inputs, output indices, repeated names, missing inputs,
    cycles) and the tf_saliency graph: the same order, or the same error."""
    rng = random.Random(12)
    for trial in range(300):
        size = rng.randint(1, 30)
        names = [f"n{i}" for i in range(size)]
        if trial % 7 == 0 and size > 2:
            names[rng.randrange(size)] = names[rng.randrange(size)]  # a repeated name
        nodes = []
        for i, name in enumerate(names):
            pool = names[:i] if trial % 5 else names  # every 5th graph may have cycles
            inputs = [rng.choice(("", "^")) + rng.choice(pool) + rng.choice(("", ":1"))
                      for _ in range(rng.randint(0, 3)) if pool]
            if trial % 11 == 0 and rng.random() < 0.2:
                inputs.append("ghost")
            nodes.append((name, inputs))
        rng.shuffle(nodes)
        graph = _graph(nodes)
        try:
            got = [n.name for n in tfgraph_module.execution_order(graph)]
        except ParityError as exc:
            got = exc.message
        want = old_execution_order(graph)
        assert got == want, (trial, nodes)
    fixture = load_fixture("tf_saliency")
    graph_def = tfgraph_module.read_graph_def(fixture_graph(fixture))
    assert [n.name for n in tfgraph_module.execution_order(graph_def)] == old_execution_order(graph_def)


def test_a_chain_deeper_than_python_s_recursion_limit_still_converts(tmp_path):
    """Keras builds a functional graph recursively, a few frames per layer: parity makes room for the
    net's depth, or a legitimate deep chain ends in RecursionError (a traceback, exit 1)."""
    import sys

    from parity.caffe.graph import Net
    from parity.check.capture import Capture
    from parity.convert import convert_net

    depth = 1200
    lines = ['name: "deep"', 'layer { name: "data" type: "Input" top: "b0" input_param { shape { dim: 1 dim: 2 } } }']
    lines += [f'layer {{ name: "r{i}" type: "ReLU" bottom: "b{i}" top: "b{i + 1}" }}' for i in range(depth)]
    path = tmp_path / "deep.prototxt"
    path.write_text("\n".join(lines))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        converted = convert_net(Net.from_prototxt(path), None)
        capture = Capture(converted, [(f"r{depth - 1}", f"b{depth}")])
    finally:
        sys.setrecursionlimit(old)
    assert len(capture.model.outputs) == 1


def test_recursion_room_raises_the_limit_for_its_duration_only():
    import sys

    from parity.convert import recursion_room

    old = sys.getrecursionlimit()
    with recursion_room(old):  # a graph as deep as the current limit needs more than it
        assert sys.getrecursionlimit() >= 4 * old
    assert sys.getrecursionlimit() == old
