"""The package's shape: imports go one way (no cycle among parity's modules), and the packages that
must run without TensorFlow (the Caffe side runs inside the pycaffe environment) neither import it nor
reach it at import."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PARITY = Path(__file__).resolve().parents[1] / "parity"
# The packages that never import TensorFlow or Keras: `parity dump` runs the Caffe side inside the pycaffe
# environment, which has neither; what both sides read and write (data/) must not need them either.
WITHOUT_TENSORFLOW = ["caffe", "data"]
HEAVY = ("tensorflow", "keras")


def module_name(path: Path, root: Path = PARITY.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PARITY.parent) -> set[str]:
    """The modules `path` imports at module level or inside functions (relative ones resolved from `root`)."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PARITY.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's members, found by Tarjan's strongly connected components."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    """A package importing its own modules (parity.convert -> parity.convert.pooling) is not a cycle; two
    modules importing each other, at any depth, is."""
    edges = {m: {d for d in ds if not m.startswith(d + ".") and not d.startswith(m + ".")}
             for m, ds in graph().items()}
    assert cycles(edges) == []


def heavy_imports(folder: Path) -> dict[str, set[str]]:
    """Module file -> the TensorFlow or Keras modules it imports, at module level or inside a function."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        heavy = {m for m in imports_of(path, folder) if m.split(".")[0] in HEAVY}
        if heavy:
            found[path.name] = heavy
    return found


@pytest.mark.parametrize("package", WITHOUT_TENSORFLOW)
def test_the_package_imports_no_tensorflow(package):
    assert heavy_imports(PARITY / package) == {}


def test_a_tensorflow_import_inside_a_function_is_seen(tmp_path):
    """The check above can fail: a module that imports Keras only inside a function is caught."""
    (tmp_path / "fine.py").write_text("import numpy\n")
    (tmp_path / "planted.py").write_text("def build():\n    from keras import layers\n    return layers\n")
    assert heavy_imports(tmp_path) == {"planted.py": {"keras", "keras.layers"}}


# A child interpreter in which importing TensorFlow or Keras fails, as it does in the pycaffe environment.
BLOCKED = """
import importlib, importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {heavy!r}:
            raise ModuleNotFoundError(f"{{name}} is blocked here")
sys.meta_path.insert(0, Blocked())
for module in {modules!r}:
    importlib.import_module(module)
print("loaded")
"""


def load_without_tensorflow(modules: list[str]) -> subprocess.CompletedProcess:
    code = BLOCKED.format(heavy=HEAVY, modules=modules)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PARITY.parent)


@pytest.mark.parametrize("package", WITHOUT_TENSORFLOW)
def test_the_package_loads_where_tensorflow_cannot(package):
    """Every module of the package imports where TensorFlow and Keras cannot: what it reaches through
    other packages (the converters' shape rules, say) must not need them at import either."""
    modules = sorted(module_name(p) for p in (PARITY / package).rglob("*.py"))
    proc = load_without_tensorflow(modules)
    assert proc.returncode == 0 and proc.stdout.strip() == "loaded", proc.stderr[-2000:]


def test_a_module_that_needs_tensorflow_does_not_load_there():
    """...and that check can fail: parity's Keras layers, which subclass keras.layers.Layer, do not load there."""
    proc = load_without_tensorflow(["parity.keras_layers.convolution"])
    assert proc.returncode != 0 and "is blocked here" in proc.stderr
