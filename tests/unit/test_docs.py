"""The README is the manual: it must show the commands, settings and CLI that exist."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from engram.cli import app
from engram.config import Limits, MinerConfig, StoreConfig

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_docs_readme_shows_the_ci_test_command() -> None:
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci and ci[-1] in README
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block


@pytest.mark.parametrize("cls", [MinerConfig, StoreConfig, Limits])
def test_docs_every_setting_is_documented(cls: type) -> None:
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    if cls is MinerConfig:
        for f in dataclasses.fields(cls):
            assert f"ENGRAM_{f.name.upper()}" in README, f"README lacks ENGRAM_{f.name.upper()}"


def test_docs_every_cli_command_is_in_the_readme() -> None:
    group = typer.main.get_group(app)
    for name in group.commands:
        assert re.search(rf"engram {name}\b", README), f"README never shows `engram {name}`"


def test_docs_code_is_ruff_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_readme_layout_map_matches_the_tree() -> None:
    """Every folder the README's layout map names exists, and every package is named."""
    block = README.split("## Development", 1)[1].split("```", 2)[1]
    named = {line.split()[0].rstrip("/") for line in block.splitlines() if line.strip()}
    for folder in named:
        assert (ROOT / folder).is_dir() or (ROOT / "engram" / folder).is_dir(), folder
    packages = {p.parent.name for p in (ROOT / "engram").glob("*/__init__.py")}
    missing = packages - named
    assert not missing, f"the README's layout map lacks engram/{sorted(missing)}"


def test_docs_no_docstring_cites_a_document_the_repository_lacks() -> None:
    for path in [
        *ROOT.glob("engram/**/*.py"),
        *ROOT.glob("bench/*.py"),
        *ROOT.glob("tests/**/*.py"),
    ]:
        text = path.read_text()
        for cited in re.findall(r"\b((?:docs/)?[A-Z][A-Z_]+\.md|docs/[a-z_]+\.md)\b", text):
            assert (ROOT / cited).exists(), f"{path.relative_to(ROOT)} cites {cited}"
        cites = re.search(r"DESIGN §\d+", text)
        assert cites is None, f"{path.relative_to(ROOT)} cites {cites and cites[0]}, not shipped"
