"""run_sync: read the source, diff it against the accepted state, send only the changes, record acknowledgements.

State advances only from what the API acknowledged, one transaction per delivered request, so a process
killed at any instant resends at most its in-flight requests, with the same deterministic messageIds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import sqlalchemy as sa

from dagster_cdp.packing import EncodedCall
from dagster_cdp.rate_limit import RateLimiter
from dagster_cdp.sync.cursor import next_mark
from dagster_cdp.sync.database import as_engine, check_connects
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.dialects import dialect_of, reading_session
from dagster_cdp.sync.diff import DELETE_MARK, SENDING, PlannedCall, WorkFile
from dagster_cdp.sync.history import RunStart
from dagster_cdp.sync.locks import database_turns
from dagster_cdp.sync.mapping import MappedRow, RowMapper, ValueColumns, canonical_json, hash_hex
from dagster_cdp.sync.partitions import partition_name, partition_of
from dagster_cdp.sync.progress import Progress
from dagster_cdp.sync.pushdown import Pushdown, plan_pushdown
from dagster_cdp.sync.reading import SourceShape
from dagster_cdp.sync.report import RowRejection, SyncReport
from dagster_cdp.sync.schema_drift import recorded_fields, resolve_columns
from dagster_cdp.sync.source import CHUNK_ROWS, CursorRead, count_source, describe_source, read_source, tally_below
from dagster_cdp.sync.state import KeyState, StateStore
from dagster_cdp.sync.sync_errors import MappingChangedError, SourceError, SyncAbortedError

if TYPE_CHECKING:
    from dagster_cdp.client import PipelinesClient
    from dagster_cdp.delivery_report import BatchResult

SAMPLES_PER_OPERATION = 10
_REPORTED_AS = {"insert": "insert", "update": "update", "resync": "update", "delete": "delete"}

_log = logging.getLogger("dagster_cdp.sync")
_T = TypeVar("_T")


def run_sync(
    definition: SyncDefinition,
    *,
    warehouse: str | sa.Engine,
    client: PipelinesClient | None,
    state: StateStore | None = None,
    dry_run: bool = False,
    full_resync: bool = False,
    force: bool = False,
    log: logging.Logger | None = None,
    dagster_run_id: str | None = None,
) -> SyncReport:
    """Sync one definition; with dry_run, report what would be sent without sending or changing any key's state.

    (A dry run writes its row of the history table `{prefix}runs`, folds the acknowledgements of a killed run into
    the state table, and brings state tables of an earlier version up to date: none changes any key's state.)
    Runs of one sync take turns (see StateStore.lock): the later one then sends only what is still needed. Each
    run that gets the lock is recorded in the history (`history`), with `dagster_run_id` when Dagster runs it.
    """
    started = time.monotonic()
    log = log or _log
    if client is None and not dry_run:
        raise ValueError(f"Sync {definition.name!r} needs a PipelinesClient to send with (or pass dry_run=True).")
    declared = definition
    if definition.partitions > 1:
        if definition.partition is None:
            raise SourceError(
                f"Sync {definition.name!r} has {definition.partitions} partitions: run each one "
                f"(partition=0 to {definition.partitions - 1}), e.g. as the asset's Dagster partitions."
            )
        rate = definition.max_calls_per_second
        definition = dataclasses.replace(
            definition,
            name=partition_name(definition.name, definition.partition, definition.partitions),
            max_calls_per_second=None if rate is None else rate / definition.partitions,  # they may run at once
        )  # its own state, messageIds, report
    engine = as_engine(warehouse)
    store = state or StateStore(engine)
    # The lock first: a DuckDB file admits one process, so a second run must wait before it opens the file.
    files = [f for e in (engine, store.engine) if (f := dialect_of(e).single_process_file(e))]
    with (
        store.lock(definition.name, definition.lock_timeout, log),  # released after the DuckDB file is closed
        database_turns(files, definition.lock_timeout, log),
    ):
        check_connects(engine, store.engine)
        run = _Run(
            definition=definition,
            engine=engine,
            store=store,
            client=client,
            log=log,
            dry_run=dry_run,
            full_resync=full_resync,
            force=force,
            started=started,
            report=SyncReport(sync=definition.name, dry_run=dry_run, full_resync=full_resync),
        )
        try:
            return _recorded(run, dataclasses.replace(declared, partition=None), dagster_run_id)
        finally:
            if isinstance(warehouse, str):
                engine.dispose()  # ours to close: a DuckDB file stays locked while a connection is pooled


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Run:
    """One run of a sync: where it reads, keeps state and sends, and how run_sync was asked to run it."""

    definition: SyncDefinition
    engine: sa.Engine
    store: StateStore
    client: PipelinesClient | None  # None only in a dry run
    log: logging.Logger
    dry_run: bool
    full_resync: bool
    force: bool
    started: float  # time.monotonic() as run_sync began
    report: SyncReport  # filled in as the run goes, so a failed run's history has its counts so far


@contextlib.contextmanager
def _objects_kept_out_of_gc() -> Iterator[None]:
    """Sets the objects alive before the run aside from the cyclic garbage collector's full collections while it
    runs (`gc.freeze`): a run allocates millions of short-lived objects, and each full collection would otherwise walk
    the whole heap again (Dagster's, a host's), ~12% of a first sync. Garbage the run makes is collected as usual.
    A process that froze objects itself (a pre-fork server) is left as it is: unfreezing would undo its freeze."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _recorded(run: _Run, declared: SyncDefinition, dagster_run_id: str | None) -> SyncReport:
    """Runs the sync with its row in the history: 'running' (committed, so a killed run leaves it), then how it
    ended; a successful real run also replaces the sync's rejections. A failure is re-raised as it was. The row keeps
    the sync's definition as `declared` (every partition under its declared name)."""
    definition, history = run.definition, run.store.history
    start = RunStart(
        sync=definition.name,
        partition=definition.partition if definition.partitions > 1 else None,
        dagster_run_id=dagster_run_id,
        dry_run=run.dry_run,
        full_resync=run.full_resync,
        history_days=definition.history_days,
        definition=canonical_json(declared.as_record()).decode(),
    )
    run_id = _unless_unwritable(run, "record the run's start", functools.partial(history.start, start))
    run.report.run_id, run.report.history_table = run_id, history.table_name() if run_id else None
    try:
        with (
            dialect_of(run.engine).bounded(run.engine),
            run.store.dialect.bounded(run.store.engine),
            _objects_kept_out_of_gc(),
        ):
            report = _run(run)
    except BaseException as error:  # an interrupted run too (Ctrl-C, a terminated Dagster run)
        if run_id is not None:
            _unless_unwritable(
                run, "record how it failed", functools.partial(history.finish, run_id, run.report, error)
            )
        raise
    if run_id is not None:
        if not run.dry_run:
            replace = functools.partial(
                history.replace_rejections, definition.name, run_id, report.rejected, run.store.still_refused
            )
            _unless_unwritable(run, "record its rejections", replace)
        _unless_unwritable(run, "record how it ended", functools.partial(history.finish, run_id, report))
    return report


def _unless_unwritable(run: _Run, doing: str, write: Callable[[], _T]) -> _T | None:
    """History is a record of the sync, never a reason for it to fail: a history the state database refuses to write
    (no CREATE or INSERT grant, a connection lost) is logged and the run goes on (its report then has no run_id)."""
    try:
        return write()
    except sa.exc.SQLAlchemyError as error:
        tables = f"{run.store.history.table_name()} and {run.store.history.rejections.name}"
        run.log.warning(
            "sync %r: could not %s in %s (%s); the sync goes on without it. Let the sync's database user create and "
            "write those tables next to its state.",
            run.definition.name,
            doing,
            tables,
            " ".join(str(error).split())[:500],
        )
        return None


def _run(run: _Run) -> SyncReport:
    definition, store = run.definition, run.store
    stored = store.fingerprint(definition.name)  # a store brings tables of earlier versions up to date first
    shape = describe(definition, run.engine)
    values, current = fingerprinted(definition, shape.columns, stored, full_resync=run.full_resync)
    pushdown, why_portable = plan_pushdown(definition, run.engine, store, shape, values)
    report = run.report
    report.diff, report.diff_reason = ("in-warehouse" if pushdown else "portable"), why_portable
    if stored is not None:
        _settle(run, after_crash=True)  # a killed run's acknowledgements, before the diff
    with WorkFile() as work:
        cursor, cursor_kind = _fill(run, work, report, pushdown, shape, values)
        counts = _plan(run, work, report)
        if run.dry_run:
            report.inserted = counts.get("insert", 0)
            report.updated = counts.get("update", 0) + counts.get("resync", 0)
            report.deleted = counts.get("delete", 0)
        else:
            _apply(run, work, report, stored=stored, current=current, cursor=cursor, cursor_kind=cursor_kind)
    report.duration_seconds = time.monotonic() - run.started
    run.log.info(report.summary())
    return report


def fingerprinted(
    definition: SyncDefinition, columns: list[str], stored: tuple[str, dict] | None, *, full_resync: bool
) -> tuple[ValueColumns, tuple[str, dict]]:
    """The value columns a run of a source with these columns sends, and its (fingerprint, fields); refuses a
    mapping changed since `stored` (MappingChangedError, or SchemaChangedError for the source's columns)."""
    mapping_fields = definition.fingerprint_fields()
    if stored is not None and not full_resync and _mapping_of(stored[1]) != _mapping_of(mapping_fields):
        raise MappingChangedError(
            _mapping_change(definition.name, _mapping_of(stored[1]), mapping_fields)
            + (
                " (Rows of this send-once sync that were already sent are not sent again.)"
                if definition.send_once
                else ""
            )
        )
    values = resolve_columns(definition, columns, stored[1] if stored else None, full_resync=full_resync)
    fields = {**mapping_fields, **recorded_fields(values)}
    return values, (hash_hex(canonical_json(fields)), fields)


def _fill(
    run: _Run, work: WorkFile, report: SyncReport, pushdown: Pushdown | None, shape: SourceShape, values: ValueColumns
) -> tuple[CursorRead | None, str | None]:
    """Loads the source rows (with the in-warehouse diff, only those of keys needing attention) and their stored
    state into the work file; returns the cursor read, if any, and how its values were encoded."""
    definition = run.definition
    run.log.debug("sync %r: reading the source", definition.name)
    cursor = None
    if definition.cursor_column and pushdown is None:
        cursor = _cursor_read(run)
    if pushdown is not None:
        run.log.debug("sync %r: diffing in the warehouse", definition.name)
        progress = Progress(run.log, f"sync {definition.name!r}: the in-warehouse diff returned", "source rows")
        pushdown.load(run.engine, work, report, progress, full_resync=run.full_resync)  # unchanged keys stay there
    cursor_kind = None if pushdown else _read(run, work, report, shape, values, cursor)
    if cursor and cursor.mark is not None and cursor_kind not in (None, cursor.mark.kind):
        raise SourceError(
            f"Sync {definition.name!r}: cursor column {cursor.mark.column!r} held {cursor.mark.kind} "
            f"values and now holds {cursor_kind} values; run once with full_resync=True to read it "
            "whole."
        )
    run.log.debug("sync %r: diffing against the stored state", definition.name)
    if pushdown is None:
        work.add_state(run.store.iter_rows(definition.name, CHUNK_ROWS))
    return cursor, cursor_kind


def _plan(run: _Run, work: WorkFile, report: SyncReport) -> dict[str, int]:
    """Plans every key's operation and refuses mass deletions; reports rows not sent and samples of the calls.
    Returns the count of each operation."""
    definition = run.definition
    work.plan(
        mirror=definition.mode == "mirror",
        full_resync=run.full_resync,
        max_row_attempts=definition.max_row_attempts,
        send_once=definition.send_once,
    )
    counts = work.counts()
    _guard(run, work, counts, report)  # on every planned call, including those deferred below
    cap = definition.max_changes_per_run
    if cap is not None and _sending(counts) > cap:
        report.deferred = work.defer(cap, by_cursor=definition.cursor_column is not None)
        counts = work.counts()
    report.unchanged = counts.get("unchanged", 0)
    report.rejected.extend(RowRejection(*reported) for reported in work.reported())
    for operation in ("insert", "update", "resync", "delete"):
        for planned in work.calls(
            definition.name, send_once=definition.send_once, operations=(operation,), limit=SAMPLES_PER_OPERATION
        ):
            samples = report.samples.setdefault(_REPORTED_AS[operation], [])
            if len(samples) < SAMPLES_PER_OPERATION:
                samples.append(outgoing_call(planned))
    return counts


def _apply(
    run: _Run,
    work: WorkFile,
    report: SyncReport,
    *,
    stored: tuple[str, dict] | None,
    current: tuple[str, dict],
    cursor: CursorRead | None,
    cursor_kind: str | None,
) -> None:
    """Sends the planned calls; records what the API accepted, the new state of keys not sent, the cursor mark
    and, on a first run or a changed one, the (fingerprint, fields) `current`."""
    definition, store = run.definition, run.store
    store.create_tables()
    if stored is None:
        store.save_fingerprint(definition.name, *current)
    unsettled = _deliver(run, work, report)
    if report.deferred:
        run.log.info(
            "sync %r: stopped at max_changes_per_run: sent %s calls, %s planned calls left; the next run continues "
            "where this one stopped%s",
            definition.name,
            f"{definition.max_changes_per_run:,}",
            f"{report.deferred:,}",
            " (resends of unchanged rows only go on in a full resync: run with full_resync again for them)"
            if run.full_resync
            else "",
        )
    for keys in work.unsent_state():
        store.record(definition.name, keys)
    _settle(run)
    if cursor is not None:
        assert definition.cursor_column is not None  # a CursorRead is made only for a cursor column
        new_mark = next_mark(
            cursor.mark, definition.cursor_column, cursor_kind, *work.cursor_extent(unsettled), work.tally
        )
        if new_mark is not None and new_mark != cursor.mark:
            store.save_cursor_mark(definition.name, new_mark)
    store.forget(definition.name, work.forgotten())
    if stored is not None and stored[0] != current[0]:
        store.save_fingerprint(definition.name, *current)


def _settle(run: _Run, after_crash: bool = False) -> None:
    name, log = run.definition.name, run.log
    log.debug("sync %r: settling state", name)
    settled = run.store.settle(name)
    if settled and after_crash:
        log.info(
            "sync %r: a previous run stopped before settling its state; folded its %d acknowledgements "
            "into the state table",
            name,
            settled,
        )
    elif settled:
        log.debug("sync %r: folded %d acknowledgements into the state table", name, settled)


def _cursor_read(run: _Run) -> CursorRead:
    """Reads from the stored mark only if the rows below it are still exactly those the sync settled (`cursor`)."""
    definition, engine = run.definition, run.engine
    quote = engine.dialect.identifier_preparer.quote_identifier
    check = dialect_of(engine).row_check([f"cdp_source.{quote(c)}" for c in definition.mapping.key_shape().columns()])
    mark = None if run.full_resync else run.store.cursor_mark(definition.name)
    if mark is None or mark.column != definition.cursor_column:
        return CursorRead(check)
    below = tally_below(
        engine, definition, sa.bindparam("cdp_mark", mark.as_value(mark.value), type_=mark.bind_type()), check
    )
    if below != mark.below:
        run.log.info(
            "sync %r: the source rows below the cursor mark are not those already settled (%s rows now, %s "
            "then: rows arrived late, were replaced or removed); reading the whole source",
            definition.name,
            f"{below.rows:,}",
            "unknown" if mark.below is None else f"{mark.below.rows:,}",
        )
        return CursorRead(check)
    return CursorRead(
        check, mark, sa.bindparam("cdp_since", mark.lower_bound(definition.lookback), type_=mark.bind_type())
    )


def describe(definition: SyncDefinition, engine: sa.Engine) -> SourceShape:
    """The source's columns and how to read each one, as a run reads them."""
    with engine.connect() as connection, reading_session(connection):
        return describe_source(connection, definition)


def _mapping_of(fields: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint fields that make stored state wrong when they change (not the recorded column set)."""
    plain = orjson.loads(canonical_json(fields))
    return {k: v for k, v in plain.items() if k not in ("hash", "columns", "cleared")}


def _read(
    run: _Run, work: WorkFile, report: SyncReport, shape: SourceShape, values: ValueColumns, cursor: CursorRead | None
) -> str | None:
    """Streams the source through the mapper into the work file; rows without a key are reported here.

    Returns how the cursor values were encoded (None without a cursor column or when no row had one).
    """
    definition = run.definition
    with read_source(run.engine, definition, shape, cursor) as (columns, rows):
        mapper = RowMapper(definition, columns, values)
        unmapped: list[tuple[int | None, int, bool]] = []  # (cursor, check, pins) of rows read and not diffed
        progress = Progress(run.log, f"sync {definition.name!r}: read", "source rows", lambda: _rows(run, cursor))

        def mapped() -> Iterator[MappedRow]:
            for fetched, row in enumerate(rows, 1):
                progress.tick(fetched)
                check = 0
                if cursor is not None:
                    row, check = row[:-1], int(row[-1])
                result = mapper.map(row)
                if definition.partition is not None and not _in_partition(definition, result):
                    if cursor is not None:
                        unmapped.append((mapper.cursor_of(row), check, False))
                    continue
                report.source_rows += 1
                if isinstance(result, MappedRow):
                    result.check = check
                    yield result
                else:
                    report.rejected.append(RowRejection("<NULL>", result[1], "source"))
                    if cursor is not None:
                        unmapped.append((mapper.cursor_of(row), check, True))

        work.add_source(mapped())
        work.add_unmapped(unmapped)
        return mapper.cursor_kind


def _rows(run: _Run, cursor: CursorRead | None) -> int | None:
    """The rows a long read reads, for its progress; None (no time left shown) when counting would cost too much: a
    `query` would run twice, and an engine without a free connection would count on the one streaming the read (a
    single-connection pool) or wait for one."""
    pool = run.engine.pool
    queued = isinstance(pool, sa.pool.QueuePool) and pool.checkedout() < pool.size()
    free = queued or isinstance(pool, sa.pool.NullPool)
    if run.definition.table is None or not free:
        return None
    try:
        return count_source(run.engine, run.definition, cursor)
    except sa.exc.SQLAlchemyError as e:
        run.log.debug("sync %r: could not count the source rows for the progress: %s", run.definition.name, e)
        return None


def _in_partition(definition: SyncDefinition, result: MappedRow | tuple[None, str]) -> bool:
    if not isinstance(result, MappedRow):
        return definition.partition == 0  # rows without a key are reported by the first partition
    return partition_of(result.key, definition.partitions) == definition.partition


def _guard(run: _Run, work: WorkFile, counts: dict[str, int], report: SyncReport) -> None:
    """Refuses mass deletions before anything is sent: they are far more often a broken model than intent."""
    definition = run.definition
    deletions = counts.get("delete", 0)
    previous = work.previous_accepted()
    if run.force or definition.mode != "mirror" or definition.send_once or previous == 0:
        return
    if report.source_rows == 0:
        raise SyncAbortedError(
            f"Sync {definition.name!r} aborted: the source returned no rows while {previous:,} keys are synced, "
            f"so every one of them would be deleted. Nothing was sent. If the source really is empty now, "
            f"run again with force=True."
        )
    if deletions / previous > definition.max_delete_fraction:
        raise SyncAbortedError(
            f"Sync {definition.name!r} aborted: it would delete {deletions:,} of {previous:,} synced keys "
            f"({deletions / previous:.0%}), over max_delete_fraction={definition.max_delete_fraction:.0%}. "
            f"Nothing was sent. Check the source; if the deletions are intended, run again with force=True "
            f"(a full resync does not override this guard) or raise max_delete_fraction."
        )


def outgoing_call(planned: PlannedCall) -> dict[str, Any]:
    """A planned call as a run sends it: with its deterministic messageId."""
    return {**planned.call, "messageId": planned.message_id}


def _outgoing(planned: PlannedCall) -> dict[str, Any] | EncodedCall:
    """The call as the client takes it: a call checked when mapped goes as its JSON with the messageId spliced in, the
    bytes `encoding.encode` would make of the call with it (its last field), without parsing it."""
    if not planned.checked:
        return outgoing_call(planned)
    mid = planned.message_id
    return EncodedCall({"messageId": mid}, f'{planned.payload[:-1]},"messageId":"{mid}"}}'.encode())


def _batch_context(definition: SyncDefinition) -> dict[str, Any] | None:
    context = {**(definition.context or {}), **definition.mapping.batch_context()}
    return context or None


def _deliver(run: _Run, work: WorkFile, report: SyncReport) -> list[str]:
    """Sends the planned calls and records each delivered request's outcome as soon as it is yielded.

    With max_calls_per_second, calls are let out at that rate and each request holds at most a second's worth, sent
    as soon as it has them. Returns the key hashes sent and not accepted (the high-water mark of an incremental read
    stops at them).
    """
    definition, log, client = run.definition, run.log, run.client
    assert client is not None  # run_sync refuses a run without a client unless it is a dry run, which sends nothing
    in_flight: dict[str, PlannedCall] = {}
    unsettled: list[str] = []
    pace = _pace(definition.max_calls_per_second)

    def calls() -> Iterator[dict[str, Any] | EncodedCall]:
        for planned in work.calls(definition.name, send_once=definition.send_once):
            if pace is not None:
                pace.acquire()
            in_flight[planned.message_id] = planned
            yield _outgoing(planned)

    progress = Progress(log, f"sync {definition.name!r}: sent", "calls", _sending(work.counts()))
    done = 0
    log.debug("sync %r: sending the changes", definition.name)
    results = client.deliver(
        calls(),
        context=_batch_context(definition),
        integrations=dict(definition.integrations) if definition.integrations else None,
        max_calls_per_request=None if pace is None else pace.limit,
    )
    for result in results:
        acknowledged = _acknowledgements(result, in_flight, report)
        run.store.record(definition.name, acknowledged)
        unsettled.extend(k.key_hash for k in acknowledged if k.failed_hash is not None)
        report.requests += result.requests
        report.bytes += result.bytes
        report.retries += result.retries
        done += len(result.accepted) + len(result.rejected)
        progress.tick(done)
    return unsettled + [planned.key_hash for planned in in_flight.values()]


def _sending(counts: dict[str, int]) -> int:
    """The calls a plan's operation counts send."""
    return sum(counts.get(operation, 0) for operation in SENDING)


def _pace(calls_per_second: float | None) -> RateLimiter | None:
    """Lets out at most a second's worth of calls in any second (for a rate under 1, one call each 1/rate seconds)."""
    if calls_per_second is None:
        return None
    limit = max(1, int(calls_per_second))
    return RateLimiter(limit, limit / calls_per_second, margin=0.0)


def _acknowledgements(result: BatchResult, in_flight: dict[str, PlannedCall], report: SyncReport) -> list[KeyState]:
    """The new state of every key the request settled, and the report's counts."""
    keys = []
    for message in result.accepted:
        planned = in_flight.pop(message["messageId"])
        operation = _REPORTED_AS[planned.operation]
        if operation == "delete":
            report.deleted += 1
            keys.append(KeyState(planned.key_hash, planned.key, version=planned.version + 1))  # not live any more
            continue
        if operation == "insert":
            report.inserted += 1
        else:
            report.updated += 1
        keys.append(
            KeyState(
                planned.key_hash,
                planned.key,
                payload_hash=planned.payload_hash,
                delete_call=planned.delete_call,
                version=planned.version + 1,
                row_hash=planned.row_hash,
            )
        )
    for rejection in result.rejected:
        planned = in_flight.pop(rejection.message["messageId"])
        operation = _REPORTED_AS[planned.operation]
        failed_hash = DELETE_MARK if operation == "delete" else planned.payload_hash
        attempts = planned.attempts + 1 if planned.failed_hash == failed_hash else 1
        keys.append(  # the accepted state stays; the rejection is counted
            KeyState(
                planned.key_hash,
                planned.key,
                payload_hash=planned.accepted_hash,
                delete_call=planned.accepted_delete_call,
                version=planned.version,
                attempts=attempts,
                failed_hash=failed_hash,
                last_error=rejection.reason,
                row_hash=planned.accepted_row_hash,
            )
        )
        report.rejected.append(RowRejection(planned.key, rejection.reason, operation, attempts))
    return keys


def _mapping_change(sync: str, before: dict, after: dict) -> str:
    changed = []
    for field in sorted(set(before) | set(after)):
        old, new = before.get(field), after.get(field)
        if isinstance(old, dict) and isinstance(new, dict) and field == "mapping":
            changed += [
                f"mapping.{k}: {old.get(k)!r} -> {new.get(k)!r}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
        elif old != new:
            changed.append(f"{field}: {old!r} -> {new!r}")
    return (
        f"Sync {sync!r}: the mapping changed since the last sync ({'; '.join(changed)}). The stored state was "
        f"built with the old mapping, so an incremental sync would be wrong. Run once with full_resync=True to "
        f"resend every row with the new mapping (and, in mirror mode, delete keys that are gone)."
    )
