"""Sync history in the state store: a row per run in `cdp_runs` (succeeded, failed, killed, dry runs), the rows not
synced in `cdp_rejections`, retention, and the Dagster metadata and descriptions that point at them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest
import sqlalchemy as sa

from dagster_cdp import (
    CustomerIOResource,
    CustomerIOWarehouseResource,
    Emulator,
    Events,
    People,
    SourceError,
    StateStore,
    SyncAbortedError,
    SyncDefinition,
    build_customerio_sync_asset,
    customerio_sync_asset_spec,
    run_sync,
)
from dagster_cdp.client import PipelinesClient
from dagster_cdp.dagster.declared_syncs import parse_sync
from dagster_cdp.errors import AuthenticationError
from dagster_cdp.sync.history import RunHistory, RunStart
from dagster_cdp.sync.mapping import canonical_json, hash_hex
from dagster_cdp.sync.report import SyncReport
from tests.reliability import kill_after_requests
from tests.test_sync_engine import PEOPLE, PEOPLE_COLUMNS, people_rows
from tests.test_sync_faults import CHILD, COLUMNS, rows
from tests.warehouses import Warehouse, sqlite_warehouse

MOMENTS = ("started_at", "ended_at")
ZEROS = dict.fromkeys(("source_rows", "inserted", "updated", "deleted", "unchanged", "rejected", "deferred", "requests",
                       "bytes", "retries"), 0)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def runs(warehouse: Warehouse, sync: str | None = None) -> list[dict[str, Any]]:
    """The rows of cdp_runs (of one sync), oldest first."""
    found = warehouse.rows(StateStore(warehouse.engine).history.runs)
    return sorted((r for r in found if sync is None or r["sync"] == sync), key=lambda r: r["started_at"])


def recorded(definition: SyncDefinition) -> str:
    """The definition as a run's row keeps it."""
    return canonical_json(definition.as_record()).decode()


def between(row: dict[str, Any], before: dt.datetime, after: dt.datetime, *moments: str) -> dict[str, Any]:
    """The row without `moments`, each checked to lie between `before` and `after` (UTC, naive)."""
    for name in moments:
        assert before <= row[name] <= after, (name, row[name], before, after)
    return {k: v for k, v in row.items() if k not in moments}


def counts(report: SyncReport) -> dict[str, int]:
    return {"source_rows": report.source_rows, "inserted": report.inserted, "updated": report.updated,
            "deleted": report.deleted, "unchanged": report.unchanged, "rejected": len(report.rejected),
            "deferred": report.deferred, "requests": report.requests, "bytes": report.bytes, "retries": report.retries}


def test_a_dry_run_and_a_real_run_are_recorded(warehouse: Warehouse, emulator: Emulator, client) -> None:
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 31)))
    before = _now()
    dry = run_sync(PEOPLE, warehouse=warehouse.engine, client=None, dry_run=True)
    middle = _now()
    inspector = sa.inspect(warehouse.engine)
    assert inspector.has_table("cdp_runs") and not inspector.has_table("cdp_state")  # the history, not the state
    [row] = runs(warehouse)
    assert between(row, before, middle, *MOMENTS) == {
        "run_id": dry.run_id, "sync": "people", "partition": None, "definition": recorded(PEOPLE), "dagster_run_id": None, "outcome": "succeeded",
        "dry_run": True, "full_resync": False, **ZEROS, "source_rows": 30, "inserted": 30, "diff": dry.diff,
        "error": None}  # what it would have sent
    assert row["started_at"] <= row["ended_at"] and dry.history_table == "cdp_runs"

    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client, dagster_run_id="a-dagster-run")
    after = _now()
    assert emulator.stats()["requests"] == report.requests >= 1
    [_, row] = runs(warehouse)
    assert between(row, middle, after, *MOMENTS) == {
        "run_id": report.run_id, "sync": "people", "partition": None, "definition": recorded(PEOPLE), "dagster_run_id": "a-dagster-run",
        "outcome": "succeeded", "dry_run": False, "full_resync": False, **counts(report), "inserted": 30,
        "diff": "portable" if warehouse.kind == "sqlite" else "in-warehouse", "error": None}
    assert StateStore(warehouse.engine).last_runs() == [runs(warehouse)[-1]]

    split = dataclasses.replace(PEOPLE, name="split", partitions=2, partition=1)
    resync = run_sync(split, warehouse=warehouse.engine, client=client, full_resync=True)
    newest = {r["sync"]: r for r in StateStore(warehouse.engine).last_runs()}
    assert list(newest) == ["people", "split[2/2]"]
    assert (newest["split[2/2]"]["run_id"], newest["split[2/2]"]["partition"]) == (resync.run_id, 1)
    assert newest["split[2/2]"]["full_resync"] is True and newest["people"]["run_id"] == report.run_id
    assert newest["split[2/2]"]["definition"] == recorded(dataclasses.replace(split, partition=None))  # as declared
    assert SyncDefinition.from_record(orjson.loads(newest["split[2/2]"]["definition"])) == dataclasses.replace(
        split, partition=None)


