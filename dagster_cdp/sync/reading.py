"""Reading a source exactly on every warehouse: a UTC session, and columns read in a form that cannot fail.

A driver that fails a whole fetch on one value (psycopg on a timestamp of 'infinity' or year 10000,
sqlite3 on text that is not UTF-8, a JSON parser on malformed text) would stop every good row with it.
So such columns are read as text (a cast in the SELECT, or the raw driver value) and converted here, per
value; what cannot be converted becomes an `Unreadable`, which rejects its row only (`values`).
The session reads in UTC, so MySQL `TIMESTAMP` values and every text form of a time are the same instant
whatever the server's, session's or process's time zone.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from dagster_cdp.encoding import dumps, exact_loads
from dagster_cdp.sync.values import Unreadable

Fixer = Callable[[Any], Any]
_DATE_RANGE = "which is not a date or time Customer.io can take (years 1 to 9999, hours 0 to 23)"


@dataclass(frozen=True)
class SourceShape:
    """The source's columns, and how to read each one so that no value can fail the fetch."""

    columns: list[str]
    types: list[Any]  # each column's type as the driver describes it (PostgreSQL: its OID; DuckDB: its name)
    casts: dict[str, str] = field(default_factory=dict)  # column -> SQL reading it, `{}` standing for the column
    fixers: dict[int, Fixer] = field(default_factory=dict)  # column index -> per-value conversion

    def select(self, source_sql: str, quote: Callable[[str], str]) -> str:
        """A SELECT of `source_sql` with the casts applied (the source's own SQL when there are none)."""
        if not self.casts:
            return source_sql
        columns = ", ".join(f"{self.casts[c].format(quote(c))} AS {quote(c)}" if c in self.casts else quote(c)
                            for c in self.columns)
        return f"SELECT {columns} FROM (\n{source_sql}\n) AS cdp_read"

    def fix(self, rows: Iterator[Sequence[Any]]) -> Iterator[Sequence[Any]]:
        """The rows with each fixed column's values converted (NULLs stay NULL)."""
        return rows if not self.fixers else map(self.fix_row, rows)

    def fix_row(self, row: Sequence[Any]) -> Sequence[Any]:
        values = list(row)
        for index, fixer in self.fixers.items():
            if values[index] is not None:
                values[index] = fixer(values[index])
        return values


def reading_session(connection: sa.Connection) -> AbstractContextManager[None]:
    """Reads in UTC on this connection for the block (and, on SQLite, text that is not UTF-8 as `Unreadable`)."""
    session = _SESSIONS.get(connection.dialect.name)
    return session(connection) if session else nullcontext()


@contextmanager
def _postgresql_utc(connection: sa.Connection) -> Iterator[None]:
    connection.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # all three end with the transaction
    connection.exec_driver_sql("SET LOCAL DateStyle = 'ISO, YMD'")
    connection.exec_driver_sql("SET LOCAL extra_float_digits = 3")  # doubles in full, whatever the server's default
    yield


@contextmanager
def _session_setting(connection: sa.Connection, current: str, assign: str, value: str) -> Iterator[None]:
    """`assign` (a SET statement taking `{}`) sets `value` for the block; what `current` read is set back after."""
    before = connection.exec_driver_sql(current).scalar_one()
    connection.exec_driver_sql(assign.format(value))
    try:
        yield
    finally:
        connection.exec_driver_sql(assign.format(before))


def _mysql_utc(connection: sa.Connection) -> AbstractContextManager[None]:
    return _session_setting(connection, "SELECT @@session.time_zone", "SET time_zone = '{}'", "+00:00")


def _duckdb_utc(connection: sa.Connection) -> AbstractContextManager[None]:
    return _session_setting(connection, "SELECT current_setting('TimeZone')", "SET SESSION TimeZone = '{}'", "UTC")


