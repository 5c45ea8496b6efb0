"""One run of a sync at a time, on every kind of state database: a second run waits, then sends only what is
still needed, or fails fast naming the sync. Runs are ordered by events and pipes, never by sleeps."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp.dagster.declared_syncs import parse_sync
from dagster_cdp import Emulator
from dagster_cdp import (
    DatabaseFileBusyError,
    People,
    StateStore,
    SyncDefinition,
    SyncLockedError,
    SyncReport,
    run_sync,
)
from dagster_cdp.sync.locks import ClaimLease, Lease, lease_table
from tests.polling import until
from tests.test_sync_engine import PEOPLE_COLUMNS, people_rows
from tests.warehouses import POSTGRES, Warehouse

REPO = Path(__file__).resolve().parents[1]
PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="id"), lock_timeout=120)
WAITING = "another run holds its lock; waiting"
_SIGNAL_TIMEOUT = 120  # seconds: only a hung test ever reaches it


class _Signal(logging.Handler):
    """Sets `seen` when a log message contains `text`, then blocks until `go` is set (when a `go` is given):
    the run's own log is the barrier that orders the test's runs."""

    def __init__(self, text: str, go: threading.Event | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.go, self.seen = text, go, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()
            if self.go is not None:
                assert self.go.wait(_SIGNAL_TIMEOUT)


def _logger(name: str, handler: _Signal) -> logging.Logger:
    log = logging.getLogger(f"tests.lock.{name}")
    log.handlers = [handler]
    log.setLevel(logging.DEBUG)
    return log


@pytest.fixture
def client(emulator: Emulator) -> Iterator[PipelinesClient]:
    with PipelinesClient("test-key", base_url=emulator.url, max_retry_seconds=20) as c:
        yield c


@pytest.fixture
def runs() -> Iterator[Callable[..., Future[SyncReport]]]:
    """Starts run_sync in a thread of its own."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield lambda *args, **kwargs: pool.submit(run_sync, *args, **kwargs)


def _people(warehouse: Warehouse) -> None:
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 21)))


def test_a_second_run_fails_fast_naming_the_sync_and_sends_nothing(warehouse: Warehouse, emulator: Emulator,
                                                                   client: PipelinesClient) -> None:
    _people(warehouse)
    impatient = SyncDefinition(name="people", table="people", mapping=People(id_column="id"), lock_timeout=0.3)
    with StateStore(warehouse.engine).lock("people", timeout=0):
        with pytest.raises(SyncLockedError, match=r"Sync 'people' is already running: another run of it holds its "
                                                  r"lock in the state database .*within 0.3 s.*lock_timeout"):
            run_sync(impatient, warehouse=warehouse.url, client=client)
        with pytest.raises(SyncLockedError, match="Sync 'people' is already running"):  # a dry run folds state too
            run_sync(impatient, warehouse=warehouse.url, client=None, dry_run=True)
        other = SyncDefinition(name="People", table="people", mapping=People(id_column="id"), lock_timeout=0)
        assert run_sync(other, warehouse=warehouse.url, client=None, dry_run=True).inserted == 20  # its own lock
    assert emulator.stats()["requests"] == 0
    assert run_sync(impatient, warehouse=warehouse.url, client=client).inserted == 20


def test_a_waiting_run_sends_only_what_the_first_one_left(warehouse: Warehouse, emulator: Emulator,
                                                          client: PipelinesClient, runs) -> None:
    _people(warehouse)
    go = threading.Event()
    sending, waiting = _Signal("sending the changes", go), _Signal(WAITING)
    first = runs(PEOPLE, warehouse=warehouse.url, client=client, log=_logger("first", sending))
    assert sending.seen.wait(_SIGNAL_TIMEOUT)  # the first run holds the lock, about to send
    second = runs(PEOPLE, warehouse=warehouse.url, client=client, log=_logger("second", waiting))
    assert waiting.seen.wait(_SIGNAL_TIMEOUT)
    go.set()
    assert first.result(_SIGNAL_TIMEOUT).inserted == 20
    report = second.result(_SIGNAL_TIMEOUT)
    assert (report.inserted, report.updated, report.unchanged, report.requests) == (0, 0, 20, 0)
    assert emulator.stats()["repeats"] == 0 and emulator.stats()["calls_received"] == 20


def test_a_run_waits_for_another_process_holding_the_lock(warehouse: Warehouse, emulator: Emulator,
                                                          client: PipelinesClient, runs) -> None:
    _people(warehouse)
    warehouse.release()  # DuckDB: one process may open the file, the holder first
    waiting = _Signal(WAITING)
    with _held_by_another_process(HOLDER, warehouse.url) as release:
        _waits_then_runs(runs(PEOPLE, warehouse=warehouse.url, client=client, log=_logger("waiter", waiting)), waiting,
                         release, emulator)
    assert emulator.stats()["repeats"] == 0


