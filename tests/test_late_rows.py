"""Send-once syncs never miss a late row: an event that lands with an older timestamp than events already sent
(late-arriving data, a backfilled day, a replayed partition) is sent exactly once, whatever its age, on every
warehouse, by the in-warehouse diff (an anti-join against what was acknowledged) and by the portable one
(a cursor read verified against the tally of the rows below the mark), after plain runs, faults and crashes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp.errors import DeliveryError
from dagster_cdp import Events, StateStore, SyncDefinition, run_sync
from tests.reliability import kill_after_requests
from tests.warehouses import Warehouse

T0 = dt.datetime(2024, 3, 1, 12, 0)
COLUMNS = {"event_id": sa.Integer, "user_id": sa.String(20), "event": sa.String(50), "occurred_at": sa.DateTime,
           "loaded_at": sa.DateTime, "note": sa.Text}
EVENTS = SyncDefinition(
    name="events", table="events", cursor_column="occurred_at", lookback=dt.timedelta(days=1),
    mapping=Events(id_column="event_id", event_column="event", user_id_column="user_id", timestamp_column="occurred_at",
                   properties=["note"]),
)
NOTE = "x" * 1000  # ~500 events a request, so a run makes several


@pytest.fixture(params=["in the warehouse", "elsewhere"])
def state(request: pytest.FixtureRequest, warehouse: Warehouse, tmp_path: Path) -> Iterator[StateStore | None]:
    """Where the state is kept: in the warehouse (its in-warehouse diff where it has one) or in a SQLite file
    beside it (the portable diff, reading by the verified cursor mark)."""
    if request.param == "elsewhere":
        store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
        yield store
        store.engine.dispose()
    else:
        yield None


def event(i: int, minutes: float, loaded: float | None = 0) -> dict[str, Any]:
    return {"event_id": i, "user_id": f"u{i % 7}", "event": "Viewed", "occurred_at": T0 + dt.timedelta(minutes=minutes),
            "loaded_at": None if loaded is None else T0 + dt.timedelta(minutes=loaded), "note": NOTE}


def held(emulator: Emulator) -> list[tuple[str, str]]:
    """(userId, timestamp) of every track event the emulator holds, once per application."""
    return sorted((e["userId"], e["timestamp"]) for e in emulator.snapshot()["events"])


def expected(warehouse: Warehouse, table: sa.Table) -> list[tuple[str, str]]:
    return sorted((r["user_id"], r["occurred_at"].strftime("%Y-%m-%dT%H:%M:%SZ")) for r in warehouse.rows(table))


def new_events(rng: random.Random, first_id: int, newest: float, count: int) -> list[dict[str, Any]]:
    """Newer events, events tied with the newest one, late ones within a day and ones up to a year old."""
    rows = []
    for i in range(first_id, first_id + count):
        kind = rng.choice(["newer", "tied", "late", "ancient"])
        minutes = {"newer": newest + rng.randint(1, 90), "tied": newest, "late": newest - rng.randint(1, 1440),
                   "ancient": newest - rng.randint(1441, 525_600)}[kind]
        rows.append(event(i, minutes))
    return rows


def test_late_tied_and_newer_events_each_arrive_once(warehouse: Warehouse, state: StateStore | None,
                                                      emulator: Emulator, client) -> None:
    rng = random.Random(7)
    table = warehouse.create("events", COLUMNS, new_events(rng, 1, 0, 200))
    next_id, newest = 201, 0.0
    for run in range(6):
        report = run_sync(EVENTS, warehouse=warehouse.engine, client=client, state=state)
        assert report.rejected == []
        assert held(emulator) == expected(warehouse, table), f"run {run}"
        newest = max((r["occurred_at"] - T0).total_seconds() / 60 for r in warehouse.rows(table))
        warehouse.insert(table, new_events(rng, next_id, newest, rng.randint(100, 300)))
        next_id += 300
    # A replayed day: some old events are removed and as many others land, late, in their place.
    removed = [r for r in warehouse.rows(table) if r["event_id"] in (3, 5, 8)]
    with warehouse.engine.begin() as connection:
        connection.execute(sa.delete(table).where(table.c.event_id.in_([3, 5, 8])))
    warehouse.insert(table, [event(next_id + i, -2000 - i) for i in range(3)])
    run_sync(EVENTS, warehouse=warehouse.engine, client=client, state=state)
    sent_before = sorted((r["user_id"], r["occurred_at"].strftime("%Y-%m-%dT%H:%M:%SZ")) for r in removed)
    assert held(emulator) == sorted(expected(warehouse, table) + sent_before)  # never deleted at Customer.io


def test_the_portable_diff_reads_from_the_mark_only_while_the_rows_below_it_are_unchanged(
        warehouse: Warehouse, emulator: Emulator, client, tmp_path: Path) -> None:
    state = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    table = warehouse.create("events", COLUMNS, [event(i, minutes=i) for i in range(1, 101)])
    exact = dataclasses.replace(EVENTS, lookback=0)
    assert run_sync(exact, warehouse=warehouse.engine, client=client, state=state).source_rows == 100
    report = run_sync(exact, warehouse=warehouse.engine, client=client, state=state)
    assert (report.source_rows, report.inserted) == (1, 0)  # the newest row only: nothing below it changed

    warehouse.insert(table, [event(101, minutes=101), event(102, minutes=-5000)])  # a newer and a late event
    report = run_sync(exact, warehouse=warehouse.engine, client=client, state=state)
    assert (report.source_rows, report.inserted) == (102, 2)  # the late one changed the tally: a whole read
    assert run_sync(exact, warehouse=warehouse.engine, client=client, state=state).source_rows == 1

    with warehouse.engine.begin() as connection:  # as many rows removed below the mark as arrive late there
        connection.execute(sa.delete(table).where(table.c.event_id == 50))
    warehouse.insert(table, [event(103, minutes=50)])
    report = run_sync(exact, warehouse=warehouse.engine, client=client, state=state)
    assert (report.source_rows, report.inserted) == (102, 1)  # the same count, another checksum: a whole read
    assert held(emulator) == sorted([*expected(warehouse, table), ("u1", "2024-03-01T12:50:00Z")])  # 50 was sent
    state.engine.dispose()


def test_events_without_a_cursor_value_are_sent_once(warehouse: Warehouse, state: StateStore | None,
                                                     emulator: Emulator, client) -> None:
    by_load = dataclasses.replace(EVENTS, cursor_column="loaded_at", lookback=0)
    table = warehouse.create("events", COLUMNS, [event(i, minutes=i, loaded=i) for i in range(1, 11)])
    run_sync(by_load, warehouse=warehouse.engine, client=client, state=state)
    warehouse.insert(table, [event(11, minutes=11, loaded=None), event(12, minutes=-99, loaded=1)])
    assert run_sync(by_load, warehouse=warehouse.engine, client=client, state=state).inserted == 2
    assert run_sync(by_load, warehouse=warehouse.engine, client=client, state=state).inserted == 0
    assert held(emulator) == expected(warehouse, table)


def test_late_events_arrive_once_through_failing_deliveries(warehouse: Warehouse, state: StateStore | None,
                                                            emulator: Emulator) -> None:
    rng = random.Random(11)
    table = warehouse.create("events", COLUMNS, new_events(rng, 1, 0, 1500))
    emulator.set_faults(FaultConfig(error_rate=0.4, error_statuses=(503,), apply_then_error_rate=0.2, seed=2))
    failures = 0
    with PipelinesClient("test-key", base_url=emulator.url, max_attempts=1, max_retry_seconds=1) as flaky:
        for run in range(12):
            if run in (2, 5):
                warehouse.insert(table, new_events(rng, 1000 * run, 0, 150))  # late among already-sent ones
            try:
                run_sync(EVENTS, warehouse=warehouse.engine, client=flaky, state=state)
            except DeliveryError:
                failures += 1
    emulator.set_faults(FaultConfig())
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        run_sync(EVENTS, warehouse=warehouse.engine, client=client, state=state)
    assert failures > 0
    assert held(emulator) == expected(warehouse, table)


CHILD = """
import datetime as dt, sys
from dagster_cdp.client import PipelinesClient
from dagster_cdp import Events, StateStore, SyncDefinition, run_sync
warehouse_url, state_url, api_url = sys.argv[1], sys.argv[2], sys.argv[-1]
events = SyncDefinition(
    name="events", table="events", cursor_column="occurred_at", lookback=dt.timedelta(days=1),
    mapping=Events(id_column="event_id", event_column="event", user_id_column="user_id",
                   timestamp_column="occurred_at", properties=["note"]))
with PipelinesClient("test-key", base_url=api_url) as client:
    run_sync(events, warehouse=warehouse_url, client=client, state=StateStore(state_url) if state_url else None)
"""


def test_late_events_arrive_once_after_a_crash(warehouse: Warehouse, state: StateStore | None, emulator: Emulator,
                                               client) -> None:
    rng = random.Random(3)
    table = warehouse.create("events", COLUMNS, new_events(rng, 1, 0, 300))
    run_sync(EVENTS, warehouse=warehouse.engine, client=client, state=state)
    warehouse.insert(table, new_events(rng, 1000, 0, 4000))
    state_url = state.engine.url.render_as_string(hide_password=False) if state else ""
    if state:
        state.engine.dispose()
    kill_after_requests(warehouse, emulator, CHILD.replace("sys.argv[2]", repr(state_url)), requests=4)
    warehouse.insert(table, new_events(rng, 5000, 0, 100))
    run_sync(EVENTS, warehouse=warehouse.engine, client=client, state=state)
    assert held(emulator) == expected(warehouse, table)