@contextmanager
def _sqlite_text(connection: sa.Connection) -> Iterator[None]:
    raw = connection.connection.dbapi_connection
    before = raw.text_factory
    raw.text_factory = _utf8  # sqlite3 would fail the whole fetch on one value that is not UTF-8
    try:
        yield
    finally:
        raw.text_factory = before


_SESSIONS = {"postgresql": _postgresql_utc, "mysql": _mysql_utc, "mariadb": _mysql_utc, "duckdb": _duckdb_utc,
             "sqlite": _sqlite_text}


def source_shape(connection: sa.Connection, source_sql: str, declared: dict[str, sa.types.TypeEngine]) -> SourceShape:
    """How to read each column of `source_sql`; `declared` holds reflected types where the dialect reflects."""
    result = execute(connection, f"SELECT * FROM (\n{source_sql}\n) AS cdp_src LIMIT 0")
    description = result.cursor.description or []
    result.close()
    columns = [d[0] for d in description]
    name = connection.dialect.name
    if name == "postgresql":
        return _postgresql(columns, [d[1] for d in description])
    if name == "duckdb":
        return _duckdb(columns, [str(d[1]).upper() for d in description])
    if name in ("mysql", "mariadb"):
        return _mysql(columns, description, declared)
    return _declared(columns, [d[1] for d in description], declared)


def execute(connection: sa.Connection, sql: str) -> sa.CursorResult:
    """Runs SQL that has no parameters; the user's query may hold '%', which pyformat drivers would read as one."""
    if connection.dialect.paramstyle in ("pyformat", "format"):
        sql = sql.replace("%", "%%")
    return connection.exec_driver_sql(sql)


# PostgreSQL type OIDs psycopg reads exactly and safely: booleans, bytea, integers, numeric, floats, text, uuid.
_PG_NATIVE = {16, 17, 18, 19, 20, 21, 23, 25, 26, 700, 701, 1042, 1043, 1700, 2950}
# Read as text and parsed here: dates and times (psycopg fails the fetch on 'infinity' or year 10000), JSON
# (psycopg would read its numbers through floats), intervals (rejected, naming the column).
_PG_TEXT = {1114: "timestamp", 1184: "timestamp", 1082: "date", 1083: "time", 1266: "time", 114: "json", 3802: "json",
            1186: "interval"}


def _postgresql(columns: list[str], oids: list[int]) -> SourceShape:
    """Every type psycopg might fail on or round is read as text; arrays, ranges, enums and the rest as JSON text."""
    casts, fixers = {}, {}
    for index, (column, oid) in enumerate(zip(columns, oids)):
        if oid == 700:
            fixers[index] = _single_precision
        elif oid in _PG_TEXT:
            casts[column], fixers[index] = "CAST({} AS text)", _TEXT_READERS[_PG_TEXT[oid]]
        elif oid not in _PG_NATIVE:
            casts[column], fixers[index] = "CAST(to_jsonb({}) AS text)", _json
    return SourceShape(columns, oids, casts, fixers)


def _duckdb(columns: list[str], types: list[str]) -> SourceShape:
    fixers: dict[int, Fixer] = {}
    for index, kind in enumerate(types):
        if kind in ("FLOAT", "REAL", "FLOAT4"):
            fixers[index] = _single_precision
        elif kind == "JSON":
            fixers[index] = _json
        elif kind.startswith(("TIMESTAMP", "DATE")):
            fixers[index] = _finite_moment  # DuckDB hands 'infinity' to Python as datetime.max
    return SourceShape(columns, types, {}, fixers)


_MYSQL_MOMENTS = {7, 10, 12}  # TIMESTAMP, DATE, DATETIME: pymysql hands back a zero date as text


