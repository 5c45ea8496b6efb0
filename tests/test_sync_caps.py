"""Gentle backfills: a sync's cap on calls per second and on changes per run, and the progress a long run logs."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dagster_cdp import (
    CustomerIOResource,
    CustomerIOWarehouseResource,
    Emulator,
    Events,
    People,
    PipelinesClient,
    SourceError,
    StateStore,
    SyncAbortedError,
    SyncDefinition,
    run_sync,
)
from dagster_cdp.sync import progress
from dagster_cdp.sync.progress import Progress
from tests.components import load_defs_yaml, load_error
from tests.test_sync_engine import PEOPLE_COLUMNS, expected_people, people_rows
from tests.warehouses import Warehouse, sqlite_warehouse

PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))
CAPPED_WAREHOUSES = pytest.mark.parametrize("warehouse", ["sqlite", "duckdb", "postgresql"], indirect=True)


class Lines(logging.Handler):
    """The messages logged to a logger of its own (a run's `log=`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.logger = logging.getLogger(f"tests.caps.{id(self)}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def people_url(tmp_path: Path, count: int) -> str:
    """A SQLite warehouse whose table `people` holds the people 1 to `count`."""
    return sqlite_warehouse(tmp_path, "create table people (id integer, email text)",
                            "insert into people values " + ", ".join(f"({i}, 'u{i}@x.com')" for i in range(1, count + 1)))


# -- calls per second ---------------------------------------------------------------------------------------------


def test_calls_per_second_cap_spreads_the_calls_in_requests_of_one_second(emulator: Emulator, client,
                                                                            tmp_path: Path) -> None:
    """500 calls at 100 a second: five requests of 100, one a second. The pacing sleeps, so the API never sees them
    sooner; 10 ms a call leaves room for a loaded machine on the other side."""
    url = people_url(tmp_path, 500)
    report = run_sync(dataclasses.replace(PEOPLE, max_calls_per_second=100), warehouse=url, client=client)
    assert (report.inserted, report.requests) == (500, 5)
    stats = emulator.stats()
    assert (stats["calls_received"], stats["max_calls_per_request"]) == (500, 100)
    # Five requests a second apart span four seconds; the fifth second is the last request's own.
    rate = stats["calls_received"] / (stats["last_request_at"] - stats["first_request_at"] + 1.0)
    assert 90 <= rate <= 110, rate
    assert len(emulator.snapshot()["people"]) == 500


def test_each_partition_sends_its_share_of_the_rate(emulator: Emulator, client, tmp_path: Path) -> None:
    url = people_url(tmp_path, 300)
    shared = dataclasses.replace(PEOPLE, partitions=2, partition=0, max_calls_per_second=200)
    report = run_sync(shared, warehouse=url, client=client)
    assert report.inserted > 100 and emulator.stats()["max_calls_per_request"] == 100  # 100 a second, not 200


def test_a_request_holds_at_most_max_calls_per_request(emulator: Emulator, client) -> None:
    calls = [{"type": "identify", "userId": str(i), "traits": {"n": i}} for i in range(10)]
    results = list(client.deliver(calls, max_calls_per_request=3))
    assert sorted(len(result.accepted) for result in results if result.requests) == [1, 3, 3, 3]  # as they finish
    assert emulator.stats()["max_calls_per_request"] == 3
    with pytest.raises(ValueError, match="max_calls_per_request must be at least 1, got 0"):
        list(client.deliver(calls, max_calls_per_request=0))


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("max_calls_per_second", 0, "max_calls_per_second must be a number above 0, got 0"),
    ("max_calls_per_second", -5.0, "max_calls_per_second must be a number above 0"),
    ("max_calls_per_second", float("inf"), "max_calls_per_second must be a number above 0"),
    ("max_changes_per_run", 0, "max_changes_per_run must be at least 1, got 0"),
])
def test_caps_that_cannot_work_are_refused(setting: str, value: float, message: str) -> None:
    with pytest.raises(SourceError, match=re.escape(f"Sync 'people': {message}")):
        dataclasses.replace(PEOPLE, **{setting: value})


# -- changes per run ----------------------------------------------------------------------------------------------