def test_failed_runs_record_the_error_and_raise_it_unchanged(warehouse: Warehouse, emulator: Emulator, client) -> None:
    table = warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 11)))
    with Emulator(api_keys=["the-right-key"]) as strict, PipelinesClient("a-wrong-key", base_url=strict.url) as wrong:
        before = _now()
        with pytest.raises(AuthenticationError) as refused:
            run_sync(PEOPLE, warehouse=warehouse.engine, client=wrong, dagster_run_id="d1")
        assert strict.stats()["requests"] == 1
    [row] = runs(warehouse)
    assert between(row, before, _now(), *MOMENTS) == {
        "run_id": row["run_id"], "sync": "people", "partition": None, "definition": recorded(PEOPLE), "dagster_run_id": "d1", "outcome": "failed",
        "dry_run": False, "full_resync": False, **ZEROS, "source_rows": 10, "requests": 1, "bytes": row["bytes"],
        "diff": None, "error": f"AuthenticationError: {refused.value}"}  # counts as far as it got: the refused request
    assert row["bytes"] > 0
    assert "a-wrong-key" not in row["error"]

    run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    warehouse.replace(table, people_rows(range(1, 3)))  # 8 of 10 people gone: the guard stops the run
    with pytest.raises(SyncAbortedError) as aborted:
        run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    failed = runs(warehouse)[-1]
    assert (failed["outcome"], failed["error"]) == ("failed", f"SyncAbortedError: {aborted.value}")
    assert (failed["source_rows"], failed["deleted"], failed["requests"]) == (2, 0, 0)
    assert [r["outcome"] for r in runs(warehouse)] == ["failed", "succeeded", "failed"]


class _UnwritableHistory(RunHistory):
    """A history whose end-of-run write fails, as when the state database goes away during a run."""

    def finish(self, run_id: str, report: SyncReport, error: BaseException | None = None) -> None:
        raise sa.exc.OperationalError("UPDATE cdp_runs ...", {}, Exception("the state database went away"))


def test_a_history_that_cannot_be_written_never_hides_the_runs_own_error(
        tmp_path: Path, emulator: Emulator, client, caplog: pytest.LogCaptureFixture) -> None:
    url = sqlite_warehouse(tmp_path, "create table people (id integer, plan text)",
                           "insert into people values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
    run_sync(PEOPLE, warehouse=url, client=client)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("delete from people")
    store = StateStore(engine)
    store.history = _UnwritableHistory(store.engine, store.dialect, None, "cdp_")
    with caplog.at_level(logging.WARNING), pytest.raises(SyncAbortedError, match="the source returned no rows"):
        run_sync(PEOPLE, warehouse=engine, client=client, state=store)
    assert "sync 'people': could not record how it failed in cdp_runs and cdp_rejections" in caplog.text
    assert "the state database went away" in caplog.text
    assert [r["outcome"] for r in store.last_runs()] == ["running"]  # the next run records it as killed
    engine.dispose()


class _NoGrant(RunHistory):
    """A history the sync's database user may not create, as with a role granted only its state tables."""

    def start(self, run: RunStart) -> str:
        raise sa.exc.ProgrammingError("CREATE TABLE cdp_runs ...", {}, Exception("permission denied for schema"))


@pytest.mark.parametrize("history", [_NoGrant, _UnwritableHistory])
def test_a_history_that_cannot_be_written_never_fails_a_sync(tmp_path: Path, emulator: Emulator, client,
                                                              caplog: pytest.LogCaptureFixture, history) -> None:
    url = sqlite_warehouse(tmp_path, "create table people (id integer, plan text)",
                           "insert into people values (1, 'a'), (2, 'b')")
    engine = sa.create_engine(url)
    store = StateStore(engine)
    store.history = history(store.engine, store.dialect, None, "cdp_")
    with caplog.at_level(logging.WARNING):
        report = run_sync(PEOPLE, warehouse=engine, client=client, state=store)
    assert (report.inserted, sorted(emulator.snapshot()["people"])) == (2, ["1", "2"])
    doing, why = (("record the run's start", "permission denied for schema") if history is _NoGrant
                  else ("record how it ended", "the state database went away"))
    assert f"sync 'people': could not {doing} in cdp_runs and cdp_rejections" in caplog.text and why in caplog.text
    assert (report.run_id is None) == (history is _NoGrant)
    engine.dispose()


def test_a_killed_run_is_recorded_by_the_next_run(warehouse: Warehouse, emulator: Emulator) -> None:
    warehouse.create("people", COLUMNS, rows(range(1, 4001)))
    before = _now()
    kill_after_requests(warehouse, emulator, CHILD, requests=2)
    [dead] = runs(warehouse)
    assert between(dead, before, _now(), "started_at") == {
        "run_id": dead["run_id"], "sync": "people", "partition": None, "definition": recorded(PEOPLE), "dagster_run_id": None, "ended_at": None,
        "outcome": "running", "dry_run": False, "full_resync": False, **ZEROS, "diff": None, "error": None}

    with PipelinesClient("test-key", base_url=emulator.url) as client:
        report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client, force=True)
    killed, new = runs(warehouse)
    assert killed == {**dead, "outcome": "killed", "error": (
        "The process stopped before this run ended (killed, out of memory, or its machine went down); found by run "
        f"{report.run_id} at {new['started_at']:%Y-%m-%d %H:%M:%S} UTC.")}
    assert (new["run_id"], new["outcome"], new["inserted"]) == (report.run_id, "succeeded", report.inserted)