def _mysql(columns: list[str], description: Sequence[Sequence[Any]], declared: dict[str, sa.types.TypeEngine]
           ) -> SourceShape:
    fixers: dict[int, Fixer] = {}
    for index, d in enumerate(description):
        if d[1] in _MYSQL_MOMENTS:
            fixers[index] = _moment_or_unreadable
        elif d[1] == 245 or isinstance(declared.get(d[0]), sa.JSON):
            fixers[index] = _json
        elif d[1] == 1 and d[3] == 1:
            fixers[index] = _boolean  # TINYINT(1), MySQL's BOOLEAN
    return SourceShape(columns, [d[1] for d in description], {}, fixers)


def _declared(columns: list[str], types: list[Any], declared: dict[str, sa.types.TypeEngine]) -> SourceShape:
    """SQLite (and any other dialect): raw driver values, converted by the declared type of a table's column."""
    fixers: dict[int, Fixer] = {}
    for index, column in enumerate(columns):
        kind = declared.get(column)
        if isinstance(kind, sa.JSON):
            fixers[index] = _json
        elif isinstance(kind, sa.DateTime):
            fixers[index] = _TEXT_READERS["timestamp"]
        elif isinstance(kind, sa.Date):
            fixers[index] = _TEXT_READERS["date"]
        elif isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
            fixers[index] = _decimal
        elif isinstance(kind, sa.Boolean):
            fixers[index] = _boolean
    return SourceShape(columns, types, {}, fixers)


def _utf8(data: bytes) -> str | Unreadable:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return Unreadable(data.decode(errors="replace"), "which is not valid UTF-8 text")


def _parsed(parse: Callable[[str], Any]) -> Fixer:
    """A reader of a date or time held as text: parsed, or Unreadable where Python's dates end (year 10000, BC)."""
    def read(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse(value)
        except ValueError:
            return Unreadable(value, _DATE_RANGE)
    return read


def _interval(value: Any) -> Unreadable:
    return Unreadable(str(value), "an interval, which Customer.io cannot take; convert it in the query (e.g. to seconds)")


def _moment_or_unreadable(value: Any) -> Any:
    return Unreadable(value, _DATE_RANGE) if isinstance(value, str) else value


def _finite_moment(value: Any) -> Any:
    if isinstance(value, str):  # DuckDB hands a date past year 9999 or BC to Python as text
        return Unreadable(value, _DATE_RANGE)
    if value.year not in (1, 9999):  # the common case, cheaply
        return value
    if isinstance(value, dt.datetime) and value.replace(tzinfo=None) in (dt.datetime.max, dt.datetime.min):
        return Unreadable("infinity", _DATE_RANGE)
    if type(value) is dt.date and value in (dt.date.max, dt.date.min):
        return Unreadable("infinity", _DATE_RANGE)
    return value


def _json(value: Any) -> Any:
    if not isinstance(value, (str, bytes)):
        return value
    try:
        parsed = exact_loads(value)
        dumps(parsed)  # what parses may still not encode: lone surrogates, nesting past orjson's limit
    except (ValueError, TypeError, RecursionError):  # decode errors are ValueErrors, orjson's encode ones TypeErrors
        return Unreadable(str(value)[:200], "which is not JSON that can be sent (malformed, or nested too deep)")
    return parsed


def _decimal(value: Any) -> Any:
    if isinstance(value, (int, Decimal)):
        return value
    try:
        return Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return Unreadable(str(value), "which is not a number")


def _boolean(value: Any) -> Any:
    if value in (0, 1):
        return bool(value)
    return Unreadable(str(value), "which is not a boolean (0 or 1)")


def _single_precision(value: Any) -> Any:
    """A 32-bit float as its shortest decimal form (0.1, not 0.10000000149011612)."""
    if not isinstance(value, float) or value != value or value in (float("inf"), float("-inf")):
        return value
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


_TEXT_READERS: dict[str, Fixer] = {"timestamp": _parsed(dt.datetime.fromisoformat), "date": _parsed(dt.date.fromisoformat),
                                   "time": _parsed(dt.time.fromisoformat), "json": _json, "interval": _interval}
