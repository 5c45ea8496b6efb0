"""`dagster-cdp status`, `explain` and `plan` on state built by real syncs to the emulator, checked by their exact text
and JSON, on SQLite, DuckDB and PostgreSQL (in-process through click's runner; one test runs the installed command)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from dagster_cdp import Emulator, FaultConfig, StateStore, SyncDefinition, run_sync
from dagster_cdp.cli import cli
from dagster_cdp.encoding import dumps
from dagster_cdp.client import PipelinesClient
from dagster_cdp.dagster.defs_file import read_defs_file
from dagster_cdp.sync.locks import database_turns
from dagster_cdp.sync.mapping import canonical_json, hash_hex
from dagster_cdp.sync.message_ids import MESSAGE_ID_NAMESPACE
from dagster_cdp.sync.partitions import partition_name, partition_of
from dagster_cdp.sync.report import SyncReport
from tests.test_sync_state import KilledBeforeSettling
from tests.warehouses import Warehouse

DUCKDB = pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)  # one process at a time has its file
SQLITE = pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)  # where the warehouse does not matter
WAREHOUSES = pytest.mark.parametrize("warehouse", ["sqlite", "duckdb", "postgresql"], indirect=True)

DEFS = """\
type: dagster_cdp.CustomerIOSyncComponent
attributes:
  syncs:
    - name: people
      kind: people
      table: people
      id: id
      max_row_attempts: 2
    - name: members
      kind: people
      table: people
      id: id
      partitions: 2
      max_delete_fraction: 1
    - name: events
      kind: events
      table: events
      id: id
      event: event
      user_id: user_id
    - name: leads
      kind: people
      table: leads
      id: id
"""
TEXT = sa.String(20)
PORTABLE = {"sqlite": "portable diff (the in-warehouse diff is not available on sqlite)"}


@dataclass(frozen=True)
class Known:
    """A warehouse whose state the syncs of DEFS built, and whose source has changed since."""

    warehouse: Warehouse
    defs: Path
    syncs: dict[str, SyncDefinition]

    @property
    def url(self) -> str:
        return self.warehouse.url


def cdp(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """The dagster-cdp command, run in this process."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def known(warehouse: Warehouse, emulator: Emulator, client: PipelinesClient, tmp_path: Path) -> Known:
    """people: 1, 2, 3, 5 accepted, 6 refused twice by the API; members (2 partitions): 1, 2, 3, 5 accepted; events:
    e1 accepted; leads: l1 acknowledged by a run killed before it folded that in. Then 2 changed, 3 removed, 4 added,
    5 duplicated and event e2 added, none of it synced."""
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFS)
    syncs = {d.name: d for d in read_defs_file(defs, warehouse=False).syncs}
    people = warehouse.create("people", {"id": TEXT, "name": TEXT}, _people("1", "2", "3", "5"))
    events = warehouse.create("events", {"id": TEXT, "user_id": TEXT, "event": TEXT},
                              [{"id": "e1", "user_id": "u1", "event": "Signed Up"}])
    warehouse.create("leads", {"id": TEXT, "name": TEXT}, [{"id": "l1", "name": "Lee"}])
    members = syncs["members"]
    for definition in (syncs["people"], syncs["events"], *(dataclasses.replace(members, partition=p) for p in (0, 1))):
        run_sync(definition, warehouse=warehouse.url, client=client)
    with pytest.raises(KeyboardInterrupt):
        run_sync(syncs["leads"], warehouse=warehouse.engine, client=client, state=KilledBeforeSettling(warehouse.engine))
    warehouse.insert(people, _people("6"))
    emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(400,)))  # the API refuses every call
    for _ in range(2):
        assert run_sync(syncs["people"], warehouse=warehouse.url, client=client).rejected[0].key == "6"
    emulator.set_faults(FaultConfig())
    warehouse.replace(people, [*_people("1", "4", "5", "5", "6"), {"id": "2", "name": "Bobby"}])
    warehouse.insert(events, [{"id": "e2", "user_id": "u2", "event": "Signed Up"}])
    warehouse.release()  # DuckDB: the command opens the file itself
    return Known(warehouse, defs, syncs)


