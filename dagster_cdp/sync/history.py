"""Sync history, kept next to the state: a row per run in `{prefix}runs`, the rows not synced in `{prefix}rejections`.

A run's row is written as 'running' and committed once it holds the sync's lock, then updated with how it ended;
a process killed in between leaves it 'running', and the next run of the sync (which holds the lock, so no other
run is alive) records it as 'killed'. A successful real run replaces the sync's rejections with those it reported.
History is a few statements per run, never per row sent; dry runs are recorded too but leave rejections alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from dagster_cdp.sync.database import abridged, utc_now
from dagster_cdp.sync.dialects import Dialect
from dagster_cdp.sync.report import RowRejection, SyncReport

COUNTS = (
    "source_rows",
    "inserted",
    "updated",
    "deleted",
    "unchanged",
    "rejected",
    "deferred",
    "requests",
    "bytes",
    "retries",
)
_CHUNK_ROWS = 10_000
_API_OPERATIONS = ("insert", "update", "delete")  # a rejection's operation when the API refused the call


@dataclasses.dataclass(frozen=True)
class RunStart:
    """What a run's history row knows when it starts."""

    sync: str  # the name the state tables use (a partition's own name)
    partition: int | None
    dagster_run_id: str | None
    dry_run: bool
    full_resync: bool
    history_days: int
    definition: str  # JSON of the definition as given (`SyncDefinition.as_record`), before a partition's renaming


