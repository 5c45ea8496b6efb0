"""The public surface: every public name is imported from `dagster_cdp`, typed for checkers, exported nowhere else,
and the Dagster layer's names carry the integration's name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import dagster_cdp

PUBLIC = set(dagster_cdp.__all__) - {"__version__"}


def test_every_public_name_is_typed_for_checkers_and_loads() -> None:
    tree = ast.parse(Path(dagster_cdp.__file__).read_text())
    typed = {alias.asname for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             for alias in node.names if alias.asname}
    assert typed == PUBLIC  # the TYPE_CHECKING imports and the names loaded on first use agree
    for name in PUBLIC:
        assert getattr(dagster_cdp, name).__name__ == name


def test_subpackages_export_nothing_of_their_own() -> None:
    for package in ("dagster_cdp.sync", "dagster_cdp.dagster", "dagster_cdp.emulator"):
        assert not PUBLIC & set(vars(importlib.import_module(package))), package


def test_dagster_names_carry_the_integration_name() -> None:
    dagster_names = {name for name in PUBLIC if getattr(dagster_cdp, name).__module__.startswith("dagster_cdp.dagster")}
    assert len(dagster_names) == 13
    assert all("customerio" in name.lower() for name in dagster_names), dagster_names


def test_module_names_are_unique() -> None:
    names = [path.name for path in Path(dagster_cdp.__file__).parent.rglob("*.py") if path.name != "__init__.py"]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
