"""Customer.io gets exactly what the warehouse holds, and only when the payload changed (issue: exactness).

Each test runs on every warehouse kind it applies to, through the emulator: the exact values that arrived,
the number of requests, and what the state holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from dagster_cdp import Objects, People, StateStore, SyncDefinition, run_sync
from dagster_cdp.sync.database import as_engine
from dagster_cdp.sync.sync_errors import SchemaChangedError
from tests.warehouses import Warehouse, execute

PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))
# A session time zone per warehouse, as a server or process set to it would give.
ZONE_SQL = {
    "postgresql": "SET TIME ZONE '{zone}'",
    "duckdb": "SET TimeZone = '{zone}'",
    "mariadb": "SET time_zone = '{offset}'",
}
ZONES = [("UTC", "+00:00"), ("Asia/Karachi", "+05:00"), ("America/Los_Angeles", "-08:00")]


def engine_in_zone(url: str, kind: str, zone: str, offset: str) -> sa.Engine:
    """An engine whose every session is in this time zone, as a server or process set to it would give."""
    engine = as_engine(url)
    statement = ZONE_SQL.get(kind)
    if kind == "snowflake":  # fakesnow ignores it (its sessions are UTC, ALTER SESSION it rejects): values only there
        @sa.event.listens_for(engine, "do_connect")
        def session_zone(_dialect, _record, _args, parameters) -> None:
            parameters["session_parameters"] = {**parameters.get("session_parameters", {}), "TIMEZONE": zone}

    @sa.event.listens_for(engine, "connect")
    def set_zone(dbapi_connection, _record) -> None:
        if statement:
            cursor = dbapi_connection.cursor()
            cursor.execute(statement.format(zone=zone, offset=offset))
            cursor.close()
            if kind == "postgresql":
                dbapi_connection.commit()  # a SET in a rolled-back transaction would be undone

    return engine


@pytest.fixture
def zoned(warehouse: Warehouse) -> Iterator:
    """Makes engines on the warehouse in a given time zone (disposed after the test)."""
    engines: list[sa.Engine] = []

    def engine_in(zone: str, offset: str) -> sa.Engine:
        engines.append(engine_in_zone(warehouse.url, warehouse.kind, zone, offset))
        return engines[-1]

    yield engine_in
    for engine in engines:
        engine.dispose()


def _sql(warehouse: Warehouse, *statements: str) -> None:
    warehouse.release()
    execute(warehouse.url, *statements)


def test_instants_are_utc_whatever_the_session_time_zone(warehouse: Warehouse, zoned, emulator: Emulator,
                                                         client: PipelinesClient) -> None:
    with_zone = {"postgresql": "TIMESTAMPTZ", "duckdb": "TIMESTAMPTZ", "mariadb": "TIMESTAMP NULL",
                 "sqlite": "DATETIME", "snowflake": "TIMESTAMP_LTZ"}[warehouse.kind]
    utc = zoned("UTC", "+00:00")
    with utc.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE people (id INTEGER, seen {with_zone}, born DATE, local_at "
                                   f"{'DATETIME' if warehouse.kind in ('mariadb', 'sqlite') else 'TIMESTAMP'})")
        connection.exec_driver_sql("INSERT INTO people VALUES (1, '2024-03-01 12:00:00', '1990-05-17', "
                                   "'2024-03-01 09:30:00')")
    utc.dispose()
    expected = {"seen": "2024-03-01T12:00:00Z", "born": "1990-05-17", "local_at": "2024-03-01T09:30:00Z"}
    first = run_sync(PEOPLE, warehouse=zoned(*ZONES[1]), client=client, state=StateStore(warehouse.engine))
    assert first.inserted == 1 and first.rejected == []
    assert emulator.snapshot()["people"]["1"]["traits"] == expected
    for zone in (ZONES[2], ZONES[0]):
        again = run_sync(PEOPLE, warehouse=zoned(*zone), client=client, state=StateStore(warehouse.engine))
        assert (again.unchanged, again.updated) == (1, 0), f"a session in {zone[0]} changed what is sent"
    assert emulator.stats()["requests"] == 1


def _people_table(warehouse: Warehouse, columns: dict[str, str], rows: list[tuple]) -> None:
    names = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    values = ", ".join("(" + ", ".join("NULL" if v is None else repr(v) if isinstance(v, str) else str(v)
                                       for v in row) + ")" for row in rows)
    _sql(warehouse, "DROP TABLE IF EXISTS people", f"CREATE TABLE people ({names})",
         f"INSERT INTO people ({', '.join(columns)}) VALUES {values}")


ROWS = [(i, f"u{i}@example.com", "pro" if i % 3 else "free", f"{i}.50", i % 5) for i in range(1, 31)]


def test_the_diff_depends_on_the_payload_only(warehouse: Warehouse, emulator: Emulator,
                                              client: PipelinesClient) -> None:
    """Column order, numeric scale and the key column's type do not make unchanged rows go out again."""
    columns = {"id": "INTEGER", "email": "VARCHAR(100)", "plan": "VARCHAR(20)", "balance": "DECIMAL(10,2)",
               "seats": "INTEGER"}
    _people_table(warehouse, columns, ROWS)
    first = run_sync(PEOPLE, warehouse=warehouse.url, client=client)
    assert first.inserted == 30
    assert emulator.snapshot()["people"]["4"]["traits"] == {
        "email": "u4@example.com", "plan": "pro", "balance": Decimal("4.5"), "seats": 4}
    reordered = {"seats": "INTEGER", "balance": "DECIMAL(14,4)", "plan": "VARCHAR(30)", "email": "VARCHAR(200)",
                 "id": "VARCHAR(20)"}
    _people_table(warehouse, reordered, [tuple(reversed(row)) for row in ROWS])
    again = run_sync(PEOPLE, warehouse=warehouse.url, client=client)
    assert (again.unchanged, again.updated, again.inserted) == (30, 0, 0)
    assert again.diff == first.diff
    assert emulator.stats()["requests"] == 1
    rows = [row for row in ROWS if row[0] != 2]
    rows[0] = (1, "u1@example.com", "team", "1.50", 1)
    _people_table(warehouse, columns, rows)
    last = run_sync(PEOPLE, warehouse=warehouse.url, client=client)
    assert (last.updated, last.deleted, last.unchanged) == (1, 1, 28)
    assert emulator.snapshot()["people"]["1"]["traits"]["plan"] == "team" and "2" not in emulator.snapshot()["people"]


