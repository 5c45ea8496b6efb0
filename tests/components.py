"""Loading a CustomerIOSyncComponent from a real defs.yaml, as `dg` does, for the component tests."""

from __future__ import annotations

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
