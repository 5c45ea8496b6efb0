"""`@customerio_sync_asset`: the user writes the asset's body and runs the sync through the resource.

No `from __future__ import annotations` here: Dagster reads the body's annotations (config, resources) as types.
"""

from pathlib import Path

import dagster as dg
import pytest

from dagster_cdp import CustomerIOResource, CustomerIOSyncConfig, CustomerIOWarehouseResource, customerio_sync_asset, customerio_sync_asset_spec
from dagster_cdp import Emulator
from dagster_cdp import People, SyncDefinition
from tests.warehouses import sqlite_warehouse

PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="user_id"))


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    return sqlite_warehouse(tmp_path, "create table people (user_id integer, email text)",
                            "insert into people values " + ", ".join(f"({i}, 'p{i}@example.com')" for i in range(1, 21)))


def _resources(emulator: Emulator, warehouse_url: str) -> dict:
    return {"customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
            "warehouse": CustomerIOWarehouseResource(url=warehouse_url)}


def test_decorated_sync_runs_with_user_code_around_it(emulator: Emulator, warehouse_url: str) -> None:
    """`@customerio_sync_asset`: the user's body runs work before and after the sync, which it starts through the resource."""
    seen: list[str] = []

    @customerio_sync_asset(PEOPLE, spec=customerio_sync_asset_spec(PEOPLE, group_name="crm"), max_rejected_fraction=0.1)
    def people_sync(
        context: dg.AssetExecutionContext,
        config: CustomerIOSyncConfig,
        customerio: CustomerIOResource,
        warehouse: CustomerIOWarehouseResource,
    ):
        seen.append(f"before: {len(emulator.snapshot()['people'])} people")
        yield from customerio.sync(context, PEOPLE, warehouse=warehouse, config=config)
        seen.append(f"after: {len(emulator.snapshot()['people'])} people")

    assert people_sync.specs_by_key[dg.AssetKey("cdp_people")].group_name == "crm"
    result = dg.materialize([people_sync], resources=_resources(emulator, warehouse_url))
    assert seen == ["before: 0 people", "after: 20 people"]
    [materialization] = result.get_asset_materialization_events()
    assert materialization.materialization.metadata["inserted"].value == 20
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["max_rejected_fraction"].value == 0.1

    dry = dg.materialize([people_sync], resources=_resources(emulator, warehouse_url),
                         run_config={"ops": {"cdp_people": {"config": {"dry_run": True}}}})
    assert not dry.get_asset_materialization_events()  # a dry run is observed: nothing changed in Customer.io
    [observation] = [e for e in dry.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert observation.asset_observation_data.asset_observation.metadata["unchanged"].value == 20