@contextmanager
def _held_by_another_process(script: str, argument: str) -> Iterator[Callable[[], None]]:
    """Runs `script` in another process until it prints "holding"; yields what makes it release and exit."""
    holder = subprocess.Popen([sys.executable, "-c", script, argument], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)

    def release() -> None:
        holder.stdin.write("release\n")
        holder.stdin.flush()

    try:
        assert holder.stdout.readline() == "holding\n"
        yield release
    finally:
        holder.kill()
        holder.wait()


def _waits_then_runs(run: Future[SyncReport], waiting: _Signal, release: Callable[[], None],
                     emulator: Emulator) -> None:
    """The run logs that it waits and sends nothing; once the holder releases, it syncs the 20 people."""
    assert waiting.seen.wait(_SIGNAL_TIMEOUT)
    assert emulator.stats()["requests"] == 0
    release()
    assert run.result(_SIGNAL_TIMEOUT).inserted == 20


HOLDER = """
import sys
from dagster_cdp import StateStore

store = StateStore(sys.argv[1])
with store.lock("people", timeout=0):
    with store.engine.connect():  # as a run does: the database open while the lock is held, closed before release
        print("holding", flush=True)
        sys.stdin.readline()
    store.engine.dispose()
"""


@pytest.mark.parametrize("lease", [Lease, ClaimLease])
def test_a_lease_is_exclusive_renewed_and_taken_over_once_expired(warehouse: Warehouse, lease: type[Lease]) -> None:
    """The locks of databases without one of their own, tried on each real database."""
    if lease is Lease and warehouse.kind == "snowflake":
        pytest.skip("Snowflake does not enforce primary keys, so a Lease is no lock there (it uses ClaimLease); "
                    "fakesnow enforces them but answers a duplicate key with HTTP 500, an OperationalError")
    table = lease_table(sa.MetaData(), "cdp_locks")
    with (lease(warehouse.engine, table, "cdp_state|people", "people", seconds=3) as first,
          lease(warehouse.engine, table, "cdp_state|people", "people") as second):
        assert first.acquire(0)
        assert not second.acquire(0.2)
        expiry = _expiry(warehouse, table)
        until(lambda: _expiry(warehouse, table) > expiry)  # renewed while held
        with warehouse.engine.begin() as connection:  # as if its process had died a day ago
            connection.execute(sa.update(table).values(holder="dead", expires_at=expiry - dt.timedelta(days=1)))
        assert second.acquire(0)
        first.release()  # a holder that lost its lease takes nothing from the new one
        assert _expiry(warehouse, table) > expiry
        second.release()
    assert _expiry(warehouse, table) is None


def _expiry(warehouse: Warehouse, table: sa.Table):
    with warehouse.engine.connect() as connection:
        return connection.execute(sa.select(table.c.expires_at)).scalar()


def test_lock_timeout_is_declared_in_yaml_and_cannot_be_negative() -> None:
    model = parse_sync({"kind": "people", "name": "people", "table": "people", "id": "id", "lock_timeout": 5})
    assert model.to_definition().lock_timeout == 5
    assert parse_sync({"kind": "people", "name": "p", "table": "p", "id": "id"}).to_definition().lock_timeout == 600
    with pytest.raises(ValueError, match="lock_timeout must be >= 0"):
        parse_sync({"kind": "people", "name": "p", "table": "p", "id": "id", "lock_timeout": -1})


def test_the_message_names_the_state_database_without_its_password() -> None:
    store = StateStore(POSTGRES.replace("postgres@", "postgres:not-the-secret@"))  # trust: any password connects
    with store.lock("people", timeout=0), pytest.raises(SyncLockedError) as raised:
        with store.lock("people", timeout=0):
            pass
    assert "not-the-secret" not in str(raised.value) and "postgres:***@127.0.0.1" in str(raised.value)
    store.engine.dispose()


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_syncs_of_one_duckdb_file_take_turns_across_processes(warehouse: Warehouse, emulator: Emulator,
                                                               client: PipelinesClient, runs) -> None:
    """DuckDB admits one process per file: a run of another sync waits for the process that has it open (as
    Dagster's multiprocess executor runs two syncs at once), or fails after lock_timeout saying why."""
    _people(warehouse)
    warehouse.release()
    file = warehouse.engine.url.database
    with _held_by_another_process(FILE_HOLDER, file) as release:
        other = SyncDefinition(name="other", table="people", mapping=People(id_column="id"), lock_timeout=0.3)
        with pytest.raises(DatabaseFileBusyError, match=r"Another process kept the DuckDB file .* open for 0.3 s .*"
                                                  r"Nothing was sent"):
            run_sync(other, warehouse=warehouse.url, client=client)
        waiting = _Signal("is open in another process")
        _waits_then_runs(runs(PEOPLE, warehouse=warehouse.url, client=client, log=_logger("turn", waiting)), waiting,
                         release, emulator)


FILE_HOLDER = """
import logging, sys
import duckdb
from pathlib import Path
from dagster_cdp.sync.locks import database_turns

with database_turns([Path(sys.argv[1])], 0, logging.getLogger()):
    with duckdb.connect(sys.argv[1]):  # a run of another sync, with the file open
        print("holding", flush=True)
        sys.stdin.readline()
"""
