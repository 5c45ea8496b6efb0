"""Issue 7's sync kinds end to end: devices, suppressions, events (read by a cursor), pages, screens,
aliases and delivery reports, from each of four real warehouses to the emulator over HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp.errors import DeliveryError
from dagster_cdp import Aliases, DeliveryReports, Devices, Events, MappingChangedError, Pages, People, Screens, SourceError, StateStore, Suppressions, SyncDefinition, run_sync
from dagster_cdp.sync.cursor import CursorMark, Tally, next_mark
from dagster_cdp.sync.source import trimmed_query
from tests.reliability import kill_after_requests
from tests.warehouses import Warehouse

T0 = dt.datetime(2024, 3, 1, 12, 0)
EVENT_COLUMNS = {"event_id": sa.Integer, "user_id": sa.String(20), "event": sa.String(50),
                 "occurred_at": sa.DateTime, "amount": sa.Integer}
EVENTS = SyncDefinition(
    name="events", table="events", cursor_column="occurred_at", lookback=dt.timedelta(hours=1),
    mapping=Events(id_column="event_id", event_column="event", user_id_column="user_id", timestamp_column="occurred_at"),
)


def event(i: int, minutes: int, name: str = "Order Placed", amount: int | None = None) -> dict[str, Any]:
    return {"event_id": i, "user_id": f"u{i % 4}", "event": name, "occurred_at": T0 + dt.timedelta(minutes=minutes),
            "amount": i * 10 if amount is None else amount}


def sent_events(emulator: Emulator) -> dict[int, dict[str, Any]]:
    """The events the emulator holds, by event id (read from amount); fails on any event held twice."""
    events = emulator.snapshot()["events"]
    message_ids = [e["messageId"] for e in events]
    assert len(message_ids) == len(set(message_ids)), "an event was applied twice"
    return {e["properties"]["amount"] // 10: e for e in events}


def test_devices_are_created_updated_and_deleted(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = [{"user_id": "u1", "token": "tok-a", "platform": "ios", "app_version": "1.0"},
            {"user_id": "u1", "token": "tok-b", "platform": "android", "app_version": "2.1"},
            {"user_id": "u2", "token": "tok-c", "platform": "ios", "app_version": None}]
    table = warehouse.create("devices", {"user_id": sa.String(20), "token": sa.String(50), "platform": sa.String(10),
                                         "app_version": sa.String(10)}, rows)
    devices = SyncDefinition(name="devices", table="devices",
                             mapping=Devices(user_id_column="user_id", token_column="token", platform_column="platform"))
    report = run_sync(devices, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.rejected) == (3, [])
    assert emulator.snapshot()["devices"] == {
        "u1": {"tok-a": {"type": "ios", "properties": {"app_version": "1.0"}},
               "tok-b": {"type": "android", "properties": {"app_version": "2.1"}}},
        "u2": {"tok-c": {"type": "ios", "properties": {}}},
    }
    assert run_sync(devices, warehouse=warehouse.engine, client=client).unchanged == 3

    rows[0]["app_version"] = "1.1"  # an update
    warehouse.replace(table, rows[:1] + rows[2:])  # tok-b gone: Device Deleted
    report = run_sync(devices, warehouse=warehouse.engine, client=client, force=True)
    assert (report.inserted, report.updated, report.deleted, report.unchanged) == (0, 1, 1, 1)
    assert emulator.snapshot()["devices"] == {
        "u1": {"tok-a": {"type": "ios", "properties": {"app_version": "1.1"}}},
        "u2": {"tok-c": {"type": "ios", "properties": {}}},
    }


def test_suppressions_suppress_and_unsuppress(warehouse: Warehouse, emulator: Emulator, client) -> None:
    table = warehouse.create("suppressions", {"user_id": sa.String(20), "reason": sa.String(20)},
                             [{"user_id": f"u{i}", "reason": "gdpr"} for i in range(8)])
    suppressions = SyncDefinition(name="suppressions", table="suppressions",
                                  mapping=Suppressions(user_id_column="user_id"))
    assert run_sync(suppressions, warehouse=warehouse.engine, client=client).inserted == 8
    assert emulator.snapshot()["suppressions"] == [f"u{i}" for i in range(8)]
    warehouse.replace(table, [{"user_id": f"u{i}", "reason": "changed"} for i in range(1, 8)])
    report = run_sync(suppressions, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.updated, report.deleted, report.unchanged) == (0, 0, 1, 7)  # reason is not sent
    assert emulator.snapshot()["suppressions"] == [f"u{i}" for i in range(1, 8)]


def test_events_are_sent_once_late_and_edited_ones_included(warehouse: Warehouse, emulator: Emulator,
                                                              client) -> None:
    table = warehouse.create("events", EVENT_COLUMNS, [event(i, minutes=i) for i in range(1, 11)])
    report = run_sync(EVENTS, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.source_rows, report.rejected) == (10, 10, [])
    sent = sent_events(emulator)
    assert sent[3] == {"type": "track", "event": "Order Placed", "userId": "u3", "anonymousId": None,
                       "timestamp": "2024-03-01T12:03:00Z", "properties": {"amount": 30},
                       "messageId": sent[3]["messageId"]}

    requests = emulator.stats()["requests"]
    again = run_sync(EVENTS, warehouse=warehouse.engine, client=client)
    assert (again.inserted, emulator.stats()["requests"]) == (0, requests)

    # A row sharing the newest timestamp, a late row inside the lookback, one far older than the lookback, an
    # edit of an already-sent event (not resent) and a deleted event (never deleted at Customer.io).
    warehouse.insert(table, [event(11, minutes=10), event(12, minutes=-30), event(13, minutes=-60 * 24 * 400)])
    with warehouse.engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.event_id == 2).values(event="Order Refunded"))
        connection.execute(sa.delete(table).where(table.c.event_id == 1))
    report = run_sync(EVENTS, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.updated, report.deleted) == (3, 0, 0)
    sent = sent_events(emulator)
    assert sorted(sent) == list(range(1, 14))
    assert sent[2]["event"] == "Order Placed" and sent[11]["timestamp"] == "2024-03-01T12:10:00Z"
    assert sent[13]["timestamp"] == "2023-01-26T12:00:00Z"

    report = run_sync(EVENTS, warehouse=warehouse.engine, client=client, full_resync=True)  # reads everything
    assert (report.inserted, report.updated, report.deleted, report.unchanged) == (0, 0, 0, 12)

    # A new mapping applies to rows not sent yet; a full resync adopts it without resending anything.
    fewer = dataclasses.replace(EVENTS, mapping=EVENTS.mapping.model_copy(update={"properties": ()}))
    with pytest.raises(MappingChangedError, match="already sent are not sent again"):
        run_sync(fewer, warehouse=warehouse.engine, client=client)
    assert run_sync(fewer, warehouse=warehouse.engine, client=client, full_resync=True).inserted == 0
    assert len(emulator.snapshot()["events"]) == 13


def _state_elsewhere(tmp_path: Path) -> StateStore:
    """State in a SQLite file beside the warehouse: the portable diff, which reads by the cursor mark."""
    return StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")


@pytest.mark.parametrize("query", ["SELECT * FROM events -- every event", "select * from events;\n",
                                   "SELECT * FROM events ; /* all */ -- every event\n;"])
def test_a_query_ending_in_a_comment_or_semicolon_reads_incrementally(warehouse: Warehouse, emulator: Emulator,
                                                                       client, query: str, tmp_path: Path) -> None:
    table = warehouse.create("events", EVENT_COLUMNS, [event(i, minutes=i) for i in range(1, 6)])
    by_query = dataclasses.replace(EVENTS, table=None, query=query, cursor_column="event_id", lookback=0)
    state = _state_elsewhere(tmp_path)
    assert run_sync(by_query, warehouse=warehouse.engine, client=client, state=state).inserted == 5
    for i in (6, 7):  # each run reads from the cursor's mark, wrapping the query
        warehouse.insert(table, [event(i, minutes=i)])
        report = run_sync(by_query, warehouse=warehouse.engine, client=client, state=state)
        assert (report.inserted, report.source_rows) == (1, 2)  # the new row, and the mark's own
    assert sorted(sent_events(emulator)) == list(range(1, 8))


@pytest.mark.parametrize(("query", "trimmed"), [
    ("SELECT '--;' AS a, \"x--\" FROM t -- note; more\n;  ", "SELECT '--;' AS a, \"x--\" FROM t"),
    ("SELECT 'it''s' /* inline */ FROM t /* end */;", "SELECT 'it''s' /* inline */ FROM t"),
    ("SELECT $$ -- $$ FROM t", "SELECT $$ -- $$ FROM t"),
])
def test_only_trailing_semicolons_and_comments_are_trimmed(query: str, trimmed: str) -> None:
    assert trimmed_query(query) == trimmed


def test_event_delivery_failing_midway_leaves_no_gap_and_no_repeat(warehouse: Warehouse, emulator: Emulator) -> None:
    columns = {**EVENT_COLUMNS, "note": sa.Text}
    rows = [{**event(i, minutes=i // 100), "note": "x" * 1000} for i in range(1, 1201)]  # ~3 requests, tied stamps
    warehouse.create("events", columns, rows)
    emulator.set_faults(FaultConfig(error_rate=0.4, error_statuses=(503,), apply_then_error_rate=0.2, seed=3))
    failures = 0
    with PipelinesClient("test-key", base_url=emulator.url, max_attempts=1, max_retry_seconds=1) as flaky:
        for _ in range(30):
            try:
                report = run_sync(EVENTS, warehouse=warehouse.engine, client=flaky)
            except DeliveryError:
                failures += 1
                continue
            if report.inserted == 0 and report.rejected == []:
                break
    assert failures > 0
    sent = sent_events(emulator)  # each event exactly once: resends carry the same messageId
    assert sorted(sent) == list(range(1, 1201))
    mark = StateStore(warehouse.engine).cursor_mark("events")
    if report.diff == "portable":  # the mark is the newest event; below it, every earlier one
        newest = int((T0 + dt.timedelta(minutes=12)).replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
        assert (mark.value, mark.below.rows) == (newest, 1199)
    else:
        assert mark is None  # the warehouse finds unsent events by an anti-join: no mark is needed


CHILD = """
import datetime as dt, sys
from dagster_cdp.client import PipelinesClient
from dagster_cdp import Events, SyncDefinition, run_sync
warehouse_url, api_url = sys.argv[1:]
events = SyncDefinition(
    name="events", table="events", cursor_column="occurred_at", lookback=dt.timedelta(hours=1),
    mapping=Events(id_column="event_id", event_column="event", user_id_column="user_id", timestamp_column="occurred_at"))
