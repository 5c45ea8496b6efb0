"""Reads a warehouse table or query through plain SQLAlchemy, streaming rows in chunks (any dialect by URL)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from dagster_cdp.sync.cursor import CursorMark, Tally
from dagster_cdp.sync.database import driver_reason
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.dialects import dialect_of, reading_session
from dagster_cdp.sync.reading import SourceShape, execute
from dagster_cdp.sync.sync_errors import SourceError

CHUNK_ROWS = 10_000
# Strings, quoted names, comments, and runs of anything else: enough to find where a query's last statement ends.
_SQL_TOKEN = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\$\$.*?\$\$|--[^\n]*|/\*.*?\*/|\s+|[^'"`$;\s/-]+|.""", re.DOTALL
)
_QUOTED_NAME = re.compile(r"""(["'`])([^"'`]+)\1""")


def trimmed_query(query: str) -> str:
    """The user's query without its trailing semicolons and comments, which some drivers take for a second
    statement."""
    end = 0
    for token in _SQL_TOKEN.finditer(query):
        text = token.group()
        if not (text.isspace() or text == ";" or text.startswith(("--", "/*"))):
            end = token.end()
    return query[:end]


def source_sql(definition: SyncDefinition, engine: sa.Engine) -> str:
    """The user's query (trimmed), or `SELECT *` from the table, its columns named as the mapping names them
    (`Dialect.named`); callers wrap it on lines of its own, so a query may end in a `--` comment."""
    if definition.query is not None:
        sql = trimmed_query(definition.query)
    else:
        assert definition.table is not None  # SyncDefinition has exactly one of table and query
        schema, _, name = definition.table.rpartition(".")
        sql = f"SELECT * FROM {engine.dialect.identifier_preparer.format_table(sa.table(name, schema=schema or None))}"
    return dialect_of(engine).named(engine, sql)


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
                f'("schema.table"), or use query= instead.{_other_case(inspector, [definition.table])}'
            )
        try:
            declared = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=schema or None)}
        except sa.exc.DBAPIError:
            # the dialect cannot reflect (duckdb-engine on SQLAlchemy 2.1); its driver types values
            connection.rollback()
        declared.update(dialect_of(connection).declared_types(connection, name, schema or None))
    try:
        return source_shape(connection, source_sql(definition, connection.engine), declared)
    except sa.exc.DBAPIError as e:
        raise _read_failed(definition, connection, e) from None


def source_shape(connection: sa.Connection, sql: str, declared: dict[str, sa.types.TypeEngine]) -> SourceShape:
    """How to read each column of `sql`; `declared` holds reflected types where the dialect reflects."""
    result = execute(connection, f"SELECT * FROM (\n{sql}\n) AS cdp_src LIMIT 0")
    description = result.cursor.description or []
    result.close()
    return dialect_of(connection).shape([d[0] for d in description], description, declared)


def _read_failed(definition: SyncDefinition, connection: sa.Connection, error: sa.exc.DBAPIError) -> SourceError:
    """The driver's reason the source could not be read (it names the missing table or column), with the URL."""
    connection.rollback()  # PostgreSQL answers nothing more in a failed transaction, the hint's lookup included
    hint = _other_case(sa.inspect(connection), [m.group(2) for m in _QUOTED_NAME.finditer(str(error.orig))])
    url = connection.engine.url.render_as_string(hide_password=True)
    return SourceError(
        f"Sync {definition.name!r}: reading the source at {url} failed: {driver_reason(error, connection.engine)}{hint}"
    )


def _other_case(inspector: sa.Inspector, names: list[str]) -> str:
    """A hint when a missing table exists with its name in another case, which this database tells apart."""
    for missing in names:
        schema, _, name = missing.rpartition(".")
        try:
            tables = inspector.get_table_names(schema=schema or None)
        except sa.exc.DBAPIError:
            continue  # not a schema either: the driver's message stands alone
        for table in tables:
            if table != name and table.casefold() == name.casefold():
                folds = dialect_of(inspector.bind).case_folding
                return (
                    f" Table names are case-sensitive here{f' ({folds})' if folds else ''}, and the table is named "
                    f"{table!r}."
                )
    return ""


