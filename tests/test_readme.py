"""The README's promises that code can check: the supported-layer table, the Quick start and the map of
the package in "How it works"."""
from __future__ import annotations

import re
from pathlib import Path

from parity.convert import supported_types

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def table_after(heading: str) -> list[list[str]]:
    section = README.split(heading, 1)[1]
    rows = re.findall(r"^\|(.+)\|\s*$", section.split("\n\n", 2)[1], flags=re.M)
    return [[cell.strip() for cell in row.split("|")] for row in rows[2:]]  # skip header and rule


def test_supported_layer_table_matches_the_registry():
    listed = {name.strip() for row in table_after("### Caffe semantics reproduced") for name in row[0].split(",")}
    assert listed == set(supported_types())


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    block = README.split("## Quick start", 1)[1].split("```")[1].strip().splitlines()
    assert block == ["pip install -e . && parity check --model vgg19", "pip install -e '.[test]' && pytest -n auto"]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert block[1] in ci


def listed_paths(block: str, root: str = "parity/") -> dict[str, str]:
    """The "How it works" listing's entries below `root` as path -> description; two spaces per level."""
    entries, stack = {}, []
    lines = block.splitlines()
    at = lines.index(root)
    for line in lines[at + 1:]:
        if not line.startswith("  "):
            break
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name, _, description = line.strip().partition("  ")
        stack[depth - 1:] = [name]
        entries[root + "".join(stack)] = description.strip()
    return entries


def package_files(package: Path) -> set[str]:
    """What the listing must name: every folder (its __init__.py is the folder's line), every other module,
    and the schema."""
    found = set()
    for path in package.rglob("*"):
        if "__pycache__" in path.parts or path.name == "__init__.py":
            continue
        if path.is_dir() or path.suffix in (".py", ".proto"):
            found.add(path.relative_to(package.parent).as_posix() + ("/" if path.is_dir() else ""))
    return found


def how_it_works() -> str:
    return README.split("## How it works", 1)[1].split("```")[1]


def test_how_it_works_is_the_folder_listing_one_line_per_module():
    listed = listed_paths(how_it_works())
    assert set(listed) == package_files(REPO / "parity") | {"parity/__init__.py"}
    assert all(listed.values()), [p for p, d in listed.items() if not d]  # each line says what the module is for


def test_the_listing_check_sees_a_module_left_out(tmp_path):
    """...and it can fail: a module missing from a listing, or a line for a module that is gone, differ."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for name in ("pkg/__init__.py", "pkg/a.py", "pkg/sub/__init__.py", "pkg/sub/b.py"):
        (tmp_path / name).write_text("")
    block = "pkg/\n  a.py      one\n  sub/      two\n    b.py    three\nother/\n"
    assert set(listed_paths(block, "pkg/")) == package_files(tmp_path / "pkg")
    (tmp_path / "pkg" / "c.py").write_text("")
    assert set(listed_paths(block, "pkg/")) != package_files(tmp_path / "pkg")
    assert "pkg/sub/b.py" in listed_paths(block, "pkg/") and "pkg/b.py" not in listed_paths(block, "pkg/")
