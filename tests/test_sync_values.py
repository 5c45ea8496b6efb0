"""Warehouse values become the JSON Customer.io gets, identically on every database."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from snowflake.sqlalchemy import VARIANT

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from dagster_cdp import People, SyncDefinition, run_sync
from dagster_cdp.sync.mapping import RowMapper
from tests.warehouses import Warehouse

SYNC = SyncDefinition(name="typed", table="typed", mapping=People(id_column="id"))


def test_values_are_converted_the_same_on_every_database(warehouse: Warehouse, emulator: Emulator) -> None:
    user = uuid.UUID("12345678-1234-5678-1234-567812345678")
    row = {"id": 1, "signed_up": dt.datetime(2024, 3, 1, 12, 30, 15), "birthday": dt.date(1990, 5, 17),
           "balance": Decimal("12.50"), "visits": Decimal("7.00"), "external": user,
           "prefs": {"theme": "dark", "tags": ["a", "b"], "n": 3}, "ratio": 0.25, "vip": True}
    columns = {"id": sa.Integer, "signed_up": sa.DateTime, "birthday": sa.Date, "balance": sa.Numeric(10, 2),
               "visits": sa.Numeric(10, 2), "external": sa.Uuid, "prefs": sa.JSON(none_as_null=True), "ratio": sa.Float,
               "vip": sa.Boolean}
    rows = [row, {name: 2 if name == "id" else None for name in columns}]
    if warehouse.kind == "snowflake":  # snowflake-sqlalchemy has no JSON type: a VARIANT, given JSON by PARSE_JSON
        columns["prefs"] = VARIANT
        table = warehouse.create("typed", columns)
        values = [sa.func.parse_json(sa.bindparam(c, type_=sa.String)) if c == "prefs" else sa.bindparam(c, type_=kind)
                  for c, kind in columns.items()]
        with warehouse.engine.begin() as connection:
            for each in rows:
                connection.execute(sa.insert(table).from_select(list(columns), sa.select(*values)),
                                   {**each, "prefs": None if each["prefs"] is None else json.dumps(each["prefs"])})
    else:
        warehouse.create("typed", columns, rows)
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        run_sync(SYNC, warehouse=warehouse.engine, client=client)
    traits = emulator.snapshot()["people"]["1"]["traits"]
    external = user.hex if warehouse.kind in ("sqlite", "snowflake") else str(user)  # stored as 32 hex characters
    assert traits == {"signed_up": "2024-03-01T12:30:15Z", "birthday": "1990-05-17", "balance": 12.5, "visits": 7,
                      "external": external, "prefs": {"theme": "dark", "tags": ["a", "b"], "n": 3}, "ratio": 0.25,
                      "vip": True}  # MariaDB's BOOLEAN is TINYINT(1), read as a boolean
    assert emulator.snapshot()["people"]["2"]["traits"] == {}  # NULLs are sent as null: nothing set


def test_binary_that_is_not_text_rejects_its_row_by_column(warehouse: Warehouse, emulator: Emulator) -> None:
    warehouse.create("typed", {"id": sa.Integer, "avatar": sa.LargeBinary},
                     [{"id": 1, "avatar": b"\x89PNG"}, {"id": 2, "avatar": "héllo".encode()}])
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        report = run_sync(SYNC, warehouse=warehouse.engine, client=client)
    assert [(r.key, r.operation) for r in report.rejected] == [("1", "source")]
    assert "'avatar'" in report.rejected[0].reason and "hex or base64" in report.rejected[0].reason
    assert emulator.snapshot()["people"] == {"2": {"traits": {"avatar": "héllo"}, "active": False}}


def test_timezone_aware_datetimes_become_utc() -> None:
    mapper = RowMapper(SYNC, ["id", "at"])
    berlin = dt.timezone(dt.timedelta(hours=2))
    mapped = mapper.map((1, dt.datetime(2024, 6, 1, 14, 0, tzinfo=berlin)))
    assert mapped.payload["traits"] == {"at": "2024-06-01T12:00:00Z"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), Decimal("NaN")])
def test_non_finite_numbers_reject_only_their_row(bad: object) -> None:
    mapper = RowMapper(SYNC, ["id", "score"])
    rejected = mapper.map((1, bad))
    assert rejected.payload is None and "'score'" in rejected.problem and rejected.key == "1"
    assert mapper.map((2, 1.5)).payload["traits"] == {"score": 1.5}


def test_equal_rows_hash_equally_and_changes_do_not() -> None:
    mapper = RowMapper(SYNC, ["id", "a", "b"])
    assert mapper.map((1, "x", 2)).payload_hash == mapper.map((1, "x", 2)).payload_hash
    assert mapper.map((1, "x", 2)).payload_hash != mapper.map((1, "x", None)).payload_hash
    assert mapper.map((1, "x", 2)).key_hash != mapper.map((2, "x", 2)).key_hash