def test_switching_diff_path_or_state_url_spelling_sends_nothing(warehouse: Warehouse, emulator: Emulator,
                                                                 client: PipelinesClient) -> None:
    """The same state reached by another URL spelling is diffed outside the warehouse, with the same outcome."""
    if warehouse.kind != "postgresql":
        pytest.skip("needs a warehouse with the in-warehouse diff and two URL spellings of one database")
    _people_table(warehouse, {"id": "INTEGER", "plan": "TEXT", "seen": "TIMESTAMPTZ"},
                  [(i, "free", "2024-01-01 00:00:00+00") for i in range(1, 11)])
    assert run_sync(PEOPLE, warehouse=warehouse.url, client=client).diff == "in-warehouse"
    other_spelling = StateStore(warehouse.url + "&application_name=cdp_state")
    portable = run_sync(PEOPLE, warehouse=warehouse.url, client=client, state=other_spelling)
    assert (portable.diff, portable.unchanged, portable.updated) == ("portable", 10, 0)
    back = run_sync(PEOPLE, warehouse=warehouse.url, client=client)
    assert (back.diff, back.unchanged, back.updated) == ("in-warehouse", 10, 0)
    assert emulator.stats()["requests"] == 1


NUMBER_TYPES = {  # (38-digit decimal, single-precision float) per warehouse
    "duckdb": ("DECIMAL(38,18)", "FLOAT"),
    "postgresql": ("NUMERIC(38,18)", "REAL"), "mariadb": ("DECIMAL(38,18)", "FLOAT"),
    "snowflake": ("NUMBER(38,18)", "FLOAT"),  # Snowflake's FLOAT is a double
}