@dataclass(frozen=True)
class CursorRead:
    """How a sync with a cursor column reads: each row followed by the warehouse's check of its key columns
    (`check`, SQL over the source's columns; None: no check here), and, from a verified `mark`, only the rows
    from `since` on (see `cursor`); without a mark, the whole source."""

    check: str | None
    mark: CursorMark | None = None
    since: sa.BindParameter | None = None


@contextmanager
def read_source(
    engine: sa.Engine, definition: SyncDefinition, shape: SourceShape, cursor: CursorRead | None = None
) -> Iterator[tuple[list[str], Iterator[Sequence[Any]]]]:
    """Yields (column names, row iterator); rows stream from a server-side cursor where the driver has one.

    `shape` is the source as `describe_source` found it this run. With `cursor`, each row ends with its check
    (0 where there is none), and with `cursor.since` only rows whose cursor column is >= it or NULL are read.
    """
    with engine.connect() as connection, reading_session(connection):
        quote = engine.dialect.identifier_preparer.quote_identifier
        statement = _bound(
            shape.select(_read_sql(engine, definition, cursor), quote, ["cdp_check"] if cursor else []), cursor
        )
        try:
            result = connection.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(statement)
        except sa.exc.DBAPIError as e:
            raise _read_failed(definition, connection, e) from None
        try:
            yield shape.columns, shape.fix(row for partition in result.partitions(CHUNK_ROWS) for row in partition)
        finally:
            result.close()


def count_source(engine: sa.Engine, definition: SyncDefinition, cursor: CursorRead | None = None) -> int:
    """How many rows `read_source` reads (asked only by the progress of a long read)."""
    sql = f"SELECT count(*) FROM (\n{_read_sql(engine, definition, cursor)}\n) AS cdp_counted"
    with engine.connect() as connection, reading_session(connection):
        return int(connection.execute(_bound(sql, cursor)).scalar_one())


def _read_sql(engine: sa.Engine, definition: SyncDefinition, cursor: CursorRead | None) -> str:
    """The source as a run reads it: with `cursor`, each row followed by its check, and from a verified mark only
    the rows from `cursor.since` on or with a NULL cursor."""
    sql = source_sql(definition, engine)
    if cursor is None:
        return sql
    assert definition.cursor_column is not None  # a CursorRead is made only for a cursor column
    column = engine.dialect.identifier_preparer.quote_identifier(definition.cursor_column)
    window = f" WHERE {column} >= :{cursor.since.key} OR {column} IS NULL" if cursor.since is not None else ""
    return f"SELECT cdp_source.*, {cursor.check or 0} AS cdp_check FROM (\n{sql}\n) AS cdp_source{window}"


def _bound(sql: str, cursor: CursorRead | None) -> sa.TextClause:
    statement = sa.text(sql)
    return statement.bindparams(cursor.since) if cursor is not None and cursor.since is not None else statement


def tally_below(engine: sa.Engine, definition: SyncDefinition, mark: sa.BindParameter, check: str | None) -> Tally:
    """The tally of the source rows whose cursor is below `mark` now (see `cursor`)."""
    assert definition.cursor_column is not None  # asked only of a sync with a cursor column
    column = engine.dialect.identifier_preparer.quote_identifier(definition.cursor_column)
    sql = (
        f"SELECT count(*), coalesce(sum({check or 0}), 0) FROM (\n{source_sql(definition, engine)}\n) AS cdp_source "
        f"WHERE {column} < :{mark.key}"
    )
    with engine.connect() as connection, reading_session(connection):
        rows, total = connection.execute(sa.text(sql).bindparams(mark)).tuples().one()
    return Tally(int(rows), int(total))
