"""The layers of docs/architecture.md hold on the tree, and the check catches what breaks them."""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.support.layering import layer_of, layer_order, violations

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
LAYERS = layer_order(ARCHITECTURE)


def test_the_tree_has_no_import_against_the_layers() -> None:
    assert violations(ROOT, LAYERS) == []


def test_every_shipped_package_has_a_layer_and_the_sandbox_is_not_shipped() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    tops = {pattern.rstrip("*") for pattern in include}
    assert all(layer_of(top, LAYERS) is not None for top in tops), tops
    assert {name.split(".")[0] for name in LAYERS} == tops
    assert not any(fnmatch.fnmatch("sandbox", pattern) for pattern in include)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the runtime packages, the sandbox and the architecture document."""
    for name in {layer.split(".")[0] for layer in LAYERS} | {"sandbox"}:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "docs").mkdir()
    shutil.copy2(ARCHITECTURE, tmp_path / "docs" / "architecture.md")
    return tmp_path  # as clean as the tree itself (the first test)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_an_import_of_a_higher_layer_is_caught(tree: Path) -> None:
    _append(tree / "store" / "events.py", "\nfrom cluster.keys import CHANGES_STREAM\n")
    (found,) = violations(tree, LAYERS)
    assert found.startswith("store/events.py:")
    assert found.endswith(
        "store.events (store) imports cluster.keys.CHANGES_STREAM (cluster, a higher layer)"
    )


def test_an_import_inside_a_function_counts_too(tree: Path) -> None:
    _append(tree / "actors" / "cell.py", "\n\ndef _late() -> None:\n    import actors.account\n")
    (found,) = violations(tree, LAYERS)
    assert "actors.cell (actors) imports actors.account (actors.account, a higher layer)" in found


def test_a_relative_import_is_resolved(tree: Path) -> None:
    _append(tree / "providers" / "google" / "mapping.py", "\nfrom ...store import db\n")
    (found,) = violations(tree, LAYERS)
    assert "providers.google.mapping (providers) imports store.db (store" in found


def test_nothing_imports_the_process(tree: Path) -> None:
    _append(tree / "gateway" / "app.py", "\nimport supervisor.cli\n")
    (found,) = violations(tree, LAYERS)
    assert "gateway.app (gateway) imports supervisor.cli (supervisor, a higher layer)" in found


def test_the_sandbox_is_reached_only_lazily_and_only_by_the_process(tree: Path) -> None:
    _append(tree / "providers" / "http.py", "\n\ndef _f() -> None:\n    import sandbox.embedded\n")
    _append(tree / "supervisor" / "replica.py", "\nimport sandbox.faults\n")
    assert [line.split(": ", 1)[1] for line in violations(tree, LAYERS)] == [
        "providers.http imports the sandbox (sandbox.embedded)",
        "supervisor.replica imports the sandbox at module level",
    ]


def test_the_sandbox_imports_no_test(tree: Path) -> None:
    _append(tree / "sandbox" / "faults.py", "\nfrom tests.conftest import SCHEMA\n")
    (found,) = violations(tree, LAYERS)
    assert found.endswith("the sandbox imports tests.conftest.SCHEMA")


def test_a_type_only_import_of_a_higher_layer_counts_too(tree: Path) -> None:
    _append(
        tree / "store" / "db.py",
        "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cluster.keys\n",
    )
    (found,) = violations(tree, LAYERS)
    assert "store.db (store) imports cluster.keys (cluster, a higher layer)" in found
