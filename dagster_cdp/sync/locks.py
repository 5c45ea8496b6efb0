"""One run of a sync at a time: a lock per sync, held in the state store's database with what it offers.

Each warehouse's `Dialect` picks one: PostgreSQL a session advisory lock; MySQL/MariaDB GET_LOCK; SQLite and
DuckDB files an OS lock on a file beside the database (in-memory ones a lock in this process); Snowflake, which
enforces no primary key, a `ClaimLease` (claim rows, then a read); any other database a lease row in
`{prefix}locks`. Each is held on its own connection or file and ends with the process that holds it (a lease
expires instead), so a killed run never leaves a sync locked for good.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import filelock
import sqlalchemy as sa

from dagster_cdp.sync.database import unreachable, utc_now
from dagster_cdp.sync.sync_errors import DatabaseFileBusyError, SyncLockedError

_POLL_SECONDS = 0.2
LEASE_SECONDS = 60.0  # a lease not renewed for this long (its holder died) may be taken over; CDP_LEASE_SECONDS sets it
_LOCAL: dict[tuple[int, str], threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


@contextmanager
def hold(engine: sa.Engine, lock: Lock, sync: str, timeout: float, log: logging.Logger) -> Iterator[None]:
    """Holds `lock` (of `sync`, in the state store at `engine`), waiting up to `timeout` seconds for another run's."""
    with lock:
        if not lock.acquire(0):
            if timeout > 0:
                log.info("sync %r: another run holds its lock; waiting up to %g s", sync, timeout)
            if not timeout or not lock.acquire(timeout):
                raise SyncLockedError(_locked_message(engine, sync, timeout))
        try:
            yield
        finally:
            lock.release()


def _locked_message(engine: sa.Engine, sync: str, timeout: float) -> str:
    where = engine.url.render_as_string(hide_password=True)
    within = f", and did not release it within {timeout:g} s" if timeout else ""
    return (
        f"Sync {sync!r} is already running: another run of it holds its lock in the state database {where}"
        f"{within}. Nothing was sent. Let that run finish and run again (it will send only what is still "
        f"needed), or set the sync's lock_timeout (seconds, default 600) to wait longer. A lock ends with the "
        f"process holding it (a lease in a `locks` table expires {lease_seconds():g} s after)."
    )


def file_lock(engine: sa.Engine, name: str) -> Lock:
    """The lock of a database in a file (SQLite, DuckDB): beside the file, or in this process for one in memory."""
    database = engine.url.database
    if not database or in_memory(database):
        return _LocalLock((id(engine), name))
    return _FileLock(Path(database), name)


@contextmanager
def database_turns(files: Sequence[Path], timeout: float, log: logging.Logger) -> Iterator[None]:
    """Takes turns on database files that admit one process at a time (DuckDB's): a run of another sync waits up to
    `timeout` seconds for the process that has one open, instead of failing to open it (Dagster's multiprocess
    executor runs two syncs of one DuckDB file at once)."""
    with ExitStack() as turns:
        for database in sorted(set(files)):
            lock = turns.enter_context(_FileLock(database, "open"))
            if not lock.acquire(0):
                if timeout > 0:
                    log.info(
                        "%s is open in another process, which DuckDB allows one at a time; waiting up to %g s for it "
                        "to close",
                        database,
                        timeout,
                    )
                if not timeout or not lock.acquire(timeout):
                    raise DatabaseFileBusyError(
                        f"Another process kept the DuckDB file {database} open for {timeout:g} s (DuckDB admits one "
                        "process per file). Nothing was sent. Run again once it is closed, raise the sync's "
                        "lock_timeout, or run the syncs of this file in one process (Dagster's in_process_executor)."
                    )
            turns.callback(lock.release)
        yield


def in_memory(database: str) -> bool:
    """A database URL's database part naming an in-memory database, which lives in one process only."""
    return database == ":memory:" or "mode=memory" in database


