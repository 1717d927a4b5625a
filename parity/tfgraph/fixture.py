"""A tensorflow-graph fixture's frozen graph, built by the fixture's own builder into the ignored cache.

Apart from parity.caffe.fixtures so that reading fixtures needs no TensorFlow (the Caffe side reads them too)."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def fixture_graph(fixture, quiet: bool = False) -> Path:
    """The fixture's frozen graph (.pb) in the cache, built on first use; its name carries the sha256 of
    the builder's source, its settings and TensorFlow's version, so a change to any of them rebuilds it."""
    import tensorflow as tf

    from ..caffe.fixtures import built_once, cache_dir

    spec = fixture.description["graph"]
    builder = fixture.code_spec(spec["builder"])
    source = Path(builder.rpartition(":")[0]).read_bytes()
    key = hashlib.sha256(source + json.dumps([spec, tf.__version__]).encode()).hexdigest()[:16]
    path = cache_dir() / "graphs" / f"{fixture.name.replace('/', '_')}-{key}.pb"
    return built_once(path, lambda p: _build(p, fixture.name, builder, int(spec.get("seed", 0)), quiet))


def _build(path: Path, name: str, builder: str, seed: int, quiet: bool) -> None:
    from ..atomic import atomic_path
    from ..user_modules import load_builder

    if not quiet:
        print(f"parity: building {name}'s graph into {path} ...", file=sys.stderr, flush=True)
    graph_def = load_builder(builder, model=False)(seed)
    with atomic_path(path) as stage:
        stage.write_bytes(graph_def.SerializeToString(deterministic=True))
