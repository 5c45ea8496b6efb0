"""Sync assets: one asset per sync, for code-first users (`build_customerio_sync_assets`) and for the component."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypedDict, Unpack

import dagster as dg

from dagster_cdp.dagster.asset_partitions import sync_partitions_def
from dagster_cdp.dagster.checks import rejection_check_spec
from dagster_cdp.dagster.declared_syncs import check_names
from dagster_cdp.dagster.execution import CustomerIOSyncConfig, sync_pool
from dagster_cdp.dagster.resource import CustomerIOResource
from dagster_cdp.dagster.warehouse import CustomerIOWarehouseResource
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.partitions import partition_name


def customerio_sync_asset_spec(
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
        description=f"Syncs {source} to Customer.io as {kind} ({how}): only {sends} rows are sent. "
        + _history(definition),
        metadata={
            "cdp/sync": definition.name,
            "cdp/source": definition.table or definition.query,
            "cdp/mode": "send_once" if definition.send_once else definition.mode,
        },
        partitions_def=sync_partitions_def(definition),
    )


def _history(definition: SyncDefinition) -> str:
    """Where a sync's runs are recorded: the spec does not know the warehouse resource, so its defaults are named."""
    name, n = definition.name, definition.partitions
    rows = f"sync = '{name}'"
    if n > 1:
        rows = f"sync = '{partition_name(name, 0, n)}' to '{partition_name(name, n - 1, n)}' (one per partition)"
    return (
        "Its runs are recorded in table cdp_runs and the rows it could not sync in cdp_rejections, both in the "
        f"state store (the warehouse resource's state_url database and state_schema, default prefix), where {rows}."
    )


def customerio_sync_asset(
    definition: SyncDefinition,
    *,
    spec: dg.AssetSpec | None = None,
    max_rejected_fraction: float = 0.0,
    required_resource_keys: AbstractSet[str] = frozenset(),
) -> Callable[[Callable[..., Iterator[Any]]], dg.AssetsDefinition]:
    """Decorates a function whose body runs the sync, so work can be added before and after it (as
    `@dlt_assets` and `@sling_assets` do). The asset gets the sync's spec (default `customerio_sync_asset_spec`), its
    rejection check, its concurrency pool and partitions; the body asks for the resources and config it needs
    by parameter (or `required_resource_keys`, read from `context.resources`) and yields what
    `CustomerIOResource.sync` yields.

    .. code-block:: python

        people = SyncDefinition(name="people", table="analytics.people", mapping=People(id_column="user_id"))

        @customerio_sync_asset(people)
        def people_sync(
            context: dg.AssetExecutionContext,
            config: CustomerIOSyncConfig,
            customerio: CustomerIOResource,
            warehouse: CustomerIOWarehouseResource,
        ):
            context.log.info("before the sync")
            yield from customerio.sync(context, people, warehouse=warehouse, config=config)
            context.log.info("after it")
    """
    spec = spec or customerio_sync_asset_spec(definition)

    def decorate(body: Callable[..., Iterator[Any]]) -> dg.AssetsDefinition:
        return dg.multi_asset(
            name=spec.key.to_python_identifier(),
            specs=[spec.replace_attributes(skippable=True)],  # skipped when only the check is selected
            check_specs=[rejection_check_spec(spec.key, max_rejected_fraction)],
            pool=sync_pool(definition),
            can_subset=True,
            required_resource_keys=set(required_resource_keys),
        )(body)

    return decorate


def build_customerio_sync_asset(
    definition: SyncDefinition, *, spec: dg.AssetSpec | None = None, max_rejected_fraction: float = 0.0
) -> dg.AssetsDefinition:
    """One sync asset. It needs the resources `customerio` (CustomerIOResource) and `warehouse`
    (CustomerIOWarehouseResource).

    .. code-block:: python

        people = SyncDefinition(name="people", table="analytics.people", mapping=People(id_column="user_id"))
        defs = dg.Definitions(
            assets=[build_customerio_sync_asset(people, spec=customerio_sync_asset_spec(people, deps=["people"]))],
            resources={"customerio": CustomerIOResource(api_key=dg.EnvVar("CDP_API_KEY")),
                       "warehouse": CustomerIOWarehouseResource(url=dg.EnvVar("WAREHOUSE_URL"))},
        )
    """

    @customerio_sync_asset(definition, spec=spec, max_rejected_fraction=max_rejected_fraction)
    def _sync(
        context: dg.AssetExecutionContext,
        config: CustomerIOSyncConfig,
        customerio: CustomerIOResource,
        warehouse: CustomerIOWarehouseResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
        yield from customerio.sync(context, definition, warehouse=warehouse, config=config)

    return _sync


class SpecOptions(TypedDict, total=False):
    """The options of `customerio_sync_asset_spec` besides the definition."""

    key: str | dg.AssetKey | None
    deps: Iterable[str | dg.AssetKey | dg.AssetSpec | dg.AssetsDefinition]
    group_name: str
    warehouse_kind: str | None
    automation_condition: dg.AutomationCondition | None


def build_customerio_sync_assets(
    definitions: Sequence[SyncDefinition],
    *,
    translation: Callable[[dg.AssetSpec, SyncDefinition], dg.AssetSpec] | None = None,
    **spec_options: Unpack[SpecOptions],
) -> list[dg.AssetsDefinition]:
    """One asset per sync, each with `customerio_sync_asset_spec(definition, **spec_options)`, then `translation`
    (the spec and the sync in, the spec out, as the component's and `build_customerio_dbt_sync_assets`'
    translations), e.g. ``translation=lambda spec, sync: spec.replace_attributes(owners=["team:crm"])``."""
    check_names(definitions)
    specs = [customerio_sync_asset_spec(d, **spec_options) for d in definitions]
    if translation:
        specs = [translation(spec, d) for spec, d in zip(specs, definitions, strict=True)]
    return [build_customerio_sync_asset(d, spec=spec) for d, spec in zip(definitions, specs, strict=True)]
