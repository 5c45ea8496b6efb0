"""Properties, checked on generated inputs: the packer never goes over a limit, loses nothing and keeps order;
the sync engine converges (Customer.io == warehouse) after any sequence of edits.

The packer's basic property (ASCII calls, batch context) is in test_packing.py; here: multi-byte text,
batch-level integrations, bodies barely larger than one call, and the client end to end over HTTP.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from dagster_cdp.encoding import encode
from dagster_cdp.packing import MAX_BODY_BYTES, MAX_CALL_BYTES, BatchPacker
from dagster_cdp import People, SyncDefinition, run_sync
from tests.reliability import World, held, sync_all
from tests.warehouses import Warehouse

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
BATCH_FIELDS = st.one_of(st.none(), st.dictionaries(TEXT, TEXT, min_size=1, max_size=3))


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(st.tuples(st.integers(0, 12_000), st.sampled_from(["a", "é", "漢", "😀"])), max_size=60),
    context=BATCH_FIELDS,
    integrations=BATCH_FIELDS,
    room=st.integers(0, 3 * MAX_CALL_BYTES),
)
def test_packed_bodies_of_multibyte_calls_stay_under_any_limit_in_order(calls, context, integrations, room):
    """Sizes are bytes, not characters: a body of 4-byte emoji must be measured as such."""
    max_body = min(MAX_BODY_BYTES, MAX_CALL_BYTES + 1_000 + room)
    try:
        packer = BatchPacker(context=context, integrations=integrations, max_body_bytes=max_body)
    except ValueError:
        return  # batch-level fields leave no room for a call: refused up front, nothing silently dropped
    batches = []
    for index, (length, char) in enumerate(calls):
        call = {"type": "identify", "userId": str(index), "traits": {"t": char * (length // len(char.encode()))}}
        encoded = encode(call)
        if len(encoded) > MAX_CALL_BYTES:
            continue
        full = packer.add(call, encoded)
        if full is not None:
            batches.append(full)
    batches.extend(packer.flush())
    sent = []
    for batch in batches:
        body = packer.body(batch)
        assert len(body) <= max_body
        decoded = orjson.loads(body)
        assert decoded.get("context") == (context or None) and decoded.get("integrations") == (integrations or None)
        sent.extend(int(call["userId"]) for call in decoded["batch"])
    assert sent == [i for i, (length, char) in enumerate(calls)
                    if len(encode({"type": "identify", "userId": str(i),
                                   "traits": {"t": char * (length // len(char.encode()))}})) <= MAX_CALL_BYTES]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=80), text=TEXT)
def test_the_client_delivers_or_rejects_every_call_and_never_exceeds_a_limit(emulator_session: Emulator, sizes,
                                                                              text) -> None:
    emulator_session.reset()
    calls = [{"type": "identify", "userId": f"u{i}", "traits": {"text": text, "pad": "x" * size}}
             for i, size in enumerate(sizes)]
    with PipelinesClient("test-key", base_url=emulator_session.url) as client:
        report = client.send(calls)
    over = {c["userId"] for c in calls if len(encode(c)) > MAX_CALL_BYTES}
    assert {r.message["userId"] for r in report.rejected} == over
    assert report.accepted == len(calls) - len(over)
    stats = emulator_session.stats()
    assert stats["max_body_bytes"] <= MAX_BODY_BYTES and stats["max_call_bytes"] <= MAX_CALL_BYTES
    assert set(emulator_session.snapshot()["people"]) == {c["userId"] for c in calls} - over


# -- the engine ---------------------------------------------------------------------------------------------

ROW = st.fixed_dictionaries({
    "plan": st.sampled_from(["free", "pro", None]),
    "score": st.one_of(st.none(), st.integers(-3, 3), st.floats(-1e6, 1e6, allow_nan=False, width=32)),
    "note": st.one_of(st.none(), TEXT),
})
TABLE = st.dictionaries(st.integers(1, 25), ROW, max_size=25)  # ids repeat across steps: deleted keys come back
STEPS = st.lists(st.tuples(TABLE, st.booleans()), min_size=1, max_size=5)  # (table content, full resync?)
COLUMNS = {"id": sa.Integer, "plan": sa.String(10), "score": sa.Double, "note": sa.Text}  # FLOAT is 32-bit in DuckDB
SYNC = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))


def expected(table: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {str(i): {"traits": {k: v for k, v in row.items() if v is not None}, "active": False}
            for i, row in table.items()}


def converges(kind: str, emulator: Emulator, steps: list[tuple[dict[int, dict[str, Any]], bool]]) -> None:
    emulator.reset()
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(kind, f"{kind}:///{Path(tmp) / 'warehouse.db'}", "main")
        try:
            table = warehouse.create("people", COLUMNS)
            with PipelinesClient("test-key", base_url=emulator.url) as client:
                for content, full_resync in steps:
                    warehouse.replace(table, [{"id": i, **row} for i, row in content.items()])
                    report = run_sync(SYNC, warehouse=warehouse.engine, client=client, force=True,
                                      full_resync=full_resync)
                    assert report.rejected == []
                    assert emulator.snapshot()["people"] == expected(content)
                    requests = emulator.stats()["requests"]
                    assert run_sync(SYNC, warehouse=warehouse.engine, client=client).unchanged == len(content)
                    assert emulator.stats()["requests"] == requests
        finally:
            warehouse.release()


@pytest.mark.parametrize("kind", ["sqlite", "duckdb"])
def test_any_sequence_of_edits_converges(kind: str, emulator_session: Emulator) -> None:
    @settings(max_examples=12, deadline=None)
    @given(steps=STEPS)
    def check(steps):
        converges(kind, emulator_session, steps)

    check()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), edits=st.lists(st.floats(0.05, 0.6), min_size=1, max_size=2))
def test_people_objects_and_relationships_converge_after_any_edits(emulator_session: Emulator, seed: int,
                                                                    edits: list[float]) -> None:
    """Deleting a person or an object also removes their relationships at Customer.io; the syncs agree."""
    emulator_session.reset()
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse("sqlite", f"sqlite:///{Path(tmp) / 'warehouse.db'}", "main")
        world = World(warehouse, random.Random(seed), people=30, companies=8, memberships=40)
        try:
            with PipelinesClient("test-key", base_url=emulator_session.url) as client:
                sync_all(warehouse, client)
                for fraction in edits:
                    world.mutate(fraction)
                    sync_all(warehouse, client)
                    assert held(emulator_session.snapshot()) == world.expected()
        finally:
            warehouse.release()
