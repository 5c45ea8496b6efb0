"""The in-warehouse diff makes the same decisions as the portable one, for every sync kind, on every warehouse
that has it, and a run with nothing to send moves only counts out of the warehouse."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from dagster_cdp import Aliases, Devices, Events, Objects, People, Relationships, StateStore, Suppressions, SyncDefinition, run_sync
from dagster_cdp.sync.dialects import dialect_of
from dagster_cdp.sync.report import SyncReport
from tests.warehouses import Warehouse

T0 = dt.datetime(2024, 3, 1, 12, 0)
# Key values that collide under a careless comparison: case, trailing space, accents, quotes, JSON escapes, ''.
PARTS = st.sampled_from(["a", "A", "a ", "á", "b", '"q', "\\", "1", "01", "", None])
TEXT = sa.String(20)
# kind -> (columns, mapping, the columns a generated row fills from PARTS)
KINDS: dict[str, tuple[dict[str, sa.types.TypeEngine], Callable[[], Any]]] = {
    "people": ({"id": TEXT, "email": TEXT, "plan": TEXT},
               lambda: People(id_column="id")),
    "objects": ({"type_id": TEXT, "id": TEXT, "name": TEXT},
                lambda: Objects(id_column="id", object_type_column="type_id")),
    "relationships": ({"user_id": TEXT, "account_id": TEXT, "role": TEXT},
                      lambda: Relationships(user_id_column="user_id", object_id_column="account_id")),
    "devices": ({"user_id": TEXT, "token": TEXT, "platform": TEXT},
                lambda: Devices(user_id_column="user_id", token_column="token", platform_column="platform")),
    "suppressions": ({"user_id": TEXT, "note": TEXT}, lambda: Suppressions(user_id_column="user_id")),
    "events": ({"event_id": TEXT, "user_id": TEXT, "event": TEXT, "occurred_at": sa.DateTime()},
               lambda: Events(id_column="event_id", event_column="event", user_id_column="user_id",
                              timestamp_column="occurred_at")),
    "aliases": ({"previous_id": TEXT, "user_id": TEXT}, lambda: Aliases(previous_id_column="previous_id",
                                                                        user_id_column="user_id")),
}


@pytest.fixture
def in_warehouse(warehouse: Warehouse) -> Warehouse:
    if not dialect_of(warehouse.engine).in_warehouse_diff:
        pytest.skip(f"{warehouse.kind} has no in-warehouse diff: it always uses the portable one")
    return warehouse


def _row(columns: dict[str, sa.types.TypeEngine], values: list[str | None], minute: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for index, (column, kind) in enumerate(columns.items()):
        row[column] = T0 + dt.timedelta(minutes=minute) if isinstance(kind, sa.DateTime) else values[index]
    if "type_id" in row and row["type_id"] not in (None, ""):
        row["type_id"] = row["type_id"] if row["type_id"].isdigit() else "7"  # mostly valid object types
    return row


ROUNDS = st.lists(st.lists(st.lists(PARTS, min_size=4, max_size=4), max_size=12), min_size=2, max_size=3)


def _decisions(report: SyncReport) -> tuple:
    return (report.inserted, report.updated, report.deleted, report.unchanged, report.source_rows,
            sorted((r.key, r.operation) for r in report.rejected))


@pytest.mark.parametrize("kind", ["people", "objects", "relationships", "devices", "events"])  # each way of keying
@settings(max_examples=5, deadline=None, derandomize=True,  # the same tables on every run: CI never flakes
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rounds=ROUNDS)
def test_both_diffs_decide_the_same(in_warehouse: Warehouse, emulator_session: Emulator, tmp_path: Path, kind: str,
                                    rounds: list[list[list[str | None]]]) -> None:
    warehouse = in_warehouse
    columns, mapping = KINDS[kind]
    name = f"t_{uuid.uuid4().hex[:8]}"
    table = warehouse.create(name, columns)
    here = SyncDefinition(name=f"{name}_here", table=name, mapping=mapping())
    there = SyncDefinition(name=f"{name}_there", table=name, mapping=mapping())
    elsewhere = StateStore(f"sqlite:///{tmp_path / f'{name}.sqlite'}")
    try:
        with PipelinesClient("test-key", base_url=emulator_session.url) as client:
            for number, rows in enumerate(rounds):
                warehouse.replace(table, [_row(columns, values, minute) for minute, values in enumerate(rows)])
                a = run_sync(here, warehouse=warehouse.engine, client=client, force=True)
                b = run_sync(there, warehouse=warehouse.engine, client=client, state=elsewhere, force=True)
                assert (a.diff, b.diff) == ("in-warehouse", "portable")
                assert _decisions(a) == _decisions(b), f"round {number}: {rows}"
    finally:
        elsewhere.engine.dispose()


class _CountingCursor:
    """A driver cursor that counts the rows it hands to Python (everything else is the cursor's own)."""

    def __init__(self, cursor: Any, fetched: list[int]) -> None:
        self._cursor, self._fetched = cursor, fetched

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def fetchone(self) -> Any:
        row = self._cursor.fetchone()
        self._fetched[0] += row is not None
        return row

    def fetchmany(self, *size: int) -> Any:
        rows = self._cursor.fetchmany(*size)
        self._fetched[0] += len(rows)
        return rows

    def fetchall(self) -> Any:
        rows = self._cursor.fetchall()
        self._fetched[0] += len(rows)
        return rows


@contextmanager
def rows_fetched(engine: sa.Engine) -> Iterator[list[int]]:
    """Counts the rows the driver hands from the warehouse to Python through `engine` inside the block."""
    fetched = [0]

    def wrap(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        context.cursor = _CountingCursor(cursor, fetched)  # the cursor SQLAlchemy builds the result from

    sa.event.listen(engine, "after_cursor_execute", wrap)
    try:
        yield fetched
    finally:
        sa.event.remove(engine, "after_cursor_execute", wrap)


@pytest.mark.parametrize("kind", ["people", "relationships", "events"])
def test_a_run_with_nothing_to_send_moves_only_counts_out_of_the_warehouse(in_warehouse: Warehouse, emulator: Emulator,
                                                                           client, tmp_path: Path, kind: str) -> None:
    warehouse = in_warehouse
    columns, mapping = KINDS[kind]
    rows = [_row(columns, [f"k{i}", f"v{i % 97}", "x", "y"], i) for i in range(3000)]
    table = warehouse.create("source", columns, rows)
    sync = SyncDefinition(name=kind, table="source", mapping=mapping())
    fetched_by_size = []
    for size in (3000, 6000):
        if size > len(rows):
            more = [_row(columns, [f"k{i}", f"v{i % 97}", "x", "y"], i) for i in range(len(rows), size)]
            warehouse.insert(table, more)
            rows += more
        assert run_sync(sync, warehouse=warehouse.engine, client=client).inserted == 3000
        with rows_fetched(warehouse.engine) as fetched:
            report = run_sync(sync, warehouse=warehouse.engine, client=client)
        assert (report.diff, report.unchanged) == ("in-warehouse", size)
        fetched_by_size.append(fetched[0])
    # Counts, the fingerprint, and the catalog's description of the source: no source row, no state row.
    assert fetched_by_size[0] == fetched_by_size[1] <= 40, fetched_by_size

    portable = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    run_sync(sync, warehouse=warehouse.engine, client=client, state=portable)
    with rows_fetched(warehouse.engine) as fetched:
        assert run_sync(sync, warehouse=warehouse.engine, client=client, state=portable).unchanged == 6000
    assert fetched[0] >= 6000  # the portable diff reads every row
    portable.engine.dispose()
