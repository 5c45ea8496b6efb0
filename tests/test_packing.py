"""Properties of the batch packer: never over a limit, nothing lost, order kept."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dagster_cdp.encoding import encode
from dagster_cdp.packing import MAX_BODY_BYTES, MAX_CALL_BYTES, BatchPacker


def pack(sizes, context=None, max_body_bytes=MAX_BODY_BYTES):
    packer = BatchPacker(context=context, max_body_bytes=max_body_bytes)
    batches = []
    for index, size in enumerate(sizes):
        call = {"type": "identify", "userId": str(index), "traits": {"pad": "x" * size}}
        full = packer.add(call, encode(call))
        if full is not None:
            batches.append(full)
    batches.extend(packer.flush())
    return packer, batches


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=MAX_CALL_BYTES - 60), max_size=80),
    context=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=50), max_size=3)),
)
def test_bodies_stay_under_the_limit_and_keep_every_call_in_order(sizes, context):
    packer, batches = pack(sizes, context)
    received = []
    for batch in batches:
        body = packer.body(batch)
        assert len(body) <= MAX_BODY_BYTES
        decoded = orjson.loads(body)
        assert (decoded.get("context") or None) == (context or None)
        assert decoded["sentAt"].endswith("Z")
        received.extend(call["userId"] for call in decoded["batch"])
    assert received == [str(i) for i in range(len(sizes))]


def test_uniform_small_calls_fill_at_least_95_percent_of_each_body():
    packer, batches = pack([250] * 20_000)
    sizes = [len(packer.body(batch)) for batch in batches]
    assert max(sizes) <= MAX_BODY_BYTES
    assert min(sizes[:-1]) >= 0.99 * MAX_BODY_BYTES


def test_splitting_a_batch_keeps_every_call():
    packer, (batch,) = pack([10] * 7)
    first, second = batch.split()
    assert [m["userId"] for m in first.messages + second.messages] == [str(i) for i in range(7)]
    for half in (first, second):
        assert len(packer.body(half)) == len(orjson.dumps(orjson.loads(packer.body(half))))
