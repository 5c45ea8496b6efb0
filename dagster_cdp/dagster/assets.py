"""Sync assets: one asset per sync, for code-first users (`build_sync_assets`) and for the component."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypedDict, Unpack

import dagster as dg

from dagster_cdp.dagster.checks import rejection_check_result, rejection_check_spec
from dagster_cdp.dagster.definition import check_names
from dagster_cdp.dagster.execution import SyncRunConfig, execute_sync, sync_pool
from dagster_cdp.dagster.metadata import sync_report_metadata
from dagster_cdp.dagster.partitions import sync_partitions_def
from dagster_cdp.dagster.resource import CustomerIOResource
from dagster_cdp.dagster.warehouse import WarehouseResource
from dagster_cdp.sync import SyncDefinition, SyncReport

SyncExecuteFn = Callable[[dg.AssetExecutionContext, SyncRunConfig, CustomerIOResource, WarehouseResource], SyncReport]


def sync_asset_spec(
    definition: SyncDefinition,
    *,
    key: str | dg.AssetKey | None = None,
    deps: Iterable[str | dg.AssetKey | dg.AssetSpec | dg.AssetsDefinition] = (),
    group_name: str = "customerio",
    warehouse_kind: str | None = None,
    automation_condition: dg.AutomationCondition | None = None,
) -> dg.AssetSpec:
    """The default spec of a sync asset: key `cdp_<name>`, kinds `customerio` + the warehouse, its source as dep."""
    kind = definition.mapping.kind
    how = "each row sent once" if definition.send_once else f"{definition.mode} mode"
    sends = "new" if definition.send_once else "changed"
    source = definition.table or "a SQL query"
    return dg.AssetSpec(
        key=dg.AssetKey.from_user_string(key) if isinstance(key, str) else key or dg.AssetKey(f"cdp_{definition.name}"),
        deps=list(deps),
        group_name=group_name,
        kinds={"customerio", *([warehouse_kind] if warehouse_kind else [])},
        automation_condition=automation_condition,
        description=f"Syncs {source} to Customer.io as {kind} ({how}): only {sends} rows are sent.",
        metadata={
            "cdp/sync": definition.name,
            "cdp/source": definition.table or definition.query,
            "cdp/mode": "send_once" if definition.send_once else definition.mode,
        },
        partitions_def=sync_partitions_def(definition),
    )


def build_sync_asset(
    definition: SyncDefinition, *, spec: dg.AssetSpec | None = None, max_rejected_fraction: float = 0.0
) -> dg.AssetsDefinition:
    """One sync asset. It needs the resources `customerio` (CustomerIOResource) and `warehouse` (WarehouseResource).

    .. code-block:: python

        people = SyncDefinition(name="people", table="analytics.people", mapping=People(id_column="user_id"))
        defs = dg.Definitions(
            assets=[build_sync_asset(people, spec=sync_asset_spec(people, deps=["people"]))],
            resources={"customerio": CustomerIOResource(api_key=dg.EnvVar("CDP_API_KEY")),
                       "warehouse": WarehouseResource(url=dg.EnvVar("WAREHOUSE_URL"))},
        )
    """

    def execute(
        context: dg.AssetExecutionContext,
        config: SyncRunConfig,
        customerio: CustomerIOResource,
        warehouse: WarehouseResource,
    ) -> SyncReport:
        return execute_sync(context, definition, customerio=customerio, warehouse=warehouse, config=config)

    return sync_multi_asset(definition, spec or sync_asset_spec(definition), max_rejected_fraction, execute)


class SpecOptions(TypedDict, total=False):
    """The options of `sync_asset_spec` besides the definition."""

    key: str | dg.AssetKey | None
    deps: Iterable[str | dg.AssetKey | dg.AssetSpec | dg.AssetsDefinition]
    group_name: str
    warehouse_kind: str | None
    automation_condition: dg.AutomationCondition | None


def build_sync_assets(
    definitions: Sequence[SyncDefinition], **spec_options: Unpack[SpecOptions]
) -> list[dg.AssetsDefinition]:
    """One asset per sync, each with `sync_asset_spec(definition, **spec_options)`."""
    check_names(definitions)
    return [build_sync_asset(d, spec=sync_asset_spec(d, **spec_options)) for d in definitions]


def sync_multi_asset(
    definition: SyncDefinition, spec: dg.AssetSpec, max_rejected_fraction: float, execute: SyncExecuteFn
) -> dg.AssetsDefinition:
    """The asset around `execute`: run config, resources, concurrency pool, rejection check, metadata.

    A dry run records an observation instead of a materialization: nothing changed in Customer.io.
    The asset can be subset so that a dry run need not yield the check, and so the check alone runs nothing.
    """

    @dg.multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[spec.replace_attributes(skippable=True)],
        check_specs=[rejection_check_spec(spec.key, max_rejected_fraction)],
        pool=sync_pool(definition),
        can_subset=True,
    )
    def _sync(
        context: dg.AssetExecutionContext,
        config: SyncRunConfig,
        customerio: CustomerIOResource,
        warehouse: WarehouseResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
        if spec.key not in context.selected_asset_keys:
            context.log.info(f"{spec.key.to_user_string()} is not selected: the rejection check runs with the sync.")
            return
        report = execute(context, config, customerio, warehouse)
        with_check = bool(context.selected_asset_check_keys)
        yield from sync_events(spec.key, report, max_rejected_fraction if with_check else None)

    return _sync


def sync_events(
    asset_key: dg.AssetKey, report: SyncReport, max_rejected_fraction: float | None
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    """A materialization (with the rejection check unless None) for a real run; an observation for a dry run."""
    metadata = sync_report_metadata(report)
    if report.dry_run:
        yield dg.AssetObservation(asset_key=asset_key, metadata=metadata)
    else:
        checks = (
            [] if max_rejected_fraction is None else [rejection_check_result(asset_key, report, max_rejected_fraction)]
        )
        yield dg.MaterializeResult(asset_key=asset_key, metadata=metadata, check_results=checks)
