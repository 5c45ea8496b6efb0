"""Snowflake: upper-case folding of unquoted names, moments read as formatted text, no enforced primary keys.

* Names: Snowflake stores an unquoted name in upper case (`id` is `ID`) and SQLAlchemy hands it back in lower
  case, so a source's all-upper-case columns go by their lower-case names (`named`): a mapping writes `id`
  for a column created as `id` or `ID`, and `"Email"` (quoted, mixed case) as `Email`. A column created quoted in
  lower case (`"id"`) keeps its name; one whose lower-case name another column already has keeps its upper-case
  name. The state tables' names are lower case in SQLAlchemy, unquoted, so stored upper case (`CDP_STATE`).
* Moments are read as text in an explicit format (`TO_VARCHAR`, so no account or session output format can
  change them), TIMESTAMP_TZ/LTZ with their offset, then parsed per value: the connector would fail the fetch
  on a year it cannot represent, and (through fakesnow) on any NULL timestamp. VARIANT, OBJECT and ARRAY
  come back as JSON text and are parsed exactly; NUMBER with a scale as Decimal, without one as int.
* The reading session is UTC: `as_engine` opens Snowflake sessions with `session_parameters={"TIMEZONE": "UTC"}`;
  `session` sets it for the block on a session of an engine the user built otherwise.
* Primary keys are declared but never enforced, so the state table has none (`keyed_state`: the sync's lock
  keeps one writer per sync) and the lock is a `ClaimLease`, which does not need one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import sqlalchemy as sa

from dagster_cdp.sync.dialects.base import Dialect
from dagster_cdp.sync.locks import ClaimLease, Lock
from dagster_cdp.sync.reading import TEXT_READERS, Fixer, SourceShape, execute, json_value

# The connector's type codes (snowflake.connector.constants.FIELD_ID_TO_NAME).
_NAMES = {
    0: "FIXED",
    1: "REAL",
    2: "TEXT",
    3: "DATE",
    4: "TIMESTAMP",
    5: "VARIANT",
    6: "TIMESTAMP_LTZ",
    7: "TIMESTAMP_TZ",
    8: "TIMESTAMP_NTZ",
    9: "OBJECT",
    10: "ARRAY",
    11: "BINARY",
    12: "TIME",
    13: "BOOLEAN",
    14: "GEOGRAPHY",
    15: "GEOMETRY",
    16: "VECTOR",
    17: "MAP",
    18: "FILE",
    19: "INTERVAL_YEAR_MONTH",
    20: "INTERVAL_DAY_TIME",
}
# Read as text in a format that does not depend on the session, then parsed by `reading.TEXT_READERS`.
_MOMENT = "YYYY-MM-DD HH24:MI:SS.FF9"
_TEXT = {
    "TIMESTAMP": (f"TO_VARCHAR({{}}, '{_MOMENT}')", "timestamp"),
    "TIMESTAMP_NTZ": (f"TO_VARCHAR({{}}, '{_MOMENT}')", "timestamp"),
    "TIMESTAMP_TZ": (f"TO_VARCHAR({{}}, '{_MOMENT}TZH:TZM')", "timestamp"),
    "TIMESTAMP_LTZ": (f"TO_VARCHAR({{}}, '{_MOMENT}TZH:TZM')", "timestamp"),
    "DATE": ("TO_VARCHAR({}, 'YYYY-MM-DD')", "date"),
    "TIME": ("TO_VARCHAR({}, 'HH24:MI:SS.FF9')", "time"),
    "INTERVAL_YEAR_MONTH": ("TO_VARCHAR({})", "interval"),
    "INTERVAL_DAY_TIME": ("TO_VARCHAR({})", "interval"),
}
_JSON = {
    "VARIANT": None,
    "OBJECT": None,
    "ARRAY": None,
    "MAP": "TO_JSON({}::VARIANT)",
    "GEOGRAPHY": "TO_JSON(ST_ASGEOJSON({}))",
    "GEOMETRY": "TO_JSON(ST_ASGEOJSON({}))",
}
_EXACT_KEYS = frozenset({"INTEGER", "TEXT"})  # NUMBER(p, 0) and VARCHAR: their text in SQL is the key Python makes
_UTC = ("UTC", "Etc/UTC")
_HEX = "'0123456789abcdef'"


class SnowflakeDialect(Dialect):
    names: ClassVar[tuple[str, ...]] = ("snowflake",)
    in_warehouse_diff: ClassVar[bool] = True
    keyed_state: ClassVar[bool] = False  # a primary key Snowflake would not enforce; the lock keeps one writer
    multi_table_delete: ClassVar[bool] = True  # DELETE ... USING
    case_folding: ClassVar[str] = (
        "Snowflake folds unquoted names to upper case, which SQLAlchemy shows in lower case: "
        "quote a name to keep its case"
    )

    @contextmanager
    def session(self, connection: sa.Connection) -> Iterator[None]:
        """UTC for the block. A session `as_engine` opened is UTC already, so no statement is needed; so is
        fakesnow's, which rejects ALTER SESSION: the ALTER below runs only on real Snowflake (untested here)."""
        zone = connection.exec_driver_sql("SHOW PARAMETERS LIKE 'TIMEZONE' IN SESSION").one()[1]
        if zone in _UTC:
            yield
            return
        connection.exec_driver_sql("ALTER SESSION SET TIMEZONE = 'UTC'")
        try:
            yield
        finally:
            connection.exec_driver_sql(f"ALTER SESSION SET TIMEZONE = '{zone.replace(chr(39), '')}'")

    def named(self, engine: sa.Engine, sql: str) -> str:
        """Renames columns stored in upper case (unquoted when created) to the lower-case names SQLAlchemy and the
        mapping use, unless that name is taken by another column; costs one `LIMIT 0` query."""
        with engine.connect() as connection:
            result = execute(connection, f"SELECT * FROM (\n{sql}\n) AS cdp_src LIMIT 0")
            stored = [d[0] for d in result.cursor.description or []]
            result.close()
        preparer = engine.dialect.identifier_preparer
        taken = set(stored)
        names = {
            c: c.lower()
            for c in stored
            if c.upper() == c and c.lower() != c and c.lower() not in taken and not preparer._requires_quotes(c.lower())
        }
        if not names or len(set(stored)) != len(stored):
            return sql  # nothing to rename, or duplicate names (a query's join) that no SELECT list can tell apart
        quote = preparer.quote_identifier
        columns = ", ".join(f"{quote(c)} AS {quote(names[c])}" if c in names else quote(c) for c in stored)
        return f"SELECT {columns} FROM (\n{sql}\n) AS cdp_named"

    def shape(
        self, columns: list[str], description: Sequence[Sequence[Any]], declared: dict[str, sa.types.TypeEngine]
    ) -> SourceShape:
        types = [_type_name(d) for d in description]
        casts: dict[str, str] = {}
        fixers: dict[int, Fixer] = {}
        for index, (column, kind) in enumerate(zip(columns, types, strict=False)):
            if kind in _TEXT:
                casts[column], reader = _TEXT[kind]
                fixers[index] = TEXT_READERS[reader]
            elif kind in _JSON:
                if (json_cast := _JSON[kind]) is not None:
                    casts[column] = json_cast
                fixers[index] = json_value
        return SourceShape(columns, types, casts, fixers)

    def exact_key_type(self, kind: Any) -> bool:
        return kind in _EXACT_KEYS

    def row_hash(self, names: str, columns: Sequence[str]) -> str:
        """Each value as JSON by TO_JSON(TO_VARIANT(...)), NULL as `null` (so NULL and '' differ), in an array."""
        values = " || ',' || ".join(f"coalesce(TO_JSON(TO_VARIANT({c})), 'null')" for c in columns)
        return f"md5({names} || '[' || {values} || ']')"

    def json_part(self, expression: str, index: int) -> str:
        return f"CAST(PARSE_JSON({expression})[{int(index)}] AS VARCHAR)"

    def bucket(self, expression: str) -> str:
        """The 7 first hex digits of the md5 as an integer, digit by digit (TO_NUMBER(..., 'XXXXXXX') would do it
        in one call on Snowflake, but fakesnow lacks it)."""
        digest = f"md5({expression})"
        digits = [f"(POSITION(substr({digest}, {i + 1}, 1) IN {_HEX}) - 1) * {16 ** (6 - i)}" for i in range(7)]
        return f"({' + '.join(digits)})"

    def lock(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str) -> Lock:
        return ClaimLease(engine, locks, name, sync)


def _type_name(description: Sequence[Any]) -> str:
    """The column's type: NUMBER without a scale is INTEGER, with one NUMBER; the others by the connector's name."""
    name = _NAMES.get(description[1], str(description[1]))
    if name == "FIXED":
        return "NUMBER" if description[5] else "INTEGER"
    return name
