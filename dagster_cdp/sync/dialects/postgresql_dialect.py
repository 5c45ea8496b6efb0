"""PostgreSQL: psycopg reads few types exactly, so most are read as text and converted per value."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import sqlalchemy as sa

from dagster_cdp.sync.dialects.base import Dialect
from dagster_cdp.sync.locks import AdvisoryLock, Lock
from dagster_cdp.sync.reading import TEXT_READERS, Fixer, SourceShape, json_value, single_precision

# Type OIDs psycopg reads exactly and safely: booleans, bytea, integers, numeric, floats, text, uuid.
_NATIVE = {16, 17, 18, 19, 20, 21, 23, 25, 26, 700, 701, 1042, 1043, 1700, 2950}
# Read as text and parsed here: dates and times (psycopg fails the fetch on 'infinity' or year 10000), JSON
# (psycopg would read its numbers through floats), intervals (rejected, naming the column).
_TEXT = {
    1114: "timestamp",
    1184: "timestamp",
    1082: "date",
    1083: "time",
    1266: "time",
    114: "json",
    3802: "json",
    1186: "interval",
}
_EXACT_KEYS = frozenset({20, 21, 23, 25, 1043})  # bigint, smallint, integer, text, varchar


class PostgreSQLDialect(Dialect):
    names: ClassVar[tuple[str, ...]] = ("postgresql",)
    text_type: ClassVar[str] = "TEXT"
    in_warehouse_diff: ClassVar[bool] = True
    multi_table_delete: ClassVar[bool] = True
    array_parameter: ClassVar[str | None] = "%s"
    case_folding: ClassVar[str] = "PostgreSQL folds unquoted names to lower case: quote a name to keep its case"

    @contextmanager
    def session(self, connection: sa.Connection) -> Iterator[None]:
        connection.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # all three end with the transaction
        connection.exec_driver_sql("SET LOCAL DateStyle = 'ISO, YMD'")
        connection.exec_driver_sql("SET LOCAL extra_float_digits = 3")  # doubles in full, whatever the server's default
        yield

    @contextmanager
    def diff_session(self, connection: sa.Connection) -> Iterator[None]:
        """The reading session, planned for reading every row. The diff streams through a server-side cursor, which
        PostgreSQL plans for its first 10% of rows (`cursor_tuple_fraction`): with the state table's statistics not
        yet caught up after a sync, that picked a nested loop over the whole state for each changed key (1,000
        changed keys of 100,000 took 21 s instead of 1 s)."""
        with self.session(connection):
            connection.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1")
            yield

    def shape(
        self, columns: list[str], description: Sequence[Sequence[Any]], declared: dict[str, sa.types.TypeEngine]
    ) -> SourceShape:
        """Every type psycopg might fail on or round is read as text; arrays, ranges, enums and the rest as JSON."""
        oids = [d[1] for d in description]
        casts: dict[str, str] = {}
        fixers: dict[int, Fixer] = {}
        for index, (column, oid) in enumerate(zip(columns, oids, strict=False)):
            if oid == 700:
                fixers[index] = single_precision
            elif oid in _TEXT:
                casts[column], fixers[index] = "CAST({} AS text)", TEXT_READERS[_TEXT[oid]]
            elif oid not in _NATIVE:
                casts[column], fixers[index] = "CAST(to_jsonb({}) AS text)", json_value
        return SourceShape(columns, oids, casts, fixers)

    def exact_key_type(self, kind: Any) -> bool:
        return kind in _EXACT_KEYS

    def row_hash(self, names: str, columns: Sequence[str]) -> str:
        return f"md5({names} || CAST(json_build_array({', '.join(columns)}) AS TEXT))"

    def json_part(self, expression: str, index: int) -> str:
        return f"(CAST({expression} AS jsonb) ->> {int(index)})"

    def bucket(self, expression: str) -> str:
        return f"CAST(CAST(('x' || substr(md5({expression}), 1, 7)) AS BIT(28)) AS INTEGER)"

    def lock(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str) -> Lock:
        return AdvisoryLock(engine, name)