class _CtrlC(logging.Handler):
    """Presses Ctrl-C as the run starts sending, as an operator (or Dagster terminating a run) interrupts it."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith("sending the changes"):
            raise KeyboardInterrupt


def test_an_interrupted_run_is_recorded_as_killed_by_itself(warehouse: Warehouse, emulator: Emulator, client) -> None:
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 11)))
    log = logging.getLogger("test_sync_history.interrupted")
    log.setLevel(logging.DEBUG)
    log.addHandler(_CtrlC())
    before = _now()
    with pytest.raises(KeyboardInterrupt):
        run_sync(PEOPLE, warehouse=warehouse.engine, client=client, log=log)
    [row] = runs(warehouse)
    assert between(row, before, _now(), *MOMENTS) == {
        "run_id": row["run_id"], "sync": "people", "partition": None, "definition": recorded(PEOPLE), "dagster_run_id": None, "outcome": "killed",
        "dry_run": False, "full_resync": False, **ZEROS, "source_rows": 10, "diff": None,
        "error": "KeyboardInterrupt"}
    assert emulator.stats()["requests"] == 0


def _rejection(report: SyncReport, key: str, operation: str, **fields: Any) -> dict[str, Any]:
    """A cdp_rejections row as the run `report` leaves it, its reason the report's unless given."""
    [reason] = {r.reason for r in report.rejected if (r.key, r.operation) == (key, operation)}
    return {"sync": report.sync, "key": key, "operation": operation, "reason": reason, "run_id": report.run_id,
            **fields}


def test_rows_rejected_before_sending_are_kept_counted_and_cleared(warehouse: Warehouse, emulator: Emulator,
                                                                   client) -> None:
    columns = {"id": sa.Integer, "avatar": sa.LargeBinary}
    bad = [{"id": 1, "avatar": b"fine"}, {"id": 2, "avatar": b"\x89PNG"}, {"id": None, "avatar": b"x"},
           {"id": None, "avatar": b"y"}]
    table = warehouse.create("people", columns, bad)
    store = StateStore(warehouse.engine)

    first = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    seen = store.rejections("people")
    t1 = seen[0]["first_seen"]
    null_key = "2 rows: NULL or empty key in column 'id'"
    assert seen == [
        {**_rejection(first, "2", "source"), "attempts": 1, "first_seen": t1, "last_seen": t1},
        {**_rejection(first, "<NULL>", "source"), "reason": null_key, "attempts": 1, "first_seen": t1,
         "last_seen": t1}]
    assert "'avatar'" in seen[0]["reason"] and runs(warehouse)[-1]["rejected"] == 3

    run_sync(PEOPLE, warehouse=warehouse.engine, client=None, dry_run=True)
    assert store.rejections("people") == seen  # a dry run leaves them

    second = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    again = store.rejections("people")
    t2 = again[0]["last_seen"]
    assert t2 > t1 and again == [
        {**_rejection(second, "2", "source"), "attempts": 2, "first_seen": t1, "last_seen": t2},
        {**_rejection(second, "<NULL>", "source"), "reason": null_key, "attempts": 2, "first_seen": t1,
         "last_seen": t2}]

    warehouse.replace(table, [{"id": 1, "avatar": b"fine"}, {"id": 2, "avatar": b"also fine"}])
    fixed = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (fixed.inserted, fixed.rejected, store.rejections("people")) == (1, [], [])
    assert emulator.snapshot()["people"]["2"]["traits"] == {"avatar": "also fine"}


