"""The sync engine end to end: a real warehouse (each of four kinds) to the emulator over HTTP."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import sqlalchemy as sa

from dagster_cdp import Emulator
from dagster_cdp import MappingChangedError, Objects, People, Relationships, SourceError, StateStore, SyncAbortedError, SyncDefinition, run_sync
from tests.warehouses import Warehouse

PEOPLE_COLUMNS = {"id": sa.Integer, "email": sa.String(100), "plan": sa.String(20), "seats": sa.Integer}


def people_rows(ids: Iterable[int], plan: str = "free") -> list[dict[str, Any]]:
    return [{"id": i, "email": f"u{i}@example.com", "plan": plan, "seats": i % 7} for i in ids]


def expected_people(rows: Iterable[Mapping[str, Any]], active: bool = False) -> dict[str, Any]:
    """What the emulator holds after syncing these rows with People(id_column="id")."""
    return {
        str(r["id"]): {"traits": {k: v for k, v in r.items() if k != "id" and v is not None}, "active": active}
        for r in rows
    }


PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))


def test_people_first_sync_then_noop_then_changes(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = people_rows(range(1, 201))
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)

    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.updated, report.deleted, report.source_rows) == (200, 0, 0, 200)
    assert report.rejected == []
    assert emulator.snapshot()["people"] == expected_people(rows)

    requests = emulator.stats()["requests"]
    again = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (again.inserted, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 200)
    assert emulator.stats()["requests"] == requests  # nothing sent at all

    rows[0]["plan"] = "pro"  # a change
    rows[1]["plan"] = None  # a value turned NULL: the trait is removed
    rows = [r for r in rows if r["id"] != 3]  # a deletion
    rows.append(people_rows([500])[0])  # an insert
    warehouse.replace(table, rows)
    changed = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (changed.inserted, changed.updated, changed.deleted, changed.unchanged) == (1, 2, 1, 197)
    snapshot = emulator.snapshot()["people"]
    assert snapshot == expected_people(rows)
    assert "plan" not in snapshot["2"]["traits"]
    assert "3" not in snapshot


def test_objects_and_relationships_with_their_deletions(warehouse: Warehouse, emulator: Emulator, client) -> None:
    companies = [{"id": f"c{i}", "name": f"Company {i}", "tier": i % 3} for i in range(40)]
    memberships = [{"user_id": str(u), "company_id": f"c{u % 40}", "role": "admin" if u % 5 == 0 else "member"}
                   for u in range(120)]
    company_table = warehouse.create("companies", {"id": sa.String(20), "name": sa.String(50), "tier": sa.Integer},
                                     companies)
    member_table = warehouse.create("memberships", {"user_id": sa.String(20), "company_id": sa.String(20),
                                                    "role": sa.String(20)}, memberships)
    objects = SyncDefinition(name="companies", table="companies", mapping=Objects(id_column="id", object_type=2))
    relationships = SyncDefinition(name="memberships", table="memberships", mapping=Relationships(
        user_id_column="user_id", object_id_column="company_id", object_type="2"))

    def expect(companies: list[dict], memberships: list[dict]) -> None:
        snapshot = emulator.snapshot()
        assert snapshot["objects"] == {"2": {c["id"]: {"name": c["name"], "tier": c["tier"]} for c in companies}}
        assert snapshot["relationships"] == sorted(
            ({"userId": m["user_id"], "objectTypeId": "2", "groupId": m["company_id"], "attributes": {"role": m["role"]}}
             for m in memberships), key=lambda r: (r["userId"], r["objectTypeId"], r["groupId"]))

    run_sync(objects, warehouse=warehouse.engine, client=client)
    run_sync(relationships, warehouse=warehouse.engine, client=client)
    expect(companies, memberships)

    memberships = [m for m in memberships if m["user_id"] not in ("1", "2", "3")]
    memberships[0]["role"] = "owner"
    warehouse.replace(member_table, memberships)
    report = run_sync(relationships, warehouse=warehouse.engine, client=client)
    assert (report.updated, report.deleted) == (1, 3)
    expect(companies, memberships)

    gone = {"c39"}  # deleting an object also removes its relationships at Customer.io
    companies = [c for c in companies if c["id"] not in gone]
    memberships = [m for m in memberships if m["company_id"] not in gone]
    warehouse.replace(company_table, companies)
    warehouse.replace(member_table, memberships)
    assert run_sync(objects, warehouse=warehouse.engine, client=client).deleted == 1
    assert run_sync(relationships, warehouse=warehouse.engine, client=client).deleted == 3
    expect(companies, memberships)


def test_upsert_mode_sends_no_deletions(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = people_rows(range(1, 21))
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)
    upsert = SyncDefinition(name="people", table="people", mapping=People(id_column="id"), mode="upsert")
    run_sync(upsert, warehouse=warehouse.engine, client=client)
    warehouse.replace(table, rows[10:])
    report = run_sync(upsert, warehouse=warehouse.engine, client=client)
    assert (report.deleted, report.unchanged) == (0, 10)
    assert emulator.snapshot()["people"] == expected_people(rows)


def test_mapping_change_needs_full_resync(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = people_rows(range(1, 31))
    warehouse.create("people", PEOPLE_COLUMNS, rows)
    run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    requests = emulator.stats()["requests"]

    narrower = SyncDefinition(name="people", table="people", mapping=People(id_column="id", traits=["plan"]))
    with pytest.raises(MappingChangedError, match=r"mapping\.traits: None -> \['plan'\].*full_resync=True"):
        run_sync(narrower, warehouse=warehouse.engine, client=client)
    assert emulator.stats()["requests"] == requests

    resync = run_sync(narrower, warehouse=warehouse.engine, client=client, full_resync=True)
    assert (resync.updated, resync.inserted, resync.deleted) == (30, 0, 0)
    assert run_sync(narrower, warehouse=warehouse.engine, client=client).unchanged == 30

    # A full resync with nothing changed still resends every row (it repairs a drifted destination).
    emulator.reset()
    again = run_sync(narrower, warehouse=warehouse.engine, client=client, full_resync=True)
    assert again.updated == 30
    assert emulator.snapshot()["people"] == {str(r["id"]): {"traits": {"plan": "free"}, "active": False} for r in rows}


def test_dry_run_sends_nothing_and_writes_no_state(warehouse: Warehouse, emulator: Emulator) -> None:
    rows = people_rows(range(1, 51))
    warehouse.create("people", PEOPLE_COLUMNS, rows)
    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=None, dry_run=True)
    assert (report.dry_run, report.inserted, report.source_rows) == (True, 50, 50)
    assert len(report.samples["insert"]) == 10
    sample = report.samples["insert"][0]
    assert sample["type"] == "identify" and sample["traits"]["email"].endswith("@example.com")
    assert emulator.stats()["requests"] == 0
    inspector = sa.inspect(warehouse.engine)
    assert not inspector.has_table("cdp_state") and not inspector.has_table("cdp_syncs")


def test_deletion_guard_and_force(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = people_rows(range(1, 41))
    table = warehouse.create("people", PEOPLE_COLUMNS, rows)
    run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    requests = emulator.stats()["requests"]

    warehouse.replace(table, rows[:20])  # half the people gone: more than 25%
    with pytest.raises(SyncAbortedError, match=r"delete 20 of 40 .*force=True"):
        run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    with pytest.raises(SyncAbortedError, match="full resync does not override"):
        run_sync(PEOPLE, warehouse=warehouse.engine, client=client, full_resync=True)
    warehouse.replace(table, [])
    with pytest.raises(SyncAbortedError, match="no rows"):
        run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert emulator.stats()["requests"] == requests

    warehouse.replace(table, rows[:20])
    assert run_sync(PEOPLE, warehouse=warehouse.engine, client=client, force=True).deleted == 20
    assert emulator.snapshot()["people"] == expected_people(rows[:20])

    warehouse.replace(table, rows)  # they come back unchanged: sent again, not de-duplicated away
    assert run_sync(PEOPLE, warehouse=warehouse.engine, client=client).inserted == 20
    assert emulator.snapshot()["people"] == expected_people(rows)


def test_duplicate_null_and_oversize_rows_are_reported_and_the_rest_proceed(
    warehouse: Warehouse, emulator: Emulator, client
) -> None:
    columns = {"id": sa.Integer, "bio": sa.Text}
    good = [{"id": i, "bio": "short"} for i in range(1, 11)]
    bad = [{"id": 5, "bio": "a second row for 5"}, {"id": None, "bio": "no key"}, {"id": 99, "bio": "x" * 40_000}]
    table = warehouse.create("people", columns, good + bad)
    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    reasons = {(r.key, r.operation): r.reason for r in report.rejected}
    assert set(reasons) == {("5", "source"), ("<NULL>", "source"), ("99", "source")}
    assert "2 source rows share this key" in reasons[("5", "source")]
    assert "NULL" in reasons[("<NULL>", "source")] and "'id'" in reasons[("<NULL>", "source")]
    assert "32,000" in reasons[("99", "source")]
    sent = {r["id"]: r for r in good if r["id"] != 5}
    assert emulator.snapshot()["people"] == expected_people(sent.values())

    warehouse.replace(table, good)  # duplicate resolved: 5 is sent; 99 is gone, nothing to delete
    report = run_sync(PEOPLE, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.deleted, report.rejected) == (1, 0, [])
    assert emulator.snapshot()["people"] == expected_people(good)


def test_missing_column_fails_before_sending(warehouse: Warehouse, emulator: Emulator, client) -> None:
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(3)))
    wrong = SyncDefinition(name="people", table="people", mapping=People(id_column="id", traits=["plan", "nope"]))
    with pytest.raises(SourceError, match=r"column 'nope'.*'id', 'email', 'plan', 'seats'"):
        run_sync(wrong, warehouse=warehouse.engine, client=client)
    missing_table = SyncDefinition(name="people", table="no_such_table", mapping=People(id_column="id"))
    with pytest.raises(SourceError, match="'no_such_table' does not exist"):
        run_sync(missing_table, warehouse=warehouse.engine, client=client)
    assert emulator.stats()["requests"] == 0


def test_odd_table_names_and_queries(warehouse: Warehouse, emulator: Emulator, client) -> None:
    name = 'Kunden "VIP" Übersicht'
    rows = [{"Kunden ID": i, "at": f"value {i}"} for i in range(1, 6)]
    warehouse.create(name, {"Kunden ID": sa.Integer, "at": sa.String(20)}, rows)
    by_table = SyncDefinition(name="odd", table=name, mapping=People(id_column="Kunden ID"))
    assert run_sync(by_table, warehouse=warehouse.engine, client=client).inserted == 5
    assert emulator.snapshot()["people"]["3"]["traits"] == {"at": "value 3"}

    quote = '"' if warehouse.kind != "mariadb" else "`"
    quoted = f'{quote}{name.replace(quote, quote * 2)}{quote}'
    by_query = SyncDefinition(name="odd-query", query=f"SELECT * FROM {quoted} WHERE {quote}Kunden ID{quote} > 3",
                              mapping=Objects(id_column="Kunden ID"))
    assert run_sync(by_query, warehouse=warehouse.engine, client=client).inserted == 2
    assert emulator.snapshot()["objects"]["1"] == {"4": {"at": "value 4"}, "5": {"at": "value 5"}}


def test_separate_state_database(warehouse: Warehouse, emulator: Emulator, client, tmp_path) -> None:
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 11)))
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}", table_prefix="sync_")
    assert run_sync(PEOPLE, warehouse=warehouse.engine, client=client, state=store).inserted == 10
    assert run_sync(PEOPLE, warehouse=warehouse.engine, client=client, state=store).unchanged == 10
    assert not sa.inspect(warehouse.engine).has_table("cdp_state")
    assert sa.inspect(store.engine).has_table("sync_state")


def test_people_by_email_in_upsert_mode(warehouse: Warehouse, emulator: Emulator, client) -> None:
    rows = [{"email": f"p{i}@example.com", "plan": "free"} for i in range(5)]
    warehouse.create("leads", {"email": sa.String(100), "plan": sa.String(20)}, rows)
    with pytest.raises(SourceError, match="identified only by email cannot be deleted.*mode='upsert'"):
        SyncDefinition(name="leads", table="leads", mapping=People(email_column="email"))
    leads = SyncDefinition(name="leads", table="leads", mapping=People(email_column="email", active=True),
                           mode="upsert")
    assert run_sync(leads, warehouse=warehouse.engine, client=client).inserted == 5
    assert emulator.snapshot()["people"] == {
        f"email:{r['email']}": {"traits": {"email": r["email"], "plan": "free"}, "active": True} for r in rows}


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_a_run_leaves_the_garbage_collector_as_it_found_it(warehouse: Warehouse, emulator: Emulator, client) -> None:
    """A run freezes the objects alive before it out of full collections while it runs (for speed) and unfreezes them
    after; a process that froze objects itself (a pre-fork server) keeps exactly its own freeze."""
    warehouse.create("people", PEOPLE_COLUMNS, people_rows(range(1, 51)))
    before = gc.get_freeze_count()
    assert run_sync(PEOPLE, warehouse=warehouse.engine, client=client).inserted == 50
    assert gc.get_freeze_count() == before

    gc.freeze()
    try:
        assert run_sync(PEOPLE, warehouse=warehouse.engine, client=client, full_resync=True).updated == 50
        assert gc.get_freeze_count() > 0  # not undone (it shrinks only by the frozen objects freed meanwhile)
    finally:
        gc.unfreeze()