with PipelinesClient("test-key", base_url=api_url) as client:
    run_sync(events, warehouse=warehouse_url, client=client)
"""


def test_event_sync_killed_midway_resumes_without_gap_or_repeat(warehouse: Warehouse, emulator: Emulator) -> None:
    rows = [{**event(i, minutes=i // 500), "note": "x" * 1000} for i in range(1, 4001)]  # ~9 requests
    warehouse.create("events", {**EVENT_COLUMNS, "note": sa.Text}, rows)
    kill_after_requests(warehouse, emulator, CHILD, requests=4)
    assert StateStore(warehouse.engine).cursor_mark("events") is None  # no mark before a run completes
    applied = len(emulator.snapshot()["events"])
    assert 0 < applied < len(rows)

    with PipelinesClient("test-key", base_url=emulator.url) as client:
        report = run_sync(EVENTS, warehouse=warehouse.engine, client=client)
    assert report.rejected == []
    assert sorted(sent_events(emulator)) == list(range(1, 4001))  # resent in-flight calls were recognised
    assert report.inserted + applied >= len(rows)


def test_pages_screens_aliases_and_delivery_reports(warehouse: Warehouse, emulator: Emulator, client) -> None:
    warehouse.create("page_views", {"view_id": sa.String(10), "visitor": sa.String(20), "page": sa.String(20),
                                    "viewed_at": sa.DateTime, "url": sa.String(50)},
                     [{"view_id": "p1", "visitor": "anon-1", "page": "Pricing", "viewed_at": T0, "url": "/pricing"}])
    warehouse.create("screen_views", {"view_id": sa.Integer, "user_id": sa.String(20), "screen": sa.String(20),
                                      "viewed_at": sa.DateTime},
                     [{"view_id": 7, "user_id": "u1", "screen": "Cart", "viewed_at": T0}])
    aliases_table = warehouse.create("aliases", {"previous_id": sa.String(20), "user_id": sa.String(20)},
                                     [{"previous_id": "anon-1", "user_id": "u1"}])
    warehouse.create("deliveries", {"report_id": sa.Integer, "delivery_id": sa.String(30), "metric": sa.String(20),
                                    "recipient": sa.String(50), "reported_at": sa.DateTime},
                     [{"report_id": 1, "delivery_id": "dlv-1", "metric": "opened", "recipient": "a@example.com",
                       "reported_at": T0}])
    syncs = [
        SyncDefinition(name="pages", table="page_views", mapping=Pages(
            id_column="view_id", name_column="page", anonymous_id_column="visitor", timestamp_column="viewed_at")),
        SyncDefinition(name="screens", table="screen_views", mapping=Screens(
            id_column="view_id", name_column="screen", user_id_column="user_id", timestamp_column="viewed_at")),
        SyncDefinition(name="aliases", table="aliases", mapping=Aliases(previous_id_column="previous_id",
                                                                        user_id_column="user_id")),
        SyncDefinition(name="deliveries", query="select * from deliveries", cursor_column="report_id",
                       mapping=DeliveryReports(
            id_column="report_id", delivery_id_column="delivery_id", metric_column="metric",
            timestamp_column="reported_at")),
    ]
    for _ in range(2):  # the second run sends nothing
        assert [run_sync(s, warehouse=warehouse.engine, client=client).inserted for s in syncs] in ([1] * 4, [0] * 4)
    snapshot = emulator.snapshot()
    strip = [{k: v for k, v in e.items() if k != "messageId"} for e in snapshot["events"]]
    assert strip == [
        {"type": "page", "name": "Pricing", "userId": None, "anonymousId": "anon-1", "timestamp": "2024-03-01T12:00:00Z",
         "properties": {"url": "/pricing"}},
        {"type": "screen", "name": "Cart", "userId": "u1", "anonymousId": None, "timestamp": "2024-03-01T12:00:00Z",
         "properties": {}},
        {"type": "alias", "previousId": "anon-1", "userId": "u1", "anonymousId": None, "timestamp": None,
         "properties": {}},
    ]
    assert snapshot["aliases"] == [{"previousId": "anon-1", "userId": "u1"}]
    [report] = snapshot["delivery_reports"]
    assert (report["anonymousId"], report["timestamp"], report["properties"]) == (
        "dlv-1", "2024-03-01T12:00:00Z", {"deliveryId": "dlv-1", "metric": "opened", "recipient": "a@example.com"})

    warehouse.replace(aliases_table, [])  # a pair gone from the table is never undone, and no guard trips
    assert run_sync(syncs[2], warehouse=warehouse.engine, client=client).deleted == 0


def test_rows_the_api_cannot_take_are_reported(warehouse: Warehouse, emulator: Emulator, client) -> None:
    warehouse.create("events", EVENT_COLUMNS, [event(1, 0), {**event(2, 1), "user_id": None},
                                               {**event(3, 2), "event": None}, {**event(4, 3), "event_id": None}])
    report = run_sync(EVENTS, warehouse=warehouse.engine, client=client)
    assert report.inserted == 1
    reasons = sorted(r.reason for r in report.rejected)
    assert reasons == ["NULL or empty event name in column 'event'", "NULL or empty key in column 'event_id'",
                       "NULL or empty person id in 'user_id'; the call would belong to nobody"]


def test_definitions_that_cannot_work_fail_before_anything_runs() -> None:
    with pytest.raises(SourceError, match="cursor_column is only for send-once kinds"):
        SyncDefinition(name="people", table="people", mapping=People(id_column="id"), cursor_column="updated_at")
    with pytest.raises(SourceError, match="mode does not apply to events syncs"):
        SyncDefinition(name="events", table="events", mode="upsert",
                       mapping=Events(id_column="id", event_column="event", user_id_column="user_id"))
    with pytest.raises(SourceError, match="need user_id_column or anonymous_id_column"):
        Events(id_column="id", event_column="event")


def test_the_mark_never_passes_an_unsettled_row_and_keeps_its_tally() -> None:
    """A row read and not settled (rejected, in flight, a bad value) holds the mark, even below the old one; the
    tally below the mark gains the rows the mark passes and loses those it moves back over."""
    read = {50: 1, 150: 2, 300: 4, 500: 8}  # cursor -> check of the rows a run read (all at or above 40)

    def tally(low: int | None, high: int) -> Tally:
        rows = [c for c in read if (low is None or c >= low) and c < high]
        return Tally(len(rows), sum(read[c] for c in rows))

    old = CursorMark("occurred_at", "timestamp", 100, Tally(7, 70))
    assert next_mark(old, "occurred_at", "timestamp", 500, None, tally) == CursorMark(
        "occurred_at", "timestamp", 500, Tally(9, 76))  # 150 and 300 join the tally
    assert next_mark(old, "occurred_at", "timestamp", 500, 300, tally).below == Tally(8, 72)
    assert next_mark(old, "occurred_at", "timestamp", 500, 40, tally).below == Tally(6, 69)  # 50 leaves it
    assert next_mark(old, "occurred_at", "timestamp", None, None, tally) == old  # nothing read
    assert next_mark(old, "occurred_at", "timestamp", 50, None, tally) == old  # never backwards unless held
    assert next_mark(None, "occurred_at", "timestamp", 500, None, tally).below == Tally(3, 7)  # a whole read


def test_an_event_the_api_rejects_holds_the_mark_until_it_is_fixed(warehouse: Warehouse, emulator: Emulator,
                                                                   client, tmp_path: Path) -> None:
    """Without a lookback, a mark past the rejected row would never read it again; the mark stops at it."""
    columns = {"event_id": sa.Integer, "anon_id": sa.String(20), "event": sa.String(50), "occurred_at": sa.DateTime,
               "objectId": sa.String(20), "objectTypeId": sa.String(5)}
    rows = [{"event_id": i, "anon_id": f"a{i}", "event": "Object Deleted", "occurred_at": T0 + dt.timedelta(hours=i),
             "objectId": f"o{i}", "objectTypeId": "x" if i == 3 else "1"} for i in range(1, 6)]
    table = warehouse.create("deletions", columns, rows)  # the emulator refuses objectTypeId "x"; our checks pass it
    sync = SyncDefinition(name="deletions", table="deletions", cursor_column="occurred_at",
                          mapping=Events(id_column="event_id", event_column="event", anonymous_id_column="anon_id",
                                         timestamp_column="occurred_at", properties=["objectId", "objectTypeId"]))
    state = _state_elsewhere(tmp_path)
    report = run_sync(sync, warehouse=warehouse.engine, client=client, state=state)
    assert report.inserted == 4 and [(r.key, r.operation) for r in report.rejected] == [("3", "insert")]
    assert "objectTypeId must be a string of digits" in report.rejected[0].reason

    with warehouse.engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.event_id == 3).values(objectTypeId="1"))
    report = run_sync(sync, warehouse=warehouse.engine, client=client, state=state)
    assert (report.inserted, report.unchanged, report.rejected) == (1, 2, [])  # read from event 3 on, sent once
    stats = emulator.stats()
    assert (stats["calls_applied"], stats["repeats"]) == (5, 0)  # each event applied once