class RunHistory:
    """The history tables of one state store (`StateStore.history`), created when a run first writes them."""

    def __init__(self, engine: sa.Engine, dialect: Dialect, schema: str | None, table_prefix: str) -> None:
        self.engine = engine
        metadata = sa.MetaData(schema=schema)
        moment = dialect.precise_moment_type
        self.runs = sa.Table(
            f"{table_prefix}runs",
            metadata,
            sa.Column("run_id", sa.String(36), primary_key=True),
            sa.Column("sync", dialect.sync_name_type(), nullable=False),
            sa.Column("partition", sa.Integer, nullable=True),
            sa.Column("dagster_run_id", sa.Text, nullable=True),
            sa.Column("started_at", moment(), nullable=False),
            sa.Column("ended_at", moment(), nullable=True),
            sa.Column("outcome", sa.String(20), nullable=False),
            sa.Column("dry_run", sa.Boolean, nullable=False),
            sa.Column("full_resync", sa.Boolean, nullable=False),
            *[sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0")) for name in COUNTS],
            sa.Column("diff", sa.String(20), nullable=True),
            sa.Column("error", sa.Text, nullable=True),
            sa.Column("definition", sa.Text, nullable=True),
        )
        self.rejections = sa.Table(
            f"{table_prefix}rejections",
            metadata,
            sa.Column("sync", dialect.sync_name_type(), nullable=False),
            sa.Column("key", sa.Text, nullable=False),
            sa.Column("operation", sa.String(20), nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("first_seen", moment(), nullable=False),
            sa.Column("last_seen", moment(), nullable=False),
            sa.Column("run_id", sa.String(36), nullable=False),
        )
        self._metadata = metadata
        self._array_parameter = dialect.array_parameter
        self._created = False

    def table_name(self) -> str:
        """The runs table as SQL names it here (schema-qualified when the store has a schema)."""
        return self.engine.dialect.identifier_preparer.format_table(self.runs)

    def start(self, run: RunStart) -> str:
        """Records a run as 'running' (committed) and returns its id; the sync's 'running' rows are dead, so they
        become 'killed', and its rows older than `history_days` go."""
        self._create()
        run_id, now = str(uuid.uuid4()), utc_now()
        r = self.runs.c
        found = (
            "The process stopped before this run ended (killed, out of memory, or its machine went down); "
            f"found by run {run_id} at {now:%Y-%m-%d %H:%M:%S} UTC."
        )
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(self.runs)
                .where(r.sync == run.sync, r.outcome == "running")
                .values(outcome="killed", error=found)
            )
            cutoff = now - dt.timedelta(days=run.history_days)
            connection.execute(sa.delete(self.runs).where(r.sync == run.sync, r.started_at < cutoff))
            described = {k: v for k, v in dataclasses.asdict(run).items() if k != "history_days"}
            counts = dict.fromkeys(COUNTS, 0)
            connection.execute(
                sa.insert(self.runs).values(run_id=run_id, started_at=now, outcome="running", **described, **counts)
            )
        return run_id

    def finish(self, run_id: str, report: SyncReport, error: BaseException | None = None) -> None:
        """Records how a run ended: 'succeeded' with its diff, 'failed' with the error, or 'killed' when it was
        interrupted (Ctrl-C, a Dagster run terminated); counts as far as it got."""
        counts = {name: getattr(report, name) for name in COUNTS if name != "rejected"}
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(self.runs)
                .where(self.runs.c.run_id == run_id)
                .values(
                    outcome="succeeded" if error is None else "failed" if isinstance(error, Exception) else "killed",
                    ended_at=utc_now(),
                    **counts,
                    rejected=len(report.rejected),
                    diff=report.diff if error is None else None,
                    error=None if error is None else _described(error),
                )
            )

    def replace_rejections(
        self,
        sync: str,
        run_id: str,
        rejected: Sequence[RowRejection],
        still_refused: Callable[[str, Sequence[str]], set[str]],
    ) -> None:
        """Makes the rows a run reported the sync's rejections: rows still there keep `first_seen`, and rows refused
        before sending count the runs in a row that found them so (rows the API refused carry their own count).
        A call the API refused before and this run did not send (held back by max_changes_per_run) stays listed
        while the state still holds its refusal (`still_refused(sync, keys)`)."""
        now = utc_now()
        t = self.rejections.c
        previous = sa.select(self.rejections).where(t.sync == sync)
        merged = _merged(rejected)
        with self.engine.begin() as connection:
            before = {(row.key, row.operation): row for row in connection.execute(previous)}
            unsent = [
                key for key, operation in before if operation in _API_OPERATIONS and (key, operation) not in merged
            ]
            kept = still_refused(sync, unsent) if unsent else set()
            connection.execute(sa.delete(self.rejections).where(t.sync == sync))
            rows = [dict(row._mapping) for (key, op), row in before.items() if key in kept and op in _API_OPERATIONS]
            for (key, operation), (reason, attempts) in merged.items():
                earlier = before.get((key, operation))
                first_seen, runs = (earlier.first_seen, earlier.attempts) if earlier else (now, 0)
                rows.append(
                    {
                        "sync": sync,
                        "key": key,
                        "operation": operation,
                        "reason": reason,
                        "attempts": attempts if attempts is not None else runs + 1,
                        "first_seen": first_seen,
                        "last_seen": now,
                        "run_id": run_id,
                    }
                )
            self._insert(connection, rows)

    def _insert(self, connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Inserts rejection rows in bulk: as whole columns where the driver binds lists as arrays (DuckDB's
        row-by-row executemany is slow), else in chunks of executemany."""
        for start in range(0, len(rows), _CHUNK_ROWS):
            chunk = rows[start : start + _CHUNK_ROWS]
            if self._array_parameter is None:
                connection.execute(sa.insert(self.rejections), chunk)
                continue
            columns = self.rejections.columns
            unnested = ", ".join(
                f"unnest(CAST({self._array_parameter} AS {c.type.compile(dialect=self.engine.dialect)}[]))"
                for c in columns
            )
            connection.exec_driver_sql(
                f"INSERT INTO {self.engine.dialect.identifier_preparer.format_table(self.rejections)} "
                f"({', '.join(self.engine.dialect.identifier_preparer.quote(c.name) for c in columns)}) "
                f"SELECT {unnested}",
                tuple([row[c.name] for row in chunk] for c in columns),
            )

    def last_runs(self, *, dry_runs: bool = True) -> list[dict[str, Any]]:
        """The newest run of every sync (by `started_at`; without `dry_runs`, the newest real one), as {column: value},
        in the order of the sync names."""
        if not self._exists(self.runs):
            return []
        r = self.runs.c
        newest = sa.func.row_number().over(partition_by=r.sync, order_by=r.started_at.desc()).label("cdp_newest")
        ranked = sa.select(self.runs, newest).where(sa.true() if dry_runs else r.dry_run.is_(False)).subquery()
        statement = sa.select(*[ranked.c[c.name] for c in self.runs.columns]).where(ranked.c.cdp_newest == 1)
        with self.engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(statement)]
        return sorted(rows, key=lambda row: row["sync"])

    def recorded_definition(self, sync: str) -> dict[str, Any] | None:
        """The newest run row of `sync` (or, for a declared name, of any of its partitions `sync[i/N]`) that recorded
        its definition, as {column: value}; None when there is none."""
        if not self._exists(self.runs):
            return None
        r = self.runs.c
        partitions = sa.and_(r.sync.startswith(f"{sync}[", autoescape=True), r.sync.endswith("]"))
        statement = (
            sa.select(self.runs)
            .where(sa.or_(r.sync == sync, partitions), r.definition.is_not(None))
            .order_by(r.started_at.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(statement).first()
        return None if row is None else dict(row._mapping)

    def rejected_rows(self, sync: str) -> list[dict[str, Any]]:
        """The rows of a sync not synced as of its last successful run, as {column: value}, by operation and key."""
        if not self._exists(self.rejections):
            return []
        t = self.rejections.c
        statement = sa.select(self.rejections).where(t.sync == sync)
        with self.engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(statement)]
        return sorted(rows, key=lambda row: (row["operation"], row["key"]))

    def _create(self) -> None:
        """Creates the tables once per store, if missing (another sync's first run may create them at this moment)."""
        if self._created:
            return
        try:
            self._metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.DBAPIError:
            if not all(self._exists(table) for table in (self.runs, self.rejections)):
                raise
        self._created = True

    def _exists(self, table: sa.Table) -> bool:
        return self._created or sa.inspect(self.engine).has_table(table.name, schema=table.schema)


def _merged(rejected: Sequence[RowRejection]) -> dict[tuple[str, str], tuple[str, int | None]]:
    """One (reason, attempts) per (key, operation): rows without a key share `<NULL>`, so their reasons are joined
    with how many rows there were."""
    reasons: dict[tuple[str, str], list[str]] = {}
    attempts: dict[tuple[str, str], int | None] = {}
    for rejection in rejected:
        reasons.setdefault((rejection.key, rejection.operation), []).append(rejection.reason)
        attempts[rejection.key, rejection.operation] = rejection.attempts
    merged = {}
    for found, texts in reasons.items():
        distinct = "; ".join(dict.fromkeys(texts))
        reason = distinct if len(texts) == 1 else f"{len(texts):,} rows: {distinct}"
        merged[found] = (abridged(reason), attempts[found])
    return merged


def _described(error: BaseException) -> str:
    """`Type: message`, abridged; the bare type for an error without a message (KeyboardInterrupt)."""
    text = str(error)
    return abridged(f"{type(error).__name__}: {text}" if text else type(error).__name__)
