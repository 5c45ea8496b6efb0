"""What the state tables say of syncs and keys, for operators (`dagster-cdp status` and `explain`).

Read only: acknowledgements a run has not folded in yet are counted, and folded into a key's state in memory as the
next run will fold them (`StateStore.settle`), never written. Each result renders as text and as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from dagster_cdp.sync.database import as_engine, check_connects
from dagster_cdp.sync.dialects import dialect_of
from dagster_cdp.sync.diff import DELETE_MARK, SOURCE_MARK
from dagster_cdp.sync.locks import database_turns
from dagster_cdp.sync.mapping import hash_hex
from dagster_cdp.sync.state import STATE_FIELDS, KeyState, StateStore
from dagster_cdp.sync.sync_errors import DatabaseFileBusyError, SourceError

_log = logging.getLogger("dagster_cdp.inspection")


@contextmanager
def opened(url: str, state_url: str | None, state_schema: str | None) -> Iterator[tuple[sa.Engine, StateStore]]:
    """The warehouse and its state store, read while no run has their DuckDB files (DuckDB admits one process at a
    time, and a run waits for its turn rather than fail on a file this command has open)."""
    engine = as_engine(url)
    state_engine = as_engine(state_url) if state_url else engine
    files = [f for e in dict.fromkeys((engine, state_engine)) if (f := dialect_of(e).single_process_file(e))]
    with ExitStack() as stack:
        try:
            stack.enter_context(database_turns(files, 0, _log))
        except DatabaseFileBusyError:
            raise DatabaseFileBusyError(
                f"A run holds the DuckDB file {' and '.join(map(str, files))} (DuckDB admits one process at a time), "
                "so its state cannot be read now; run this again when that run has ended."
            ) from None
        stack.callback(state_engine.dispose)  # closed before the turn ends
        stack.callback(engine.dispose)
        check_connects(engine, state_engine)
        yield engine, StateStore(state_engine, schema=state_schema)


@dataclass(frozen=True)
class SyncStatus:
    """One sync (a partition is a sync of its own) as its state tables have it now."""

    sync: str
    live_keys: int  # keys whose last accepted call left them at the API, as of the sync's last settled run
    pending_acks: int  # acknowledgements recorded and not folded into the state yet (a run in progress, or killed)
    rejected_keys: int  # keys whose last attempt was refused (by the API, or before sending for a bad row)
    locked: bool  # a run holds the sync's lock now
    last_run: dict[str, Any] | None  # its newest row of the history table `{prefix}runs` that is not a dry run

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Status:
    state: str  # the state database's URL, without its password
    history: bool  # whether the history table exists
    syncs: list[SyncStatus]

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "history": self.history, "syncs": [s.as_json() for s in self.syncs]}

    def text(self) -> str:
        header = ("SYNC", "LAST RUN", "LIVE", "PENDING ACKS", "REJECTED", "LOCK")
        rows = [
            (
                s.sync,
                self._last_run(s),
                f"{s.live_keys:,}",
                f"{s.pending_acks:,}",
                f"{s.rejected_keys:,}",
                "held" if s.locked else "free",
            )
            for s in self.syncs
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [f"State at {self.state}"]
        for row in [header, *rows]:
            cells = [
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        lines += [
            f"{s.sync} (last run): {s.last_run['error']}" for s in self.syncs if s.last_run and s.last_run["error"]
        ]
        return "\n".join(lines)

    def _last_run(self, sync: SyncStatus) -> str:
        run = sync.last_run
        if run is None:
            return "no run recorded" if self.history else "no history"
        return f"{run['outcome']} {run['started_at']:%Y-%m-%d %H:%M:%S} UTC"


def read_status(store: StateStore) -> Status:
    """Every sync of the state tables, with its counts, its last run and whether a run holds its lock now."""
    state = store.engine.url.render_as_string(hide_password=True)
    if not store.exists():
        raise SourceError(
            f"No sync state at {state}: its table {store.syncs.fullname} does not exist. No sync has run against "
            "this database, or its state is kept elsewhere: give --state-url (and --state-schema) as the warehouse "
            "resource's state_url and state_schema."
        )
    state_rows, acks = store.state.c, store.acks.c
    live = sa.func.count(state_rows.payload_hash)
    refused = sa.func.count(state_rows.failed_hash)
    names = sync_names(store)
    with store.engine.connect() as connection:
        counts = {
            row.sync: (row.live, row.refused)
            for row in connection.execute(
                sa.select(state_rows.sync, live.label("live"), refused.label("refused")).group_by(state_rows.sync)
            )
        }
        acked = connection.execute(sa.select(acks.sync, sa.func.count().label("n")).group_by(acks.sync))
        pending = {row.sync: row.n for row in acked}
    history, runs = _last_runs(store)
    return Status(
        state=state,
        history=history,
        syncs=[
            SyncStatus(
                sync=name,
                live_keys=counts.get(name, (0, 0))[0],
                pending_acks=pending.get(name, 0),
                rejected_keys=counts.get(name, (0, 0))[1],
                locked=store.locked(name),
                last_run=runs.get(name),
            )
            for name in names
        ],
    )


def sync_names(store: StateStore) -> list[str]:
    """The syncs with state (those that ever ran, other than dry), in order."""
    if not store.exists():
        return []
    with store.engine.connect() as connection:
        return sorted(connection.execute(sa.select(store.syncs.c.sync)).scalars())


def _last_runs(store: StateStore) -> tuple[bool, dict[str, dict[str, Any]]]:
    """(whether the history table exists, the newest run of each sync in it)."""
    runs = store.history.runs
    if not sa.inspect(store.engine).has_table(runs.name, schema=runs.schema):
        return False, {}
    return True, {run["sync"]: run for run in store.last_runs(dry_runs=False)}  # a plan is not a run


@dataclass(frozen=True)
class KeyView:
    """One key's state as the next run of its sync will see it."""

    sync: str
    key: str
    state: KeyState | None  # its state row, with the newest pending acknowledgement folded in
    pending_acks: int

    def as_json(self) -> dict[str, Any]:
        state = None
        if self.state is not None:
            fields = {name: getattr(self.state, name) for name in STATE_FIELDS if name not in ("key", "key_hash")}
            delete_call = fields["delete_call"]
            fields["delete_call"] = None if delete_call is None else orjson.loads(delete_call)
            state = {"live": self.state.payload_hash is not None, **fields}
        return {
            "sync": self.sync,
            "key": self.key,
            "key_hash": hash_hex(self.key.encode()),
            "state": state,
            "pending_acks": self.pending_acks,
        }

    def lines(self) -> list[tuple[str, str]]:
        pending = "none" if not self.pending_acks else f"{self.pending_acks:,} (folded in above, as the next run will)"
        return [
            ("sync", self.sync),
            ("key", self.key),
            ("state", _described(self.state)),
            ("rejections", _refusals(self.state)),
            ("pending acks", pending),
        ]


