"""MySQL and MariaDB: zero dates, JSON kept as text (MariaDB), TINYINT(1) booleans, case-blind collations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from dagster_cdp.sync.dialects.base import Dialect
from dagster_cdp.sync.locks import Lock, NamedLock
from dagster_cdp.sync.reading import Fixer, SourceShape, boolean, json_value, moment_or_unreadable, session_setting

_MOMENTS = {7, 10, 12}  # TIMESTAMP, DATE, DATETIME: pymysql hands back a zero date as text
_JSON = 245
_JSON_CHECK = re.compile(r"json_valid\(`?([^`()]+)`?\)", re.IGNORECASE)


class MySQLDialect(Dialect):
    names: ClassVar[tuple[str, ...]] = ("mysql", "mariadb")
    text_type: ClassVar[str] = "CHAR"
    full_outer_join: ClassVar[bool] = False
    multi_table_delete: ClassVar[bool] = True

    def session(self, connection: sa.Connection) -> AbstractContextManager[None]:
        return session_setting(connection, "SELECT @@session.time_zone", "SET time_zone = '{}'", "+00:00")

    def shape(self, columns: list[str], description: Sequence[Sequence[Any]],
              declared: dict[str, sa.types.TypeEngine]) -> SourceShape:
        fixers: dict[int, Fixer] = {}
        for index, d in enumerate(description):
            if d[1] in _MOMENTS:
                fixers[index] = moment_or_unreadable
            elif d[1] == _JSON or isinstance(declared.get(d[0]), sa.JSON):
                fixers[index] = json_value
            elif d[1] == 1 and d[3] == 1:
                fixers[index] = boolean  # TINYINT(1), MySQL's BOOLEAN
        return SourceShape(columns, [d[1] for d in description], {}, fixers)

    def declared_types(self, connection: sa.Connection, table: str, schema: str | None
                       ) -> dict[str, sa.types.TypeEngine]:
        """MariaDB's JSON columns: LONGTEXT with a `json_valid(col)` check, which SQLAlchemy does not reflect as JSON."""
        if not getattr(connection.dialect, "is_mariadb", False):
            return {}
        checks = connection.execute(
            sa.text("SELECT check_clause FROM information_schema.check_constraints "
                    "WHERE constraint_schema = COALESCE(:schema, DATABASE()) AND table_name = :name"),
            {"schema": schema, "name": table},
        ).scalars()
        return {m.group(1): sa.JSON() for check in checks if (m := _JSON_CHECK.fullmatch(str(check).strip()))}

    def sync_name_type(self) -> sa.types.TypeEngine:
        """MySQL/MariaDB's default collations ignore case: `People` and `people` would share one state."""
        return mysql.VARCHAR(200, charset="utf8mb4", collation="utf8mb4_bin")

    def concat(self, parts: Sequence[str]) -> str:
        return f"CONCAT({', '.join(parts)})"  # `||` is OR unless the session has PIPES_AS_CONCAT

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
        with engine.begin() as connection:
            for name in connection.execute(found, {"schema": schema, "names": list(by_name)}).scalars():
                column = by_name[name].c.sync
                connection.exec_driver_sql(
                    f"ALTER TABLE {preparer.format_table(by_name[name])} MODIFY sync "
                    f"{column.type.compile(dialect=engine.dialect)} NOT NULL")

    def lock(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str) -> Lock:
        return NamedLock(engine, name)
