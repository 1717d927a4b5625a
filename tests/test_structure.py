"""The package's shape: imports go one way (no cycle among parity's modules), and the Caffe side, which
runs inside the pycaffe environment, imports no TensorFlow or Keras."""
from __future__ import annotations

import ast
from pathlib import Path

PARITY = Path(__file__).resolve().parents[1] / "parity"
# What `parity dump` loads inside the pycaffe venv (no TensorFlow there): the reading, shapes and Caffe runs.
CAFFE_SIDE = ["graph.py", "shapes.py", "reading", "schema", "dump.py", "recipes.py", "caffe_child.py", "blas.py",
              "preprocess.py", "reference.py", "layout.py", "atomic.py", "errors.py", "remote.py"]  # fixtures.py builds
# a TensorFlow fixture's graph inside a function, for that kind only


def module_name(path: Path) -> str:
    parts = path.relative_to(PARITY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The parity modules `path` imports at module level or inside functions (relative ones resolved)."""
    package = module_name(path).split(".")
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


def test_the_caffe_side_imports_no_tensorflow():
    for entry in CAFFE_SIDE:
        paths = [PARITY / entry] if entry.endswith(".py") else sorted((PARITY / entry).rglob("*.py"))
        for path in paths:
            heavy = {m for m in imports_of(path) if m.split(".")[0] in ("tensorflow", "keras")}
            assert not heavy, (path.name, heavy)
