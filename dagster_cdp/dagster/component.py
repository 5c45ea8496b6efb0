"""`CustomerIOSyncComponent`: syncs declared in a `defs.yaml`, one asset each.

.. code-block:: yaml

    type: dagster_cdp.CustomerIOSyncComponent
    attributes:
      customerio:
        api_key: "{{ env.CDP_API_KEY }}"
      warehouse:
        url: "{{ env.WAREHOUSE_URL }}"
      syncs:
        - name: people
          kind: people
          table: analytics.people
          id: user_id
          deps: [people]

`customerio` and `warehouse` configure the resources here; left out, the assets need the Dagster
resources `customerio` (CustomerIOResource) and `warehouse` (CustomerIOWarehouseResource) given in Python, which
also win when both are present (see `component_resources`). Its JSON schema lists each kind's fields (for
editors and `dg check yaml`); `dg scaffold defs` writes a commented starting defs.yaml.
Subclass and override `get_asset_spec` or `execute` to change how syncs look or run.
"""

from collections.abc import Iterator
from typing import Annotated, Any

import dagster as dg
from dagster.components.resolved.errors import ResolutionException
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver
from pydantic import Field

from dagster_cdp.dagster.assets import customerio_sync_asset, customerio_sync_asset_spec
from dagster_cdp.dagster.component_resources import resource_resolver, run_resource
from dagster_cdp.dagster.component_scaffold import CustomerIOSyncScaffolder
from dagster_cdp.dagster.declared_syncs import (
    InvalidSyncError,
    SyncModel,
    declarations_json_schema,
    name_clash,
    parse_sync,
)
from dagster_cdp.dagster.execution import CustomerIOSyncConfig, execute_sync, sync_step
from dagster_cdp.dagster.resource import CustomerIOResource
from dagster_cdp.dagster.translation import translated_spec
from dagster_cdp.dagster.warehouse import CustomerIOWarehouseResource, warehouse_kind
from dagster_cdp.sync.report import SyncReport


def _resolve_syncs(context: dg.ResolutionContext, value: Any) -> list[SyncModel]:
    """Validates each sync here, so an error points at the offending line of defs.yaml."""
    value = value if isinstance(value, list) else context.resolve_value(value)  # e.g. "{{ my_syncs }}"
    raw = [_resolved_but_translation(context, item) for item in value] if isinstance(value, list) else value
    if not isinstance(raw, list):
        raise _located(context, [], "syncs must be a list of syncs, each with `name`, `kind` and `table` or `query`")
    syncs: list[SyncModel] = []
    for index, item in enumerate(raw):
        try:
            syncs.append(parse_sync(item))
        except InvalidSyncError as e:
            path, message = e.problems[0]
            others = "".join(f"; also {'.'.join(map(str, p))}: {m}" for p, m in e.problems[1:])
            raise _located(context, [index, *path], f"{message}{others}") from None
    if clash := name_clash([sync.name for sync in syncs]):
        raise _located(context, [clash[0], "name"], clash[1])
    return syncs


def _resolved_but_translation(context: dg.ResolutionContext, item: Any) -> Any:
    """A sync with its templates rendered, but for its `translation`, rendered per sync with `{{ sync.* }}`."""
    if not isinstance(item, dict):
        return context.resolve_value(item)
    return {key: raw if key == "translation" else context.resolve_value(raw) for key, raw in item.items()}


def _located(context: dg.ResolutionContext, path: list[str | int], message: str) -> ResolutionException:
    full_path = [*context.path, *path]
    if context.source_position_tree is None:
        return ResolutionException(f"{'.'.join(map(str, full_path))}: {message}")
    source = context.source_position_tree.source_error(
        yaml_path=full_path, inline_error_message=message, value_error=True
    )
    return ResolutionException(
        f"{source.file_name}:{source.start_line_no} - {source.location}: {message}\n{source.snippet}"
    )


def _publish_declarations(schema: dict[str, Any]) -> None:
    """Publishes each kind's fields as the schema of `syncs` (what editors and `dg check yaml` read)."""
    description = schema.get("description")
    schema.clear()
    schema.update(declarations_json_schema(), description=description)


@dg.scaffold_with(CustomerIOSyncScaffolder)
class CustomerIOSyncComponent(dg.Component, dg.Model, dg.Resolvable):
    """Warehouse tables or queries kept in sync with Customer.io: one asset per sync, sending only changes."""

    syncs: Annotated[
        list[SyncModel],
        dg.Resolver(
            _resolve_syncs,
            model_field_type=list[dict[str, Any]],  # validated by `_resolve_syncs`, which locates errors in defs.yaml
            description="Syncs, one per table or query; `kind` says what the rows are and which fields apply.",
        ),
    ] = Field(json_schema_extra=_publish_declarations)
    customerio: Annotated[CustomerIOResource | None, resource_resolver("customerio", CustomerIOResource)] = None
    warehouse: Annotated[
        CustomerIOWarehouseResource | None, resource_resolver("warehouse", CustomerIOWarehouseResource)
    ] = None
    group_name: str = Field("customerio", description="Asset group of the sync assets.")
    warehouse_kind: str | None = Field(
        None, description="Kind tag for the warehouse, e.g. postgres, snowflake, duckdb; default: `warehouse.url`'s."
    )
    # As in Dagster's own components (dagster-dbt's `translation`): asset attributes for every sync, templated
    # with `{{ sync.name }}`, `{{ sync.kind }}`, ... and `{{ spec }}` (the asset spec before translation).
    translation: Annotated[
        TranslationFn[SyncModel] | None,
        TranslationFnResolver[SyncModel](template_vars_for_translation_fn=lambda sync: {"sync": sync.declared()}),
    ] = None

    def get_asset_spec(self, sync: SyncModel) -> dg.AssetSpec:
        """The asset spec of one sync, with the component's `translation`, then the sync's own, applied; override to
        change it in Python."""
        spec = customerio_sync_asset_spec(
            sync.to_definition(),
            key=sync.asset_key,
            deps=[dg.AssetKey.from_user_string(dep) for dep in sync.deps],
            group_name=self.group_name,
            warehouse_kind=self.warehouse_kind or (warehouse_kind(self.warehouse.url) if self.warehouse else None),
        )
        return translated_spec(self.translation(spec, sync) if self.translation else spec, sync)

    def execute(
        self,
        context: dg.AssetExecutionContext,
        sync: SyncModel,
        config: CustomerIOSyncConfig,
        customerio: CustomerIOResource,
        warehouse: CustomerIOWarehouseResource,
    ) -> SyncReport:
        """Runs one sync; override to add work around it."""
        return execute_sync(context, sync.to_definition(), customerio=customerio, warehouse=warehouse, config=config)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(assets=[self._build_asset(sync) for sync in self.syncs])

    def _build_asset(self, sync: SyncModel) -> dg.AssetsDefinition:
        definition = sync.to_definition()
        python_resources = {key for key in ("customerio", "warehouse") if getattr(self, key) is None}

        @customerio_sync_asset(
            definition,
            spec=self.get_asset_spec(sync),
            max_rejected_fraction=sync.max_rejected_fraction,
            required_resource_keys=python_resources,
        )
        def _sync(
            context: dg.AssetExecutionContext, config: CustomerIOSyncConfig
        ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
            with (
                run_resource(context, "customerio", self.customerio, CustomerIOResource) as customerio,
                run_resource(context, "warehouse", self.warehouse, CustomerIOWarehouseResource) as warehouse,
            ):
                yield from sync_step(context, lambda: self.execute(context, sync, config, customerio, warehouse))

        return _sync
