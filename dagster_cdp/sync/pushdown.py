"""The in-warehouse diff ("pushdown"): hash each row with SQL and join it to the stored state where both live.

When the state tables are in the warehouse itself and its `Dialect` has the in-warehouse diff, the
warehouse computes every row's key and an MD5 of the JSON of the row's mapped column names and values
(sorted by name, in a UTC session), groups by key (duplicates, NULL keys) and joins that to the state on
the key. Only keys that need attention come back to Python: new keys, keys whose row hash differs from
the one recorded when the API accepted them, rejected ones and deleted ones; for a send-once kind, every
key the API never accepted, whatever its age (an anti-join: a late row is found however late it is).
Python maps just those rows and hands them, with their state, to the work file's plan: every rule about
what to send stays in one place (`diff.WorkFile.plan`), and it compares the payloads, never the row hashes.

So the row hash only decides what leaves the warehouse: when it moves although the payload did not (a
column reorder, a numeric scale, a session setting, a switch from the portable diff), the row is mapped,
found unchanged, not sent, and its new row hash is recorded. Keys are matched as text, so only key columns
whose text in SQL is exactly the string Python sends (integers and text) qualify; a key of several columns
is matched part by part against the parts of the stored JSON key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from dagster_cdp.sync.declaration import Key
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.dialects import Dialect, dialect_of
from dagster_cdp.sync.diff import DELETE_MARK, WorkFile
from dagster_cdp.sync.mapping import MappedRow, RowMapper, ValueColumns, hash_hex, mapping_columns
from dagster_cdp.sync.partitions import partition_sql
from dagster_cdp.sync.progress import Progress
from dagster_cdp.sync.reading import SourceShape, execute
from dagster_cdp.sync.report import RowRejection, SyncReport
from dagster_cdp.sync.source import source_sql
from dagster_cdp.sync.state import STATE_FIELDS, StateStore, state_field_types
from dagster_cdp.sync.sync_errors import SourceError
from dagster_cdp.sync.values import to_key_part

FETCH_ROWS = 10_000


@dataclass(frozen=True)
class DiffedRow:
    """A key the warehouse found to need attention: its mapped source row (if any) and its stored state (if any)."""

    mapped: list[MappedRow]  # one per source row of the key: several for a duplicate key
    state: tuple[Any, ...] | None
    missing_key: int = 0  # source rows without a key (reported, never sent)
    rejected: list[str] = field(default_factory=list)  # reasons Python found the row to have no usable key


@dataclass(frozen=True)
class Pushdown:
    """The in-warehouse diff of one sync: built by `plan_pushdown` only when it applies."""

    definition: SyncDefinition
    dialect: Dialect
    store: StateStore
    source_sql: str
    key: Key
    hashed_columns: list[str]  # by name, so the column order of the source does not matter
    shape: SourceShape
    values: ValueColumns

    def counts(self, engine: sa.Engine) -> tuple[int, int]:
        """(source rows, keys live at the API) of this sync."""
        where = self._partition_filter(engine, "cdp_src")
        with engine.connect() as connection:
            source_rows = execute(
                connection, f"SELECT count(*) FROM (\n{self.source_sql}\n) AS cdp_src{where}"
            ).scalar()
            live = execute(
                connection, f"SELECT count(*) FROM ({self._state_sql(engine)}) AS st WHERE payload_hash IS NOT NULL"
            ).scalar()
        return int(source_rows or 0), int(live or 0)

    @contextmanager
    def diff(self, engine: sa.Engine, *, full_resync: bool) -> Iterator[Iterator[DiffedRow]]:
        """Streams the keys that need attention; the others never leave the warehouse.

        The join of every source key to every stored key carries only what decides attention (a few flags, the row
        hash, the key hash): carrying whole state rows made it spill to disk at a million keys. The few keys that
        come out are joined to their whole state row and source row afterwards."""
        d, dialect = self.definition, self.dialect
        quote = engine.dialect.identifier_preparer.quote_identifier
        parts = self._src_keys(engine, "cdp_src")
        width = len(parts)
        ks = [f"cdp_k{i}" for i in range(width)]
        hashed = dialect.row_hash(
            _literal(orjson.dumps(self.hashed_columns).decode()), [quote(c) for c in self.hashed_columns]
        )
        if dialect.full_outer_join:
            condition = self._needs_attention(ks, full_resync, st=lambda f: f"st.{f}", agg=lambda f: f"agg.{f}")
            diffed = (
                f"SELECT {', '.join(f'agg.{k}' for k in ks)}, agg.cdp_n, agg.cdp_hash, "
                f"{', '.join(f'st.{f} AS st_{f}' for f in _DECIDING)} "
                f"FROM agg FULL OUTER JOIN st ON {' AND '.join(f'agg.{k} = st.{k}' for k in ks)} WHERE {condition}"
            )
        else:  # the same, as one pass over both sides grouped by key: no join for a planner to get wrong
            condition = self._needs_attention(ks, full_resync, st=lambda f: f"g.st_{f}", agg=lambda f: f"g.{f}")
            both = (
                f"SELECT {', '.join(ks)}, cdp_n, cdp_hash, {', '.join(f'NULL AS st_{f}' for f in _DECIDING)} "
                f"FROM agg UNION ALL SELECT {', '.join(ks)}, NULL, NULL, "
                f"{', '.join(f'st.{f} AS st_{f}' for f in _DECIDING)} FROM st"
            )
            grouped = (
                f"SELECT {', '.join(ks)}, max(cdp_n) AS cdp_n, max(cdp_hash) AS cdp_hash, "
                f"{', '.join(f'max(st_{f}) AS st_{f}' for f in _DECIDING)} "
                f"FROM ({both}) AS cdp_both GROUP BY {', '.join(ks)}"
            )
            diffed = f"SELECT * FROM ({grouped}) AS g WHERE {condition}"
        src_keys = ", ".join(f"{sql} AS {k}" for sql, k in zip(parts, ks, strict=True))
        row_keys = ", ".join(f"{sql} AS cdp_row_{k}" for sql, k in zip(parts, ks, strict=True))
        state, this_sync = self._state_from(engine, "cdp_full")
        sql = f"""
            WITH src AS (
                SELECT {src_keys}, {hashed} AS cdp_hash
                FROM (\n{self.source_sql}\n) AS cdp_src{self._partition_filter(engine, "cdp_src")}
            ), agg AS (
                SELECT {", ".join(ks)}, count(*) AS cdp_n, min(cdp_hash) AS cdp_hash FROM src GROUP BY {", ".join(ks)}
            ), st AS (
                SELECT {", ".join(f"{sql} AS {name}" for name, sql in _DECIDING.items())},
                       {", ".join(f"{sql} AS {k}" for sql, k in zip(self._state_keys(), ks, strict=False))}
                FROM ({self._state_sql(engine)}) AS cdp_state
            ), diffed AS (
                {diffed}
            )
            SELECT {", ".join(f"diffed.{k}" for k in ks)}, diffed.cdp_n, diffed.cdp_hash,
                   {", ".join(f"cdp_full.{f} AS st_{f}" for f in STATE_FIELDS)}, cdp_row.*
            FROM diffed LEFT JOIN {state} AS cdp_full ON cdp_full.key_hash = diffed.st_key_hash AND {this_sync}
            LEFT JOIN (
                SELECT {row_keys},
                       cdp_src.*
                FROM (\n{self.shape.select(self.source_sql, quote)}\n) AS cdp_src
            ) AS cdp_row ON diffed.cdp_n = 1 AND {" AND ".join(f"cdp_row.cdp_row_{k} = diffed.{k}" for k in ks)}
        """
        with engine.connect() as connection, dialect.diff_session(connection):
            result = execute(connection.execution_options(stream_results=True), sql)
            yield self._rows(result, width, RowMapper(d, self.shape.columns, self.values))

    def _needs_attention(
        self, ks: list[str], full_resync: bool, *, st: Callable[[str], str], agg: Callable[[str], str]
    ) -> str:
        """SQL true for a key that must leave the warehouse, given how its state (`st`, the `_DECIDING` fields) and
        source (`agg`) are named."""
        d = self.definition
        # A send-once key is never sent again once accepted; the others go back when their row hash moved.
        if d.send_once:
            changed = f"{st('cdp_live')} = 0"
        else:
            changed = "TRUE" if full_resync else self.dialect.distinct(st("row_hash"), agg("cdp_hash"))
        # State-only keys: deletions (mirror), failed deletions, and never-accepted keys to forget.
        if d.mode == "mirror" and not d.send_once:
            gone = f"{st('cdp_live')} = 1 OR {st('version')} = 0 OR {st('cdp_failed_delete')} = 1"
        else:
            gone = f"{st('cdp_live')} = 0 AND {st('version')} = 0"
        needed = (
            f"{' OR '.join(f'{agg(k)} IS NULL' for k in ks)} OR {agg('cdp_n')} > 1 "
            f"OR {st('key_hash')} IS NULL OR {changed}"
        )
        return f"({agg('cdp_n')} IS NULL AND ({gone})) OR ({agg('cdp_n')} IS NOT NULL AND ({needed}))"

    def _src_keys(self, engine: sa.Engine, alias: str, *, whole: bool = False) -> list[str]:
        return key_sql(self.key, engine, alias, whole=whole)

    def _state_keys(self) -> list[str]:
        """SQL of the stored keys' parts, matching `_src_keys`."""
        if not self.key.json:
            return [self.dialect.key_text("cdp_state.key")]
        return [self.dialect.key_text(self.dialect.json_part("cdp_state.key", i)) for i in range(len(self.key.pieces))]

    def _rows(self, result: sa.CursorResult, width: int, mapper: RowMapper) -> Iterator[DiffedRow]:
        state_width = len(STATE_FIELDS)
        head = width + 2 + state_width + width  # diffed columns and the row's key parts come before the source's own
        while chunk := result.fetchmany(FETCH_ROWS):
            for row in chunk:
                parts = [p.decode() if isinstance(p, bytes) else p for p in row[:width]]
                count, row_hash = row[width], row[width + 1]
                stored = tuple(row[width + 2 : width + 2 + state_width])
                state = stored if stored[_KEY] is not None else None
                if count is None:
                    yield DiffedRow([], state)
                elif any(p is None for p in parts):
                    yield DiffedRow([], None, missing_key=count)
                elif count > 1:
                    key = state[_KEY] if state else self.key.text(parts)  # a long key's parts may be abridged
                    key_hash = state[_KEY_HASH] if state else hash_hex(key.encode())
                    yield DiffedRow([MappedRow(key, key_hash, None, None, None)] * count, state)
                else:
                    yield self._mapped(mapper, self.shape.fix_row(row[head:]), parts, row_hash, state)

    def _mapped(
        self, mapper: RowMapper, values: Sequence[Any], parts: list[str], row_hash: str, state: tuple[Any, ...] | None
    ) -> DiffedRow:
        mapped = mapper.map(values)
        if not isinstance(mapped, MappedRow):
            return DiffedRow([], None, rejected=[mapped[1]])  # e.g. an object type that is not an integer id
        if self._parts_in_sql(values) != parts:
            raise SourceError(
                f"Sync {self.definition.name!r}: the warehouse made key {self.key.text(parts)!r} of a row that Python "
                f"reads as {mapped.key!r}; the in-warehouse diff cannot be used for this source. "
                "Please report this with the key columns' types."
            )
        mapped.row_hash = row_hash
        return DiffedRow([mapped], state)

    def _parts_in_sql(self, values: Sequence[Any]) -> list[str]:
        """The key parts the warehouse should have made of this row (`_src_keys`), computed in Python."""
        pieces = [
            value
            if kind == "literal"
            else self.dialect.key_part(to_key_part(values[self.shape.columns.index(value)], value) or "")
            for kind, value in self.key.pieces
        ]
        return pieces if self.key.json else ["".join(pieces)]

    def load(
        self, engine: sa.Engine, work: WorkFile, report: SyncReport, progress: Progress, *, full_resync: bool
    ) -> None:
        """Puts the keys that need attention, with their state, into the work file; counts the rest. `progress`
        ticks with the source rows the diff returned."""
        source_rows, live = self.counts(engine)
        diffed = 0
        missing = f"NULL or empty key in column {' or '.join(map(repr, self.key.columns()))}"

        def pairs() -> Iterator[tuple[list[MappedRow], tuple[Any, ...] | None]]:
            nonlocal diffed
            with self.diff(engine, full_resync=full_resync) as rows:
                for row in rows:
                    report.rejected.extend(RowRejection("<NULL>", missing, "source") for _ in range(row.missing_key))
                    report.rejected.extend(RowRejection("<NULL>", reason, "source") for reason in row.rejected)
                    diffed += row.missing_key + len(row.rejected) + len(row.mapped)
                    progress.tick(diffed)
                    yield row.mapped, row.state

        work.add_diffed(pairs())
        report.source_rows = source_rows
        work.counted_elsewhere(unchanged=max(0, source_rows - diffed), previous_accepted=live)

    def _partition_filter(self, engine: sa.Engine, alias: str) -> str:
        d = self.definition
        if d.partition is None:
            return ""
        key_bucket = self.dialect.bucket(self._src_keys(engine, alias, whole=True)[0])
        assert key_bucket is not None  # every dialect with the in-warehouse diff has an md5
        bucket = partition_sql(key_bucket, d.partitions)
        return f" WHERE {bucket} = {int(d.partition)}"

    def _state_sql(self, engine: sa.Engine) -> str:
        """This sync's stored state; an empty relation before the state tables exist (a dry run creates none)."""
        state, this_sync = self._state_from(engine, "cdp_stored")
        return f"SELECT {_fields(engine)} FROM {state} AS cdp_stored WHERE {this_sync}"

    def _state_from(self, engine: sa.Engine, alias: str) -> tuple[str, str]:
        """The state table (an empty relation if there is none yet) and SQL picking this sync's rows of it as
        `alias`."""
        if not self.store.exists():
            kinds = state_field_types(self.dialect.text_type)
            quote = engine.dialect.identifier_preparer.quote
            empty = ", ".join(f"CAST(NULL AS {k}) AS {quote(f)}" for f, k in kinds.items())
            return f"(SELECT {empty} WHERE 1 = 0)", "1 = 1"
        table = engine.dialect.identifier_preparer.format_table(self.store.state)
        return table, f"{alias}.sync = {_literal(self.definition.name)}"


