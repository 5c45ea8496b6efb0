"""Errors name the real cause: a missing table or column, an unreachable database, a URL whose dialect or driver
is not installed, a table name in the wrong case, a malformed base_url; never with a password."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dagster_cdp import CustomerIOResource, CustomerIOWarehouseResource, build_customerio_sync_asset
from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from dagster_cdp import People, SourceError, SyncDefinition, run_sync
from tests.warehouses import Warehouse, sqlite_warehouse

COLUMNS = {"id": sa.String(10), "plan": sa.String(10)}
ROWS = [{"id": "a", "plan": "gold"}]


def people(**source: str) -> SyncDefinition:
    return SyncDefinition(name="people", mapping=People(id_column="id"), **source)


@pytest.fixture
def client(emulator: Emulator) -> Iterable[PipelinesClient]:
    with PipelinesClient("test-key", base_url=emulator.url, max_retry_seconds=5) as c:
        yield c


def shown(warehouse: Warehouse) -> str:
    return warehouse.engine.url.render_as_string(hide_password=True)


@pytest.mark.parametrize(("query", "named"), [
    ("SELECT * FROM no_such_table", "no_such_table"),
    ("SELECT id, no_such_column FROM people", "no_such_column"),
])
def test_a_missing_table_or_column_in_a_query_is_named(warehouse: Warehouse, client: PipelinesClient,
                                                       query: str, named: str) -> None:
    warehouse.create("people", COLUMNS, ROWS)
    with pytest.raises(SourceError) as raised:
        run_sync(people(query=query), warehouse=warehouse.engine, client=client)
    message = str(raised.value)
    assert message.startswith(f"Sync 'people': reading the source at {shown(warehouse)} failed: ")
    if warehouse.kind == "snowflake":
        named = named.upper()  # Snowflake folds unquoted names to upper case, and its messages name them so
    assert named in message and "Traceback" not in message and "[SQL:" not in message


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test",
                                 "mysql+pymysql://root:s3cret@127.0.0.1:1/test",
                                 "mysql+pymysql://root:s3cret@127.0.0.1:3306/test"])  # a wrong password
def test_an_unreachable_database_says_so_with_the_drivers_reason(url: str, client: PipelinesClient) -> None:
    with pytest.raises(SourceError) as raised:
        run_sync(people(table="people"), warehouse=url, client=client)
    message = str(raised.value)
    assert message.startswith(f"cannot connect to {url.replace('s3cret', '***')}: ")
    assert ("refused" in message or "Access denied" in message) and "s3cret" not in message


@pytest.mark.parametrize(("url", "advice"), [
    ("postgres://ada:s3cret@db.example.com/shop", "names no SQLAlchemy dialect: write "
                                                  "postgresql+psycopg://ada:***@db.example.com/shop"),
    ("mysql://ada:s3cret@db.example.com/shop", "No module named 'MySQLdb'. pip install 'dagster-cdp[mysql]' "
                                               "installs the driver of mysql+pymysql:// URLs"),
    ("bigquery://ada:s3cret@project/dataset", "Install the package that provides SQLAlchemy's 'bigquery' dialect"),
])
def test_a_url_whose_dialect_is_not_installed_names_what_to_install(url: str, advice: str,
                                                                    client: PipelinesClient) -> None:
    with pytest.raises(SourceError, match="dagster|SQLAlchemy") as raised:
        run_sync(people(table="people"), warehouse=url, client=client)
    assert advice in str(raised.value) and "s3cret" not in str(raised.value)


@pytest.mark.parametrize("warehouse", ["postgresql", "mariadb"], indirect=True)
def test_a_table_name_in_another_case_gets_a_hint(warehouse: Warehouse, client: PipelinesClient) -> None:
    warehouse.create("People", COLUMNS, ROWS)
    with pytest.raises(SourceError, match=r"table 'people' does not exist.*the table is named 'People'"):
        run_sync(people(table="people"), warehouse=warehouse.engine, client=client)
    unquoted = "SELECT * FROM people"  # PostgreSQL folds it to lower case
    with pytest.raises(SourceError, match=r"case-sensitive here.*the table is named 'People'") as raised:
        run_sync(people(query=unquoted), warehouse=warehouse.engine, client=client)
    assert ("folds unquoted names" in str(raised.value)) == (warehouse.kind == "postgresql")


@pytest.mark.parametrize("base_url", ["localhost:8080", "cdp.customer.io", "ftp://cdp.customer.io"])
def test_a_base_url_without_http_fails_when_the_client_or_resource_is_built(base_url: str) -> None:
    expected = f"base_url must start with http:// or https://, got '{base_url}'"
    with pytest.raises(ValueError, match=expected):
        PipelinesClient("test-key", base_url=base_url)
    with pytest.raises(ValueError, match=expected):
        CustomerIOResource(api_key="test-key", base_url=base_url)


@pytest.mark.parametrize(("url", "expected"), [
    ("postgres://ada:s3cret@127.0.0.1:1/shop", "write postgresql+psycopg://ada:***@127.0.0.1:1/shop"),
    ("postgresql+psycopg://ada:s3cret@127.0.0.1:1/shop", "cannot connect to postgresql+psycopg://ada:***@127.0.0.1:1/shop"),
])
def test_the_warehouse_resource_reports_the_cause(url: str, expected: str, emulator: Emulator, tmp_path: Path) -> None:
    asset = build_customerio_sync_asset(people(table="people"))
    resources = {"customerio": CustomerIOResource(api_key="test-key", base_url=emulator.url),
                 "warehouse": CustomerIOWarehouseResource(url=url, state_url=sqlite_warehouse(tmp_path))}
    result = dg.materialize([asset], resources=resources, raise_on_error=False)
    [failure] = [event for event in result.all_events if event.is_step_failure]
    error = failure.step_failure_data.error.cause
    assert error.cls_name == "SourceError" and expected in error.message and "s3cret" not in error.message
