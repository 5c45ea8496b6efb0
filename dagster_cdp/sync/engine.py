"""run_sync: read the source, diff it against the accepted state, send only the changes, record acknowledgements.

State advances only from what the API acknowledged, one transaction per delivered request, so a process
killed at any instant resends at most its in-flight requests, with the same deterministic messageIds.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from dagster_cdp.sync.definition import People, SyncDefinition
from dagster_cdp.sync.diff import DELETE_MARK, PlannedCall, WorkFile
from dagster_cdp.sync.errors import MappingChangedError, SyncAbortedError
from dagster_cdp.sync.mapping import MappedRow, RowMapper, canonical_json, hash_hex
from dagster_cdp.sync.report import RowRejection, SyncReport
from dagster_cdp.sync.source import CHUNK_ROWS, as_engine, read_source
from dagster_cdp.sync.state import KeyState, StateStore

if TYPE_CHECKING:
    from dagster_cdp.client import PipelinesClient
    from dagster_cdp.report import BatchResult

MESSAGE_ID_NAMESPACE = uuid.UUID("5f0c7a4e-2d1b-5c8e-9a3f-6b7d8e9f0a1b")
SAMPLES_PER_OPERATION = 10
_PROGRESS_SECONDS = 5.0
_REPORTED_AS = {"insert": "insert", "update": "update", "resync": "update", "delete": "delete"}

_log = logging.getLogger("dagster_cdp.sync")


def message_id(sync: str, operation: str, key: str, payload_hash: str, version: int) -> str:
    """The resend of an unacknowledged call gets the same id, so it is recognisable.

    `version` (accepted calls so far for the key) makes every new send distinct: without it a row that goes
    A -> B -> A -> B, or is deleted and comes back unchanged, would repeat an old id and be de-duplicated away.
    """
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{sync}|{operation}|{key}|{payload_hash}|{version}"))


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
) -> SyncReport:
    """Sync one definition; with dry_run, report what would be sent without sending or writing anything."""
    started = time.monotonic()
    log = log or _log
    if client is None and not dry_run:
        raise ValueError(f"Sync {definition.name!r} needs a PipelinesClient to send with (or pass dry_run=True).")
    engine = as_engine(warehouse)
    try:
        return _run(definition, engine, client, state or StateStore(engine), dry_run, full_resync, force, log,
                    started)
    finally:
        if isinstance(warehouse, str):
            engine.dispose()  # ours to close: a DuckDB file stays locked while a connection is pooled


def _run(definition: SyncDefinition, engine: sa.Engine, client: PipelinesClient | None, store: StateStore,
         dry_run: bool, full_resync: bool, force: bool, log: logging.Logger, started: float) -> SyncReport:
    fields = definition.fingerprint_fields()
    fingerprint = hash_hex(canonical_json(fields))
    stored = store.fingerprint(definition.name)
    if stored is not None and stored[0] != fingerprint and not full_resync:
        raise MappingChangedError(_mapping_change(definition.name, stored[1], fields))
    report = SyncReport(sync=definition.name, dry_run=dry_run, full_resync=full_resync)

    with WorkFile() as work:
        _read(definition, engine, work, report, log)
        work.add_state(store.iter_rows(definition.name, CHUNK_ROWS))
        work.plan(mirror=definition.mode == "mirror", full_resync=full_resync,
                  max_row_attempts=definition.max_row_attempts)
        counts = work.counts()
        _guard(definition, work, counts, report, force)
        report.unchanged = counts.get("unchanged", 0)
        report.rejected.extend(RowRejection(key, reason, operation) for key, reason, operation in work.reported())
        for operation in ("insert", "update", "resync", "delete"):
            for planned in work.calls((operation,), limit=SAMPLES_PER_OPERATION):
                samples = report.samples.setdefault(_REPORTED_AS[operation], [])
                if len(samples) < SAMPLES_PER_OPERATION:
                    samples.append(_call(definition.name, planned))
        if dry_run:
            report.inserted = counts.get("insert", 0)
            report.updated = counts.get("update", 0) + counts.get("resync", 0)
            report.deleted = counts.get("delete", 0)
        else:
            store.create_tables()
            if stored is None:
                store.save_fingerprint(definition.name, fingerprint, fields)
            _deliver(definition, client, store, work, report, log)
            store.forget(definition.name, work.forgotten())
            if stored is not None and stored[0] != fingerprint:
                store.save_fingerprint(definition.name, fingerprint, fields)
    report.duration_seconds = time.monotonic() - started
    log.info(report.summary())
    return report


def _read(definition: SyncDefinition, engine: sa.Engine, work: WorkFile, report: SyncReport,
          log: logging.Logger) -> None:
    """Streams the source through the mapper into the work file; rows without a key are reported here."""
    with read_source(engine, definition) as (columns, rows):
        mapper = RowMapper(definition, columns)
        last_progress = time.monotonic()

        def mapped() -> Iterator[MappedRow]:
            nonlocal last_progress
            for row in rows:
                report.source_rows += 1
                result = mapper.map(row)
                if isinstance(result, MappedRow):
                    yield result
                else:
                    report.rejected.append(RowRejection("<NULL>", result[1], "source"))
                if time.monotonic() - last_progress >= _PROGRESS_SECONDS:
                    last_progress = time.monotonic()
                    log.info("sync %r: read %d source rows so far", definition.name, report.source_rows)

        work.add_source(mapped())


def _guard(definition: SyncDefinition, work: WorkFile, counts: dict[str, int], report: SyncReport,
           force: bool) -> None:
    """Refuses mass deletions before anything is sent: they are far more often a broken model than intent."""
    deletions = counts.get("delete", 0)
    previous = work.previous_accepted()
    if force or definition.mode != "mirror" or previous == 0:
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


def _call(sync: str, planned: PlannedCall) -> dict[str, Any]:
    return {**planned.call,
            "messageId": message_id(sync, planned.operation, planned.key, planned.payload_hash, planned.version)}


def _batch_context(definition: SyncDefinition) -> dict[str, Any] | None:
    context = dict(definition.context or {})
    if isinstance(definition.mapping, People):
        context["active"] = definition.mapping.active
    return context or None


def _deliver(definition: SyncDefinition, client: PipelinesClient, store: StateStore, work: WorkFile,
             report: SyncReport, log: logging.Logger) -> None:
    """Sends the planned calls and records each delivered request's outcome as soon as it is yielded."""
    in_flight: dict[str, PlannedCall] = {}

    def calls() -> Iterator[dict[str, Any]]:
        for planned in work.calls():
            call = _call(definition.name, planned)
            in_flight[call["messageId"]] = planned
            yield call

    last_progress = time.monotonic()
    results = client.deliver(calls(), context=_batch_context(definition),
                             integrations=dict(definition.integrations) if definition.integrations else None)
    for result in results:
        store.record(definition.name, _acknowledgements(result, in_flight, report))
        report.requests += result.requests
        report.bytes += result.bytes
        report.retries += result.retries
        if time.monotonic() - last_progress >= _PROGRESS_SECONDS:
            last_progress = time.monotonic()
            log.info("sync %r: %d inserts, %d updates, %d deletions accepted in %d requests so far",
                     definition.name, report.inserted, report.updated, report.deleted, report.requests)