def test_rows_the_api_refuses_count_its_refusals_until_accepted(warehouse: Warehouse, emulator: Emulator,
                                                                client) -> None:
    columns = {"event_id": sa.Integer, "anon_id": sa.String(20), "event": sa.String(50), "objectId": sa.String(20),
               "objectTypeId": sa.String(5)}
    events = [{"event_id": i, "anon_id": f"a{i}", "event": "Object Deleted", "objectId": f"o{i}",
               "objectTypeId": "x" if i == 2 else "1"} for i in range(1, 4)]  # the emulator refuses "x"
    table = warehouse.create("deletions", columns, events)
    sync = SyncDefinition(name="deletions", table="deletions", max_row_attempts=2, mapping=Events(
        id_column="event_id", event_column="event", anonymous_id_column="anon_id",
        properties=["objectId", "objectTypeId"]))
    store = StateStore(warehouse.engine)

    first = run_sync(sync, warehouse=warehouse.engine, client=client)
    [row] = store.rejections("deletions")
    t1 = row["first_seen"]
    assert row == {**_rejection(first, "2", "insert"), "attempts": 1, "first_seen": t1, "last_seen": t1}
    assert "objectTypeId must be a string of digits" in row["reason"]  # the API's own words

    second = run_sync(sync, warehouse=warehouse.engine, client=client)
    [row] = store.rejections("deletions")
    assert row == {**_rejection(second, "2", "insert"), "attempts": 2, "first_seen": t1, "last_seen": row["last_seen"]}
    refused = row["reason"]

    requests = emulator.stats()["requests"]
    third = run_sync(sync, warehouse=warehouse.engine, client=client)  # attempts used up: not sent, still reported
    [row] = store.rejections("deletions")
    assert row == {**_rejection(third, "2", "insert"), "attempts": 2, "first_seen": t1, "last_seen": row["last_seen"]}
    assert row["reason"] == f"rejected 2 times, not retried: {refused}" and emulator.stats()["requests"] == requests

    with warehouse.engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.event_id == 2).values(objectTypeId="1"))
    fixed = run_sync(sync, warehouse=warehouse.engine, client=client)
    assert (fixed.inserted, fixed.rejected, store.rejections("deletions")) == (1, [], [])


def test_runs_older_than_history_days_are_trimmed(warehouse: Warehouse, emulator: Emulator, client) -> None:
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 4)))
    run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    [current] = runs(warehouse)
    now = _now()
    old = {(sync, days): {**current, "run_id": f"{sync}-{days}", "sync": sync,
                          "started_at": now - dt.timedelta(days=days), "ended_at": now - dt.timedelta(days=days)}
           for sync, days in (("people", 91), ("people", 89), ("people", 2), ("other", 200))}
    with warehouse.engine.begin() as connection:
        connection.execute(sa.insert(StateStore(warehouse.engine).history.runs), list(old.values()))

    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)  # history_days=90
    assert [r["run_id"] for r in runs(warehouse)] == ["other-200", "people-89", "people-2", current["run_id"],
                                                      report.run_id]  # another sync's rows are its own runs' to trim
    weekly = dataclasses.replace(PEOPLE, history_days=7)
    latest = run_sync(weekly, warehouse=warehouse.engine, client=client)
    assert [r["run_id"] for r in runs(warehouse, "people")] == ["people-2", current["run_id"], report.run_id,
                                                                 latest.run_id]


def test_history_days_is_declared_in_yaml_and_at_least_one() -> None:
    declared = {"kind": "people", "name": "p", "table": "p", "id": "id"}
    assert parse_sync(declared).to_definition().history_days == 90
    assert parse_sync({**declared, "history_days": 30}).to_definition().history_days == 30
    with pytest.raises(ValueError, match="history_days must be >= 1"):
        parse_sync({**declared, "history_days": 0})
    with pytest.raises(SourceError, match="history_days must be >= 1"):
        SyncDefinition(name="p", table="p", mapping=People(id_column="id"), history_days=0)


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    return sqlite_warehouse(tmp_path, "create table people (user_id integer, plan text)",
                            "insert into people values " + ", ".join(f"({i}, 'free')" for i in range(1, 21)))


