"""Dry runs of a set of syncs (`dagster-cdp plan`): what each one, and each partition of one in partitions, would
send now, as `run_sync(dry_run=True)` reports it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from dagster_cdp.encoding import dumps
from dagster_cdp.errors import CdpError
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.engine import run_sync
from dagster_cdp.sync.inspection import counted
from dagster_cdp.sync.partitions import partition_name
from dagster_cdp.sync.report import SyncReport
from dagster_cdp.sync.state import StateStore
from dagster_cdp.sync.sync_errors import SourceError, SyncAbortedError

SAMPLES_SHOWN = 3  # sample calls of each operation in the text (the JSON has every sample the report has)
REJECTIONS_SHOWN = 20


@dataclass(frozen=True)
class PlannedSync:
    """One sync's dry run: its report, or why a run would stop before sending anything (`stops`), or both for a sync
    the delete guard stops (the report then says what the run would send if forced)."""

    sync: str
    report: SyncReport | None
    stops: str | None = None

    def as_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self.report) if self.report else {"sync": self.sync}
        return {**fields, "stops": self.stops}

    def text(self) -> str:
        if self.report is None:
            return f"{self.sync}: stops: {self.stops}"
        report = self.report
        diff = f"{report.diff} diff" + (f" ({report.diff_reason})" if report.diff_reason else "")
        lines = [f"{report.sync}: {counted(report.source_rows, 'source row')}, {diff}"]
        if self.stops:
            lines.append(f"  stops: {self.stops}")
        deferred = f"{report.deferred:,} left for later runs (max_changes_per_run); " if report.deferred else ""
        lines.append(
            f"  {'forced, would' if self.stops else 'would'} send {counted(report.inserted, 'insert')}, "
            f"{counted(report.updated, 'update')}, {counted(report.deleted, 'deletion')}; "
            f"{report.unchanged:,} unchanged; {deferred}{len(report.rejected):,} rejected"
        )
        lines += [f"  rejected {r.key} ({r.operation}): {r.reason}" for r in report.rejected[:REJECTIONS_SHOWN]]
        if len(report.rejected) > REJECTIONS_SHOWN:
            lines.append(f"  ... and {len(report.rejected) - REJECTIONS_SHOWN:,} more rejected (--json lists them all)")
        for operation, calls in report.samples.items():
            lines += [f"  {operation}: {dumps(call).decode()}" for call in calls[:SAMPLES_SHOWN]]
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    warehouse: str  # its URL, without the password
    syncs: list[PlannedSync]

    def as_json(self) -> dict[str, Any]:
        return {"warehouse": self.warehouse, "syncs": [planned.as_json() for planned in self.syncs]}

    def text(self) -> str:
        return "\n\n".join(planned.text() for planned in self.syncs)


def selected(definitions: Sequence[SyncDefinition], names: Sequence[str], where: str) -> list[SyncDefinition]:
    """The syncs of these names (all of them when no name is given); an unknown name is refused."""
    declared = {d.name: d for d in definitions}
    if unknown := [name for name in names if name not in declared]:
        raise SourceError(
            f"{where} declares no sync {', '.join(map(repr, unknown))}; its syncs are {', '.join(declared)}."
        )
    return [declared[name] for name in dict.fromkeys(names)] if names else list(definitions)


def plan_syncs(
    definitions: Sequence[SyncDefinition], *, warehouse: str, state_url: str | None, state_schema: str | None
) -> Plan:
    """Dry runs of the syncs, one after the other, reading the warehouse at the URL `warehouse` and the state where a
    CustomerIOWarehouseResource with these settings keeps it."""
    state = StateStore(state_url or warehouse, schema=state_schema) if state_url or state_schema else None
    try:
        planned = [_dry_run(definition, warehouse, state) for definition in _runs(definitions)]
    finally:
        if state is not None:
            state.engine.dispose()
    return Plan(sa.make_url(warehouse).render_as_string(hide_password=True), planned)


def _runs(definitions: Sequence[SyncDefinition]) -> Iterator[SyncDefinition]:
    """Each sync as a run would run it (each partition of one in partitions), failing at once where a run holds its
    lock instead of waiting for it."""
    for definition in definitions:
        definition = dataclasses.replace(definition, lock_timeout=0)
        if definition.partitions == 1:
            yield definition
        else:
            yield from (dataclasses.replace(definition, partition=p) for p in range(definition.partitions))


def _dry_run(definition: SyncDefinition, warehouse: str, state: StateStore | None) -> PlannedSync:
    count, partition = definition.partitions, definition.partition
    name = definition.name if partition is None else partition_name(definition.name, partition, count)
    try:
        return PlannedSync(name, run_sync(definition, warehouse=warehouse, client=None, state=state, dry_run=True))
    except SyncAbortedError as e:  # the delete guard: what the run would send if forced
        forced = run_sync(definition, warehouse=warehouse, client=None, state=state, dry_run=True, force=True)
        return PlannedSync(name, forced, str(e))
    except CdpError as e:
        return PlannedSync(name, None, str(e))