def _acknowledgements(result: BatchResult, in_flight: dict[str, PlannedCall], report: SyncReport) -> list[KeyState]:
    """The new state of every key the request settled, and the report's counts."""
    keys = []
    for message in result.accepted:
        planned = in_flight.pop(message["messageId"])
        operation = _REPORTED_AS[planned.operation]
        if operation == "delete":
            report.deleted += 1
            keys.append(KeyState(planned.key_hash, planned.key, None, None, planned.version + 1, 0, None, None))
            continue
        if operation == "insert":
            report.inserted += 1
        else:
            report.updated += 1
        keys.append(KeyState(planned.key_hash, planned.key, planned.payload_hash, _json(planned.delete_call),
                             planned.version + 1, 0, None, None))
    for rejection in result.rejected:
        planned = in_flight.pop(rejection.message["messageId"])
        operation = _REPORTED_AS[planned.operation]
        failed_hash = DELETE_MARK if operation == "delete" else planned.payload_hash
        attempts = planned.attempts + 1 if planned.failed_hash == failed_hash else 1
        keys.append(KeyState(planned.key_hash, planned.key, planned.accepted_hash, planned.accepted_delete_call,
                             planned.version, attempts, failed_hash, rejection.reason))
        report.rejected.append(RowRejection(planned.key, rejection.reason, operation))
    return keys


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _mapping_change(sync: str, before: dict, after: dict) -> str:
    changed = []
    for field in sorted(set(before) | set(after)):
        old, new = before.get(field), after.get(field)
        if isinstance(old, dict) and isinstance(new, dict) and field == "mapping":
            changed += [f"mapping.{k}: {old.get(k)!r} -> {new.get(k)!r}"
                        for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        elif old != new:
            changed.append(f"{field}: {old!r} -> {new!r}")
    return (
        f"Sync {sync!r}: the mapping changed since the last sync ({'; '.join(changed)}). The stored state was "
        f"built with the old mapping, so an incremental sync would be wrong. Run once with full_resync=True to "
        f"resend every row with the new mapping (and, in mirror mode, delete keys that are gone)."
    )