def lease_seconds() -> float:
    """How long a lease outlives its holder's last renewal: CDP_LEASE_SECONDS, else LEASE_SECONDS. Shorter lets
    the next run take over sooner from a run that died; the holder renews every third of it."""
    value = os.environ.get("CDP_LEASE_SECONDS")
    return float(value) if value else LEASE_SECONDS


def _digest(text: str, size: int) -> bytes:
    """Of the exact bytes of the sync's name, so names differing only in case or accents get different locks."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).digest()


def _poll(attempt: Callable[[], bool], wait: float) -> bool:
    """Tries at once, then every _POLL_SECONDS until `wait` seconds have passed."""
    deadline = time.monotonic() + wait
    while not attempt():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(_POLL_SECONDS, remaining))
    return True


class Lock:
    """A lock's resources (connection, file, renewal) live from __enter__ to __exit__, acquired or not."""

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self, wait: float) -> bool:
        """Takes the lock within `wait` seconds (0: one try); False if another holder kept it."""
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class _LocalLock(Lock):
    """An in-memory database lives in this process only, so a lock in this process is enough."""

    def __init__(self, key: tuple[int, str]) -> None:
        with _LOCAL_GUARD:
            self._lock = _LOCAL.setdefault(key, threading.Lock())

    def acquire(self, wait: float) -> bool:
        return self._lock.acquire(timeout=wait) if wait > 0 else self._lock.acquire(blocking=False)

    def release(self) -> None:
        self._lock.release()


class _FileLock(Lock):
    """An OS lock on `<database>.<hash>.lock`, taken before the database is opened (DuckDB admits one process)."""

    def __init__(self, database: Path, name: str) -> None:
        path = database.with_name(f"{database.name}.{_digest(name, 8).hex()}.lock")
        self._lock = filelock.FileLock(path)

    def acquire(self, wait: float) -> bool:
        try:
            self._lock.acquire(timeout=wait, poll_interval=_POLL_SECONDS)
        except filelock.Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()


class _SessionLock(Lock):
    """A lock held by a database session: on a connection of its own, in autocommit so no transaction idles."""

    def __init__(self, engine: sa.Engine, name: str) -> None:
        self._engine, self._name = engine, name

    def __enter__(self) -> Lock:
        try:
            self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.DBAPIError as e:
            raise unreachable(self._engine, e) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._connection.close()

    def _scalar(self, sql: str, **parameters: object) -> object:
        return self._connection.execute(sa.text(sql), parameters).scalar()


class AdvisoryLock(_SessionLock):
    """PostgreSQL: a session advisory lock keyed by 64 bits of the schema, state table and sync names."""

    def __enter__(self) -> Lock:
        super().__enter__()
        schema = self._scalar("SELECT current_schema()")
        self._key = int.from_bytes(_digest(f"{schema}.{self._name}", 8), "big", signed=True)
        return self

    def acquire(self, wait: float) -> bool:
        return _poll(lambda: bool(self._scalar("SELECT pg_try_advisory_lock(:key)", key=self._key)), wait)

    def release(self) -> None:
        self._scalar("SELECT pg_advisory_unlock(:key)", key=self._key)


class NamedLock(_SessionLock):
    """MySQL/MariaDB: GET_LOCK, whose names are server-wide and at most 64 characters: a prefix and a hash."""

    def __enter__(self) -> Lock:
        super().__enter__()
        database = self._scalar("SELECT DATABASE()")
        self._key = f"cdp_sync:{_digest(f'{database}.{self._name}', 20).hex()}"
        return self

    def acquire(self, wait: float) -> bool:
        return self._scalar("SELECT GET_LOCK(:key, :wait)", key=self._key, wait=wait) == 1

    def release(self) -> None:
        self._scalar("SELECT RELEASE_LOCK(:key)", key=self._key)