def key_sql(key: Key, engine: sa.Engine, alias: str, *, whole: bool = False) -> list[str]:
    """SQL of a key's parts over the source `alias` (NULL where a column is NULL or empty), one string unless JSON;
    as `Dialect.key_text` joins them, or (`whole`) as the text Python sends, where the key columns are of an
    `exact_key_type`."""
    dialect = dialect_of(engine)
    quote = engine.dialect.identifier_preparer.quote_identifier
    pieces = []
    for kind, value in key.pieces:
        if kind == "literal":
            pieces.append(_literal(value))
        else:
            column = f"{alias}.{quote(value)}"
            text = f"CAST({column} AS {dialect.text_type})" if whole else dialect.key_text(column)
            pieces.append(f"CASE WHEN {text} = '' THEN NULL ELSE {text} END")
    return pieces if key.json else [dialect.concat(pieces)]


def inexact_key_column(definition: SyncDefinition, engine: sa.Engine, shape: SourceShape) -> str | None:
    """The first key column whose text in SQL may differ from the string Python sends; None when keys can be matched
    in SQL (the source has every key column)."""
    dialect = dialect_of(engine)
    for column in definition.mapping.key_shape().columns():
        if not dialect.exact_key_type(shape.types[shape.columns.index(column)]):
            return column
    return None


