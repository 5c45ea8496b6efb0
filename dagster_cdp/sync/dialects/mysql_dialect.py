"""MySQL and MariaDB: zero dates, JSON kept as text (MariaDB), TINYINT(1) booleans, case-blind collations."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from dagster_cdp.sync.dialects.base import Dialect
from dagster_cdp.sync.locks import Lock, NamedLock
from dagster_cdp.sync.reading import Fixer, SourceShape, boolean, json_value, moment_or_unreadable, session_setting

_MOMENTS = {7, 10, 12}  # TIMESTAMP, DATE, DATETIME: pymysql hands back a zero date as text
_JSON = 245
_JSON_CHECK = re.compile(r"json_valid\(`?([^`()]+)`?\)", re.IGNORECASE)
_KEY_BYTES = 320  # the longest key text the in-warehouse diff joins by index (see `key_text`)
_BOOLEAN = "TINYINT(1)"  # the type `shape` gives a TINYINT(1) column, which Python reads as a boolean
_INEXACT = "inexact"  # the type `shape` gives a column the table declares ZEROFILL or binary
# pymysql type codes whose text in SQL is the string Python sends: TINYINT (not TINYINT(1)), SMALLINT, INT,
# BIGINT, MEDIUMINT; VARCHAR, VAR_STRING, STRING (CHAR, ENUM, SET), TEXT (and BLOB: the same code, told apart
# by the table's declared type; see `key_text` for a binary string a query makes).
_EXACT_KEYS = frozenset({1, 2, 3, 8, 9, 15, 249, 250, 251, 252, 253, 254})


class MySQLDialect(Dialect):
    names: ClassVar[tuple[str, ...]] = ("mysql", "mariadb")
    text_type: ClassVar[str] = "CHAR"
    in_warehouse_diff: ClassVar[bool] = True
    full_outer_join: ClassVar[bool] = False
    multi_table_delete: ClassVar[bool] = True

    def session(self, connection: sa.Connection) -> AbstractContextManager[None]:
        return session_setting(connection, "SELECT @@session.time_zone", "SET time_zone = '{}'", "+00:00")

    @contextmanager
    def diff_session(self, connection: sa.Connection) -> Iterator[None]:
        """The reading session, and a planner that keeps the diff linear. Merged into the outer query, the derived
        tables the diff joins on a computed key (source rows to the diffed keys, source keys to the state) leave
        MariaDB a block nested loop over both sides: 100,000 rows took more than 10 minutes. Kept apart
        (`derived_merge=off`), each is materialized and indexed on its join column (`derived_with_keys`), so the
        joins are lookups. Both settings exist in MySQL too; the previous ones are set back after."""
        before: str = connection.exec_driver_sql("SELECT @@session.optimizer_switch").scalar_one()
        connection.exec_driver_sql("SET SESSION optimizer_switch = 'derived_merge=off,derived_with_keys=on'")
        try:
            with self.session(connection):
                yield
        finally:
            connection.exec_driver_sql(f"SET SESSION optimizer_switch = '{before}'")

    def shape(
        self, columns: list[str], description: Sequence[Sequence[Any]], declared: dict[str, sa.types.TypeEngine]
    ) -> SourceShape:
        fixers: dict[int, Fixer] = {}
        types: list[Any] = [d[1] for d in description]
        for index, d in enumerate(description):
            if d[1] in _MOMENTS:
                fixers[index] = moment_or_unreadable
            elif d[1] == _JSON or isinstance(declared.get(d[0]), sa.JSON):
                fixers[index] = json_value
            elif d[1] == 1 and d[3] == 1:
                fixers[index], types[index] = boolean, _BOOLEAN  # TINYINT(1), MySQL's BOOLEAN
            if _zerofill_or_binary(declared.get(d[0])):
                types[index] = _INEXACT
        return SourceShape(columns, types, {}, fixers)

    def exact_key_type(self, kind: Any) -> bool:
        """Integers and text; not TINYINT(1) (a boolean in Python), DECIMAL, floats, dates, JSON, BIT, and not a
        column the table declares ZEROFILL (`00042` in SQL, 42 in Python) or binary (bytes in Python)."""
        return kind in _EXACT_KEYS

    def key_text(self, expression: str) -> str:
        """The UTF-8 bytes of the value's text, as a VARBINARY(320): a binary string compares, groups and joins
        byte for byte, where MariaDB's default collations ignore case, accents and trailing spaces
        (`'a' = 'A ' = 'á'`); numbers and text of any character set become their text in utf8mb4, as Python reads
        them. At most 320 bytes, because MariaDB indexes a derived table on its join columns only when each is at
        most 512 bytes (a longer string is a BLOB there) and all of them together fit its key (the three parts of
        a relationship's key); unindexed, the join is a quadratic loop (see `diff_session`). A longer key is its
        first 60 characters, `~` and the MD5 of the whole, so it still groups and joins apart from every other key
        (`key_part` makes the same in Python). A binary string a query makes (a table's binary columns are not
        exact key types) passes through when it is UTF-8, else becomes UTF-8 with `?` for its bad bytes, and Python
        then rejects the row for holding bytes that are not UTF-8."""
        text = f"CONVERT({expression} USING utf8mb4)"
        return (
            f"(CASE WHEN OCTET_LENGTH({text}) <= {_KEY_BYTES} THEN LEFT(CAST({text} AS BINARY), {_KEY_BYTES}) "
            f"ELSE LEFT(CONCAT(CAST(LEFT({text}, 60) AS BINARY), '~', CAST(MD5({text}) AS BINARY)), {_KEY_BYTES}) "
            "END)"
        )

    def declared_types(
        self, connection: sa.Connection, table: str, schema: str | None
    ) -> dict[str, sa.types.TypeEngine]:
        """MariaDB's JSON columns: LONGTEXT with a `json_valid(col)` check, which SQLAlchemy does not reflect as
        JSON."""
        if not getattr(connection.dialect, "is_mariadb", False):
            return {}
        checks: sa.ScalarResult[object] = connection.execute(
            sa.text(
                "SELECT check_clause FROM information_schema.check_constraints "
                "WHERE constraint_schema = COALESCE(:schema, DATABASE()) AND table_name = :name"
            ),
            {"schema": schema, "name": table},
        ).scalars()
        return {m.group(1): sa.JSON() for check in checks if (m := _JSON_CHECK.fullmatch(str(check).strip()))}

    def sync_name_type(self) -> sa.types.TypeEngine:
        """MySQL/MariaDB's default collations ignore case: `People` and `people` would share one state."""
        return mysql.VARCHAR(200, charset="utf8mb4", collation="utf8mb4_bin")

    def precise_moment_type(self) -> sa.types.TypeEngine:
        """DATETIME keeps whole seconds unless given a precision."""
        return mysql.DATETIME(fsp=6)

    def key_part(self, text: str) -> str:
        if len(text.encode()) <= _KEY_BYTES:
            return text
        return f"{text[:60]}~{hashlib.md5(text.encode()).hexdigest()}"

    def concat(self, parts: Sequence[str]) -> str:
        return f"CONCAT({', '.join(parts)})"  # `||` is OR unless the session has PIPES_AS_CONCAT

    def distinct(self, left: str, right: str) -> str:
        return f"NOT ({left} <=> {right})"

    def row_hash(self, names: str, columns: Sequence[str]) -> str:
        """JSON_ARRAY writes NULL as `null` and '' as `""`, text of any character set as UTF-8, doubles in full;
        a column holding JSON (MariaDB: LONGTEXT) is written as a string, which moves with its text."""
        return f"MD5(CONCAT({names}, CAST(JSON_ARRAY({', '.join(columns)}) AS CHAR)))"

    def json_part(self, expression: str, index: int) -> str:
        return f"JSON_UNQUOTE(JSON_EXTRACT({expression}, '$[{int(index)}]'))"

    def bucket(self, expression: str) -> str:
        return f"CAST(CONV(SUBSTR(MD5({expression}), 1, 7), 16, 10) AS UNSIGNED)"

    def upgrade(self, engine: sa.Engine, tables: Sequence[sa.Table]) -> None:
        """Makes `sync` columns created with a case-insensitive collation compare exactly, altered in place (an
        exact collation only tells apart names the old one merged): else `People` and `people` would share state."""
        by_name = {t.name: t for t in tables}
        found = sa.text(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = COALESCE(:schema, DATABASE()) "
            "AND table_name IN :names AND column_name = 'sync' AND collation_name <> 'utf8mb4_bin'"
        ).bindparams(sa.bindparam("names", expanding=True))
        preparer = engine.dialect.identifier_preparer
        schema = next(iter(tables)).schema if tables else None
        name: str
        with engine.begin() as connection:
            for name in connection.execute(found, {"schema": schema, "names": list(by_name)}).scalars():
                column = by_name[name].c.sync
                connection.exec_driver_sql(
                    f"ALTER TABLE {preparer.format_table(by_name[name])} MODIFY sync "
                    f"{column.type.compile(dialect=engine.dialect)} NOT NULL"
                )

    def lock(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str) -> Lock:
        return NamedLock(engine, name)


def _zerofill_or_binary(declared: sa.types.TypeEngine | None) -> bool:
    """Whether a table declares a column ZEROFILL or binary (BINARY, VARBINARY, BLOB): its key text would differ."""
    return bool(getattr(declared, "zerofill", False)) or isinstance(declared, sa.types._Binary)
