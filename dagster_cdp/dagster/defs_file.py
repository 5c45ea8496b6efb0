"""The syncs a `CustomerIOSyncComponent`'s defs.yaml declares, read without Dagster running (`dagster-cdp explain`
and `plan`): validated and templated (`{{ env.* }}`) by the component's own resolution, as `dg` loads the file,
with errors located in it the same way."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import pydantic
import yaml  # type: ignore[import-untyped]  # PyYAML, which Dagster parses defs.yaml with, ships no types
from dagster.components.resolved.context import ResolutionContext
from dagster.components.resolved.errors import ResolutionException
from dagster_shared.yaml_utils import parse_yamls_with_source_position

from dagster_cdp.dagster.component import CustomerIOSyncComponent
from dagster_cdp.dagster.warehouse import CustomerIOWarehouseResource
from dagster_cdp.errors import CdpError
from dagster_cdp.sync.definition import SyncDefinition


class DefsFileError(CdpError):
    """A defs.yaml cannot be read, or declares no valid CustomerIOSyncComponent."""


@dataclass(frozen=True)
class DefsFile:
    path: Path
    syncs: list[SyncDefinition]
    warehouse: CustomerIOWarehouseResource | None  # its `warehouse:` block, when it has one and it was asked for


def read_defs_file(path: Path, *, warehouse: bool) -> DefsFile:
    """The syncs of every CustomerIOSyncComponent in the file and, if `warehouse`, its `warehouse:` block. Its
    `customerio:` block is never rendered (nothing here sends, so its key need not be set), nor `warehouse:` unless
    asked for (a warehouse given otherwise wins, and its variables need not be set)."""
    try:
        documents = parse_yamls_with_source_position(path.read_text(), filename=str(path))
    except (OSError, yaml.YAMLError) as e:
        raise DefsFileError(f"Cannot read {path}: {' '.join(str(e).split())}") from None
    syncs: list[SyncDefinition] = []
    resources = []
    for document in documents:
        if not isinstance(document.value, dict) or not _is_ours(document.value.get("type")):
            continue
        attributes = dict(document.value.get("attributes") or {})
        attributes.pop("customerio", None)
        if not warehouse:
            attributes.pop("warehouse", None)
        context = ResolutionContext.default(document.source_position_tree).at_path("attributes")
        try:
            model = CustomerIOSyncComponent.model().model_validate(attributes)
            component = CustomerIOSyncComponent.resolve_from_model(context, model)
        except ResolutionException as e:
            raise DefsFileError(f"{path}: {str(e).strip().splitlines()[0]}") from None
        except pydantic.ValidationError as e:
            problems = "; ".join(f"attributes.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise DefsFileError(f"{path}: {problems}") from None
        syncs += [sync.to_definition() for sync in component.syncs]
        resources.append(component.warehouse)
    if not syncs:
        raise DefsFileError(
            f"{path} declares no syncs: dagster-cdp reads a defs.yaml of `type: dagster_cdp.CustomerIOSyncComponent` "
            "with `attributes: syncs: [...]`."
        )
    return DefsFile(path, syncs, next((r for r in resources if r is not None), None))


def _is_ours(type_name: object) -> bool:
    """Whether a component's `type` names CustomerIOSyncComponent (or a subclass of it)."""
    if not isinstance(type_name, str) or "." not in type_name:
        return False
    module, _, name = type_name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(found, type) and issubclass(found, CustomerIOSyncComponent)
