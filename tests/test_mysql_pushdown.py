"""The in-warehouse diff on MariaDB: keys compare byte for byte although its collations ignore case, accents and
trailing spaces; keys of several columns; which key columns qualify; partitions computed in SQL.

Only MariaDB 10.11 is tested (the SQL avoids what MySQL 8 lacks, but no MySQL server runs here).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from dagster_cdp import Emulator
from dagster_cdp import Aliases, Devices, People, Relationships, SyncDefinition, run_sync
from dagster_cdp.sync.partitions import partition_of
from dagster_cdp.sync.dialects import dialect_of
from tests.warehouses import Warehouse

# Equal under MariaDB's default utf8mb4_general_ci (case, accents, PAD SPACE), distinct keys for Customer.io.
LOOKALIKES = ["a", "A", "a ", "á", "Á", "ä", "a  "]


@pytest.fixture
def one(warehouse: Warehouse) -> Warehouse:
    if warehouse.kind != "mariadb":
        pytest.skip("MariaDB only")
    return warehouse


PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))


def test_keys_differing_in_case_trailing_spaces_or_accents_are_distinct_people(one: Warehouse, emulator: Emulator,
                                                                              client) -> None:
    rows = [{"id": key, "plan": f"plan {n}"} for n, key in enumerate(LOOKALIKES)]
    table = one.create("people", {"id": sa.String(20), "plan": sa.String(20)}, rows)
    report = run_sync(PEOPLE, warehouse=one.engine, client=client)
    assert (report.diff, report.inserted, report.rejected) == ("in-warehouse", len(LOOKALIKES), [])
    assert {k: v["traits"] for k, v in emulator.snapshot()["people"].items()} == {
        r["id"]: {"plan": r["plan"]} for r in rows}
    assert run_sync(PEOPLE, warehouse=one.engine, client=client).unchanged == len(LOOKALIKES)

    rows[1]["plan"] = "changed"  # only "A"
    one.replace(table, [r for r in rows if r["id"] != "a "])  # only "a " gone
    report = run_sync(PEOPLE, warehouse=one.engine, client=client)
    assert (report.diff, report.updated, report.deleted, report.unchanged) == ("in-warehouse", 1, 1, 5)
    people = emulator.snapshot()["people"]
    assert set(people) == set(LOOKALIKES) - {"a "}
    assert people["A"]["traits"] == {"plan": "changed"} and people["a"]["traits"] == {"plan": "plan 0"}


def test_lookalike_keys_in_a_column_of_another_character_set(one: Warehouse,
                                                                                   emulator: Emulator, client) -> None:
    """A latin1 column: the key text is its UTF-8, as Python reads it; integers are keys too."""
    one.create("people", {"id": mysql.VARCHAR(20, charset="latin1"), "n": sa.Integer},
               [{"id": k, "n": n} for n, k in enumerate(["é", "É", "e", "E "])])
    report = run_sync(PEOPLE, warehouse=one.engine, client=client)
    assert (report.diff, report.inserted) == ("in-warehouse", 4)
    assert set(emulator.snapshot()["people"]) == {"é", "É", "e", "E "}
    assert run_sync(PEOPLE, warehouse=one.engine, client=client).unchanged == 4


def test_relationships_match_part_by_part(one: Warehouse, emulator: Emulator, client) -> None:
    users = ["u1", "U1", "u1 ", "ü1", 'q"1', "b\\1", "雪"]
    rows = [{"user_id": u, "company_id": c, "role": "member"} for u in users for c in ("c1", "C1")]
    table = one.create("memberships", {"user_id": sa.String(20), "company_id": sa.String(20), "role": sa.String(20)},
                       rows)
    memberships = SyncDefinition(name="memberships", table="memberships", mapping=Relationships(
        user_id_column="user_id", object_id_column="company_id", object_type="2"))
    report = run_sync(memberships, warehouse=one.engine, client=client)
    assert (report.diff, report.inserted, report.rejected) == ("in-warehouse", len(rows), [])
    assert run_sync(memberships, warehouse=one.engine, client=client).unchanged == len(rows)

    rows[0]["role"] = "owner"  # ["u1", "2", "c1"]
    one.replace(table, [r for r in rows if (r["user_id"], r["company_id"]) != ("U1", "C1")])
    report = run_sync(memberships, warehouse=one.engine, client=client, force=True)
    assert (report.updated, report.deleted, report.unchanged) == (1, 1, len(rows) - 2)
    assert emulator.snapshot()["relationships"] == sorted(
        ({"userId": r["user_id"], "objectTypeId": "2", "groupId": r["company_id"], "attributes": {"role": r["role"]}}
         for r in rows if (r["user_id"], r["company_id"]) != ("U1", "C1")),
        key=lambda r: (r["userId"], r["objectTypeId"], r["groupId"]))


def test_devices_and_aliases_with_lookalike_keys(one: Warehouse, emulator: Emulator, client) -> None:
    rows = [{"user_id": u, "token": t, "platform": "ios"} for u in ("u", "U") for t in ("tok", "TOK", "tok ")]
    table = one.create("devices", {"user_id": sa.String(20), "token": sa.String(50), "platform": sa.String(10)}, rows)
    devices = SyncDefinition(name="devices", table="devices",
                             mapping=Devices(user_id_column="user_id", token_column="token", platform_column="platform"))
    report = run_sync(devices, warehouse=one.engine, client=client)
    assert (report.diff, report.inserted) == ("in-warehouse", 6)
    assert {u: set(tokens) for u, tokens in emulator.snapshot()["devices"].items()} == {
        "u": {"tok", "TOK", "tok "}, "U": {"tok", "TOK", "tok "}}
    one.replace(table, rows[1:])  # ("u", "tok") gone
    report = run_sync(devices, warehouse=one.engine, client=client, force=True)
    assert (report.deleted, report.unchanged) == (1, 5)
    assert set(emulator.snapshot()["devices"]["u"]) == {"TOK", "tok "}

    pairs = [{"previous_id": p, "user_id": "u1"} for p in ("anon", "ANON", "anon ", "ánon")]
    table = one.create("aliases", {"previous_id": sa.String(20), "user_id": sa.String(20)}, pairs)
    aliases = SyncDefinition(name="aliases", table="aliases",
                             mapping=Aliases(previous_id_column="previous_id", user_id_column="user_id"))
    report = run_sync(aliases, warehouse=one.engine, client=client)
    assert (report.diff, report.inserted) == ("in-warehouse", 4)
    assert run_sync(aliases, warehouse=one.engine, client=client).inserted == 0  # sent once
    one.insert(table, [{"previous_id": "Anon", "user_id": "u1"}])
    assert run_sync(aliases, warehouse=one.engine, client=client).inserted == 1
    assert sorted(a["previousId"] for a in emulator.snapshot()["aliases"]) == sorted(
        ["anon", "ANON", "anon ", "ánon", "Anon"])


@pytest.mark.parametrize("kind, diff", [
    (sa.Boolean, "portable"),  # TINYINT(1): True in Python, 1 in SQL
    (mysql.INTEGER(display_width=5, zerofill=True), "portable"),  # 00042 in SQL
    (sa.LargeBinary, "portable"),  # bytes in Python
    (mysql.VARBINARY(20), "portable"),
    (sa.Numeric(10, 0), "portable"),
    (sa.Float, "portable"),
    (sa.BigInteger, "in-warehouse"),
    (mysql.TINYINT(display_width=4), "in-warehouse"),
    (mysql.MEDIUMINT(unsigned=True), "in-warehouse"),
    (sa.Text, "in-warehouse"),
    (mysql.CHAR(5), "in-warehouse"),
    (mysql.ENUM("1", "0", "x"), "in-warehouse"),
])
def test_which_key_columns_the_warehouse_diffs(one: Warehouse, emulator: Emulator, client, kind, diff) -> None:
    values = [True, False] if kind is sa.Boolean else [b"1", b"0"] if kind in (sa.LargeBinary,) or isinstance(
        kind, mysql.VARBINARY) else [1, 0] if not isinstance(kind, (mysql.CHAR, mysql.ENUM)) and kind is not sa.Text \
        else ["1", "0"]
    one.create("people", {"id": kind, "plan": sa.String(10)}, [{"id": v, "plan": "free"} for v in values])
    report = run_sync(PEOPLE, warehouse=one.engine, client=client)
    assert (report.diff, len(report.rejected)) == (diff, 0)
    assert run_sync(PEOPLE, warehouse=one.engine, client=client).unchanged == 2


def test_a_binary_key_a_query_makes(one: Warehouse, emulator: Emulator, client) -> None:
    """The type of a query's column is not declared: a binary string that is UTF-8 is its text; one that is not
    is rejected, as on the generic path."""
    one.create("people", {"id": sa.String(20), "plan": sa.String(10)},
               [{"id": k, "plan": "free"} for k in ("ab", "AB", "é")])
    query = SyncDefinition(name="people_q", mapping=People(id_column="id"),
                           query="SELECT CAST(id AS BINARY) AS id, plan FROM people "
                                 "UNION ALL SELECT 0xFF, 'free'")
    report = run_sync(query, warehouse=one.engine, client=client)
    assert (report.diff, report.inserted, len(report.rejected)) == ("in-warehouse", 3, 1)
    assert "not UTF-8" in report.rejected[0].reason
    assert set(emulator.snapshot()["people"]) == {"ab", "AB", "é"}
    assert run_sync(query, warehouse=one.engine, client=client).unchanged == 3


def test_partitions_in_sql_are_pythons(one: Warehouse, emulator: Emulator, client) -> None:
    keys = [*LOOKALIKES, *(f"user-{i}" for i in range(60)), "雪", "emoji 😀"]
    one.create("people", {"id": sa.String(30), "plan": sa.String(10)}, [{"id": k, "plan": "free"} for k in keys])
    sent: dict[str, int] = {}
    for partition in range(3):
        definition = SyncDefinition(name="people", table="people", mapping=People(id_column="id"),
                                    partitions=3, partition=partition)
        before = set(emulator.snapshot()["people"])
        report = run_sync(definition, warehouse=one.engine, client=client)
        assert report.diff == "in-warehouse"
        sent.update(dict.fromkeys(set(emulator.snapshot()["people"]) - before, partition))
    assert sent == {k: partition_of(k, 3) for k in keys}


def test_keys_longer_than_320_bytes_are_synced_apart(one: Warehouse, emulator: Emulator, client) -> None:
    """The diff joins keys by index, which MariaDB builds on short strings only: a longer key is joined by its
    first 60 characters, '~' and the MD5 of the whole, and still sent as itself, apart from its lookalikes."""
    long = ["x" * 321, "x" * 321 + "y", "é" * 200]
    table = one.create("people", {"id": sa.Text, "plan": sa.String(10)},
                       [{"id": k, "plan": "free"} for k in [*long, "ok"]])
    report = run_sync(PEOPLE, warehouse=one.engine, client=client)
    assert (report.diff, report.inserted, report.rejected) == ("in-warehouse", 4, [])
    assert sorted(emulator.snapshot()["people"]) == sorted([*long, "ok"])
    assert run_sync(PEOPLE, warehouse=one.engine, client=client).unchanged == 4
    one.replace(table, [{"id": long[0], "plan": "pro"}, {"id": long[1], "plan": "free"}, {"id": "ok", "plan": "free"}])
    report = run_sync(PEOPLE, warehouse=one.engine, client=client, force=True)
    assert (report.updated, report.deleted, report.unchanged) == (1, 1, 2)
    assert emulator.snapshot()["people"][long[0]]["traits"]["plan"] == "pro"
    assert long[2] not in emulator.snapshot()["people"]


def test_the_diff_restores_the_session(one: Warehouse) -> None:
    with one.engine.connect() as connection:
        before = connection.exec_driver_sql("SELECT @@session.optimizer_switch").scalar_one()
        with dialect_of(connection).diff_session(connection):
            assert "derived_merge=off" in connection.exec_driver_sql("SELECT @@session.optimizer_switch").scalar_one()
        assert connection.exec_driver_sql("SELECT @@session.optimizer_switch").scalar_one() == before
