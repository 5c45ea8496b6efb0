"""Reading a source exactly on every warehouse: a UTC session, and columns read in a form that cannot fail.

A driver that fails a whole fetch on one value (psycopg on a timestamp of 'infinity' or year 10000,
sqlite3 on text that is not UTF-8, a JSON parser on malformed text) would stop every good row with it.
So such columns are read as text (a cast in the SELECT, or the raw driver value) and converted here, per
value; what cannot be converted becomes an `Unreadable`, which rejects its row only (`values`). Which
columns each warehouse reads so, and its UTC session, are in its `dialects` module; the conversions are here.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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

    def select(self, source_sql: str, quote: Callable[[str], str], extra: Sequence[str] = ()) -> str:
        """A SELECT of `source_sql` with the casts applied (the source's own SQL when there are none); `extra`
        names columns `source_sql` has after the source's, passed through."""
        if not self.casts:
            return source_sql
        columns = ", ".join(
            [f"{self.casts[c].format(quote(c))} AS {quote(c)}" if c in self.casts else quote(c) for c in self.columns]
            + [quote(c) for c in extra]
        )
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


@contextmanager
def session_setting(connection: sa.Connection, current: str, assign: str, value: str) -> Iterator[None]:
    """`assign` (a SET statement taking `{}`) sets `value` for the block; what `current` read is set back after."""
    before: object = connection.exec_driver_sql(current).scalar_one()
    connection.exec_driver_sql(assign.format(value))
    try:
        yield
    finally:
        connection.exec_driver_sql(assign.format(before))


def execute(connection: sa.Connection, sql: str) -> sa.CursorResult:
    """Runs SQL that has no parameters as it is: without a parameter collection, no driver reads its '%' (the user's
    query may hold one) as a placeholder. Doubling them instead would break drivers that read them only when
    there are parameters (the Snowflake connector)."""
    return connection.exec_driver_sql(sql, execution_options={"no_parameters": True})


def declared_shape(columns: list[str], types: list[Any], declared: dict[str, sa.types.TypeEngine]) -> SourceShape:
    """SQLite (and any other dialect): raw driver values, converted by the declared type of a table's column."""
    fixers: dict[int, Fixer] = {}
    for index, column in enumerate(columns):
        kind = declared.get(column)
        if isinstance(kind, sa.JSON):
            fixers[index] = json_value
        elif isinstance(kind, sa.DateTime):
            fixers[index] = TEXT_READERS["timestamp"]
        elif isinstance(kind, sa.Date):
            fixers[index] = TEXT_READERS["date"]
        elif isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
            fixers[index] = decimal_value
        elif isinstance(kind, sa.Boolean):
            fixers[index] = boolean
    return SourceShape(columns, types, {}, fixers)


def utf8_or_unreadable(data: bytes) -> str | Unreadable:
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
    return Unreadable(
        str(value), "an interval, which Customer.io cannot take; convert it in the query (e.g. to seconds)"
    )


def moment_or_unreadable(value: Any) -> Any:
    return Unreadable(value, _DATE_RANGE) if isinstance(value, str) else value


def finite_moment(value: Any) -> Any:
    if isinstance(value, str):  # DuckDB hands a date past year 9999 or BC to Python as text
        return Unreadable(value, _DATE_RANGE)
    if value.year not in (1, 9999):  # the common case, cheaply
        return value
    if isinstance(value, dt.datetime) and value.replace(tzinfo=None) in (dt.datetime.max, dt.datetime.min):
        return Unreadable("infinity", _DATE_RANGE)
    if type(value) is dt.date and value in (dt.date.max, dt.date.min):
        return Unreadable("infinity", _DATE_RANGE)
    return value


def json_value(value: Any) -> Any:
    if not isinstance(value, (str, bytes)):
        return value
    try:
        parsed = exact_loads(value)
        dumps(parsed)  # what parses may still not encode: lone surrogates, nesting past orjson's limit
    except (ValueError, TypeError, RecursionError):  # decode errors are ValueErrors, orjson's encode ones TypeErrors
        return Unreadable(str(value)[:200], "which is not JSON that can be sent (malformed, or nested too deep)")
    return parsed


def decimal_value(value: Any) -> Any:
    if isinstance(value, (int, Decimal)):
        return value
    try:
        return Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return Unreadable(str(value), "which is not a number")


def boolean(value: Any) -> Any:
    if value in (0, 1):
        return bool(value)
    return Unreadable(str(value), "which is not a boolean (0 or 1)")


def single_precision(value: Any) -> Any:
    """A 32-bit float as its shortest decimal form (0.1, not 0.10000000149011612)."""
    if not isinstance(value, float) or value != value or value in (float("inf"), float("-inf")):
        return value
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


TEXT_READERS: dict[str, Fixer] = {
    "timestamp": _parsed(dt.datetime.fromisoformat),
    "date": _parsed(dt.date.fromisoformat),
    "time": _parsed(dt.time.fromisoformat),
    "json": json_value,
    "interval": _interval,
}
