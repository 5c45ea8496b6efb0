"""The Dagster layer of dagster-cdp: resources, sync assets, the component, ops, dbt, schedules."""

from dagster_cdp.dagster.assets import build_sync_asset, build_sync_assets, cdp_sync_asset, sync_asset_spec
from dagster_cdp.dagster.automation import build_sync_schedule, sync_automation_condition
from dagster_cdp.dagster.component import CustomerIOSyncComponent
from dagster_cdp.dagster.execution import SyncRunConfig
from dagster_cdp.dagster.ops import build_sync_job, build_sync_op
from dagster_cdp.dagster.resource import CustomerIOResource
from dagster_cdp.dagster.warehouse import WarehouseResource, warehouse_kind

__all__ = [
    "CustomerIOResource",
    "CustomerIOSyncComponent",
    "SyncRunConfig",
    "WarehouseResource",
    "build_sync_asset",
    "build_sync_assets",
    "build_sync_job",
    "build_sync_op",
    "build_sync_schedule",
    "cdp_sync_asset",
    "sync_asset_spec",
    "sync_automation_condition",
    "warehouse_kind",
]