def test_numbers_keep_every_digit(warehouse: Warehouse, emulator: Emulator, client: PipelinesClient) -> None:
    if warehouse.kind == "sqlite":
        pytest.skip("SQLite itself stores a NUMERIC as a 64-bit integer or a double (README: Values)")
    decimal, single = NUMBER_TYPES[warehouse.kind]
    whole = {"duckdb": "HUGEINT", "postgresql": "NUMERIC(40,0)", "mariadb": "DECIMAL(40,0)",
             "snowflake": "NUMBER(38,0)"}[warehouse.kind]
    # fakesnow fails the whole fetch on an integer past 64 bits ("Type INT128 ... can't be cast to INT64"),
    # which Snowflake's NUMBER(38,0) holds and its connector reads
    huge = 2**62 if warehouse.kind == "snowflake" else 2**100
    _sql(warehouse, f"CREATE TABLE accounts (id {decimal}, amount {decimal}, ratio {single}, huge {whole})",
         "INSERT INTO accounts VALUES (1.000000000000000001, 12345678901234567.123456789012345678, 0.1, "
         f"{huge}), (1.000000000000000002, -0.5, 0.25, 7), (2.50, 3, NULL, -1)")
    sync = SyncDefinition(name="accounts", table="accounts", mapping=Objects(id_column="id"))
    report = run_sync(sync, warehouse=warehouse.url, client=client)
    assert (report.inserted, report.rejected) == (3, [])
    assert emulator.snapshot()["objects"]["1"] == {
        "1.000000000000000001": {"amount": Decimal("12345678901234567.123456789012345678"), "ratio": 0.1,
                                 "huge": huge},
        "1.000000000000000002": {"amount": -0.5, "ratio": 0.25, "huge": 7},
        "2.5": {"amount": 3, "huge": -1},
    }
    assert run_sync(sync, warehouse=warehouse.url, client=client).unchanged == 3


BAD_VALUES = {  # (DDL columns, rows as SQL) per warehouse; row 1 is good, every other row holds one bad value
    "sqlite": ("id INTEGER, at DATETIME, amount NUMERIC, doc JSON, name TEXT",
               ["(1, '2024-01-01 10:00:00', 5, '{\"a\": 1}', 'ok')", "(2, 'yesterday', 5, NULL, 'b')",
                "(3, NULL, 'lots', NULL, 'c')", "(4, NULL, NULL, '{\"a\": ', 'd')",
                "(5, NULL, NULL, NULL, CAST(x'80ff' AS TEXT))", "(6, '0001-01-01T00:00:00+01:00', 1, NULL, 'f')",
                "(7, NULL, NULL, '{\"a\": \"\\ud800\", \"n\": 12345678901234567}', 'g')",
                f"(8, NULL, NULL, '{'[' * 300}{']' * 300}', 'h')"]),
    "duckdb": ("id INTEGER, moment TIMESTAMP, score DOUBLE, doc JSON",
               ["(1, '2024-01-01 10:00:00', 1.5, '{\"a\": 1}')", "(2, 'infinity', NULL, NULL)",
                "(3, NULL, 'nan', NULL)", "(4, '-infinity', NULL, NULL)", "(5, '10000-01-01', NULL, NULL)"]),
    "postgresql": ("id INTEGER, at TIMESTAMPTZ, day DATE, amount NUMERIC, doc JSONB",
                   ["(1, '2024-01-01 10:00:00+00', '2024-01-01', 5, '{\"a\": 1}')",
                    "(2, 'infinity', NULL, NULL, NULL)", "(3, NULL, '10000-01-01', NULL, NULL)",
                    "(4, NULL, NULL, 'NaN', NULL)", "(5, '0044-03-15 BC', NULL, NULL, NULL)"]),
    "mariadb": ("id INTEGER, at DATETIME, score DOUBLE, flag BOOLEAN",
                ["(1, '2024-01-01 10:00:00', 1.5, 1)", "(2, '0000-00-00 00:00:00', NULL, NULL)", "(3, NULL, NULL, 2)"]),
    "snowflake": ("id INTEGER, moment TIMESTAMP_NTZ, score FLOAT",
                  ["(1, '2024-01-01 10:00:00', 1.5)", "(2, NULL, 'NaN')", "(3, NULL, 'inf')"]),
}
GOOD = {
    "sqlite": {"at": "2024-01-01T10:00:00Z", "amount": 5, "doc": {"a": 1}, "name": "ok"},
    "duckdb": {"moment": "2024-01-01T10:00:00Z", "score": 1.5, "doc": {"a": 1}},
    "postgresql": {"at": "2024-01-01T10:00:00Z", "day": "2024-01-01", "amount": 5, "doc": {"a": 1}},
    "mariadb": {"at": "2024-01-01T10:00:00Z", "score": 1.5, "flag": True},
    "snowflake": {"moment": "2024-01-01T10:00:00Z", "score": 1.5},
}
BAD_COLUMN = {"sqlite": {"2": "at", "3": "amount", "4": "doc", "5": "name", "6": "at", "7": "doc", "8": "doc"},
              "duckdb": {"2": "moment", "3": "score", "4": "moment", "5": "moment"},
              "postgresql": {"2": "at", "3": "day", "4": "amount", "5": "at"},
              "mariadb": {"2": "at", "3": "flag"}, "snowflake": {"2": "score", "3": "score"}}