def test_dagster_metadata_points_at_the_runs_row(emulator: Emulator, warehouse_url: str) -> None:
    sync = SyncDefinition(name="people", table="people", mapping=People(id_column="user_id"))
    resources = {"customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
                 "warehouse": CustomerIOWarehouseResource(url=warehouse_url, state_schema="main")}
    result = dg.materialize([build_customerio_sync_asset(sync)], resources=resources)
    [event] = result.get_asset_materialization_events()
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}
    run_id = metadata["cdp/history_run_id"]
    assert metadata["cdp/history"] == f"SELECT * FROM main.cdp_runs WHERE run_id = '{run_id}'"
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as connection:
        [row] = connection.exec_driver_sql(metadata["cdp/history"]).mappings().all()
    assert (row["run_id"], row["sync"], row["dagster_run_id"], row["outcome"], row["inserted"]) == (
        run_id, "people", result.run_id, "succeeded", 20)

    dry = dg.materialize([build_customerio_sync_asset(sync)], resources=resources,
                         run_config={"ops": {"cdp_people": {"config": {"dry_run": True}}}})
    [observation] = dry.asset_observations_for_node("cdp_people")
    dry_id = observation.metadata["cdp/history_run_id"].value
    with engine.connect() as connection:
        [row] = connection.exec_driver_sql(observation.metadata["cdp/history"].value).mappings().all()
    assert (row["run_id"], row["dagster_run_id"], row["dry_run"], row["unchanged"]) == (dry_id, dry.run_id, 1, 20)
    engine.dispose()


def test_the_asset_description_says_what_it_syncs_and_where_its_history_is() -> None:
    spec = customerio_sync_asset_spec(PEOPLE)
    assert spec.description == (
        "Syncs people to Customer.io as people (mirror mode): only changed rows are sent. Its runs are recorded in "
        "table cdp_runs and the rows it could not sync in cdp_rejections, both in the state store (the warehouse "
        "resource's state_url database and state_schema, default prefix), where sync = 'people'.")
    split = customerio_sync_asset_spec(dataclasses.replace(PEOPLE, name="big", query="SELECT 1", table=None,
                                                           partitions=4))
    assert split.description.startswith("Syncs a SQL query to Customer.io as people (mirror mode)")
    assert split.description.endswith("where sync = 'big[1/4]' to 'big[4/4]' (one per partition).")


def test_a_refused_call_held_back_by_the_change_cap_stays_listed(warehouse: Warehouse, emulator: Emulator,
                                                                  client) -> None:
    columns = {"event_id": sa.Integer, "anon_id": sa.String(20), "event": sa.String(50), "objectId": sa.String(20),
               "objectTypeId": sa.String(5)}

    def events(ids: range) -> list[dict[str, Any]]:
        return [{"event_id": i, "anon_id": f"a{i}", "event": "Object Deleted", "objectId": f"o{i}",
                 "objectTypeId": "x" if i == 3 else "1"} for i in ids]  # the emulator refuses "x"

    table = warehouse.create("deletions", columns, events(range(1, 4)))
    sync = SyncDefinition(name="deletions", table="deletions", mapping=Events(
        id_column="event_id", event_column="event", anonymous_id_column="anon_id",
        properties=["objectId", "objectTypeId"]))
    store = StateStore(warehouse.engine)
    first = run_sync(sync, warehouse=warehouse.engine, client=client)
    [refused] = store.rejections("deletions")
    assert refused == {**_rejection(first, "3", "insert"), "attempts": 1, "first_seen": refused["first_seen"],
                       "last_seen": refused["first_seen"]}

    warehouse.replace(table, events(range(1, 10)))
    planned = sorted(["3", *map(str, range(4, 10))], key=lambda key: hash_hex(key.encode()))
    assert planned[0] != "3"  # the capped run sends another key first (same version, then by key hash)
    capped = run_sync(dataclasses.replace(sync, max_changes_per_run=1), warehouse=warehouse.engine, client=client)
    assert (capped.inserted, capped.deferred, capped.rejected) == (1, 6, [])
    assert store.rejections("deletions") == [refused]  # not sent, not accepted: still refused, as cdp_state says

    with warehouse.engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.event_id == 3).values(objectTypeId="1"))
    done = run_sync(sync, warehouse=warehouse.engine, client=client)
    assert (done.inserted, done.rejected, store.rejections("deletions")) == (6, [], [])
