"""The state store on each database, and how state drives retries of rejected rows."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from dagster_cdp import Objects, People, StateStore, SyncDefinition, run_sync
from dagster_cdp.sync.state import KeyState
from tests.warehouses import Warehouse


def test_state_round_trips_long_unicode_keys_and_replaces_per_key(warehouse: Warehouse) -> None:
    store = StateStore(warehouse.engine)
    store.create_tables()
    store.create_tables()  # idempotent
    long_key = "ключ-" + "é" * 3000
    store.record("s", [KeyState("a" * 32, long_key, "1" * 32, '{"type":"track"}', 1, 0, None, None),
                       KeyState("b" * 32, "b", None, None, 0, 1, "2" * 32, "bad value")])
    store.record("other", [KeyState("a" * 32, "same hash, other sync", "3" * 32, None, 1, 0, None, None)])
    assert store.settle("s") == 2 and not list(store.iter_rows("other", chunk_rows=1))
    store.record("s", [KeyState("b" * 32, "b", "2" * 32, None, 1, 0, None, None)])
    store.record("s", [KeyState("b" * 32, "b", "4" * 32, None, 2, 0, None, None, "5" * 32)])  # the latest wins
    assert store.settle("s") == 2 and store.settle("s") == 0
    rows = sorted(tuple(r) for r in store.iter_rows("s", chunk_rows=1))
    assert rows == [("a" * 32, long_key, "1" * 32, '{"type":"track"}', 1, 0, None, None, None),
                    ("b" * 32, "b", "4" * 32, None, 2, 0, None, None, "5" * 32)]
    assert store.settle("other") == 1
    assert [row[1] for row in store.iter_rows("other", chunk_rows=1)] == ["same hash, other sync"]
    store.save_fingerprint("s", "f" * 32, {"mapping": {"kind": "People"}})
    store.save_fingerprint("s", "e" * 32, {"mapping": {"kind": "Objects"}})
    assert store.fingerprint("s") == ("e" * 32, {"mapping": {"kind": "Objects"}})
    assert store.fingerprint("never-run") is None


def test_state_in_a_named_schema_and_schema_qualified_source(warehouse: Warehouse, emulator: Emulator,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    warehouse.create("things", {"id": sa.String(10), "name": sa.String(20)}, [{"id": "a", "name": "A"}])
    store = StateStore(warehouse.engine, schema=warehouse.schema, table_prefix="x_")
    sync = SyncDefinition(name="things", table=f"{warehouse.schema}.things", mapping=Objects(id_column="id"))
    with PipelinesClient("test-key", base_url=emulator.url) as client, caplog.at_level(logging.INFO):
        assert run_sync(sync, warehouse=warehouse.engine, client=client, state=store).inserted == 1
        assert run_sync(sync, warehouse=warehouse.engine, client=client, state=store).unchanged == 1
    assert sa.inspect(warehouse.engine).has_table("x_state", schema=warehouse.schema)
    assert "sync 'things': 1 source rows; sent 0 inserts, 0 updates, 0 deletions; 1 unchanged" in caplog.text


def test_rejected_deletion_keeps_state_is_retried_then_skipped(warehouse: Warehouse, emulator: Emulator) -> None:
    rows = [{"id": f"o{i}", "name": f"Object {i}"} for i in range(8)]
    table = warehouse.create("things", {"id": sa.String(10), "name": sa.String(20)}, rows)
    sync = SyncDefinition(name="things", table="things", mapping=Objects(id_column="id"), max_row_attempts=2)
    store = StateStore(warehouse.engine)
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        run_sync(sync, warehouse=warehouse.engine, client=client)
        # Corrupt the stored deletion of o0 so the API refuses it, then remove o0 from the source.
        with store.engine.begin() as connection:
            connection.execute(sa.update(store.state).where(store.state.c.key == "1:o0").values(
                delete_call='{"type":"track","event":"Object Deleted","anonymousId":"o0",'
                            '"properties":{"objectId":"o0","objectTypeId":"x"}}'))
        warehouse.replace(table, rows[1:])

        for attempt in (1, 2):
            report = run_sync(sync, warehouse=warehouse.engine, client=client)
            assert report.deleted == 0
            [rejection] = report.rejected
            assert (rejection.key, rejection.operation) == ("1:o0", "delete")
            assert "objectTypeId must be a string of digits" in rejection.reason  # the server's own words
            assert "o0" in emulator.snapshot()["objects"]["1"]
        requests = emulator.stats()["requests"]
        report = run_sync(sync, warehouse=warehouse.engine, client=client)
        [skipped] = report.rejected
        assert (skipped.key, skipped.operation) == ("1:o0", "delete")
        assert "deletion rejected 2 times, not retried" in skipped.reason and "objectTypeId" in skipped.reason
        assert emulator.stats()["requests"] == requests  # attempts used up: not sent again


class KilledBeforeSettling(StateStore):
    """A first run killed after its last request was acknowledged and recorded, before it folded the
    acknowledgements in (a first run settles only then: before it there is no state to settle)."""

    def settle(self, sync: str) -> int:
        raise KeyboardInterrupt("killed")


def test_a_run_killed_before_settling_is_folded_in_by_the_next_and_nothing_is_resent(
        warehouse: Warehouse, emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    warehouse.create("things", {"id": sa.String(10), "name": sa.String(20)},
                     [{"id": f"o{i}", "name": f"Object {i}"} for i in range(50)])
    sync = SyncDefinition(name="things", table="things", mapping=Objects(id_column="id"))
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        with pytest.raises(KeyboardInterrupt):
            run_sync(sync, warehouse=warehouse.engine, client=client, state=KilledBeforeSettling(warehouse.engine))
        assert len(emulator.snapshot()["objects"]["1"]) == 50
        requests = emulator.stats()["requests"]
        with caplog.at_level(logging.INFO):
            report = run_sync(sync, warehouse=warehouse.engine, client=client)
    assert (report.inserted, report.unchanged) == (0, 50)
    assert emulator.stats()["requests"] == requests
    assert "a previous run stopped before settling its state; folded its 50 acknowledgements" in caplog.text
    assert len(list(StateStore(warehouse.engine).iter_rows("things", chunk_rows=100))) == 50


def _sync_collations(warehouse: Warehouse) -> set[str]:
    with warehouse.engine.connect() as connection:
        return set(connection.exec_driver_sql(
            "SELECT collation_name FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND table_name LIKE 'cdp\\_%%' AND column_name = 'sync'").scalars())


@pytest.mark.parametrize("warehouse", ["mariadb"], indirect=True)
def test_sync_names_differing_only_in_case_keep_separate_state(warehouse: Warehouse, emulator: Emulator) -> None:
    warehouse.create("customers", {"id": sa.String(10), "plan": sa.String(10)},
                     [{"id": "a", "plan": "gold"}, {"id": "b", "plan": "gold"}])
    warehouse.create("leads", {"id": sa.String(10), "plan": sa.String(10)}, [{"id": "c", "plan": "trial"}])
    upper = SyncDefinition(name="People", table="customers", mapping=People(id_column="id"))
    lower = SyncDefinition(name="people", table="leads", mapping=People(id_column="id"))
    with PipelinesClient("test-key", base_url=emulator.url) as client:
        for _ in range(2):  # the second round finds each sync's own state, and deletes nothing of the other's
            assert run_sync(upper, warehouse=warehouse.engine, client=client).deleted == 0
            assert run_sync(lower, warehouse=warehouse.engine, client=client).deleted == 0
    assert emulator.snapshot()["people"] == {"a": {"traits": {"plan": "gold"}, "active": False},
                                             "b": {"traits": {"plan": "gold"}, "active": False},
                                             "c": {"traits": {"plan": "trial"}, "active": False}}
    assert (warehouse.accepted_keys("People"), warehouse.accepted_keys("people")) == ({"a", "b"}, {"c"})
    with warehouse.engine.connect() as connection:
        assert sorted(connection.exec_driver_sql("SELECT sync FROM cdp_syncs").scalars()) == ["People", "people"]
    assert _sync_collations(warehouse) == {"utf8mb4_bin"}


@pytest.mark.parametrize("warehouse", ["mariadb"], indirect=True)
def test_state_tables_of_an_earlier_version_are_made_exact_in_place(warehouse: Warehouse) -> None:
    store = StateStore(warehouse.engine)
    store.create_tables()
    store.save_fingerprint("People", "f" * 32, {})
    store.record("People", [KeyState("a" * 32, "a", "1" * 32, None, 1, 0, None, None)])
    with warehouse.engine.begin() as connection:  # the tables as an earlier version created them
        for table in ("cdp_syncs", "cdp_state", "cdp_acks", "cdp_cursors"):
            connection.exec_driver_sql(f"ALTER TABLE {table} MODIFY sync VARCHAR(200) "
                                       "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL")
        assert connection.exec_driver_sql("SELECT sync FROM cdp_syncs WHERE sync = 'people'").scalar() == "People"

    upgraded = StateStore(warehouse.engine)
    assert upgraded.fingerprint("people") is None and upgraded.fingerprint("People") == ("f" * 32, {})
    assert _sync_collations(warehouse) == {"utf8mb4_bin"}
    assert upgraded.settle("People") == 1 and [r[1] for r in upgraded.iter_rows("People", chunk_rows=10)] == ["a"]