def test_a_bad_value_rejects_its_row_only(warehouse: Warehouse, emulator: Emulator, client: PipelinesClient) -> None:
    columns, rows = BAD_VALUES[warehouse.kind]
    lenient = ["SET SESSION sql_mode = ''"] if warehouse.kind == "mariadb" else []  # let a zero date in
    _sql(warehouse, *lenient, f"CREATE TABLE people ({columns})", f"INSERT INTO people VALUES {', '.join(rows)}")
    report = run_sync(PEOPLE, warehouse=warehouse.url, client=client)
    assert report.inserted == 1
    assert {r.key: r.operation for r in report.rejected} == dict.fromkeys(BAD_COLUMN[warehouse.kind], "source")
    for rejection in report.rejected:
        assert f"column {BAD_COLUMN[warehouse.kind][rejection.key]!r}" in rejection.reason, rejection
    assert emulator.snapshot()["people"] == {"1": {"traits": GOOD[warehouse.kind], "active": False}}
    again = run_sync(PEOPLE, warehouse=warehouse.url, client=client)  # still rejected, nothing resent
    assert (again.unchanged, len(again.rejected), emulator.stats()["requests"]) == (1, len(report.rejected), 1)
    store = StateStore(warehouse.url)
    store.settle(PEOPLE.name)
    held = {row[1]: row for row in store.iter_rows(PEOPLE.name, chunk_rows=100)}
    for key, column in BAD_COLUMN[warehouse.kind].items():  # key_hash, key, payload_hash, ..., attempts, failed, error
        assert held[key][2] is None and held[key][5:7] == (2, "source") and f"column {column!r}" in held[key][7]
    store.engine.dispose()


def test_a_key_that_cannot_be_an_identifier_rejects_its_row(warehouse: Warehouse, emulator: Emulator,
                                                            client: PipelinesClient) -> None:
    if warehouse.kind not in ("duckdb", "postgresql", "snowflake"):
        pytest.skip("only DuckDB, PostgreSQL and Snowflake store a NaN")
    _sql(warehouse, "CREATE TABLE people (id DOUBLE PRECISION, plan TEXT)",
         "INSERT INTO people VALUES ('NaN', 'a'), (2, 'b'), (2.5, 'c')")
    report = run_sync(PEOPLE, warehouse=warehouse.url, client=client)
    assert [r.key for r in report.rejected] == ["<NULL>"] and "'id'" in report.rejected[0].reason
    assert sorted(emulator.snapshot()["people"]) == ["2", "2.5"]


def _people_with(warehouse: Warehouse, columns: list[str]) -> None:
    values = {"plan": "'pro'", "seats": "3", "tier": "'gold'"}
    _sql(warehouse, "DROP TABLE IF EXISTS people",
         f"CREATE TABLE people (id INTEGER, {', '.join(f'{c} VARCHAR(20)' for c in columns)})",
         *(f"INSERT INTO people VALUES ({i}, {', '.join(values[c] for c in columns)})" for i in (1, 2)))


def test_schema_drift_follows_on_schema_change(warehouse: Warehouse, emulator: Emulator,
                                               client: PipelinesClient) -> None:
    _people_with(warehouse, ["plan", "seats"])
    assert run_sync(PEOPLE, warehouse=warehouse.url, client=client).inserted == 2
    _people_with(warehouse, ["plan", "seats", "tier"])
    with pytest.raises(SchemaChangedError, match=r"added 'tier'.*on_schema_change is 'fail'.*append_new_columns"):
        run_sync(PEOPLE, warehouse=warehouse.url, client=client)
    assert emulator.stats()["requests"] == 1

    append = dataclasses.replace(PEOPLE, on_schema_change="append_new_columns")
    assert run_sync(append, warehouse=warehouse.url, client=client).updated == 2
    _people_with(warehouse, ["seats", "tier"])  # plan removed: left alone at Customer.io
    assert run_sync(append, warehouse=warehouse.url, client=client).updated == 2
    assert emulator.snapshot()["people"]["1"]["traits"] == {"plan": "pro", "seats": "3", "tier": "gold"}

    sync_all = dataclasses.replace(PEOPLE, on_schema_change="sync_all_columns")
    _people_with(warehouse, ["tier"])  # seats removed: cleared at Customer.io
    assert run_sync(sync_all, warehouse=warehouse.url, client=client).updated == 2
    assert emulator.snapshot()["people"]["1"]["traits"] == {"plan": "pro", "tier": "gold"}
    requests = emulator.stats()["requests"]
    assert run_sync(sync_all, warehouse=warehouse.url, client=client).unchanged == 2
    assert run_sync(PEOPLE, warehouse=warehouse.url, client=client).unchanged == 2  # no change: no failure
    assert emulator.stats()["requests"] == requests


