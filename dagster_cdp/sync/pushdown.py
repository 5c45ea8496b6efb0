"""The in-warehouse diff ("pushdown"): hash each row with SQL and join it to the stored state where both live.

When the state tables are in the warehouse itself and its dialect is one we know, the warehouse computes
every key and an MD5 of the JSON of the row's mapped column names and values (sorted by name, in a UTC
session), groups by key
(duplicates, NULL keys) and full-outer-joins that to the state on the key. Only keys whose row hash differs
from the one recorded when the API accepted them (and deleted keys) come back to Python, which maps just
those rows and hands them, with their state, to the work file's plan: every rule about what to send stays
in one place (`diff.WorkFile.plan`), and it compares the payloads, never the row hashes.

So the row hash only decides what leaves the warehouse: when it moves although the payload did not (a
column reorder, a numeric scale, a session setting, a switch from the portable diff), the row is mapped,
found unchanged, not sent, and its new row hash is recorded. Keys are joined as text, so only key columns
whose text in SQL is exactly the string Python sends (integers and text) qualify. Other dialects add a
`Dialect` to `DIALECTS` (Snowflake: `md5(to_json(array_construct(...)))`; BigQuery: `to_hex(md5(to_json_string([...])))`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from dagster_cdp.sync.definition import Objects, People, SyncDefinition
from dagster_cdp.sync.diff import DELETE_MARK, WorkFile
from dagster_cdp.sync.errors import SourceError
from dagster_cdp.sync.mapping import MappedRow, RowMapper, ValueColumns, hash_hex
from dagster_cdp.sync.partitions import partition_sql
from dagster_cdp.sync.reading import SourceShape, execute, reading_session
from dagster_cdp.sync.report import RowRejection, SyncReport
from dagster_cdp.sync.source import source_sql
from dagster_cdp.sync.state import STATE_FIELDS, StateStore, state_field_types

FETCH_ROWS = 10_000


@dataclass(frozen=True)
class Dialect:
    """What differs between warehouses: text casts, the JSON array of a row, key types."""

    name: str
    text_type: str
    json_array: str  # function building a JSON array of values, NULL and '' kept distinct
    exact_text_types: frozenset  # column types (as `SourceShape.types` has them) whose SQL text is Python's str()



DIALECTS = {
    "duckdb": Dialect("duckdb", "VARCHAR", "json_array", frozenset({  # run_sync bounds its memory (sync/memory.py)
        "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
        "VARCHAR"})),
    "postgresql": Dialect("postgresql", "TEXT", "json_build_array", frozenset({20, 21, 23, 25, 1043})),  # OIDs
}


@dataclass(frozen=True)
class DiffedRow:
    """A key the warehouse found to need attention: its mapped source row (if any) and its stored state (if any)."""

    mapped: list[MappedRow]  # one per source row of the key: several for a duplicate key
    state: tuple[Any, ...] | None
    missing_key: int = 0  # source rows without a key (reported, never sent)


@dataclass(frozen=True)
class Pushdown:
    """The in-warehouse diff of one sync: built by `plan_pushdown` only when it applies."""

    definition: SyncDefinition
    dialect: Dialect
    store: StateStore
    source_sql: str
    key_column: str
    key_sql: str  # the key string, NULL when the row has none ({src} stands for the source's alias)
    hashed_columns: list[str]  # by name, so the column order of the source does not matter
    shape: SourceShape
    values: ValueColumns

    def counts(self, engine: sa.Engine) -> tuple[int, int]:
        """(source rows, keys live at the API) of this sync."""
        where = self._partition_filter("cdp_src")
        with engine.connect() as connection:
            source_rows = execute(connection, f"SELECT count(*) FROM (\n{self.source_sql}\n) AS cdp_src{where}").scalar()
            live = execute(
                connection,
                f"SELECT count(*) FROM ({self._state_sql(engine)}) AS st WHERE payload_hash IS NOT NULL").scalar()
        return int(source_rows or 0), int(live or 0)

    @contextmanager
    def diff(self, engine: sa.Engine, *, full_resync: bool) -> Iterator[Iterator[DiffedRow]]:
        """Streams the keys that need attention; unchanged keys never leave the warehouse."""
        d = self.definition
        text = self.dialect.text_type
        hashed = ", ".join(_quote_engine(engine, c) for c in self.hashed_columns)
        # The names lead the hashed text, so a renamed column moves the hash even where the values do not.
        names = _literal(orjson.dumps(self.hashed_columns).decode())
        src_key = self.key_sql.replace("{src}", "cdp_src")
        mirror = d.mode == "mirror"
        # State-only keys: deletions (mirror), failed deletions, and never-accepted keys to forget.
        gone = (f"st.payload_hash IS NOT NULL OR st.version = 0 OR st.failed_hash = '{DELETE_MARK}'" if mirror
                else "st.payload_hash IS NULL AND st.version = 0")
        changed = "TRUE" if full_resync else "st.row_hash IS DISTINCT FROM agg.cdp_hash"
        quote = engine.dialect.identifier_preparer.quote_identifier
        readable = self.shape.select(self.source_sql, quote)
        sql = f"""
            WITH src AS (
                SELECT {src_key} AS cdp_key,
                       md5({names} || CAST({self.dialect.json_array}({hashed}) AS {text})) AS cdp_hash
                FROM (\n{self.source_sql}\n) AS cdp_src{self._partition_filter("cdp_src")}
            ), agg AS (
                SELECT cdp_key, count(*) AS cdp_n, min(cdp_hash) AS cdp_hash FROM src GROUP BY cdp_key
            ), st AS (
                {self._state_sql(engine)}
            ), diffed AS (
                SELECT agg.cdp_key, agg.cdp_n, agg.cdp_hash, {", ".join(f"st.{f} AS st_{f}" for f in STATE_FIELDS)}
                FROM agg FULL OUTER JOIN st ON agg.cdp_key = st.key
                WHERE (agg.cdp_n IS NULL AND ({gone}))
                   OR (agg.cdp_n IS NOT NULL AND (agg.cdp_key IS NULL OR agg.cdp_n > 1 OR st.key IS NULL OR {changed}))
            )
            SELECT diffed.*, cdp_row.*
            FROM diffed LEFT JOIN (
                SELECT {src_key} AS cdp_row_key, cdp_src.* FROM (\n{readable}\n) AS cdp_src
            ) AS cdp_row ON diffed.cdp_n = 1 AND cdp_row.cdp_row_key = diffed.cdp_key
        """
        head = 3 + len(STATE_FIELDS) + 1  # diffed columns and cdp_row_key come before the source's own
        with engine.connect() as connection, reading_session(connection):
            result = execute(connection.execution_options(stream_results=True), sql)
            yield self._rows(result, head, RowMapper(d, self.shape.columns, self.values))

    def _rows(self, result: sa.CursorResult, head: int, mapper: RowMapper) -> Iterator[DiffedRow]:
        state_width = len(STATE_FIELDS)
        while chunk := result.fetchmany(FETCH_ROWS):
            for row in chunk:
                key, count, row_hash = row[0], row[1], row[2]
                state = tuple(row[3:3 + state_width]) if row[4] is not None else None
                if count is None:
                    yield DiffedRow([], state)
                elif key is None:
                    yield DiffedRow([], None, missing_key=count)
                elif count > 1:
                    key_hash = state[0] if state else hash_hex(key.encode())
                    yield DiffedRow([MappedRow(key, key_hash, None, None, None)] * count, state)
                else:
                    yield DiffedRow([self._mapped(mapper, self.shape.fix_row(row[head:]), key, row_hash)], state)

    def _mapped(self, mapper: RowMapper, values: Sequence[Any], key: str, row_hash: str) -> MappedRow:
        mapped = mapper.map(values)
        if not isinstance(mapped, MappedRow) or mapped.key != key:
            raise SourceError(
                f"Sync {self.definition.name!r}: the warehouse made key {key!r} of a row that Python reads as "
                f"{getattr(mapped, 'key', None)!r}; the in-warehouse diff cannot be used for this source. "
                "Please report this with the key column's type."
            )
        mapped.row_hash = row_hash
        return mapped

    def load(self, engine: sa.Engine, work: WorkFile, report: SyncReport, *, full_resync: bool) -> None:
        """Puts the keys that need attention, with their state, into the work file; counts the rest."""
        source_rows, live = self.counts(engine)
        diffed = 0

        def pairs() -> Iterator[tuple[list[MappedRow], tuple[Any, ...] | None]]:
            nonlocal diffed
            with self.diff(engine, full_resync=full_resync) as rows:
                for row in rows:
                    if row.missing_key:
                        reason = f"NULL or empty key in column {self.key_column!r}"
                        report.rejected.extend(RowRejection("<NULL>", reason, "source") for _ in range(row.missing_key))
                    diffed += row.missing_key + len(row.mapped)
                    yield row.mapped, row.state

        work.add_diffed(pairs())
        report.source_rows = source_rows
        work.counted_elsewhere(unchanged=max(0, source_rows - diffed), previous_accepted=live)

    def _partition_filter(self, alias: str) -> str:
        d = self.definition
        if d.partition is None:
            return ""
        bucket = partition_sql(self.dialect.name, self.key_sql.replace("{src}", alias), d.partitions)
        return f" WHERE {bucket} = {int(d.partition)}"

    def _state_sql(self, engine: sa.Engine) -> str:
        """This sync's stored state; an empty relation before the state tables exist (a dry run creates none)."""
        if not self.store.exists():
            kinds = state_field_types(self.dialect.text_type)
            return "SELECT " + ", ".join(f"CAST(NULL AS {k}) AS {f}" for f, k in kinds.items()) + " WHERE 1 = 0"
        state = engine.dialect.identifier_preparer.format_table(self.store.state)
        return f"SELECT {', '.join(STATE_FIELDS)} FROM {state} WHERE sync = {_literal(self.definition.name)}"


