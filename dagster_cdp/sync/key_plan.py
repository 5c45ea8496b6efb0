"""What the next run of a sync would do with one key, and why (`dagster-cdp explain`).

The engine's own steps, applied to that key alone: the source described and its mapping checked against the stored
one as a run does (`engine.fingerprinted`), the key's rows mapped by `RowMapper`, and the plan made by
`WorkFile.plan` from those rows and the key's state. Nothing is sent or written. The key's rows are found in the
warehouse by their key text where the key columns' text in SQL is exactly the key Python makes (as the in-warehouse
diff finds keys, `pushdown.key_sql`); elsewhere every row is read and mapped to find them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from dagster_cdp.encoding import dumps
from dagster_cdp.sync.declaration import Key
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.dialects import reading_session
from dagster_cdp.sync.diff import DELETE_MARK, WorkFile
from dagster_cdp.sync.engine import describe, fingerprinted, outgoing_call
from dagster_cdp.sync.inspection import KeyView, key_value_text, read_key, sync_names
from dagster_cdp.sync.mapping import MappedRow, RowMapper
from dagster_cdp.sync.partitions import partition_name, partition_of
from dagster_cdp.sync.pushdown import inexact_key_column, key_sql
from dagster_cdp.sync.reading import SourceShape
from dagster_cdp.sync.source import read_source, source_sql
from dagster_cdp.sync.state import StateStore
from dagster_cdp.sync.sync_errors import MappingChangedError, SourceError


@dataclass(frozen=True)
class NextRun:
    """What the next run would do with a key: `action` is one of insert, update, delete (a call is sent), unchanged,
    already_sent (send-once), kept (gone, upsert mode), already_deleted, forgotten, absent (nothing to send), held
    (refused max_row_attempts times), source_problem (its row cannot be sent) or stops (the run would stop first)."""

    action: str
    why: str
    call: dict[str, Any] | None = None  # the call it would send, with its messageId


@dataclass(frozen=True)
class Explanation:
    view: KeyView
    next_run: NextRun | None  # None when the sync's definition is neither given nor recorded by a run
    definition_from: str | None = None  # where the definition planned with comes from

    def as_json(self) -> dict[str, Any]:
        next_run = None if self.next_run is None else dict(self.next_run.__dict__)
        return {**self.view.as_json(), "next_run": next_run, "definition_from": self.definition_from}

    def text(self) -> str:
        lines = self.view.lines()
        if self.next_run is None:
            lines.append(("next run", "unknown: give the sync's defs.yaml (--defs) to see what a run would send"))
        else:
            lines.append(("definition", str(self.definition_from)))
            lines.append(("next run", f"{self.next_run.action.replace('_', ' ')}: {self.next_run.why}"))
            if self.next_run.call is not None:
                lines.append(("call", dumps(self.next_run.call).decode()))
        return key_value_text(lines)


def explain_key(
    engine: sa.Engine,
    store: StateStore,
    sync: str,
    key: str,
    declared: Sequence[SyncDefinition] | None,
    where: str,
) -> Explanation:
    """The state of `key` in `sync` and, given the syncs `declared` (in the file `where`), what the next run would do
    with it. Without them, the definition its last run recorded in the history is used; failing that, `sync` must
    have state."""
    if declared is None and (found := _recorded(store, sync)) is not None:
        declared, where = found
    if declared is None:
        if sync not in (names := sync_names(store)):
            state = store.engine.url.render_as_string(hide_password=True)
            raise SourceError(
                f"Sync {sync!r} has no state at {state} (its syncs are {', '.join(names) or 'none'}); check its "
                "name, or give its defs.yaml (--defs) to explain a sync that never ran."
            )
        return Explanation(read_key(store, sync, key), None)
    definition = definition_for(declared, sync, key, where)
    view = read_key(store, definition.name, key)
    return Explanation(view, next_run(definition, engine, store, view), where)


def _recorded(store: StateStore, sync: str) -> tuple[list[SyncDefinition], str] | None:
    """The definition the newest run of `sync` recorded in the history, and a phrase saying so."""
    row = store.history.recorded_definition(sync)
    if row is None:
        return None
    recorded = SyncDefinition.from_record(orjson.loads(row["definition"]))
    return [recorded], f"recorded by its run {row['run_id']} of {row['started_at']:%Y-%m-%d %H:%M:%S} UTC"


def definition_for(definitions: Sequence[SyncDefinition], sync: str, key: str, where: str) -> SyncDefinition:
    """The definition a run of `sync` uses for `key`: for a sync in partitions, that of the key's partition, named as
    its state is (`people[2/4]`); `sync` may be the declared name or that partition's name."""
    for definition in definitions:
        count = definition.partitions
        if count == 1:
            if definition.name == sync:
                return definition
            continue
        partition = partition_of(key, count)
        named = partition_name(definition.name, partition, count)
        if sync in (definition.name, named):
            return dataclasses.replace(definition, partition=partition, name=named)
        if sync in {partition_name(definition.name, p, count) for p in range(count)}:
            raise SourceError(f"Key {key!r} is in partition {named} of sync {definition.name!r}, not in {sync}.")
    declared = ", ".join(d.name for d in definitions)
    raise SourceError(f"Sync {sync!r} is not declared in {where}; it declares {declared}.")