def test_listed_columns_are_not_schema_drift(warehouse: Warehouse, emulator: Emulator, client: PipelinesClient) -> None:
    listed = SyncDefinition(name="people", table="people", mapping=People(id_column="id", traits=["plan"]))
    _people_with(warehouse, ["plan", "seats"])
    assert run_sync(listed, warehouse=warehouse.url, client=client).inserted == 2
    _people_with(warehouse, ["plan", "tier"])
    assert run_sync(listed, warehouse=warehouse.url, client=client).unchanged == 2
    assert emulator.stats()["requests"] == 1


def test_postgresql_types_psycopg_cannot_read_reject_or_go_as_json(warehouse: Warehouse, emulator: Emulator,
                                                                   client: PipelinesClient) -> None:
    if warehouse.kind != "postgresql":
        pytest.skip("PostgreSQL's own types")
    _sql(warehouse, "CREATE TABLE people (id INTEGER, t TIME, iv INTERVAL, moments TIMESTAMP[], span TSRANGE, "
                    "docs JSONB[], level TEXT)",
         """INSERT INTO people VALUES (1, '10:30:00', NULL, ARRAY['2024-01-01 10:00:00'::timestamp, 'infinity'],
                tsrange('2020-01-01', 'infinity'), ARRAY['{"n": 12345678901234567890.123}'::jsonb], 'a'),
            (2, '24:00:00', NULL, NULL, NULL, NULL, 'b'), (3, NULL, '1 day', NULL, NULL, NULL, 'c')""")
    report = run_sync(PEOPLE, warehouse=warehouse.url, client=client)
    assert {r.key: r.reason.split(" holds")[0] for r in report.rejected} == {"2": "column 't'", "3": "column 'iv'"}
    assert emulator.snapshot()["people"]["1"]["traits"] == {
        "t": "10:30:00", "moments": ["2024-01-01T10:00:00", "infinity"], "span": '["2020-01-01 00:00:00",infinity)',
        "docs": [{"n": Decimal("12345678901234567890.123")}], "level": "a"}


def test_doubles_keep_every_digit_whatever_the_server_prints(warehouse: Warehouse, emulator: Emulator,
                                                             client: PipelinesClient) -> None:
    if warehouse.kind != "postgresql":
        pytest.skip("PostgreSQL's extra_float_digits")
    _sql(warehouse, "CREATE TABLE people (id INTEGER, ratio DOUBLE PRECISION)",
         "INSERT INTO people VALUES (1, 0.30000000000000004), (2, 0.1)")
    engine = sa.create_engine(warehouse.url)

    @sa.event.listens_for(engine, "connect")
    def round_floats(dbapi_connection, _record) -> None:
        dbapi_connection.execute("SET extra_float_digits = 0")  # what an older server or a pooler may set
        dbapi_connection.commit()

    try:
        assert run_sync(PEOPLE, warehouse=engine, client=client).inserted == 2
    finally:
        engine.dispose()
    assert emulator.snapshot()["people"]["1"]["traits"] == {"ratio": 0.30000000000000004}


def test_a_renamed_column_is_sent_on_every_diff_path(warehouse: Warehouse, emulator: Emulator,
                                                     client: PipelinesClient) -> None:
    """The warehouse's row hash covers column names: a rename moves it although the values stay in order."""
    _people_with(warehouse, ["tier"])
    sync_all = dataclasses.replace(PEOPLE, on_schema_change="sync_all_columns")
    assert run_sync(sync_all, warehouse=warehouse.url, client=client).inserted == 2
    _sql(warehouse, "ALTER TABLE people RENAME COLUMN tier TO plan")
    assert run_sync(sync_all, warehouse=warehouse.url, client=client).updated == 2
    assert emulator.snapshot()["people"]["1"]["traits"] == {"plan": "gold"}