def _people(*ids: str) -> list[dict[str, str]]:
    names = {"1": "Ada", "2": "Bob", "3": "Cy", "4": "Dee", "5": "Eve", "6": "Fay"}
    return [{"id": i, "name": names[i]} for i in ids]


def _identify(user_id: str, name: str) -> dict[str, Any]:
    return {"type": "identify", "userId": user_id, "traits": {"name": name}}


def _uuid5(name: str) -> str:
    """A messageId (see message_ids) made by Python's uuid module."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


def _sent(sync: str, operation: str, key: str, payload: dict[str, Any], version: int,
          call: dict[str, Any] | None = None) -> dict[str, Any]:
    """The call a run sends: `payload` (or `call`, for a deletion of the accepted `payload`) with its messageId."""
    payload_id = _uuid5(f"{sync}|{operation}|{key}|{hash_hex(canonical_json(payload))}|{version}")
    return {**(call or payload), "messageId": payload_id}


def _people_with(known: Known, tmp_path: Path, setting: str) -> Path:
    """A copy of the defs.yaml whose `people` sync has one more setting."""
    changed = tmp_path / "changed.yaml"
    changed.write_text(known.defs.read_text().replace("max_row_attempts: 2\n", f"max_row_attempts: 2\n      {setting}\n"))
    return changed


def _json(call: dict[str, Any]) -> str:
    return json.dumps(call, separators=(",", ":"), ensure_ascii=False)


# -- status ----------------------------------------------------------------------------------------------------------


@WAREHOUSES
def test_status_lists_every_sync_with_its_keys_acks_rejections_and_lock(known: Known) -> None:
    members = {p: sum(partition_of(k, 2) == p for k in "1235") for p in (0, 1)}
    runs = _last_runs(known)
    assert cdp("plan", str(known.defs), "--sync", "people", "--url", known.url).exit_code == 0  # not a run of it
    result = cdp("status", "--url", known.url)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"State at {known.url}\n"
        "SYNC          LAST RUN                           LIVE  PENDING ACKS  REJECTED  LOCK\n"
        f"events        {runs['events']}     1             0         0  free\n"
        f"leads         {runs['leads']}     0             1         0  free\n"
        f"members[1/2]  {runs['members[1/2]']}     {members[0]}             0         0  free\n"
        f"members[2/2]  {runs['members[2/2]']}     {members[1]}             0         0  free\n"
        f"people        {runs['people']}     4             0         1  free\n"
        "leads (last run): KeyboardInterrupt: killed\n"  # as the run was stopped (tests.test_sync_state)
    )
    document = json.loads(cdp("status", "--json", env={"WAREHOUSE_URL": known.url}).stdout)
    store = StateStore(known.url)
    last = {run["sync"]: json.loads(dumps(run)) for run in store.last_runs(dry_runs=False)}
    store.engine.dispose()
    assert (last["people"]["outcome"], last["people"]["dry_run"], last["people"]["rejected"]) == ("succeeded", False, 1)
    assert store.last_runs()[-1]["dry_run"] is True  # the plan's
    row = {"pending_acks": 0, "rejected_keys": 0, "locked": False}
    assert document == {"state": known.url, "history": True, "syncs": [
        {**row, "sync": "events", "live_keys": 1, "last_run": last["events"]},
        {**row, "sync": "leads", "live_keys": 0, "pending_acks": 1, "last_run": last["leads"]},
        {**row, "sync": "members[1/2]", "live_keys": members[0], "last_run": last["members[1/2]"]},
        {**row, "sync": "members[2/2]", "live_keys": members[1], "last_run": last["members[2/2]"]},
        {**row, "sync": "people", "live_keys": 4, "rejected_keys": 1, "last_run": last["people"]},
    ]}


@SQLITE
def test_status_says_no_history_before_the_history_tables(known: Known) -> None:
    store = StateStore(known.url)
    for table in (store.history.runs, store.history.rejections):
        table.drop(store.engine)  # as state tables an earlier version made
    store.engine.dispose()
    lines = cdp("status", "--url", known.url).stdout.splitlines()
    assert lines[1:3] == ["SYNC          LAST RUN    LIVE  PENDING ACKS  REJECTED  LOCK",
                          "events        no history     1             0         0  free"]
    assert json.loads(cdp("status", "--url", known.url, "--json").stdout)["history"] is False


def _last_runs(known: Known) -> dict[str, str]:
    """The LAST RUN column of each sync, as its newest row of the history table says."""
    store = StateStore(known.url)
    runs = {run["sync"]: f"{run['outcome']} {run['started_at']:%Y-%m-%d %H:%M:%S} UTC" for run in store.last_runs()}
    store.engine.dispose()
    width = max(map(len, runs.values()))
    return {sync: text.ljust(width) for sync, text in runs.items()}


@WAREHOUSES
def test_status_shows_the_lock_a_run_holds(known: Known) -> None:
    with StateStore(known.url).lock("people", timeout=0):
        held = json.loads(cdp("status", "--url", known.url, "--json").stdout)
        text = cdp("status", "--url", known.url).stdout
    assert {s["sync"]: s["locked"] for s in held["syncs"]} == {
        "events": False, "leads": False, "members[1/2]": False, "members[2/2]": False, "people": True}
    assert text.splitlines()[-2] == f"people        {_last_runs(known)['people']}     4             0         1  held"
    assert json.loads(cdp("status", "--url", known.url, "--json").stdout)["syncs"][-1]["locked"] is False  # released


@DUCKDB
def test_status_and_explain_while_a_run_has_the_duckdb_file(known: Known) -> None:
    database = Path(sa.make_url(known.url).database or "").resolve()
    with database_turns([database], 0, logging.getLogger("test")):  # as a run of another process holds it
        for args in (["status"], ["explain", "people", "1"]):
            result = cdp(*args, "--url", known.url)
            assert (result.exit_code, result.stdout) == (1, "")
            assert result.stderr == (
                f"Error: A run holds the DuckDB file {database} (DuckDB admits one process at a time), so its state "
                "cannot be read now; run this again when that run has ended.\n"
            )


# -- explain ---------------------------------------------------------------------------------------------------------


@WAREHOUSES
def test_explain_says_what_the_next_run_sends_for_each_key_and_why(known: Known) -> None:
    state = StateStore(known.url)
    accepted = {row[1]: row for row in state.iter_rows("people", chunk_rows=100)}
    state.engine.dispose()

    def live(key: str, name: str) -> str:
        return f"live at the API: accepted payload {hash_hex(canonical_json(_identify(key, name)))}, 1 accepted call"

    delete_3 = {"type": "track", "event": "User Deleted", "userId": "3"}
    refused = "payload {} was refused 2 times in a row: injected fault: try again later"
    expected = {
        "1": (live("1", "Ada"), "none", "unchanged: its payload is the accepted one: nothing to send", None),
        "2": (live("2", "Bob"), "none", "update: its payload changed since the accepted one",
              _sent("people", "update", "2", _identify("2", "Bobby"), 1)),
        "3": (live("3", "Cy"), "none", "delete: it is gone from the source, and the sync mirrors the source",
              _sent("people", "delete", "3", _identify("3", "Cy"), 1, delete_3)),
        "4": ("none: no call for this key was ever accepted or refused", "none",
              "insert: no call for this key was ever accepted", _sent("people", "insert", "4", _identify("4", "Dee"), 0)),
        "5": (live("5", "Eve"), "none",
              "source problem: 2 source rows share this key; none was sent; nothing is sent until the source row is "
              "fixed", None),
        "6": ("not live: never accepted", refused.format(hash_hex(canonical_json(_identify("6", "Fay")))),
              "held: rejected 2 times, not retried: injected fault: try again later (max_row_attempts=2); a changed "
              "payload is sent again", None),
        "9": ("none: no call for this key was ever accepted or refused", "none",
              "absent: it is neither in the source nor in the state: nothing to send", None),
    }
    for key, (described, rejections, why, call) in expected.items():
        result = cdp("explain", "people", key, "--defs", str(known.defs), "--url", known.url)
        assert result.exit_code == 0, result.output
        lines = [("sync", "people"), ("key", key), ("state", described), ("rejections", rejections),
                 ("pending acks", "none"), ("definition", str(known.defs)), ("next run", why)]
        lines += [("call", _json(call))] if call else []
        assert result.stdout == "".join(f"{f'{name}:'.ljust(14)}{value}\n" for name, value in lines)
        document = json.loads(cdp("explain", "people", key, "--defs", str(known.defs), "--url", known.url,
                                  "--json").stdout)
        assert document["next_run"] == {"action": why.split(":")[0].replace(" ", "_"),
                                        "why": why.split(": ", 1)[1], "call": call}
        assert (document["state"] is None) == (key in ("4", "9"))
        assert document["definition_from"] == str(known.defs)
        recorded = json.loads(cdp("explain", "people", key, "--url", known.url, "--json").stdout)  # no --defs
        assert {**recorded, "definition_from": None} == {**document, "definition_from": None}
        assert re.fullmatch(r"recorded by its run [0-9a-f-]{36} of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
                            recorded["definition_from"])
    six = json.loads(cdp("explain", "people", "6", "--defs", str(known.defs), "--url", known.url, "--json").stdout)
    assert six["state"] == {"live": False, "payload_hash": None, "delete_call": None, "version": 0, "attempts": 2,
                            "failed_hash": hash_hex(canonical_json(_identify("6", "Fay"))),
                            "last_error": "injected fault: try again later", "row_hash": None}
    two = json.loads(cdp("explain", "people", "2", "--defs", str(known.defs), "--url", known.url, "--json").stdout)
    assert (two["key_hash"], two["pending_acks"]) == (hash_hex(b"2"), 0)
    assert two["state"] == {"live": True, "payload_hash": accepted["2"][2], "version": 1, "attempts": 0,
                            "failed_hash": None, "last_error": None, "row_hash": accepted["2"][8],
                            "delete_call": {"type": "track", "event": "User Deleted", "userId": "2"}}


@WAREHOUSES
def test_explain_a_send_once_key_already_sent_and_one_not_yet(known: Known) -> None:
    sent = cdp("explain", "events", "e1", "--defs", str(known.defs), "--url", known.url, "--json")
    assert json.loads(sent.stdout)["next_run"] == {
        "action": "already_sent", "why": "send-once: it was sent and accepted once, and is never sent again",
        "call": None}
    new = json.loads(cdp("explain", "events", "e2", "--defs", str(known.defs), "--url", known.url, "--json").stdout)
    assert new["next_run"] == {
        "action": "insert", "why": "no call for this key was ever accepted",
        "call": {"type": "track", "event": "Signed Up", "userId": "u2", "properties": {},
                 "messageId": _uuid5("events|once|e2")}}


@WAREHOUSES
def test_explain_folds_in_pending_acknowledgements_without_writing_them(known: Known) -> None:
    result = cdp("explain", "leads", "l1", "--url", known.url)
    accepted = hash_hex(canonical_json(_identify("l1", "Lee")))
    assert result.stdout == (
        "sync:         leads\n"
        "key:          l1\n"
        f"state:        live at the API: accepted payload {accepted}, 1 accepted call\n"
        "rejections:   none\n"
        "pending acks: 1 (folded in above, as the next run will)\n"
        f"definition:   recorded by its run {_last_run(known, 'leads')}\n"
        "next run:     unchanged: its payload is the accepted one: nothing to send\n"
    )
    engine = sa.create_engine(known.url)
    with engine.begin() as connection:  # a history without the definition (or no history)
        connection.execute(sa.text("DELETE FROM cdp_runs"))
    engine.dispose()
    unknown = cdp("explain", "leads", "l1", "--url", known.url)
    assert unknown.stdout.endswith(
        "pending acks: 1 (folded in above, as the next run will)\n"
        "next run:     unknown: give the sync's defs.yaml (--defs) to see what a run would send\n"
    )
    with_defs = json.loads(cdp("explain", "leads", "l1", "--defs", str(known.defs), "--url", known.url, "--json").stdout)
    assert (with_defs["pending_acks"], with_defs["next_run"]["action"]) == (1, "unchanged")
    store = StateStore(known.url)
    assert list(store.iter_rows("leads", chunk_rows=10)) == []  # nothing was settled
    store.engine.dispose()


def _last_run(known: Known, sync: str) -> str:
    """`<run_id> of <started_at> UTC` of the newest run of `sync`."""
    store = StateStore(known.url)
    row = store.history.recorded_definition(sync)
    store.engine.dispose()
    assert row is not None
    return f"{row['run_id']} of {row['started_at']:%Y-%m-%d %H:%M:%S} UTC"


@WAREHOUSES
def test_explain_a_partitioned_sync_by_its_name_or_its_partition(known: Known) -> None:
    partition = partition_name("members", partition_of("4", 2), 2)
    other = partition_name("members", 1 - partition_of("4", 2), 2)
    by_name = json.loads(cdp("explain", "members", "4", "--defs", str(known.defs), "--url", known.url, "--json").stdout)
    assert (by_name["sync"], by_name["next_run"]["call"]) == (
        partition, _sent(partition, "insert", "4", _identify("4", "Dee"), 0))
    assert json.loads(cdp("explain", partition, "4", "--defs", str(known.defs), "--url", known.url,
                          "--json").stdout) == by_name
    wrong = cdp("explain", other, "4", "--defs", str(known.defs), "--url", known.url)
    assert (wrong.exit_code, wrong.stderr) == (
        1, f"Error: Key '4' is in partition {partition} of sync 'members', not in {other}.\n")


@WAREHOUSES
def test_explain_names_an_unknown_sync(known: Known) -> None:
    without = cdp("explain", "peple", "1", "--url", known.url)
    assert (without.exit_code, without.stderr) == (1, (
        f"Error: Sync 'peple' has no state at {known.url} (its syncs are events, leads, members[1/2], members[2/2], "
        "people); check its name, or give its defs.yaml (--defs) to explain a sync that never ran.\n"))
    declared = cdp("explain", "peple", "1", "--url", known.url, "--defs", str(known.defs))
    assert declared.stderr == (
        f"Error: Sync 'peple' is not declared in {known.defs}; it declares people, members, events, leads.\n")


@WAREHOUSES
def test_explain_finds_keys_of_several_columns(warehouse: Warehouse, tmp_path: Path) -> None:
    """Keys made of a literal and a column (objects) and of several columns (relationships, a JSON array)."""
    warehouse.create("accounts", {"id": TEXT, "name": TEXT}, [{"id": "a1", "name": "Acme"}, {"id": "a2", "name": "B"}])
    warehouse.create("memberships", {"user_id": TEXT, "account_id": TEXT, "role": TEXT},
                     [{"user_id": "u1", "account_id": "a1", "role": "admin"}, {"user_id": "u1", "account_id": "a2",
                                                                              "role": "viewer"}])
    warehouse.release()
    defs = tmp_path / "defs.yaml"
    defs.write_text("type: dagster_cdp.CustomerIOSyncComponent\nattributes:\n  syncs:\n"
                    "    - {name: accounts, kind: objects, table: accounts, id: id, object_type: 2}\n"
                    "    - {name: memberships, kind: relationships, table: memberships, user_id: user_id, "
                    "object_id: account_id}\n")

    def planned(sync: str, key: str) -> dict[str, Any]:
        result = cdp("explain", sync, key, "--defs", str(defs), "--url", warehouse.url, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["next_run"]

    account = {"type": "group", "groupId": "a2", "traits": {"name": "B", "objectTypeId": "2"}}
    assert planned("accounts", "2:a2") == {"action": "insert", "why": "no call for this key was ever accepted",
                                           "call": _sent("accounts", "insert", "2:a2", account, 0)}
    membership = {"type": "group", "userId": "u1", "groupId": "a1",
                  "traits": {"objectTypeId": "1", "relationshipAttributes": {"role": "admin"}}}
    assert planned("memberships", '["u1","1","a1"]')["call"] == _sent(
        "memberships", "insert", '["u1","1","a1"]', membership, 0)
    assert planned("memberships", '["u1","2","a1"]')["action"] == "absent"  # another object type
    assert planned("accounts", "1:a2")["action"] == "absent"


# -- plan ------------------------------------------------------------------------------------------------------------


@WAREHOUSES
def test_plan_prints_what_each_sync_would_send(known: Known) -> None:
    diff = PORTABLE.get(known.warehouse.kind, "in-warehouse diff")
    result = cdp("plan", str(known.defs), "--sync", "people", "--url", known.url)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"people: 6 source rows, {diff}\n"
        "  would send 1 insert, 1 update, 1 deletion; 1 unchanged; 2 rejected\n"
        "  rejected 5 (source): 2 source rows share this key; none was sent\n"
        "  rejected 6 (insert): rejected 2 times, not retried: injected fault: try again later\n"
        f"  insert: {_json(_sent('people', 'insert', '4', _identify('4', 'Dee'), 0))}\n"
        f"  update: {_json(_sent('people', 'update', '2', _identify('2', 'Bobby'), 1))}\n"
        f"  delete: {_json(_sent('people', 'delete', '3', _identify('3', 'Cy'), 1, {'type': 'track', 'event': 'User Deleted', 'userId': '3'}))}\n"
    )


@WAREHOUSES
def test_plan_json_has_each_partition_s_report(known: Known) -> None:
    result = cdp("plan", str(known.defs), "--sync", "members", "--sync", "events", "--url", known.url, "--json")
    document = json.loads(result.stdout)
    assert document["warehouse"] == known.url
    fields = [f.name for f in dataclasses.fields(SyncReport)]
    assert [list(entry) for entry in document["syncs"]] == [[*fields, "stops"]] * 3
    assert [entry["sync"] for entry in document["syncs"]] == ["members[1/2]", "members[2/2]", "events"]
    for entry, partition in zip(document["syncs"], (0, 1)):
        mine = {k for k in "1234567" if partition_of(k, 2) == partition}
        assert (entry["inserted"], entry["updated"], entry["deleted"], entry["unchanged"]) == (
            len(mine & {"4", "6"}), len(mine & {"2"}), len(mine & {"3"}), len(mine & {"1"}))
        assert entry["dry_run"] is True and entry["stops"] is None
    events = document["syncs"][2]
    assert (events["inserted"], events["unchanged"], events["samples"]) == (1, 1, {"insert": [
        {"type": "track", "event": "Signed Up", "userId": "u2", "properties": {},
         "messageId": _uuid5("events|once|e2")}]})


@SQLITE
def test_plan_and_explain_with_a_cap_on_changes_per_run(known: Known, tmp_path: Path) -> None:
    capped = _people_with(known, tmp_path, "max_changes_per_run: 2")
    entry = json.loads(cdp("plan", str(capped), "--sync", "people", "--url", known.url, "--json").stdout)["syncs"][0]
    assert (entry["inserted"] + entry["updated"] + entry["deleted"], entry["deferred"]) == (2, 1)
    text = cdp("plan", str(capped), "--sync", "people", "--url", known.url).stdout.splitlines()
    assert text[1].endswith("; 1 unchanged; 1 left for later runs (max_changes_per_run); 2 rejected")
    why = json.loads(cdp("explain", "people", "4", "--defs", str(capped), "--url", known.url, "--json").stdout)
    assert why["next_run"]["why"] == ("no call for this key was ever accepted; a run sends at most 2 changes "
                                      "(max_changes_per_run), the next run goes on")


@WAREHOUSES
def test_plan_reports_a_sync_the_delete_guard_stops(known: Known, tmp_path: Path) -> None:
    strict = _people_with(known, tmp_path, "max_delete_fraction: 0.1")
    entry = json.loads(cdp("plan", str(strict), "--sync", "people", "--url", known.url, "--json").stdout)["syncs"][0]
    assert entry["stops"] == (
        "Sync 'people' aborted: it would delete 1 of 4 synced keys (25%), over max_delete_fraction=10%. Nothing was "
        "sent. Check the source; if the deletions are intended, run again with force=True (a full resync does not "
        "override this guard) or raise max_delete_fraction.")
    assert (entry["inserted"], entry["updated"], entry["deleted"]) == (1, 1, 1)  # what it would send if forced
    text = cdp("plan", str(strict), "--sync", "people", "--url", known.url).stdout.splitlines()
    assert text[1:3] == [f"  stops: {entry['stops']}",
                         "  forced, would send 1 insert, 1 update, 1 deletion; 1 unchanged; 2 rejected"]


@SQLITE
def test_plan_renders_env_templates_and_names_an_unset_variable(known: Known, tmp_path: Path) -> None:
    templated = tmp_path / "templated.yaml"
    templated.write_text(
        known.defs.read_text()
        .replace("attributes:\n", "attributes:\n  customerio:\n    api_key: \"{{ env.CDP_TEST_KEY }}\"\n"
                                  "  warehouse:\n    url: \"{{ env.CDP_TEST_WAREHOUSE }}\"\n")
        .replace("      table: events\n", "      table: \"{{ env('CDP_TEST_EVENTS') }}\"\n"))
    env = {"CDP_TEST_WAREHOUSE": known.url, "CDP_TEST_EVENTS": "events", "CDP_TEST_KEY": None, "WAREHOUSE_URL": None}
    planned = cdp("plan", str(templated), "--sync", "events", "--json", env=env)  # no API key needed
    assert planned.exit_code == 0, planned.output
    assert [(s["sync"], s["inserted"]) for s in json.loads(planned.stdout)["syncs"]] == [("events", 1)]
    unset = cdp("plan", str(templated), env={**env, "CDP_TEST_WAREHOUSE": None})
    assert (unset.exit_code, unset.stderr) == (1, (
        f"Error: {templated}: warehouse (CustomerIOWarehouseResource): url: '{{{{ env.CDP_TEST_WAREHOUSE }}}}' "
        "rendered to nothing; is the environment variable it reads set?\n"))
    given = cdp("plan", str(templated), "--sync", "events", "--url", known.url, env={**env, "CDP_TEST_WAREHOUSE": None})
    assert given.exit_code == 0, given.output  # --url wins, so the block's variable need not be set
    function = cdp("plan", str(templated), "--url", known.url, env={**env, "CDP_TEST_EVENTS": None})
    assert function.exit_code == 1
    assert "Environment variable CDP_TEST_EVENTS is not set" in function.stderr


# -- errors and the installed command ----------------------------------------------------------------------------------


@SQLITE
def test_errors_name_the_thing_and_the_fix_and_never_the_password(known: Known) -> None:
    missing = cdp("status", env={"WAREHOUSE_URL": None})
    assert (missing.exit_code, missing.stderr) == (1, (
        "Error: No warehouse given: pass --url or set WAREHOUSE_URL to its SQLAlchemy URL (e.g. "
        "postgresql+psycopg://user@host/db).\n"))
    refused = cdp("status", "--url", "postgresql+psycopg://cdp:s3cret@127.0.0.1:1/test")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: cannot connect to postgresql+psycopg://cdp:***@127.0.0.1:1/test: ")
    assert "s3cret" not in refused.output and len(refused.stderr.splitlines()) == 1
    unknown = cdp("plan", str(known.defs), "--sync", "nobody", "--url", known.url)
    assert unknown.stderr == (
        f"Error: {known.defs} declares no sync 'nobody'; its syncs are people, members, events, leads.\n")


@DUCKDB
def test_the_installed_command_runs_status(known: Known) -> None:
    """The console script the package installs, as an operator runs it."""
    command = Path(sys.executable).with_name("dagster-cdp")
    env = {**os.environ, "WAREHOUSE_URL": known.url,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([str(command), "status", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [s["sync"] for s in json.loads(done.stdout)["syncs"]] == [
        "events", "leads", "members[1/2]", "members[2/2]", "people"]
