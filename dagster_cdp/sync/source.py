"""Reads a warehouse table or query through plain SQLAlchemy, streaming rows in chunks (any dialect by URL)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.errors import SourceError
from dagster_cdp.sync.reading import SourceShape, reading_session, source_shape

CHUNK_ROWS = 10_000
_JSON_CHECK = re.compile(r"json_valid\(`?([^`()]+)`?\)", re.IGNORECASE)


def as_engine(warehouse: str | sa.Engine) -> sa.Engine:
    return sa.create_engine(warehouse) if isinstance(warehouse, str) else warehouse


def source_sql(definition: SyncDefinition, engine: sa.Engine) -> str:
    """The user's query (a trailing semicolon dropped), or `SELECT *` from the table; always wrapped on its own
    lines by callers, so a query may end in a `--` comment."""
    if definition.query is not None:
        return definition.query.strip().rstrip(";").rstrip()
    schema, _, name = definition.table.rpartition(".")
    return f"SELECT * FROM {engine.dialect.identifier_preparer.format_table(sa.table(name, schema=schema or None))}"


def describe_source(connection: sa.Connection, definition: SyncDefinition) -> SourceShape:
    """The source's columns and how to read each one exactly (`reading`); a missing table is named as such."""
    declared: dict[str, sa.types.TypeEngine] = {}
    if definition.table is not None:
        schema, _, name = definition.table.rpartition(".")
        inspector = sa.inspect(connection)
        if not inspector.has_table(name, schema=schema or None):
            raise SourceError(
                f"Sync {definition.name!r}: table {definition.table!r} does not exist at "
                f"{connection.engine.url.render_as_string(hide_password=True)}; check its name and schema "
                '("schema.table"), or use query= instead.'
            )
        try:
            declared = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=schema or None)}
        except sa.exc.DBAPIError:
            connection.rollback()  # the dialect cannot reflect (duckdb-engine on SQLAlchemy 2.1); its driver types values
        declared.update({c: sa.JSON() for c in _json_checked_columns(connection, name, schema or None)})
    return source_shape(connection, source_sql(definition, connection.engine), declared)


def _json_checked_columns(connection: sa.Connection, name: str, schema: str | None) -> set[str]:
    """MariaDB's JSON columns: LONGTEXT with a `json_valid(col)` check, which SQLAlchemy does not reflect as JSON."""
    if not getattr(connection.dialect, "is_mariadb", False):
        return set()
    checks = connection.execute(
        sa.text("SELECT check_clause FROM information_schema.check_constraints "
                "WHERE constraint_schema = COALESCE(:schema, DATABASE()) AND table_name = :name"),
        {"schema": schema, "name": name},
    ).scalars()
    return {m.group(1) for check in checks if (m := _JSON_CHECK.fullmatch(str(check).strip()))}


@contextmanager
def read_source(engine: sa.Engine, definition: SyncDefinition, since: sa.BindParameter | None = None
                ) -> Iterator[tuple[list[str], Iterator[Sequence[Any]]]]:
    """Yields (column names, row iterator); rows stream from a server-side cursor where the driver has one.

    With `since`, only rows whose cursor column is >= it (an incremental read of a send-once sync).
    """
    with engine.connect() as connection, reading_session(connection):
        shape = describe_source(connection, definition)
        quote = engine.dialect.identifier_preparer.quote_identifier
        sql = source_sql(definition, engine)
        if since is not None:
            sql = f"SELECT * FROM (\n{sql}\n) AS cdp_source WHERE {quote(definition.cursor_column)} >= :{since.key}"
        statement = sa.text(shape.select(sql, quote))
        if since is not None:
            statement = statement.bindparams(since)
        result = connection.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(statement)
        try:
            yield shape.columns, shape.fix(row for partition in result.partitions() for row in partition)
        finally:
            result.close()
