"""What a sync is: a source (table or query) and a mapping of its rows to one of the kinds in `KINDS`."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from dagster_cdp.sync.declaration import CallMapping
from dagster_cdp.sync.entities import Objects, People, Relationships
from dagster_cdp.sync.kinds import Aliases, DeliveryReports, Devices, Events, Pages, Screens, Suppressions
from dagster_cdp.sync.sync_errors import SourceError

# Every kind of sync, by the name it is declared with: adding a kind is one class and one entry here.
KINDS: dict[str, type[CallMapping]] = {
    mapping.model_fields["kind"].default: mapping
    for mapping in (
        People,
        Objects,
        Relationships,
        Devices,
        Suppressions,
        Events,
        Pages,
        Screens,
        Aliases,
        DeliveryReports,
    )
}


@dataclass(frozen=True)
class SyncDefinition:
    """One sync: its stable `name` keys the stored state, so renaming it starts from scratch."""

    name: str
    mapping: CallMapping  # one of KINDS
    table: str | None = None
    query: str | None = None
    mode: Literal["mirror", "upsert"] = "mirror"
    max_delete_fraction: float = 0.25
    max_row_attempts: int = 3
    context: Mapping[str, Any] | None = None
    integrations: Mapping[str, Any] | None = None
    cursor_column: str | None = None
    lookback: float | dt.timedelta = 0.0
    partitions: int = 1  # hash partitions of the key, each synced on its own (see `partitions`)
    partition: int | None = None  # the one partition (0 to partitions - 1) a run syncs
    on_schema_change: Literal["fail", "append_new_columns", "sync_all_columns"] = "fail"  # see `schema_drift`
    lock_timeout: float = 600.0  # seconds a run waits for another run of the sync (or of one on its DuckDB file)
    max_calls_per_second: float | None = None  # the sync never sends faster (see README, "Gentle backfills")
    max_changes_per_run: int | None = None  # a run sends at most this many calls; the next run goes on from there
    history_days: int = 90  # days a run's row stays in the history table `{prefix}runs` (see `history`)

    @property
    def send_once(self) -> bool:
        """Each key is sent once ever: never updated, never deleted (events, page/screen views, aliases, reports)."""
        return self.mapping.send_once

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 200:
            raise SourceError(f"Sync name must be 1 to 200 characters, got {self.name!r}.")
        if (self.table is None) == (self.query is None):
            raise SourceError(f"Sync {self.name!r} needs exactly one of `table` or `query`.")
        if self.mode not in ("mirror", "upsert"):
            raise SourceError(f"Sync {self.name!r}: mode must be 'mirror' or 'upsert', got {self.mode!r}.")
        if not 0 <= self.max_delete_fraction <= 1:
            raise SourceError(f"Sync {self.name!r}: max_delete_fraction must be between 0 and 1.")
        if self.max_row_attempts < 1:
            raise SourceError(f"Sync {self.name!r}: max_row_attempts must be at least 1.")
        if self.on_schema_change not in ("fail", "append_new_columns", "sync_all_columns"):
            raise SourceError(
                f"Sync {self.name!r}: on_schema_change must be 'fail', 'append_new_columns' or "
                f"'sync_all_columns' (as in dbt), got {self.on_schema_change!r}."
            )
        if not self.lock_timeout >= 0:
            raise SourceError(f"Sync {self.name!r}: lock_timeout must be >= 0 seconds, got {self.lock_timeout!r}.")
        if self.max_calls_per_second is not None and not 0 < self.max_calls_per_second < math.inf:
            raise SourceError(
                f"Sync {self.name!r}: max_calls_per_second must be a number above 0, got "
                f"{self.max_calls_per_second!r}; leave it out to send as fast as the client's rate limit allows."
            )
        if self.max_changes_per_run is not None and not self.max_changes_per_run >= 1:
            raise SourceError(
                f"Sync {self.name!r}: max_changes_per_run must be at least 1, got {self.max_changes_per_run!r}; "
                "leave it out to send every change in one run."
            )
        if not self.history_days >= 1:
            raise SourceError(f"Sync {self.name!r}: history_days must be >= 1, got {self.history_days!r}.")
        if self.mode == "mirror" and (refusal := self.mapping.mirror_refusal()):
            raise SourceError(f"Sync {self.name!r}: {refusal}")
        if self.send_once and self.mode != "mirror":
            raise SourceError(
                f"Sync {self.name!r}: mode does not apply to {self.mapping.kind} syncs (each row is sent once and "
                "never updated or deleted); leave mode out."
            )
        if self.cursor_column is not None and not self.send_once:
            raise SourceError(
                f"Sync {self.name!r}: cursor_column is only for send-once kinds (events, pages, screens, aliases, "
                "delivery_reports); other kinds must read every row to see changes and deletions."
            )
        if self.partitions < 1 or (self.partition is not None and not 0 <= self.partition < self.partitions):
            raise SourceError(
                f"Sync {self.name!r}: partitions must be >= 1 and partition between 0 and "
                f"{self.partitions - 1}; got partitions={self.partitions}, partition={self.partition}."
            )
        seconds = self.lookback.total_seconds() if isinstance(self.lookback, dt.timedelta) else self.lookback
        if seconds < 0 or (seconds and self.cursor_column is None):
            raise SourceError(
                f"Sync {self.name!r}: lookback needs `cursor` (cursor_column= in Python) and must be >= 0; got "
                f"{self.lookback!r}."
            )

    def as_record(self) -> dict[str, Any]:
        """The definition as plain JSON data, which `from_record` rebuilds: what each run's history row keeps, so
        `dagster-cdp explain` can plan a key as the last run would without the sync's declaration at hand."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "mapping"}
        lookback = self.lookback
        record["lookback"] = lookback.total_seconds() if isinstance(lookback, dt.timedelta) else lookback
        record["context"], record["integrations"] = (dict(m) if m else None for m in (self.context, self.integrations))
        return {**record, "mapping": {"kind": self.mapping.kind, **self.mapping.model_dump(exclude={"kind"})}}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SyncDefinition:
        """The definition `as_record` described."""
        mapping = dict(record["mapping"])
        return cls(**{**record, "mapping": KINDS[mapping.pop("kind")](**mapping)})

    def fingerprint_fields(self) -> dict[str, Any]:
        """What the stored state depends on: changing any of it means already-sent rows may be wrong."""
        fields = self.mapping.model_dump(exclude={"kind"})  # by field name, as when mappings were dataclasses
        mapping = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in fields.items()}
        return {
            "format": 1,
            "mapping": {"kind": type(self.mapping).__name__, **mapping},
            "mode": self.mode,
            "context": dict(self.context or {}),
            "integrations": dict(self.integrations or {}),
        }
