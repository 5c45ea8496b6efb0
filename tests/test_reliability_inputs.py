"""The bad-input matrix: each bad input gets a clear error naming the problem, or a reported rejection while
the rest proceeds; nothing is lost, and the next good run converges.

Cases asserted elsewhere, where the user-visible behaviour is already checked on every database:
- a row over 32,000 bytes, NULL keys, duplicate keys: test_sync_engine.py
  `test_duplicate_null_and_oversize_rows_are_reported_and_the_rest_proceed`; calls over the limit at the client:
  test_client.py `test_oversized_and_invalid_calls_are_rejected_and_the_rest_delivered`
- an unsupported column type (binary): test_sync_values.py `test_binary_column_is_refused_by_name`
- NaN and infinite values, row by row: test_sync_values.py `test_non_finite_numbers_reject_only_their_row`
- table and column names with spaces, quotes, upper case and unicode: test_sync_engine.py
  `test_odd_table_names_and_queries`
- a mapping naming a missing column, a missing table: test_sync_engine.py `test_missing_column_fails_before_sending`
- a source that returns zero rows (the delete guard): test_sync_engine.py `test_deletion_guard_and_force`
- a wrong key / unreachable host / timeouts at the client: test_client.py; a wrong key in Dagster:
  test_dagster_assets.py `test_the_api_key_never_shows_in_events_or_errors`
- a malformed defs.yaml: test_dagster_component.py `test_malformed_yaml_points_at_the_bad_line` and
  `test_each_kind_of_yaml_mistake_is_located`

Here: the same failures at the level of a whole sync (it fails with a clear error, records nothing it did not
deliver, and the next run sends it all), NaN/Infinity read from real databases, odd schema names, and a
column type the API cannot carry in each database's own form.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp.errors import AuthenticationError, DeliveryError
from dagster_cdp import People, StateStore, SyncDefinition, run_sync
from tests.warehouses import Warehouse

COLUMNS = {"id": sa.Integer, "plan": sa.String(20)}
ROWS = [{"id": i, "plan": "free"} for i in range(1, 301)]
SYNC = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))
EXPECTED = {str(r["id"]): {"traits": {"plan": r["plan"]}, "active": False} for r in ROWS}


def test_wrong_key_fails_the_sync_records_nothing_and_the_right_key_converges(warehouse: Warehouse) -> None:
    warehouse.create("people", COLUMNS, ROWS)
    with Emulator(api_keys={"right-key"}) as emulator:
        with PipelinesClient("wrong-key", base_url=emulator.url) as client:
            with pytest.raises(AuthenticationError, match=r"refused the API key .*HTTP 401.*check the key") as raised:
                run_sync(SYNC, warehouse=warehouse.engine, client=client)
        assert "wrong-key" not in str(raised.value)
        assert emulator.stats()["requests"] == 1  # a refused key is not retried
        assert warehouse.accepted_keys(SYNC.name) == set()
        with PipelinesClient("right-key", base_url=emulator.url) as client:
            assert run_sync(SYNC, warehouse=warehouse.engine, client=client).inserted == len(ROWS)
        assert emulator.snapshot()["people"] == EXPECTED


def test_unreachable_host_fails_the_sync_and_the_next_run_sends_everything(warehouse: Warehouse,
                                                                            emulator: Emulator) -> None:
    warehouse.create("people", COLUMNS, ROWS)
    with PipelinesClient("test-key", base_url="http://127.0.0.1:9", max_attempts=2, max_retry_seconds=2) as client:
        with pytest.raises(DeliveryError, match=r"127\.0\.0\.1:9/v1/batch failed 2 times.*ConnectError.*reachable"):
            run_sync(SYNC, warehouse=warehouse.engine, client=client)
    assert warehouse.accepted_keys(SYNC.name) == set()
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        assert run_sync(SYNC, warehouse=warehouse.engine, client=client).inserted == len(ROWS)
    assert emulator.snapshot()["people"] == EXPECTED


def test_slow_host_times_out_and_the_resend_is_recognised_by_message_id(warehouse: Warehouse,
                                                                         emulator: Emulator) -> None:
    warehouse.create("people", COLUMNS, ROWS)
    emulator.set_faults(FaultConfig(delay_rate=1.0, delay_seconds=1.0))  # applied, answered too late
    with PipelinesClient("test-key", base_url=emulator.url, timeout=0.3, max_attempts=2,
                         max_retry_seconds=5) as client:
        with pytest.raises(DeliveryError, match=r"failed 2 times.*ReadTimeout"):
            run_sync(SYNC, warehouse=warehouse.engine, client=client)
    assert warehouse.accepted_keys(SYNC.name) == set()  # applied, but never acknowledged: not recorded
    emulator.set_faults(FaultConfig())
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        assert run_sync(SYNC, warehouse=warehouse.engine, client=client).inserted == len(ROWS)
    assert emulator.snapshot()["people"] == EXPECTED
    assert emulator.stats()["repeats"] == len(ROWS) * 2  # the retry and the next run: same messageIds


@pytest.mark.parametrize("warehouse", ["sqlite", "duckdb", "postgresql", "mariadb"], indirect=True)
def test_nan_and_infinity_from_the_database_reject_only_their_rows(warehouse: Warehouse, emulator: Emulator) -> None:
    rows = [{"id": i, "score": float(i)} for i in range(1, 11)]
    bad = {"sqlite": {11: math.inf, 12: -math.inf},  # SQLite stores NaN as NULL
           "mariadb": {}}.get(warehouse.kind, {11: math.nan, 12: math.inf, 13: -math.inf})
    table = warehouse.create("people", {"id": sa.Integer, "score": sa.Float}, rows)
    if warehouse.kind == "mariadb":  # MariaDB has no NaN or Infinity: it refuses them on insert
        with pytest.raises(sa.exc.DBAPIError):
            warehouse.insert(table, [{"id": 11, "score": math.inf}])
        return
    warehouse.insert(table, [{"id": i, "score": value} for i, value in bad.items()])
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        report = run_sync(SYNC, warehouse=warehouse.engine, client=client)
        assert report.inserted == len(rows)
        assert {r.key: r.operation for r in report.rejected} == {str(i): "source" for i in bad}
        assert all("'score'" in r.reason and "JSON cannot carry" in r.reason for r in report.rejected)
        assert set(emulator.snapshot()["people"]) == {str(r["id"]) for r in rows}

        warehouse.replace(table, rows + [{"id": i, "score": 0.0} for i in bad])  # fixed: sent now
        report = run_sync(SYNC, warehouse=warehouse.engine, client=client)
        assert (report.inserted, report.rejected) == (len(bad), [])


@pytest.mark.parametrize("warehouse", ["duckdb", "postgresql", "mariadb"], indirect=True)
def test_schema_and_column_names_with_spaces_quotes_case_and_unicode(warehouse: Warehouse,
                                                                     emulator: Emulator) -> None:
    schema = 'Kundenbereich "Nord" Ä'
    quote = "`" if warehouse.kind == "mariadb" else '"'
    with warehouse.engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {quote}{schema.replace(quote, quote * 2)}{quote}")
    try:
        table = sa.Table("Leute Übersicht", sa.MetaData(schema=schema),
                         sa.Column("Kunden-ID", sa.Integer), sa.Column('Plan "aktuell"', sa.String(20)),
                         sa.Column("Größe", sa.Integer))
        table.create(warehouse.engine)
        with warehouse.engine.begin() as connection:
            connection.execute(table.insert(), [{"Kunden-ID": i, 'Plan "aktuell"': "frei", "Größe": i}
                                                for i in range(1, 4)])
        sync = SyncDefinition(name="odd-schema", table=f"{schema}.Leute Übersicht",
                              mapping=People(id_column="Kunden-ID", traits=['Plan "aktuell"', "Größe"]))
        store = StateStore(warehouse.engine, schema=schema)
        with PipelinesClient("test-key", base_url=emulator.url) as client:
            assert run_sync(sync, warehouse=warehouse.engine, client=client, state=store).inserted == 3
            assert run_sync(sync, warehouse=warehouse.engine, client=client, state=store).unchanged == 3
        assert emulator.snapshot()["people"]["2"]["traits"] == {'Plan "aktuell"': "frei", "Größe": 2}
    finally:
        warehouse.release()
        with warehouse.engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {quote}{schema.replace(quote, quote * 2)}{quote} CASCADE"
                                       if warehouse.kind != "mariadb" else
                                       f"DROP DATABASE {quote}{schema}{quote}")


@pytest.mark.parametrize("warehouse", ["duckdb", "postgresql"], indirect=True)  # SQLite, MariaDB: no INTERVAL type
def test_a_column_type_the_api_cannot_carry_rejects_its_rows_by_name(warehouse: Warehouse,
                                                                      emulator: Emulator) -> None:
    rows = [{"id": i, "trial": dt.timedelta(days=i) if i < 3 else None} for i in range(1, 4)]
    warehouse.create("people", {"id": sa.Integer, "trial": sa.Interval}, rows)
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        report = run_sync(SYNC, warehouse=warehouse.engine, client=client)
    assert [r.key for r in report.rejected] == ["1", "2"]
    assert "column 'trial' holds" in report.rejected[0].reason
    assert "convert it in the query" in report.rejected[0].reason
    assert warehouse.accepted_keys(SYNC.name) == {"3"}  # a NULL interval is no problem
