"""Durable per-key sync state, kept in plain tables (by default in the warehouse itself).

For each key it holds the payload hash the API last *accepted*, the call that would delete it, and for
rejected rows the attempt count and last error. It is only ever advanced from acknowledgements.

Each delivered request's acknowledgements are appended to `{prefix}acks` in their own transaction (cheap
and constant-time, whatever the size of the state), and `settle` folds them into `{prefix}state` with
set-based SQL once per run. Per-request upserts into a keyed 10M-row table were superlinear on DuckDB,
whose primary-key index also lives in memory, so a dialect may keep the state table without a primary key
(`Dialect.keyed_state`): `settle` is its only writer besides `forget`, and it keeps one row per key.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
import sqlalchemy as sa

from dagster_cdp.sync.cursor import CursorMark, Tally
from dagster_cdp.sync.database import abridged, as_engine, utc_now
from dagster_cdp.sync.dialects import Dialect, dialect_of
from dagster_cdp.sync.history import RunHistory
from dagster_cdp.sync.locks import Lock, hold, lease_table
from dagster_cdp.sync.mapping import hash_hex

_IN_CHUNK = 500
_HASH = {"column": sa.String(32)}  # an MD5 in hex
_TEXT = {"column": sa.Text()}
_COUNT = {"column": sa.Integer()}


@dataclass
class KeyState:
    """The stored state of one key. `payload_hash` None: not live at the API (never accepted, or deleted).

    The one declaration of a state row: in this order, its fields are the state tables' columns (of the type in
    `column`, NULL where the default is None), every select list of them, and the rows `StateStore.iter_rows` yields.
    """

    key_hash: str = field(metadata=_HASH)
    key: str = field(metadata=_TEXT)
    payload_hash: str | None = field(default=None, metadata=_HASH)
    # JSON of the call that deletes it
    delete_call: str | None = field(default=None, metadata=_TEXT)
    # accepted calls so far; kept after deletion so later messageIds stay unique
    version: int = field(default=0, metadata=_COUNT)
    # rejections of `failed_hash` in a row
    attempts: int = field(default=0, metadata=_COUNT)
    failed_hash: str | None = field(default=None, metadata=_HASH)
    last_error: str | None = field(default=None, metadata=_TEXT)
    # the warehouse's hash of the accepted row (in-warehouse diff; see `pushdown`)
    row_hash: str | None = field(default=None, metadata=_HASH)


STATE_FIELDS = tuple(f.name for f in fields(KeyState))
_ADDED = ("row_hash",)  # state fields added since the first version: last in the tables, after `updated_at`


def state_field_types(text_type: str) -> dict[str, str]:
    """STATE_FIELDS with their SQL types, text spelled as the database at hand spells it."""
    return {f.name: "INTEGER" if isinstance(f.metadata["column"], sa.Integer) else text_type for f in fields(KeyState)}


class StateStore:
    """State tables `{prefix}syncs` and `{prefix}state`, and the history tables `{prefix}runs` and
    `{prefix}rejections` (`history`); pass a separate URL to keep them out of a read-only warehouse."""

    def __init__(
        self, url_or_engine: str | sa.Engine, *, schema: str | None = None, table_prefix: str = "cdp_"
    ) -> None:
        self.engine = as_engine(url_or_engine)
        self.dialect = dialect_of(self.engine)
        metadata = sa.MetaData(schema=schema)
        self.syncs = sa.Table(
            f"{table_prefix}syncs",
            metadata,
            sa.Column("sync", self.dialect.sync_name_type(), primary_key=True),
            sa.Column("fingerprint", sa.String(32), nullable=False),
            sa.Column("definition", sa.Text, nullable=False),
            sa.Column("updated_at", sa.DateTime, nullable=False),
        )
        self.state = sa.Table(f"{table_prefix}state", metadata, *_state_columns(self.dialect))
        self.acks = sa.Table(
            f"{table_prefix}acks",
            metadata,
            *_state_columns(self.dialect, primary_key=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
        )
        self.cursors = sa.Table(
            f"{table_prefix}cursors",
            metadata,
            sa.Column("sync", self.dialect.sync_name_type(), primary_key=True),
            sa.Column("cursor_column", sa.Text, nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("mark", sa.BigInteger, nullable=False),
            sa.Column("below_rows", sa.BigInteger, nullable=True),  # the tally of the source rows below the mark
            sa.Column("below_check", sa.BigInteger, nullable=True),
            sa.Column("updated_at", sa.DateTime, nullable=False),
        )
        self._locks = lease_table(sa.MetaData(schema=schema), f"{table_prefix}locks")  # not in create_tables
        self.history = RunHistory(self.engine, self.dialect, schema, table_prefix)  # nor these: a dry run writes them
        self._metadata = metadata
        self._seq = 0
        self._upgraded = False

    def __repr__(self) -> str:
        return f"StateStore({self.engine.url.render_as_string(hide_password=True)!r}, table={self.state.fullname!r})"

    def exists(self) -> bool:
        return all(self._has(t) for t in (self.syncs, self.state))

    def create_tables(self) -> None:
        self._metadata.create_all(self.engine, checkfirst=True)
        self._upgrade()

    def _has(self, table: sa.Table) -> bool:
        """Whether a state table exists; the first look also upgrades tables an earlier version created."""
        self._upgrade()
        return sa.inspect(self.engine).has_table(table.name, schema=table.schema)

    def _upgrade(self) -> None:
        """Brings state tables an earlier version created up to date, once per store, keeping their rows: the
        dialect's own changes, and the columns added since (`row_hash`; the cursor mark's tally)."""
        if self._upgraded:
            return
        self.dialect.upgrade(self.engine, list(self._metadata.tables.values()))
        inspector = sa.inspect(self.engine)
        added = [(table, name) for table in (self.state, self.acks) for name in _ADDED]
        added += [(self.cursors, "below_rows"), (self.cursors, "below_check")]
        for table, column in added:
            if inspector.has_table(table.name, schema=table.schema) and not self._has_column(table, column):
                kind = table.c[column].type.compile(dialect=self.engine.dialect)
                try:
                    with self.engine.begin() as connection:
                        connection.exec_driver_sql(f"ALTER TABLE {self._name(table)} ADD COLUMN {column} {kind}")
                except sa.exc.DBAPIError:
                    if not self._has_column(table, column):  # else another sync's run added it at the same moment
                        raise
        self._upgraded = True

    def _has_column(self, table: sa.Table, column: str) -> bool:
        with self.engine.connect() as connection:  # by a query: duckdb-engine cannot always reflect
            return column in connection.exec_driver_sql(f"SELECT * FROM {self._name(table)} WHERE 1 = 0").keys()

    def _name(self, table: sa.Table) -> str:
        return self.engine.dialect.identifier_preparer.format_table(table)

    def last_runs(self, *, dry_runs: bool = True) -> list[dict[str, Any]]:
        """The newest row of `{prefix}runs` of every sync (each partition its own), as {column: value}; without
        `dry_runs`, its newest real run."""
        return self.history.last_runs(dry_runs=dry_runs)

    def rejections(self, sync: str) -> list[dict[str, Any]]:
        """The rows of `{prefix}rejections` of a sync: its rows not synced, as of its last successful run."""
        return self.history.rejected_rows(sync)

    def lock(self, sync: str, timeout: float, log: logging.Logger | None = None) -> AbstractContextManager[None]:
        """Holds the lock of `sync` while a run reads and writes its state, so two runs never send the same calls.

        Waits up to `timeout` seconds (0: not at all) for another run's lock, then raises SyncLockedError.
        """
        return hold(self.engine, self._lock_of(sync), sync, timeout, log or logging.getLogger(__name__))

    def locked(self, sync: str) -> bool:
        """Whether a run holds the lock of `sync` now: takes it without waiting, and releases it at once."""
        with self._lock_of(sync) as lock:
            if not lock.acquire(0):
                return True
            lock.release()
        return False

    def _lock_of(self, sync: str) -> Lock:
        return self.dialect.lock(self.engine, self._locks, f"{self.state.fullname}|{sync}", sync)

    def fingerprint(self, sync: str) -> tuple[str, dict] | None:
        """The stored (fingerprint, fingerprint fields) of a sync, or None for a sync never run."""
        if not self.exists():
            return None
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(self.syncs.c.fingerprint, self.syncs.c.definition).where(self.syncs.c.sync == sync)
            ).first()
        return None if row is None else (row.fingerprint, orjson.loads(row.definition))

    def save_fingerprint(self, sync: str, fingerprint: str, fields: dict) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.delete(self.syncs).where(self.syncs.c.sync == sync))
            connection.execute(
                sa.insert(self.syncs).values(
                    sync=sync, fingerprint=fingerprint, definition=orjson.dumps(fields).decode(), updated_at=utc_now()
                )
            )

    def iter_rows(self, sync: str, chunk_rows: int) -> Iterator[Sequence[Any]]:
        """Streams the KeyState fields, in that order, of every key of a sync, as of its last `settle`."""
        if not self.exists():
            return
        c = self.state.c
        statement = sa.select(*[c[f] for f in STATE_FIELDS]).where(c.sync == sync)
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=chunk_rows).execute(statement)
            for partition in result.partitions():
                yield from partition

    def record(self, sync: str, keys: list[KeyState]) -> None:
        """Appends these keys' new state in one transaction (one delivered request's acknowledgements).

        It counts from then on, but `iter_rows` and the in-warehouse diff see it only after `settle`.
        """
        if not keys:
            return
        now = utc_now()
        self._seq = max(self._seq + 1, time.time_ns())  # orders appends, so the latest of a key wins
        with self.engine.begin() as connection:
            if self.dialect.array_parameter is not None:
                self._append_as_columns(connection, self.dialect.array_parameter, sync, keys, now)
                return
            connection.execute(
                sa.insert(self.acks),
                [
                    {
                        "sync": sync,
                        **{name: getattr(k, name) for name in STATE_FIELDS},
                        "last_error": abridged(k.last_error) if k.last_error else None,
                        "updated_at": now,
                        "seq": self._seq,
                    }
                    for k in keys
                ],
            )

    def _append_as_columns(
        self, connection: sa.Connection, placeholder: str, sync: str, keys: list[KeyState], now: dt.datetime
    ) -> None:
        """`record` as one INSERT taking whole columns as arrays, where the driver binds lists as arrays (row-by-row
        executemany was most of a first sync's time: duckdb-engine ~0.15 ms a row). A column holding one value in every
        row (a first sync's versions, attempts, errors) is bound once: binding a list costs DuckDB ~1 ms a column."""
        columns = state_field_types(self.dialect.text_type)
        values = {name: [getattr(k, name) for k in keys] for name in columns}
        values["last_error"] = [abridged(error) if error else None for error in values["last_error"]]
        table = self.engine.dialect.identifier_preparer.format_table(self.acks)
        uniform = {n for n, v in values.items() if n != "key_hash" and v.count(v[0]) == len(v)}  # key_hash: the rows
        selected = ", ".join(
            f"CAST({placeholder} AS {kind})" if name in uniform else f"unnest(CAST({placeholder} AS {kind}[]))"
            for name, kind in columns.items()
        )
        connection.exec_driver_sql(
            f"INSERT INTO {table} (sync, {', '.join(columns)}, updated_at, seq) "
            f"SELECT {placeholder}, {selected}, {placeholder}, {placeholder}",
            (sync, *(v[0] if n in uniform else v for n, v in values.items()), now, self._seq),
        )

    def settle(self, sync: str) -> int:
        """Folds a sync's appended acknowledgements into the state table in one transaction; returns how many.

        Runs at the end of every sync, and at the start of the next one in case a run was killed before.
        """
        if not self._has(self.acks):
            return 0
        a = self.acks.c
        fields = [c.name for c in self.state.columns]
        newest = sa.func.row_number().over(partition_by=a.key_hash, order_by=a.seq.desc())
        ranked = sa.select(*[a[f] for f in fields], newest.label("cdp_newest")).where(a.sync == sync).subquery()
        with self.engine.begin() as connection:
            pending = connection.execute(
                sa.select(sa.func.count()).select_from(self.acks).where(a.sync == sync)
            ).scalar_one()
            if pending:
                connection.execute(self.dialect.delete_acknowledged(self.state, self.acks, sync))
                connection.execute(
                    sa.insert(self.state).from_select(
                        fields, sa.select(*[ranked.c[f] for f in fields]).where(ranked.c.cdp_newest == 1)
                    )
                )
                connection.execute(sa.delete(self.acks).where(a.sync == sync))
        return int(pending)

    def cursor_mark(self, sync: str) -> CursorMark | None:
        """The cursor mark of an incremental send-once sync, or None before its first completed run."""
        if not self._has(self.cursors):
            return None
        c = self.cursors.c
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(c.cursor_column, c.kind, c.mark, c.below_rows, c.below_check).where(c.sync == sync)
            ).first()
        if row is None:
            return None
        below = None if row.below_rows is None else Tally(row.below_rows, row.below_check)
        return CursorMark(row.cursor_column, row.kind, row.mark, below)

    def save_cursor_mark(self, sync: str, mark: CursorMark) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.delete(self.cursors).where(self.cursors.c.sync == sync))
            connection.execute(
                sa.insert(self.cursors).values(
                    sync=sync,
                    cursor_column=mark.column,
                    kind=mark.kind,
                    mark=mark.value,
                    below_rows=mark.below.rows if mark.below else None,
                    below_check=mark.below.check if mark.below else None,
                    updated_at=utc_now(),
                )
            )

    def still_refused(self, sync: str, keys: Sequence[str]) -> set[str]:
        """Those of `keys` whose last call the API refused, as of the last `settle`."""
        c, refused = self.state.c, set[str]()
        with self.engine.connect() as connection:
            for part in _chunks([hash_hex(key.encode()) for key in keys]):
                statement = sa.select(c.key).where(c.sync == sync, c.key_hash.in_(part), c.failed_hash.is_not(None))
                refused.update(connection.execute(statement).scalars())
        return refused

    def forget(self, sync: str, key_hashes: Iterable[str]) -> None:
        """Drops keys that are gone from the source and were never accepted, so nothing needs deleting."""
        with self.engine.begin() as connection:
            for part in _chunks(list(key_hashes)):
                connection.execute(
                    sa.delete(self.state).where(self.state.c.sync == sync, self.state.c.key_hash.in_(part))
                )


def _state_columns(dialect: Dialect, *, primary_key: bool | None = None) -> list[sa.Column]:
    """The columns of a state table, keyed by (sync, key_hash) where the dialect keeps it so (`primary_key` None)."""
    keyed = dialect.keyed_state if primary_key is None else primary_key
    state = [
        sa.Column(f.name, f.metadata["column"], primary_key=keyed and f.name == "key_hash", nullable=f.default is None)
        for f in fields(KeyState)
    ]
    return [
        sa.Column("sync", dialect.sync_name_type(), primary_key=keyed, nullable=False),
        *[c for c in state if c.name not in _ADDED],
        sa.Column("updated_at", sa.DateTime, nullable=False),
        *[c for c in state if c.name in _ADDED],
    ]


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
