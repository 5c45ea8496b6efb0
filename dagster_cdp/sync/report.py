"""What a sync run did (or, for a dry run, would do)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RowRejection:
    """A row that was not synced: `key` identifies it, `reason` comes from the source checks or the API."""

    key: str
    reason: str
    operation: str
    attempts: int | None = None  # times in a row the API refused this payload; None for a row refused before sending


@dataclass
class SyncReport:
    """Counts of a run; for a real run inserted/updated/deleted count calls the API accepted."""

    sync: str
    dry_run: bool
    full_resync: bool
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    deferred: int = 0  # planned calls left for later runs by max_changes_per_run
    rejected: list[RowRejection] = field(default_factory=list)
    requests: int = 0
    bytes: int = 0
    retries: int = 0
    duration_seconds: float = 0.0
    source_rows: int = 0
    diff: str = "portable"  # "in-warehouse" when the warehouse compared rows to the state (`pushdown`)
    diff_reason: str | None = None  # why the portable diff ran, where the in-warehouse one could not
    samples: dict[str, list[dict]] = field(default_factory=dict)
    run_id: str | None = None  # the id of this run's row in the history table `history_table` (see `history`)
    history_table: str | None = None  # that table as SQL names it

    def summary(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        deferred = f"{self.deferred:,} left for later runs (max_changes_per_run); " if self.deferred else ""
        return (
            f"sync {self.sync!r}{' (dry run)' if self.dry_run else ''}{' (full resync)' if self.full_resync else ''}: "
            f"{self.source_rows:,} source rows; {verb} {self.inserted:,} inserts, {self.updated:,} updates, "
            f"{self.deleted:,} deletions; {self.unchanged:,} unchanged; {deferred}{len(self.rejected):,} rejected; "
            f"{self.requests:,} requests, {self.bytes:,} bytes, {self.retries:,} retries "
            f"in {self.duration_seconds:.1f}s ({self.diff} diff{f': {self.diff_reason}' if self.diff_reason else ''})"
        )