def read_key(store: StateStore, sync: str, key: str) -> KeyView:
    """The state of `key` (its text as in the state table) in `sync`, pending acknowledgements folded in."""
    key_hash = hash_hex(key.encode())
    if not store.exists():
        return KeyView(sync, key, None, 0)
    with store.engine.connect() as connection:
        stored = connection.execute(_key_rows(store.state, sync, key_hash)).first()
        acks = connection.execute(_key_rows(store.acks, sync, key_hash).order_by(store.acks.c.seq.desc())).all()
    newest = acks[0] if acks else stored
    return KeyView(sync, key, None if newest is None else KeyState(*newest.tuple()), len(acks))


def _key_rows(table: sa.Table, sync: str, key_hash: str) -> sa.Select:
    return sa.select(*[table.c[f] for f in STATE_FIELDS]).where(table.c.sync == sync, table.c.key_hash == key_hash)


def _described(state: KeyState | None) -> str:
    if state is None:
        return "none: no call for this key was ever accepted or refused"
    calls = counted(state.version, "accepted call")
    if state.payload_hash is not None:
        return f"live at the API: accepted payload {state.payload_hash}, {calls}"
    if state.version:
        return f"not live: deleted at the API ({calls})"
    return "not live: never accepted"


def _refusals(state: KeyState | None) -> str:
    if state is None or state.failed_hash is None:
        return "none"
    times = counted(state.attempts, "time")
    if state.failed_hash == SOURCE_MARK:
        return f"its row was bad, found so by {counted(state.attempts, 'run')} in a row: {state.last_error}"
    if state.failed_hash == DELETE_MARK:
        return f"its deletion was refused {times} in a row: {state.last_error}"
    return f"payload {state.failed_hash} was refused {times} in a row: {state.last_error}"


def counted(n: int, noun: str) -> str:
    """`1 call`, `2 calls`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def key_value_text(lines: Sequence[tuple[str, str]]) -> str:
    """`name:  value` lines, the values aligned."""
    width = max(len(name) for name, _ in lines) + 2
    return "\n".join(f"{f'{name}:'.ljust(width)}{value}" for name, value in lines)
