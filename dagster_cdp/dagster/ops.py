"""Syncs as ops and a job, for op-style pipelines that do not use assets."""

import re
from collections.abc import Sequence

import dagster as dg

from dagster_cdp.dagster.declared_syncs import check_names
from dagster_cdp.dagster.execution import CustomerIOSyncConfig, execute_sync, sync_pool
from dagster_cdp.dagster.metadata import sync_report_metadata
from dagster_cdp.dagster.resource import CustomerIOResource
from dagster_cdp.dagster.warehouse import CustomerIOWarehouseResource
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.report import SyncReport


def build_customerio_sync_op(definition: SyncDefinition, *, name: str | None = None) -> dg.OpDefinition:
    """An op running one sync (resources `customerio` and `warehouse`); its output is the SyncReport."""

    @dg.op(
        name=name or f"cdp_sync_{re.sub(r'[^0-9A-Za-z_]', '_', definition.name)}",
        pool=sync_pool(definition),
        description=f"Syncs {definition.table or 'a SQL query'} to Customer.io as {definition.mapping.kind}.",
        out=dg.Out(SyncReport),
    )
    def _sync(
        context: dg.OpExecutionContext,
        config: CustomerIOSyncConfig,
        customerio: CustomerIOResource,
        warehouse: CustomerIOWarehouseResource,
    ) -> dg.Output:
        report = execute_sync(context, definition, customerio=customerio, warehouse=warehouse, config=config)
        return dg.Output(report, metadata=sync_report_metadata(report))

    return _sync


def build_customerio_sync_job(
    definitions: Sequence[SyncDefinition], *, name: str = "cdp_sync_job", description: str | None = None
) -> dg.JobDefinition:
    """A job running the given syncs, independent of each other."""
    check_names(definitions)
    return dg.GraphDefinition(
        name=name,
        node_defs=[build_customerio_sync_op(definition) for definition in definitions],
        description=description or "Sends what changed in the warehouse to Customer.io.",
    ).to_job()