def plan_pushdown(
    definition: SyncDefinition, engine: sa.Engine, store: StateStore, shape: SourceShape, values: ValueColumns
) -> tuple[Pushdown | None, str | None]:
    """The in-warehouse diff for this sync, or (None, why it does not apply): the portable path is used then."""
    dialect = dialect_of(engine)
    if not dialect.in_warehouse_diff:
        return None, f"the in-warehouse diff is not available on {engine.dialect.name}"
    if store.engine.url != engine.url:
        return None, "the state is kept in another database than the source"
    key = definition.mapping.key_shape()
    identifiers = mapping_columns(definition)[0]
    if any(c not in shape.columns for c in [*identifiers, *values.sent]):
        return None, None  # the portable path names the missing column
    if (column := inexact_key_column(definition, engine, shape)) is not None:
        return None, (
            f"key column {column!r} is not an integer or text column, so its text in SQL may differ "
            "from the key Python sends"
        )
    if definition.partition is not None and key.json:
        return None, "hash partitions of a key of several columns are computed in Python"
    hashed = sorted({*identifiers, *values.sent})
    return Pushdown(definition, dialect, store, source_sql(definition, engine), key, hashed, shape, values), None


_DECIDING = {  # what the diff's join carries of a key's state: three of its fields, and two flags
    **{name: name for name in ("key_hash", "row_hash", "version")},
    "cdp_live": "CASE WHEN payload_hash IS NULL THEN 0 ELSE 1 END",
    "cdp_failed_delete": f"CASE WHEN failed_hash = '{DELETE_MARK}' THEN 1 ELSE 0 END",
}
_KEY_HASH, _KEY = STATE_FIELDS.index("key_hash"), STATE_FIELDS.index("key")  # in a state row


def _fields(engine: sa.Engine) -> str:
    """STATE_FIELDS as a select list, quoted where the warehouse reserves the name (MySQL: `key`)."""
    return ", ".join(map(engine.dialect.identifier_preparer.quote, STATE_FIELDS))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
