"""The README's promises that code can check: the supported-layer table and the Quick start."""
from __future__ import annotations

import re
from pathlib import Path

from parity.convert import supported_types

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


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