def next_run(definition: SyncDefinition, engine: sa.Engine, store: StateStore, view: KeyView) -> NextRun:
    """What a run of `definition` would do now with the key of `view` (its state as that run will see it)."""
    shape = describe(definition, engine)
    try:
        values, _ = fingerprinted(definition, shape.columns, store.fingerprint(definition.name), full_resync=False)
    except MappingChangedError as e:
        return NextRun("stops", str(e))
    mapper = RowMapper(definition, shape.columns, values)
    with _candidates(definition, engine, shape, view.key) as rows:
        mapped = [m for row in rows if isinstance(m := mapper.map(row), MappedRow) and m.key == view.key]
    with WorkFile() as work:
        work.add_source(mapped)
        work.add_state([dataclasses.astuple(view.state)] if view.state else [])
        work.plan(
            mirror=definition.mode == "mirror",
            full_resync=False,
            max_row_attempts=definition.max_row_attempts,
            send_once=definition.send_once,
        )
        operation = next(iter(work.counts()), None)
        reasons = [reported[1] for reported in work.reported()]
        calls = [outgoing_call(planned) for planned in work.calls(definition.name, send_once=definition.send_once)]
    return _explained(definition, view, operation, reasons[0] if reasons else "", calls[0] if calls else None)


_SENT = {
    "insert": "no call for this key was ever accepted",
    "update": "its payload changed since the accepted one",
    "delete": "it is gone from the source, and the sync mirrors the source",
}
_NOT_SENT = {
    "unchanged": "its payload is the accepted one: nothing to send",
    "kept": "it is gone from the source, and upsert mode never deletes: nothing to send",
    "already_deleted": "it is gone from the source, and its deletion was accepted already: nothing to send",
    "forgotten": "it is gone from the source and was never accepted: a run drops its state and sends nothing",
    "absent": "it is neither in the source nor in the state: nothing to send",
    "already_sent": "send-once: it was sent and accepted once, and is never sent again",
}
_NOT_SENT_AS = {"gone": "already_deleted", "forget": "forgotten", None: "absent"}


def _explained(
    definition: SyncDefinition, view: KeyView, operation: str | None, reason: str, call: dict[str, Any] | None
) -> NextRun:
    """The plan's operation for the key (None: no plan row) as an action and its reason."""
    if definition.send_once and view.state is not None and view.state.payload_hash is not None:
        return NextRun("already_sent", _NOT_SENT["already_sent"])
    if operation in _SENT:
        cap = definition.max_changes_per_run
        later = f"; a run sends at most {cap:,} changes (max_changes_per_run), the next run goes on" if cap else ""
        return NextRun(operation, _SENT[operation] + later, call)
    if operation in ("problem", "duplicate"):
        return NextRun("source_problem", f"{reason}; nothing is sent until the source row is fixed")
    if operation == "exhausted":
        again = "" if view.state and view.state.failed_hash == DELETE_MARK else "; a changed payload is sent again"
        return NextRun("held", f"{reason} (max_row_attempts={definition.max_row_attempts}){again}")
    action = _NOT_SENT_AS.get(operation, operation or "absent")
    return NextRun(action, _NOT_SENT[action])


@contextmanager
def _candidates(
    definition: SyncDefinition, engine: sa.Engine, shape: SourceShape, key: str
) -> Iterator[Iterator[Sequence[Any]]]:
    """The source rows that may have this key: those whose key text in SQL is the key, else every row."""
    if inexact_key_column(definition, engine, shape) is not None:
        with read_source(engine, definition, shape) as (_, rows):
            yield rows
        return
    key_shape = definition.mapping.key_shape()
    parts = _parts(key_shape, key)
    if parts is None:  # not a key this mapping makes
        yield iter(())
        return
    texts = key_sql(key_shape, engine, "cdp_source", whole=True)
    where = " AND ".join(f"{text} = :cdp_key_{i}" for i, text in enumerate(texts))
    sql = f"SELECT * FROM (\n{source_sql(definition, engine)}\n) AS cdp_source WHERE {where}"
    statement = sa.text(shape.select(sql, engine.dialect.identifier_preparer.quote_identifier))
    with engine.connect() as connection, reading_session(connection):
        result = connection.execute(statement.bindparams(**{f"cdp_key_{i}": p for i, p in enumerate(parts)}))
        yield shape.fix(iter(result))


def _parts(key_shape: Key, key: str) -> list[str] | None:
    """The key's text as `key_sql` has it: one string, or each element of a key of several columns."""
    if not key_shape.json:
        return [key]
    try:
        parts = orjson.loads(key)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parts, list) and len(parts) == len(key_shape.pieces) and all(isinstance(p, str) for p in parts):
        return parts
    return None
