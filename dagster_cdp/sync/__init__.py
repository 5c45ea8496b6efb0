"""The sync engine: warehouse table or query in, only the changes out to Customer.io. Works without Dagster.

For example:

    from dagster_cdp.client import PipelinesClient
    from dagster_cdp.sync import People, SyncDefinition, run_sync

    definition = SyncDefinition(name="people", table="analytics.customers", mapping=People(id_column="id"))
    with PipelinesClient(api_key) as client:
        report = run_sync(definition, warehouse="postgresql+psycopg://...", client=client)
"""

from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.engine import run_sync
from dagster_cdp.sync.entities import Objects, People, Relationships
from dagster_cdp.sync.errors import (
    MappingChangedError,
    SchemaChangedError,
    SourceError,
    SyncAbortedError,
    SyncLockedError,
)
from dagster_cdp.sync.kinds import Aliases, DeliveryReports, Devices, Events, Pages, Screens, Suppressions
from dagster_cdp.sync.report import RowRejection, SyncReport
from dagster_cdp.sync.state import StateStore

__all__ = [
    "Aliases",
    "DeliveryReports",
    "Devices",
    "Events",
    "MappingChangedError",
    "Objects",
    "Pages",
    "People",
    "Relationships",
    "RowRejection",
    "SchemaChangedError",
    "Screens",
    "SourceError",
    "StateStore",
    "Suppressions",
    "SyncAbortedError",
    "SyncDefinition",
    "SyncLockedError",
    "SyncReport",
    "run_sync",
]
