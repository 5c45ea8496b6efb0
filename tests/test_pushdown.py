"""The in-warehouse diff (every warehouse whose dialect has it: DuckDB, PostgreSQL, MariaDB, Snowflake): same
outcome as the portable path, only changes leave the warehouse.

The engine's own tests (tests/test_sync_*.py) already run through it on those warehouses, since their state
lives in the warehouse; these cover what is particular to it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from dagster_cdp import Emulator
from dagster_cdp import People, StateStore, SyncDefinition, run_sync
from dagster_cdp.sync.dialects import dialect_of
from tests.test_sync_engine import PEOPLE, PEOPLE_COLUMNS, expected_people, people_rows
from tests.warehouses import Warehouse


@pytest.fixture
def pushdown_warehouse(warehouse: Warehouse) -> Warehouse:
    if not dialect_of(warehouse.engine).in_warehouse_diff:
        pytest.skip(f"{warehouse.kind} has no in-warehouse diff; it uses the generic path")
    return warehouse


def test_same_outcome_as_the_generic_path(pushdown_warehouse: Warehouse, emulator: Emulator, client,
                                          tmp_path: Path) -> None:
    warehouse = pushdown_warehouse
    rows = people_rows(range(1, 51))
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)
    elsewhere = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")  # state not in the warehouse: generic path
    generic = SyncDefinition(name="people_generic", table="people", mapping=People(id_column="id"))

    def both() -> tuple[tuple[int, ...], tuple[int, ...]]:
        a = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
        b = run_sync(generic, warehouse=warehouse.engine, client=client, state=elsewhere)
        assert (a.diff, b.diff) == ("in-warehouse", "portable")
        assert (a.diff_reason, b.diff_reason) == (None, "the state is kept in another database than the source")
        return tuple(map(len, (a.rejected,))) + (a.inserted, a.updated, a.deleted, a.unchanged, a.source_rows), \
            tuple(map(len, (b.rejected,))) + (b.inserted, b.updated, b.deleted, b.unchanged, b.source_rows)

    first = both()
    assert first[0] == first[1] == (0, 50, 0, 0, 0, 50)

    rows = [r for r in rows if r["id"] != 7]
    rows[0]["plan"] = "pro"
    rows.append({"id": 7, "email": "dup@example.com", "plan": "free", "seats": 1})  # 7 is back...
    rows.append({"id": 8, "email": "dup@example.com", "plan": "free", "seats": 1})  # ...and 8 is duplicated
    rows.append({"id": None, "email": "nobody@example.com", "plan": "free", "seats": 1})
    warehouse.replace(table, rows)
    second = both()
    assert second[0] == second[1] == (2, 0, 2, 0, 47, 52)  # a NULL key and a duplicate reported; 1 and 7 updated


def test_null_and_empty_text_are_different_values(pushdown_warehouse: Warehouse, emulator: Emulator, client) -> None:
    warehouse = pushdown_warehouse
    rows = people_rows(range(1, 5))
    rows[0]["plan"], rows[1]["plan"] = None, ""
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)
    assert run_sync(PEOPLE, warehouse=warehouse.engine, client=client).inserted == 4
    rows[0]["plan"], rows[1]["plan"] = "", None
    warehouse.replace(table, rows)
    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (report.updated, report.unchanged) == (2, 2)
    assert emulator.snapshot()["people"]["1"]["traits"]["plan"] == ""
    assert "plan" not in emulator.snapshot()["people"]["2"]["traits"]


def test_a_query_with_percent_signs_a_trailing_comment_and_a_listed_trait(pushdown_warehouse: Warehouse,
                                                                          emulator: Emulator, client) -> None:
    warehouse = pushdown_warehouse
    rows = people_rows(range(1, 21))
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)
    definition = SyncDefinition(name="people_query", query="SELECT * FROM people WHERE email LIKE 'u%'; -- u for user",
                                mapping=People(id_column="id", traits=["plan"]))
    first = run_sync(definition, warehouse=warehouse.engine, client=client)
    assert (first.inserted, first.diff) == (20, "in-warehouse")
    for row in rows:
        row["seats"] += 1  # not a mapped trait: nothing to send
    rows[3]["plan"] = "team"
    warehouse.replace(table, rows)
    report = run_sync(definition, warehouse=warehouse.engine, client=client)
    assert (report.updated, report.unchanged) == (1, 19)
    assert emulator.snapshot()["people"]["4"]["traits"] == {"plan": "team"}


def test_a_key_whose_text_could_differ_falls_back_to_the_generic_path(pushdown_warehouse: Warehouse,
                                                                      emulator: Emulator, client) -> None:
    warehouse = pushdown_warehouse
    if warehouse.kind == "snowflake":
        pytest.skip("NUMBER(10, 0) is Snowflake's integer type, whose text is exact: nothing to fall back from")
    rows = people_rows(range(1, 11))
    warehouse.create("people", {**PEOPLE_COLUMNS, "id": sa.Numeric(10, 0)}, rows)  # 1 in Python, maybe 1.0 in SQL
    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.diff) == (10, "portable")
    assert report.diff_reason == ("key column 'id' is not an integer or text column, so its text in SQL may differ "
                                  "from the key Python sends")
    assert emulator.snapshot()["people"] == expected_people(rows)
    assert run_sync(PEOPLE, warehouse=warehouse.engine, client=client).unchanged == 10
