"""Loading a CustomerIOSyncComponent from a real defs.yaml, as `dg` does, for the component tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.testing import create_defs_folder_sandbox


def load_defs_yaml(defs_yaml: str) -> dg.Definitions:
    """The definitions a defs.yaml with this text builds, in a sandboxed defs folder."""
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.defs_folder_path / "customerio"
        path.mkdir()
        (path / "defs.yaml").write_text(defs_yaml)
        with sandbox.build_component_tree() as tree:
            return tree.build_defs(path)


def load_error(defs_yaml: str) -> str:
    """Every message in the chain of the error that loading this defs.yaml raises."""
    with pytest.raises(Exception) as raised:
        load_defs_yaml(defs_yaml)
    error: BaseException | None = raised.value
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


REPO = Path(__file__).resolve().parents[1]


def dg_project(tmp_path: Path, defs_yaml: str | None = None) -> Path:
    """A minimal dg project (package `cdp_project`, its definitions.py as `dg scaffold project` writes it) with,
    if given, defs/customerio/defs.yaml."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "cdp-project"\nversion = "0.1.0"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "cdp_project"\n'
    )
    defs = tmp_path / "src" / "cdp_project" / "defs"
    defs.mkdir(parents=True)
    (defs.parent / "__init__.py").write_text("")
    (defs.parent / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs() -> dg.Definitions:\n"
        "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n"
    )
    (defs / "__init__.py").write_text("")
    if defs_yaml is not None:
        (defs / "customerio").mkdir()
        (defs / "customerio" / "defs.yaml").write_text(defs_yaml)
    return tmp_path


def dg_cli(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the `dg` CLI of this environment in the project (extra environment variables in `env`)."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(REPO), str(project / "src")]),
           "DAGSTER_HOME": str(project)}
    return subprocess.run([str(Path(sys.executable).with_name("dg")), *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
