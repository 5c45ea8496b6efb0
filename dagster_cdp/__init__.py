"""dagster-cdp: keep Customer.io in sync with your SQL warehouse, orchestrated by Dagster.

Every public name is exported here, loaded on first use: importing `dagster_cdp` imports neither Dagster
nor a database driver, and the client, the emulator and the engine never import Dagster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster_cdp.client import PipelinesClient as PipelinesClient
    from dagster_cdp.dagster.assets import build_customerio_sync_asset as build_customerio_sync_asset
    from dagster_cdp.dagster.assets import build_customerio_sync_assets as build_customerio_sync_assets
    from dagster_cdp.dagster.assets import customerio_sync_asset as customerio_sync_asset
    from dagster_cdp.dagster.assets import customerio_sync_asset_spec as customerio_sync_asset_spec
    from dagster_cdp.dagster.automation import build_customerio_sync_schedule as build_customerio_sync_schedule
    from dagster_cdp.dagster.automation import (
        customerio_sync_automation_condition as customerio_sync_automation_condition,
    )
    from dagster_cdp.dagster.component import CustomerIOSyncComponent as CustomerIOSyncComponent
    from dagster_cdp.dagster.dbt import build_customerio_dbt_sync_assets as build_customerio_dbt_sync_assets
    from dagster_cdp.dagster.execution import CustomerIOSyncConfig as CustomerIOSyncConfig
    from dagster_cdp.dagster.ops import build_customerio_sync_job as build_customerio_sync_job
    from dagster_cdp.dagster.ops import build_customerio_sync_op as build_customerio_sync_op
    from dagster_cdp.dagster.resource import CustomerIOResource as CustomerIOResource
    from dagster_cdp.dagster.warehouse import CustomerIOWarehouseResource as CustomerIOWarehouseResource
    from dagster_cdp.delivery_report import DeliveryReport as DeliveryReport
    from dagster_cdp.emulator.faults import FaultConfig as FaultConfig
    from dagster_cdp.emulator.server import Emulator as Emulator
    from dagster_cdp.errors import AuthenticationError as AuthenticationError
    from dagster_cdp.errors import CdpError as CdpError
    from dagster_cdp.errors import DeliveryError as DeliveryError
    from dagster_cdp.errors import InvalidMessageError as InvalidMessageError
    from dagster_cdp.sync.definition import SyncDefinition as SyncDefinition
    from dagster_cdp.sync.engine import run_sync as run_sync
    from dagster_cdp.sync.entities import Objects as Objects
    from dagster_cdp.sync.entities import People as People
    from dagster_cdp.sync.entities import Relationships as Relationships
    from dagster_cdp.sync.kinds import Aliases as Aliases
    from dagster_cdp.sync.kinds import DeliveryReports as DeliveryReports
    from dagster_cdp.sync.kinds import Devices as Devices
    from dagster_cdp.sync.kinds import Events as Events
    from dagster_cdp.sync.kinds import Pages as Pages
    from dagster_cdp.sync.kinds import Screens as Screens
    from dagster_cdp.sync.kinds import Suppressions as Suppressions
    from dagster_cdp.sync.report import RowRejection as RowRejection
    from dagster_cdp.sync.report import SyncReport as SyncReport
    from dagster_cdp.sync.state import StateStore as StateStore
    from dagster_cdp.sync.sync_errors import DatabaseFileBusyError as DatabaseFileBusyError
    from dagster_cdp.sync.sync_errors import MappingChangedError as MappingChangedError
    from dagster_cdp.sync.sync_errors import SchemaChangedError as SchemaChangedError
    from dagster_cdp.sync.sync_errors import SourceError as SourceError
    from dagster_cdp.sync.sync_errors import SyncAbortedError as SyncAbortedError
    from dagster_cdp.sync.sync_errors import SyncLockedError as SyncLockedError

__version__ = "0.1.0"

_HOMES = {
    "PipelinesClient": "dagster_cdp.client",
    "AuthenticationError": "dagster_cdp.errors",
    "CdpError": "dagster_cdp.errors",
    "DeliveryError": "dagster_cdp.errors",
    "InvalidMessageError": "dagster_cdp.errors",
    "DeliveryReport": "dagster_cdp.delivery_report",
    "SyncDefinition": "dagster_cdp.sync.definition",
    "Objects": "dagster_cdp.sync.entities",
    "People": "dagster_cdp.sync.entities",
    "Relationships": "dagster_cdp.sync.entities",
    "Aliases": "dagster_cdp.sync.kinds",
    "DeliveryReports": "dagster_cdp.sync.kinds",
    "Devices": "dagster_cdp.sync.kinds",
    "Events": "dagster_cdp.sync.kinds",
    "Pages": "dagster_cdp.sync.kinds",
    "Screens": "dagster_cdp.sync.kinds",
    "Suppressions": "dagster_cdp.sync.kinds",
    "run_sync": "dagster_cdp.sync.engine",
    "DatabaseFileBusyError": "dagster_cdp.sync.sync_errors",
    "MappingChangedError": "dagster_cdp.sync.sync_errors",
    "SchemaChangedError": "dagster_cdp.sync.sync_errors",
    "SourceError": "dagster_cdp.sync.sync_errors",
    "SyncAbortedError": "dagster_cdp.sync.sync_errors",
    "SyncLockedError": "dagster_cdp.sync.sync_errors",
    "RowRejection": "dagster_cdp.sync.report",
    "SyncReport": "dagster_cdp.sync.report",
    "StateStore": "dagster_cdp.sync.state",
    "Emulator": "dagster_cdp.emulator.server",
    "FaultConfig": "dagster_cdp.emulator.faults",
    "build_customerio_sync_asset": "dagster_cdp.dagster.assets",
    "build_customerio_sync_assets": "dagster_cdp.dagster.assets",
    "customerio_sync_asset": "dagster_cdp.dagster.assets",
    "customerio_sync_asset_spec": "dagster_cdp.dagster.assets",
    "build_customerio_sync_schedule": "dagster_cdp.dagster.automation",
    "customerio_sync_automation_condition": "dagster_cdp.dagster.automation",
    "CustomerIOSyncComponent": "dagster_cdp.dagster.component",
    "CustomerIOSyncConfig": "dagster_cdp.dagster.execution",
    "build_customerio_sync_job": "dagster_cdp.dagster.ops",
    "build_customerio_sync_op": "dagster_cdp.dagster.ops",
    "CustomerIOResource": "dagster_cdp.dagster.resource",
    "CustomerIOWarehouseResource": "dagster_cdp.dagster.warehouse",
    "build_customerio_dbt_sync_assets": "dagster_cdp.dagster.dbt",
}

__all__ = ["__version__", *_HOMES]


def __getattr__(name: str) -> Any:
    """Imports a public name's module on first use (PEP 562)."""
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module 'dagster_cdp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