class Lease(Lock):
    """Any other database: a row in `{prefix}locks`, renewed while held, taken over only once it expired."""

    def __init__(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str, seconds: float | None = None) -> None:
        self._engine, self._table, self._sync, self._seconds = engine, locks, sync, seconds or lease_seconds()
        self._key = _digest(name, 16).hex()
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:200]
        self._stop = threading.Event()

    def __enter__(self) -> Lock:
        self._table.create(self._engine, checkfirst=True)
        return self

    def acquire(self, wait: float) -> bool:
        if not _poll(self._take, wait):
            return False
        self._renewal = threading.Thread(target=self._renew, name=f"cdp-lease-{self._key}", daemon=True)
        self._renewal.start()
        return True

    def _take(self) -> bool:
        table = self._table
        with self._engine.begin() as connection:
            connection.execute(sa.delete(table).where(table.c.lock_key == self._key, table.c.expires_at < _expiry(0)))
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    sa.insert(table).values(
                        lock_key=self._key, sync=self._sync, holder=self._holder, expires_at=_expiry(self._seconds)
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def _renew(self) -> None:
        table = self._table
        while not self._stop.wait(self._seconds / 3):
            with self._engine.begin() as connection:
                connection.execute(
                    sa.update(table)
                    .where(table.c.lock_key == self._key, table.c.holder == self._holder)
                    .values(expires_at=_expiry(self._seconds))
                )

    def release(self) -> None:
        self._stop.set()
        self._renewal.join()
        table = self._table
        with self._engine.begin() as connection:
            connection.execute(sa.delete(table).where(table.c.lock_key == self._key, table.c.holder == self._holder))


def lease_table(metadata: sa.MetaData, name: str) -> sa.Table:
    """The lease rows of databases without a lock of their own (created on first use only there)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("lock_key", sa.String(32), primary_key=True),  # hash of the exact bytes of the sync's name
        sa.Column("sync", sa.String(200), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )


def _expiry(seconds: float) -> dt.datetime:
    """UTC, naive: `seconds` from now."""
    return utc_now() + dt.timedelta(seconds=seconds)


class ClaimLease(Lease):
    """A lease for a database that does not enforce primary keys (Snowflake), so a duplicate INSERT proves nothing.

    To take the lock a run commits a claim row of its own (after deleting expired claims), then, in a new statement,
    reads every claim of the lock: it holds the lock if its claim is the only one, else it withdraws its claim and
    tries again later. Held, the claim is renewed like a `Lease`; released, it is deleted.

    Why two runs cannot both hold it: each reads after its own claim committed, and a statement sees every row
    committed before it began (READ COMMITTED, Snowflake's only isolation level). If A read only its own claim,
    B's claim committed after A's read, hence after A's claim, so B's read (after B's claim) sees A's claim and B
    withdraws; the same holds with A and B swapped. A claim disappears only when its run releases or withdraws it,
    or when it expired (its run stopped renewing for `seconds`: as with `Lease`, hosts' clocks must agree to well
    within that). Two runs claiming at the same moment may both withdraw; they simply try again at their next poll.
    Nothing relies on MERGE or on DML locks waiting for one another, whose behaviour under concurrency a local
    emulator cannot show.
    """

    def __init__(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str, seconds: float | None = None) -> None:
        super().__init__(engine, claim_table(locks), name, sync, seconds)

    def _take(self) -> bool:
        table, mine = self._table, self._table.c.holder == self._holder
        with self._engine.begin() as connection:
            connection.execute(sa.delete(table).where(table.c.lock_key == self._key, table.c.expires_at < _expiry(0)))
            connection.execute(
                sa.insert(table).values(
                    lock_key=self._key, sync=self._sync, holder=self._holder, expires_at=_expiry(self._seconds)
                )
            )
        with self._engine.begin() as connection:  # a statement after the claim committed
            holders: Sequence[str] = (
                connection.execute(sa.select(table.c.holder).where(table.c.lock_key == self._key)).scalars().all()
            )
            if holders == [self._holder]:
                return True
            connection.execute(sa.delete(table).where(table.c.lock_key == self._key, mine))
        return False


def claim_table(locks: sa.Table) -> sa.Table:
    """`locks` as `ClaimLease` uses it: the same name and columns, several claims a lock (no primary key)."""
    return sa.Table(
        locks.name,
        sa.MetaData(schema=locks.schema),
        *(sa.Column(c.name, c.type, nullable=c.nullable) for c in locks.columns),
    )
