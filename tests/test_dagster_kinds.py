"""Issue 7's kinds in Dagster: declared in a component's defs.yaml, built by the factory, run as ops."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest
from tests.components import load_defs_yaml as _load
from tests.components import load_error as _load_error

from dagster_cdp import CustomerIOResource, CustomerIOWarehouseResource, build_customerio_sync_asset, build_customerio_sync_job
from dagster_cdp import Emulator
from dagster_cdp import Events, Suppressions, SyncDefinition
from tests.warehouses import sqlite_warehouse

DEFS_YAML = """\
type: dagster_cdp.CustomerIOSyncComponent
attributes:
  warehouse_kind: sqlite
  syncs:
    - {name: devices, kind: devices, table: devices, user_id: user_id, token: token, platform: platform}
    - {name: suppressions, kind: suppressions, table: suppressions, user_id: user_id}
    - name: events
      kind: events
      table: events
      id: event_id
      event: event
      user_id: user_id
      timestamp: occurred_at
      cursor: occurred_at
      lookback: 3600
    - {name: pages, kind: pages, table: page_views, id: view_id, page_name: page, anonymous_id: visitor}
    - {name: screens, kind: screens, table: screen_views, id: view_id, screen_name: screen, user_id: user_id}
    - {name: aliases, kind: aliases, table: aliases, previous_id: previous_id, user_id: user_id}
    - {name: deliveries, kind: delivery_reports, table: deliveries, id: report_id, delivery_id: delivery_id,
       metric: metric}
"""


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    return sqlite_warehouse(
        tmp_path,
        "create table devices (user_id text, token text, platform text, app_version text)",
        "insert into devices values ('1', 'tok-1', 'ios', '3.2')",
        "create table suppressions (user_id text)",
        "insert into suppressions values ('9')",
        "create table events (event_id integer, user_id text, event text, occurred_at timestamp, total integer)",
        "insert into events values (1, '1', 'Order Placed', '2024-03-01 12:00:00.000000', 30),"
        " (2, '2', 'Order Placed', '2024-03-01 12:05:00.000000', 40)",
        "create table page_views (view_id text, visitor text, page text)",
        "insert into page_views values ('v1', 'anon-1', 'Pricing')",
        "create table screen_views (view_id text, user_id text, screen text)",
        "insert into screen_views values ('s1', '1', 'Cart')",
        "create table aliases (previous_id text, user_id text)",
        "insert into aliases values ('anon-1', '1')",
        "create table deliveries (report_id integer, delivery_id text, metric text, recipient text)",
        "insert into deliveries values (1, 'dlv-1', 'opened', 'ada@example.com')",
    )


def _resources(emulator: Emulator, warehouse_url: str) -> dict[str, dg.ConfigurableResource]:
    return {"customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
            "warehouse": CustomerIOWarehouseResource(url=warehouse_url)}


def test_every_kind_declared_in_yaml_runs_as_an_asset(emulator: Emulator, warehouse_url: str) -> None:
    defs = _load(DEFS_YAML)
    names = ["devices", "suppressions", "events", "pages", "screens", "aliases", "deliveries"]
    assert {asset.key for asset in defs.assets} == {dg.AssetKey(f"cdp_{n}") for n in names}
    result = dg.materialize(list(defs.assets), resources=_resources(emulator, warehouse_url))
    assert result.success
    inserted = {e.asset_key.path[0]: e.event_specific_data.materialization.metadata["inserted"].value
                for e in result.get_asset_materialization_events()}
    assert inserted == {"cdp_devices": 1, "cdp_suppressions": 1, "cdp_events": 2, "cdp_pages": 1, "cdp_screens": 1,
                        "cdp_aliases": 1, "cdp_deliveries": 1}
    snapshot = emulator.snapshot()
    assert snapshot["devices"] == {"1": {"tok-1": {"type": "ios", "properties": {"app_version": "3.2"}}}}
    assert snapshot["suppressions"] == ["9"]
    tracks = {e["properties"].get("total"): e for e in snapshot["events"] if e["type"] == "track"}
    assert tracks[40]["timestamp"] == "2024-03-01T12:05:00Z" and tracks[40]["event"] == "Order Placed"
    assert sorted(e["type"] for e in snapshot["events"]) == ["alias", "page", "screen", "track", "track"]
    assert snapshot["delivery_reports"][0]["properties"] == {
        "deliveryId": "dlv-1", "metric": "opened", "recipient": "ada@example.com"}

    again = dg.materialize(list(defs.assets), resources=_resources(emulator, warehouse_url))
    assert all(e.event_specific_data.materialization.metadata["inserted"].value == 0
               for e in again.get_asset_materialization_events())


@pytest.mark.parametrize(
    ("replace", "by", "line", "message"),
    [
        ("      lookback: 3600\n", "      lookback: 3600\n      mode: upsert\n", 7,
         "'mode' does not apply to events syncs"),
        ("platform: platform}", "}", 5, "'platform' is required for devices syncs"),
        ("kind: suppressions", "kind: suppression", 6, "kind must be one of people, objects, relationships, devices"),
        ("      cursor: occurred_at\n", "", 7, "lookback needs `cursor`"),
    ],
)
def test_yaml_mistakes_in_the_new_kinds_are_located(replace: str, by: str, line: int, message: str) -> None:
    error = _load_error(DEFS_YAML.replace(replace, by, 1))
    assert f"defs.yaml:{line}" in error and message in error, error


def test_factory_asset_and_ops_run_the_new_kinds(emulator: Emulator, warehouse_url: str) -> None:
    events = SyncDefinition(name="events", table="events", cursor_column="occurred_at", lookback=dt.timedelta(hours=1),
                            mapping=Events(id_column="event_id", event_column="event", user_id_column="user_id",
                                           timestamp_column="occurred_at"))
    suppressions = SyncDefinition(name="suppressions", table="suppressions",
                                  mapping=Suppressions(user_id_column="user_id"))
    asset = build_customerio_sync_asset(events)
    dry = dg.materialize([asset], resources=_resources(emulator, warehouse_url),
                         run_config={"ops": {"cdp_events": {"config": {"dry_run": True}}}})
    [observation] = dry.get_asset_observation_events()
    assert observation.event_specific_data.asset_observation.metadata["inserted"].value == 2
    assert emulator.snapshot()["events"] == []

    job = build_customerio_sync_job([events, suppressions])
    result = job.execute_in_process(resources=_resources(emulator, warehouse_url))
    assert result.success
    assert result.output_for_node("cdp_sync_events").inserted == 2
    assert result.output_for_node("cdp_sync_suppressions").inserted == 1
    assert dg.materialize([asset], resources=_resources(emulator, warehouse_url)).success  # nothing new to send
    assert len(emulator.snapshot()["events"]) == 2