def run_until_done(definition: SyncDefinition, warehouse: Warehouse, client: PipelinesClient,
                   state: StateStore | None = None) -> list[tuple[int, int, int, int]]:
    """Runs the sync until a run defers nothing; (inserted, updated, deleted, deferred) of each run."""
    runs = []
    while not runs or runs[-1][3]:
        report = run_sync(definition, warehouse=warehouse.engine, client=client, state=state)
        assert report.rejected == []
        runs.append((report.inserted, report.updated, report.deleted, report.deferred))
        assert len(runs) < 20
    return runs


@CAPPED_WAREHOUSES
def test_change_cap_spreads_a_mirror_sync_over_runs(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = people_rows(range(1, 51))
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)
    capped = dataclasses.replace(PEOPLE, max_changes_per_run=20)
    log = Lines()

    first = run_sync(capped, warehouse=warehouse.engine, client=client, log=log.logger)
    assert (first.inserted, first.deferred, first.unchanged) == (20, 30, 0)
    assert "20 inserts" in first.summary() and "30 left for later runs (max_changes_per_run)" in first.summary()
    assert ("sync 'people': stopped at max_changes_per_run: sent 20 calls, 30 planned calls left; the next run "
            "continues where this one stopped") in log.lines
    sent = emulator.snapshot()["people"]
    assert len(sent) == 20 and sent == {key: expected_people(rows)[key] for key in sent}
    assert warehouse.accepted_keys("people") == set(sent)  # only what the API accepted is settled

    assert run_until_done(capped, warehouse, client) == [(20, 0, 0, 10), (10, 0, 0, 0)]
    assert emulator.snapshot()["people"] == expected_people(rows)
    assert run_sync(capped, warehouse=warehouse.engine, client=client).unchanged == 50

    # 8 deletions (16% of 50, under max_delete_fraction) and 7 updates, 5 calls a run.
    rows = [{**r, "plan": "pro"} if r["id"] % 8 == 1 else r for r in rows if r["id"] % 6 != 0]
    warehouse.replace(table, rows)
    runs = run_until_done(dataclasses.replace(capped, max_changes_per_run=5), warehouse, client)
    assert [sum(run[:3]) for run in runs] == [5, 5, 5] and [run[3] for run in runs] == [10, 5, 0]
    assert tuple(map(sum, zip(*runs, strict=True)))[:3] == (0, 7, 8)
    assert emulator.snapshot()["people"] == expected_people(rows)
    assert warehouse.accepted_keys("people") == {str(r["id"]) for r in rows}

    # Deleting 16 of 42 (38%) is refused on the whole plan, before the cap would pick 5 of them.
    requests = emulator.stats()["requests"]
    warehouse.replace(table, rows[:26])
    with pytest.raises(SyncAbortedError, match="delete 16 of 42 synced keys"):
        run_sync(dataclasses.replace(capped, max_changes_per_run=5), warehouse=warehouse.engine, client=client)
    assert emulator.stats()["requests"] == requests
    assert emulator.snapshot()["people"] == expected_people(rows)


