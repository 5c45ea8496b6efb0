"""The bytes of every call a sync sends, messageIds included, are pinned: a faster path must send the same calls.

Pinned in tests/pinned_calls.json from the code before the first-sync speed-ups (issue 15); rewrite it only for an
intended change of what is sent (`CDP_PIN_CALLS=1`), since a changed messageId resends what was already accepted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from dagster_cdp import Emulator, People, SyncDefinition, run_sync
from dagster_cdp.client import PipelinesClient
from dagster_cdp.encoding import utc_iso
from dagster_cdp.sync.message_ids import MESSAGE_ID_NAMESPACE, digest_sql, uuid_sql
from dagster_cdp.sync.values import to_json_value
from tests.test_exactness_properties import KINDS, _create
from tests.warehouses import Warehouse

PINNED = Path(__file__).with_name("pinned_calls.json")
COLUMNS = ["integer", "decimal", "text", "double", "moment", "flag"]
ROWS = [
    (2**63 - 1, Decimal("12345678901234567890.123456789012345678"), "café ☕ \"quoted\" \\ \n", 0.1, dt.datetime(1999, 12, 31, 23, 59, 59), True),
    (-(2**63), Decimal("-0.000000000000000001"), "", -1e-7, dt.datetime(1900, 1, 1), False),
    (0, Decimal("0"), "𝄞 emoji 😀", 1.5e300, dt.datetime(2200, 1, 1), None),
    (None, None, None, None, None, None),
    (42, Decimal("1.500000000000000000"), "plain", 3.0, dt.datetime(2024, 2, 29, 12, 0, 0), True),
]
_SENT_AT = re.compile(rb',"sentAt":"[^"]*"}$')


def _calls(bodies: list[bytes]) -> list[str]:
    """Each call of these /v1/batch bodies as the exact text it was sent as, sorted (the order of calls may vary),
    then what followed the calls in each body but its `sentAt`."""
    decoder, calls, after = json.JSONDecoder(), [], set()
    for body in bodies:
        text = _SENT_AT.sub(b"}", body).decode()
        assert text.startswith('{"batch":[')
        at = len('{"batch":[')
        while text[at] != "]":
            _, end = decoder.raw_decode(text, at)
            calls.append(text[at:end])
            at = end + (text[end] == ",")
        after.add(text[at:])
    return sorted(calls) + sorted(after)


@pytest.mark.parametrize("warehouse", ["duckdb", "sqlite", "postgresql"], indirect=True)
def test_first_sync_resync_and_deletion_send_the_pinned_bytes(warehouse: Warehouse, emulator: Emulator) -> None:
    kinds = [k for k in COLUMNS if warehouse.kind != "sqlite" or KINDS[k][2]]
    rows = [tuple(v for k, v in zip(COLUMNS, row) if k in kinds) for row in ROWS]
    _create(warehouse, "people", kinds, rows)
    warehouse.release()
    bodies: list[bytes] = []
    sync = SyncDefinition(name="pinned", table="people", mapping=People(id_column="id"), mode="mirror",
                          max_delete_fraction=1.0)
    sent = {}
    with PipelinesClient("test-key", base_url=emulator.url, max_retry_seconds=20) as client:
        client._http.event_hooks["request"].append(lambda request: bodies.append(request.read()))
        for run, full_resync in (("first", False), ("resync", True)):
            run_sync(sync, warehouse=warehouse.url, client=client, full_resync=full_resync)
            sent[run], bodies[:] = _calls(bodies), []
            _message_ids_follow_the_scheme(warehouse, sent[run], version=0 if run == "first" else 1)
        with sa.create_engine(warehouse.url).begin() as connection:
            connection.exec_driver_sql("DELETE FROM people WHERE id IN (0, 3)")
        warehouse.release()
        run_sync(sync, warehouse=warehouse.url, client=client)
        sent["deletion"] = _calls(bodies)
    assert [len(sent[run]) for run in sent] == [len(rows) + 1, len(rows) + 1, 3]
    if os.environ.get("CDP_PIN_CALLS"):
        pinned = json.loads(PINNED.read_text()) if PINNED.exists() else {}
        PINNED.write_text(json.dumps({**pinned, warehouse.kind: sent}, indent=1, ensure_ascii=False) + "\n")
    assert sent == json.loads(PINNED.read_text())[warehouse.kind]


def _message_ids_follow_the_scheme(warehouse: Warehouse, calls: list[str], version: int) -> None:
    """uuid5 of `sync|operation|key|payload_hash|version` (see message_ids), from the accepted state."""
    engine = sa.create_engine(warehouse.url)
    with engine.connect() as connection:
        hashes = dict(connection.exec_driver_sql("SELECT key, payload_hash FROM cdp_state").fetchall())
    engine.dispose()
    operation = "insert" if version == 0 else "resync"
    for call in calls[:-1]:
        sent = json.loads(call)
        name = f"pinned|{operation}|{sent['userId']}|{hashes[sent['userId']]}|{version}"
        assert sent["messageId"] == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
CALLS = st.tuples(st.sampled_from(["insert", "update", "resync", "delete"]), NAMES,
                  st.text("0123456789abcdef", min_size=32, max_size=32), st.integers(0, 2**40))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(sync=NAMES, calls=st.lists(CALLS, min_size=1, max_size=20))
def test_message_ids_made_in_sql_are_uuid5_of_the_documented_names(sync: str, calls: list[tuple]) -> None:
    db = duckdb.connect()
    db.execute("CREATE TABLE plan (operation VARCHAR, key VARCHAR, payload_hash VARCHAR, version BIGINT)")
    db.executemany("INSERT INTO plan VALUES (?, ?, ?, ?)", calls)
    for send_once in (False, True):
        made = db.execute(f"SELECT operation, key, payload_hash, version, {uuid_sql('d')} "
                          f"FROM (SELECT *, {digest_sql(send_once=send_once)} AS d FROM plan)", [sync]).fetchall()
        for operation, key, payload_hash, version, made_id in made:
            name = f"{sync}|once|{key}" if send_once else f"{sync}|{operation}|{key}|{payload_hash}|{version}"
            assert made_id == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(moment=st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)))
def test_a_naive_datetime_is_sent_as_utc_iso(moment: dt.datetime) -> None:
    assert to_json_value(moment, "c") == utc_iso(moment)
