"""Syncs declared on dbt models (`meta: {cdp: {kind: people, id: user_id}}`), built as assets downstream of them.

.. code-block:: yaml

    models:
      - name: people
        config:
          meta:
            cdp: {kind: people, id: user_id}    # or a list of syncs

The sync's name defaults to the model's name, its table to the model's `schema.alias`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
from dagster_dbt import get_asset_key_for_model
from dagster_dbt.asset_utils import get_manifest_and_translator_from_dbt_assets

from dagster_cdp.dagster.assets import build_customerio_sync_asset, customerio_sync_asset_spec
from dagster_cdp.dagster.automation import customerio_sync_automation_condition
from dagster_cdp.dagster.declared_syncs import InvalidSyncError, SyncModel, name_clash, parse_sync
from dagster_cdp.dagster.translation import translated_spec


def dbt_declared_syncs(manifest: dict[str, Any]) -> list[tuple[str, SyncModel]]:
    """(model name, sync) for every sync declared in `meta.cdp` of a dbt model, seed or snapshot."""
    found: list[tuple[str, SyncModel]] = []
    for node in sorted(manifest["nodes"].values(), key=lambda n: n["unique_id"]):
        meta = node.get("config", {}).get("meta") or node.get("meta") or {}
        declared = meta.get("cdp")
        if declared is None or node.get("resource_type") not in ("model", "seed", "snapshot"):
            continue
        for index, raw in enumerate(declared if isinstance(declared, list) else [declared]):
            found.append((node["name"], _parse(node, index if isinstance(declared, list) else None, raw)))
    if clash := name_clash([sync.name for _, sync in found]):
        index, problem = clash
        models = sorted({model for model, sync in found if sync.name.casefold() == found[index][1].name.casefold()})
        raise InvalidSyncError([((f"dbt models {', '.join(models)}", "meta", "cdp", "name"), problem)])
    return found


def _parse(node: dict[str, Any], index: int | None, raw: Any) -> SyncModel:
    where: tuple[str | int, ...] = (f"dbt model {node['name']} ({node['original_file_path']})", "meta", "cdp")
    where += (index,) if index is not None else ()
    if not isinstance(raw, dict):
        raise InvalidSyncError([(where, f"must be a mapping such as {{kind: people, id: user_id}}, got {raw!r}")])
    defaults = {"name": node["name"]}
    if "query" not in raw:
        defaults["table"] = f"{node['schema']}.{node['alias']}"
    try:
        return parse_sync({**defaults, **raw})
    except InvalidSyncError as e:
        raise InvalidSyncError([((*where, *path), message) for path, message in e.problems]) from None


def build_customerio_dbt_sync_assets(
    dbt_assets: dg.AssetsDefinition,
    *,
    group_name: str = "customerio",
    warehouse_kind: str | None = None,
    automation_condition: dg.AutomationCondition | None = customerio_sync_automation_condition(),  # noqa: B008  (immutable: one shared value is safe)
    translation: Callable[[dg.AssetSpec, SyncModel], dg.AssetSpec] | None = None,
) -> list[dg.AssetsDefinition]:
    """A sync asset for every `meta.cdp` in the project behind `dbt_assets`, downstream of its model.

    By default each runs after its model updates (`customerio_sync_automation_condition()`); pass None to turn that off.
    `translation` changes each sync's asset spec as the component's `translation` block does (it gets the spec
    and the declared sync), e.g. ``lambda spec, sync: spec.replace_attributes(owners=["team:crm"])``; a sync's
    own `translation` in `meta.cdp` applies after it.
    """
    manifest, _, _ = get_manifest_and_translator_from_dbt_assets([dbt_assets])
    assets = []
    for model, sync in dbt_declared_syncs(dict(manifest)):
        definition = sync.to_definition()
        spec = customerio_sync_asset_spec(
            definition,
            key=sync.asset_key,
            deps=[get_asset_key_for_model([dbt_assets], model), *map(dg.AssetKey.from_user_string, sync.deps)],
            group_name=group_name,
            warehouse_kind=warehouse_kind or _dbt_adapter(manifest),
            automation_condition=automation_condition,
        )
        spec = translated_spec(translation(spec, sync) if translation else spec, sync)
        assets.append(
            build_customerio_sync_asset(definition, spec=spec, max_rejected_fraction=sync.max_rejected_fraction)
        )
    return assets


def _dbt_adapter(manifest: Any) -> str | None:
    return manifest.get("metadata", {}).get("adapter_type")