@CAPPED_WAREHOUSES
def test_change_cap_on_events_read_by_cursor_sends_each_event_once(warehouse: Warehouse, emulator: Emulator,
                                                                    client, tmp_path: Path) -> None:
    """Capped-away events hold the cursor mark, so the next run reads them again: nothing is skipped. The state is
    kept apart from the warehouse, so the portable diff reads by the mark."""
    columns = {"event_id": sa.Integer, "user_id": sa.String(20), "event": sa.String(50), "seq": sa.Integer}
    rows = [{"event_id": i, "user_id": f"u{i}", "event": "Order Placed", "seq": None if i % 10 == 0 else i // 3}
            for i in range(1, 31)]  # three events share each cursor value; three have none
    table = warehouse.create("events", columns, rows)
    events = SyncDefinition(name="events", table="events", cursor_column="seq", max_changes_per_run=7,
                            mapping=Events(id_column="event_id", event_column="event", user_id_column="user_id"))
    state = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")

    runs = run_until_done(events, warehouse, client, state)
    assert runs == [(7, 0, 0, 23), (7, 0, 0, 16), (7, 0, 0, 9), (7, 0, 0, 2), (2, 0, 0, 0)]
    assert state.cursor_mark("events").value == 9  # the highest cursor: every event below it is settled
    warehouse.insert(table, [{"event_id": 31, "user_id": "u31", "event": "Order Placed", "seq": 20}])
    assert run_until_done(events, warehouse, client, state) == [(1, 0, 0, 0)]

    sent = emulator.snapshot()["events"]
    assert sorted(int(e["userId"][1:]) for e in sent) == list(range(1, 32))  # each event exactly once
    assert emulator.stats()["repeats"] == 0


def test_capped_full_resyncs_run_again_go_on_with_the_keys_not_resent(emulator: Emulator, client,
                                                                        tmp_path: Path) -> None:
    url = people_url(tmp_path, 10)
    capped = dataclasses.replace(PEOPLE, max_changes_per_run=4)
    assert run_until_done(capped, Warehouse("sqlite", url, "main"), client) == [(4, 0, 0, 6), (4, 0, 0, 2),
                                                                               (2, 0, 0, 0)]
    log = Lines()
    for resent in (4, 4, 4):
        report = run_sync(capped, warehouse=url, client=client, full_resync=True, log=log.logger)
        assert (report.updated, report.deferred) == (resent, 10 - resent)
    assert any(line.endswith("where this one stopped (resends of unchanged rows only go on in a full resync: run "
                             "with full_resync again for them)") for line in log.lines)
    store = StateStore(url)
    store.settle("people")
    versions = sorted(row[4] for row in store.iter_rows("people", 100))  # accepted calls of each key
    assert versions == [2] * 8 + [3] * 2  # every key resent once, two of them twice
    assert run_sync(capped, warehouse=url, client=client).unchanged == 10  # a plain run resends nothing


def test_change_cap_is_shown_by_a_dry_run(tmp_path: Path, emulator: Emulator, client) -> None:
    url = people_url(tmp_path, 3)
    report = run_sync(dataclasses.replace(PEOPLE, max_changes_per_run=2), warehouse=url, client=None, dry_run=True)
    assert (report.inserted, report.deferred, len(report.samples["insert"])) == (2, 1, 2)
    assert "would send 2 inserts" in report.summary() and "1 left for later runs" in report.summary()


# -- declared in YAML ---------------------------------------------------------------------------------------------

DEFS_YAML = """\
type: dagster_cdp.CustomerIOSyncComponent
attributes:
  warehouse_kind: sqlite
  syncs:
    - name: people
      kind: people
      table: people
      id: user_id
      max_changes_per_run: 2
      max_calls_per_second: 1000
"""


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    return sqlite_warehouse(tmp_path, "create table people (user_id integer, email text)",
                            "insert into people values (1, 'ada@example.com'), (2, 'alan@example.com'), "
                            "(3, 'grace@example.com')")


def _materialize(emulator: Emulator, warehouse_url: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    resources = {"customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
                 "warehouse": CustomerIOWarehouseResource(url=warehouse_url)}
    result = dg.materialize(list(load_defs_yaml(DEFS_YAML).assets), resources=resources, instance=instance)
    assert result.success
    return result


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {key: value.value for key, value in event.materialization.metadata.items()}


def test_caps_declared_in_yaml_spread_the_sync_over_materializations(emulator: Emulator, warehouse_url: str) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        first = _metadata(_materialize(emulator, warehouse_url, instance))
        assert (first["inserted"], first["deferred"]) == (2, 1)
        assert len(emulator.snapshot()["people"]) == 2
        second = _metadata(_materialize(emulator, warehouse_url, instance))
        assert (second["inserted"], second["deferred"], second["unchanged"]) == (1, 0, 2)
    assert set(emulator.snapshot()["people"]) == {"1", "2", "3"}


@pytest.mark.parametrize(("setting", "line", "message"), [
    # the engine's checks are located at the sync, as for its other settings; a value of the wrong type at the value
    ("max_calls_per_second: 0", 5, "Sync 'people': max_calls_per_second must be a number above 0, got 0.0"),
    ("max_calls_per_second: fast", 10, "max_calls_per_second: Input should be a valid number"),
    ("max_changes_per_run: 0", 5, "Sync 'people': max_changes_per_run must be at least 1, got 0"),
    ("max_changes_per_run: 2.5", 9, "max_changes_per_run: Input should be a valid integer"),
])
def test_caps_that_cannot_work_are_located_in_yaml(setting: str, line: int, message: str) -> None:
    name = setting.split(":")[0]
    declared = re.sub(rf"{name}: \S+", setting, DEFS_YAML)
    error = load_error(declared)
    assert f"defs.yaml:{line}" in error and message in error


# -- progress -----------------------------------------------------------------------------------------------------


def test_progress_line_has_rate_share_and_time_left() -> None:
    log = Lines()
    line = Progress(log.logger, "sync 'people': sent", "calls", 10_000_000).line(1_200_000, 12.0)
    assert line == "sync 'people': sent 1,200,000 of 10,000,000 calls (12%), 100,000 calls/s, about 1m28s left"
    counted = Progress(log.logger, "sync 'people': read", "source rows", lambda: 50_000_000).line(5_000_000, 50.0)
    assert counted == "sync 'people': read 5,000,000 of 50,000,000 source rows (10%), 100,000 rows/s, about 7m30s left"
    unknown = Progress(log.logger, "x: read", "source rows").line(7_200_000, 3_600.0)
    assert unknown == "x: read 7,200,000 source rows, 2,000 rows/s"  # a total not known: no share, no time left
    slow = Progress(log.logger, "x: sent", "calls", 10_000).line(100, 60.0)
    assert slow == "x: sent 100 of 10,000 calls (1%), 1.7 calls/s, about 1h39m left"


@pytest.mark.parametrize("warehouse", ["sqlite", "duckdb"], indirect=True)
def test_a_run_logs_its_progress_while_reading_and_sending(warehouse: Warehouse, emulator: Emulator, client,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With no interval, every row read and every request sent logs a line (the in-warehouse diff's reading on
    DuckDB, the source's own on SQLite)."""
    monkeypatch.setattr(progress, "INTERVAL_SECONDS", 0.0)
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 21)))
    log = Lines()
    run_sync(dataclasses.replace(PEOPLE, max_changes_per_run=12, max_calls_per_second=1000),
             warehouse=warehouse.engine, client=client, log=log.logger)
    speed = r"[\d.,e+-]+ (rows|calls)/s"
    if warehouse.kind == "sqlite":
        reading = [line for line in log.lines if line.startswith("sync 'people': read ")]
        assert len(reading) == 20
        assert re.fullmatch(rf"sync 'people': read 20 of 20 source rows \(100%\), {speed}, about 0s left", reading[-1])
        assert re.fullmatch(rf"sync 'people': read 5 of 20 source rows \(25%\), {speed}, about \d+s left", reading[4])
    else:
        reading = [line for line in log.lines if line.startswith("sync 'people': the in-warehouse diff returned ")]
        assert re.fullmatch(rf"sync 'people': the in-warehouse diff returned 20 source rows, {speed}", reading[-1])
    sending = [line for line in log.lines if line.startswith("sync 'people': sent ")]
    assert re.fullmatch(rf"sync 'people': sent 12 of 12 calls \(100%\), {speed}, about 0s left", sending[-1])


def test_progress_reaches_the_dagster_run_logs(emulator: Emulator, warehouse_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "INTERVAL_SECONDS", 0.0)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _materialize(emulator, warehouse_url, instance)
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(re.fullmatch(r"sync 'people': read 3 of 3 source rows \(100%\), [\d.,e+-]+ rows/s, about 0s left", m)
               for m in messages), messages
    assert any(m.startswith("sync 'people': sent 2 of 2 calls (100%)") for m in messages)
    assert any(m.startswith("sync 'people': stopped at max_changes_per_run: sent 2 calls, 1 planned calls left")
               for m in messages)


@pytest.mark.parametrize("source", ["query", "one connection"])
def test_a_read_that_cannot_be_counted_cheaply_logs_its_progress_without_a_total(
        tmp_path: Path, emulator: Emulator, client, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """A query would run twice to be counted; an engine of one connection (an in-memory database) would count on the
    connection streaming the read, breaking it. Both read to the end and log counts and rates only."""
    monkeypatch.setattr(progress, "INTERVAL_SECONDS", 0.0)
    if source == "query":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    else:
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("create table people (id integer, plan text)")
        connection.exec_driver_sql("insert into people values " + ", ".join(f"({i}, 'p')" for i in range(1, 21)))
    sync = SyncDefinition(name="people", mapping=People(id_column="id"),
                          **({"query": "select * from people"} if source == "query" else {"table": "people"}))
    log = Lines()
    report = run_sync(sync, warehouse=engine, client=client, log=log.logger)
    assert (report.inserted, len(emulator.snapshot()["people"])) == (20, 20)
    reading = [line for line in log.lines if line.startswith("sync 'people': read ")]
    assert len(reading) == 20
    assert re.fullmatch(r"sync 'people': read 20 source rows, [\d.,e+-]+ rows/s", reading[-1])
    engine.dispose()