def plan_pushdown(definition: SyncDefinition, engine: sa.Engine, store: StateStore, shape: SourceShape,
                  values: ValueColumns) -> Pushdown | None:
    """The in-warehouse diff for this sync, or None when it does not apply (the generic path is used)."""
    dialect = DIALECTS.get(engine.dialect.name)
    mapping = definition.mapping
    if dialect is None or store.engine.url != engine.url or getattr(definition, "cursor_column", None):
        return None
    if isinstance(mapping, People):
        key_column, prefix = mapping.id_column or mapping.email_column, ""
        extra = [c for c in (mapping.id_column, mapping.email_column) if c]
    elif isinstance(mapping, Objects) and mapping.object_type_column is None:
        key_column, prefix = mapping.id_column, f"{mapping.object_type}:"
        extra = [mapping.id_column]
    else:
        return None
    if any(c not in shape.columns for c in [*extra, *values.sent]):
        return None  # the generic path names the missing column
    if shape.types[shape.columns.index(key_column)] not in dialect.exact_text_types:
        return None
    sql = source_sql(definition, engine)
    cast = "CAST({src}." + _quote_engine(engine, key_column) + f" AS {dialect.text_type})"
    key_sql = f"CASE WHEN {cast} = '' THEN NULL ELSE {_literal(prefix)} || {cast} END"
    hashed = sorted({*extra, *values.sent})
    return Pushdown(definition, dialect, store, sql, key_column, key_sql, hashed, shape, values)


def _quote_engine(engine: sa.Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote_identifier(name)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
