"""Snowflake through the official connector and snowflake-sqlalchemy, against the fakesnow server scripts/test starts
(Snowflake's wire protocol, the SQL run in DuckDB): the warehouse fixture, then a people sync end to end. The whole
engine matrix runs on Snowflake too (tests.warehouses.KINDS); tests/test_snowflake_dialect.py covers its dialect."""

from __future__ import annotations

import pytest

from dagster_cdp import Emulator
from dagster_cdp import People, StateStore, SyncDefinition, run_sync
from tests.test_sync_engine import PEOPLE_COLUMNS, expected_people, people_rows
from tests.warehouses import Warehouse

snowflake = pytest.mark.parametrize("warehouse", ["snowflake"], indirect=True)
PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))


@snowflake
def test_the_fixture_creates_replaces_and_reads_a_table(warehouse: Warehouse) -> None:
    table = warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 4)))
    assert sorted(warehouse.rows(table), key=lambda r: r["id"]) == people_rows(range(1, 4))
    warehouse.replace(table, people_rows([7], plan="pro"))
    assert warehouse.rows(table) == people_rows([7], plan="pro")
    with warehouse.engine.connect() as connection:
        where = connection.exec_driver_sql("SELECT current_database(), current_schema()").one()
    assert where == ("CDP_TEST", warehouse.schema.upper())  # unquoted names fold to upper case


@snowflake
def test_a_people_sync_inserts_then_sends_nothing(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = people_rows(range(1, 51))
    warehouse.create("people", PEOPLE_COLUMNS, rows)
    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.updated, report.deleted, report.source_rows) == (50, 0, 0, 50)
    assert emulator.snapshot()["people"] == expected_people(rows)
    requests = emulator.stats()["requests"]
    again = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (again.inserted, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 50)
    assert emulator.stats()["requests"] == requests


@snowflake
def test_a_people_sync_sends_updates_and_deletions(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = people_rows(range(1, 51))
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)
    run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    rows[0]["plan"] = "pro"
    rows[1]["plan"] = None
    rows = [r for r in rows if r["id"] != 3]
    rows.append(people_rows([500])[0])
    warehouse.replace(table, rows)
    changed = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (changed.inserted, changed.updated, changed.deleted, changed.unchanged) == (1, 2, 1, 47)
    assert emulator.snapshot()["people"] == expected_people(rows)


@snowflake
def test_the_state_store_lives_in_the_warehouse(warehouse: Warehouse, emulator: Emulator, client) -> None:
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 6)))
    run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert warehouse.accepted_keys("people") == {"1", "2", "3", "4", "5"}
    store = StateStore(warehouse.engine)
    [key_hash] = [row[0] for row in store.iter_rows("people", chunk_rows=100) if row[1] == "5"]
    store.forget("people", [key_hash])
    assert warehouse.accepted_keys("people") == {"1", "2", "3", "4"}
