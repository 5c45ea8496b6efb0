"""The API client against the local emulator, over real HTTP."""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from decimal import Decimal

import pytest

import dagster_cdp.client as client_module
from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp.errors import AuthenticationError, DeliveryError, InvalidMessageError
from dagster_cdp.packing import MAX_BODY_BYTES, MAX_CALL_BYTES, EncodedCall

KEY = "test-key-0123456789"


@pytest.fixture
def emulator():
    with Emulator(api_keys={KEY, "pk_eu_bearerkey"}) as emu:
        yield emu


@pytest.fixture
def client(emulator):
    with PipelinesClient(KEY, base_url=emulator.url, max_retry_seconds=20) as client:
        yield client


def people(emu):
    return emu.snapshot()["people"]


def test_single_calls_reach_every_endpoint(emulator, client):
    client.identify("u1", traits={"email": "u1@example.com", "plan": "pro"})
    client.identify(traits={"email": "nobody@example.com"})
    client.group("acme", traits={"objectTypeId": "1", "name": "Acme"})
    client.group("acme", user_id="u1", traits={"objectTypeId": "1", "relationshipAttributes": {"role": "admin"}})
    client.track("Signed Up", user_id="u1", properties={"source": "ads"})
    client.page("Home", user_id="u1")
    client.screen("Feed", anonymous_id="anon-1")
    client.alias("old-id", "u1")

    state = emulator.snapshot()
    assert state["people"]["u1"]["traits"] == {"email": "u1@example.com", "plan": "pro"}
    assert "email:nobody@example.com" in state["people"]
    assert state["objects"]["1"]["acme"] == {"name": "Acme"}
    assert state["relationships"] == [
        {"userId": "u1", "objectTypeId": "1", "groupId": "acme", "attributes": {"role": "admin"}}
    ]
    assert [(e["type"], e.get("event") or e.get("name")) for e in state["events"]] == [
        ("track", "Signed Up"),
        ("page", "Home"),
        ("screen", "Feed"),
        ("alias", None),
    ]
    assert state["aliases"] == [{"previousId": "old-id", "userId": "u1"}]
    assert emulator.stats()["requests_per_path"] == {
        "/v1/identify": 2, "/v1/group": 2, "/v1/track": 1, "/v1/page": 1, "/v1/screen": 1, "/v1/alias": 1
    }


@pytest.mark.parametrize(
    "call, reason",
    [
        (lambda c: c.identify(None, traits={"plan": "pro"}), "identify needs"),
        (lambda c: c.track("Signed Up"), "needs a userId or an anonymousId"),
        (lambda c: c.track("", user_id="u1"), "needs an event name"),
        (lambda c: c.group("", traits={}), "group needs a groupId"),
        (lambda c: c.group("acme", traits={"objectTypeId": 1}), "objectTypeId must be a string of digits"),
        (lambda c: c.alias("", "u1"), "alias needs both"),
        (lambda c: c.track("Object Deleted", anonymous_id="a"), "needs properties.objectId"),
        (lambda c: c.identify("u1", traits={"score": math.nan}), "nan"),
        (lambda c: c.identify("u1", traits={"blob": "x" * MAX_CALL_BYTES}), "limit"),
    ],
)
def test_invalid_single_calls_are_refused_before_sending(emulator, client, call, reason):
    with pytest.raises(InvalidMessageError, match=reason):
        call(client)
    assert emulator.stats()["requests"] == 0


def test_values_are_encoded_as_the_api_expects(emulator, client):
    client.identify(
        "u1",
        traits={
            "created_at": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "naive": dt.datetime(2024, 5, 1, 12, 30),
            "birthday": dt.date(1990, 1, 2),
            "balance": Decimal("12.50"),
            "visits": Decimal("7"),
            "token": uuid.UUID(int=1),
            "nested": {"tags": ["a", "b"]},
        },
        message_id="my-own-id",
    )
    traits = people(emulator)["u1"]["traits"]
    assert traits == {
        "created_at": "2024-05-01T10:30:00Z",
        "naive": "2024-05-01T12:30:00Z",
        "birthday": "1990-01-02",
        "balance": 12.5,
        "visits": 7,
        "token": "00000000-0000-0000-0000-000000000001",
        "nested": {"tags": ["a", "b"]},
    }
    assert emulator.snapshot()["people"]["u1"]["active"] is True
    client.identify("u1", message_id="my-own-id")
    assert emulator.stats()["repeats"] == 1


def test_region_and_key_forms():
    assert PipelinesClient("abc").base_url == "https://cdp.customer.io"
    assert PipelinesClient("abc", region="eu").base_url == "https://cdp-eu.customer.io"
    assert PipelinesClient("sk_eu_abc").base_url == "https://cdp-eu.customer.io"
    assert PipelinesClient("abc", region="eu", base_url="http://proxy:1/").base_url == "http://proxy:1"
    with pytest.raises(ValueError, match="EU key but region 'us'"):
        PipelinesClient("pk_eu_abc", region="us")
    with pytest.raises(ValueError, match="must not end with /v1"):
        PipelinesClient("abc", base_url="https://cdp.customer.io/v1")
    with pytest.raises(ValueError, match="empty"):
        PipelinesClient("")


def test_bearer_keys_are_accepted(emulator):
    with PipelinesClient("pk_eu_bearerkey", base_url=emulator.url) as client:
        client.identify("u1")
    assert "u1" in people(emulator)


def test_wrong_key_fails_at_once_without_leaking_it(emulator, caplog):
    secret = "wrong-secret-key-42"
    caplog.set_level(logging.DEBUG)
    with PipelinesClient(secret, base_url=emulator.url) as client:
        with pytest.raises(AuthenticationError) as raised:
            client.send({"type": "identify", "userId": str(i)} for i in range(10))
        assert secret not in repr(client)
    assert emulator.stats()["requests"] == 1
    assert secret not in str(raised.value)
    assert secret not in caplog.text


def test_hundred_thousand_identifies_all_arrive_in_full_requests(emulator):
    emulator.stop()
    with Emulator(api_keys={KEY}, count_only=True) as counting:
        with PipelinesClient(KEY, base_url=counting.url) as client:
            calls = [
                {"type": "identify", "userId": f"user-{i:07d}", "traits": {"email": f"user-{i}@example.com", "n": i}}
                for i in range(100_000)
            ]
            report = client.send(calls)
        stats = counting.stats()
    assert report.accepted == 100_000 and not report.rejected
    assert stats["calls_received"] == 100_000
    assert stats["max_body_bytes"] <= MAX_BODY_BYTES
    minimum_requests = math.ceil(stats["bytes_received"] / MAX_BODY_BYTES)
    assert minimum_requests / stats["requests"] >= 0.95
    assert report.requests == stats["requests"]


def test_oversized_and_invalid_calls_are_rejected_and_the_rest_delivered(emulator, client):
    calls = [{"type": "identify", "userId": f"u{i}"} for i in range(50)]
    calls[10]["traits"] = {"bio": "x" * (MAX_CALL_BYTES + 1)}
    calls[20] = {"type": "track", "userId": "u20"}  # no event
    calls[30]["traits"] = {"score": math.inf}
    report = client.send(calls)
    assert report.accepted == 47
    reasons = {r.message.get("userId"): r.reason for r in report.rejected}
    assert set(reasons) == {"u10", "u20", "u30"}
    assert "32,000 bytes" in reasons["u10"]
    assert "event" in reasons["u20"]
    assert "inf" in reasons["u30"]
    assert set(people(emulator)) == {f"u{i}" for i in range(50)} - {"u10", "u20", "u30"}


def test_calls_encoded_by_the_sender_arrive_as_given_and_oversized_ones_are_refused(emulator, client):
    calls: list = [{"type": "identify", "userId": "u0", "traits": {"as": "dict"}}]
    calls += [EncodedCall({"messageId": f"m{i}"}, b'{"type":"identify","userId":"u%d","traits":{"n":%d},"messageId":"m%d"}'
                          % (i, i, i)) for i in range(1, 4)]
    oversized = b'{"type":"identify","userId":"u4","traits":{"bio":"%s"},"messageId":"m4"}' % (b"x" * MAX_CALL_BYTES)
    calls.append(EncodedCall({"messageId": "m4"}, oversized))
    results = list(client.deliver(calls))
    assert sorted(m["messageId"] for r in results for m in r.accepted)[1:] == ["m1", "m2", "m3"]
    [refused] = [rejection for r in results for rejection in r.rejected]
    assert refused.message == {"messageId": "m4"} and "32,000 bytes" in refused.reason
    assert {k: v["traits"] for k, v in people(emulator).items()} == {"u0": {"as": "dict"}, "u1": {"n": 1},
                                                                     "u2": {"n": 2}, "u3": {"n": 3}}


def test_batch_level_context_reaches_every_call(emulator, client):
    client.send(
        [{"type": "identify", "userId": f"u{i}", "traits": {"i": i}} for i in range(5)],
        context={"active": False},
        integrations={"All": True},
    )
    assert {user["active"] for user in people(emulator).values()} == {False}


def test_strict_mode_refusal_isolates_the_bad_calls(emulator, client, monkeypatch):
    # The server is stricter than the client here (as when the API adds a rule): its 400 must not
    # cost the good calls in the same batch.
    monkeypatch.setattr(client_module, "problem_with", lambda call: None)
    calls = [{"type": "identify", "userId": f"u{i}"} for i in range(40)]
    calls[7] = {"type": "identify", "traits": {"plan": "x"}}
    calls[33] = {"type": "group", "traits": {"name": "no id"}}
    report = client.send(calls)
    assert report.accepted == 38
    assert len(report.rejected) == 2
    assert all("identify" in r.reason or "group" in r.reason for r in report.rejected), report.rejected
    assert len(people(emulator)) == 38
    assert emulator.stats()["repeats"] == 0


@pytest.mark.parametrize(
    "faults",
    [
        FaultConfig(error_rate=0.4, error_statuses=(500, 502, 503, 429), seed=1),
        FaultConfig(reset_rate=0.3, seed=2),
        FaultConfig(apply_then_error_rate=0.4, seed=3),
    ],
    ids=["errors", "resets", "applied-then-500"],
)
def test_transient_faults_are_retried_until_everything_arrives(emulator, faults):
    emulator.set_faults(faults)
    with PipelinesClient(KEY, base_url=emulator.url, max_attempts=12, max_retry_seconds=60) as client:
        calls = [{"type": "identify", "userId": f"u{i}", "traits": {"pad": "x" * 2000}} for i in range(2000)]
        report = client.send(calls)
    assert report.accepted == 2000 and report.retries > 0
    assert len(people(emulator)) == 2000
    stats = emulator.stats()
    # A repeat can only come from a request that was applied but whose answer was lost.
    assert stats["repeats"] <= stats["faults_injected"]["apply_then_error"] * 250


def test_timeouts_are_retried(emulator):
    emulator.set_faults(FaultConfig(delay_rate=0.3, delay_seconds=1.0, seed=7))
    with PipelinesClient(KEY, base_url=emulator.url, timeout=0.5, max_attempts=10) as client:
        report = client.send({"type": "identify", "userId": f"u{i}"} for i in range(20))
        client.identify("single")
    assert report.accepted == 20
    assert len(people(emulator)) == 21


def test_retry_after_is_honoured_when_the_server_throttles():
    with Emulator(api_keys={KEY}, rate_limit=5, rate_period=1.0) as emu:
        with PipelinesClient(KEY, base_url=emu.url, rate_limit=1000, max_concurrency=2) as client:
            calls = [{"type": "identify", "userId": f"u{i}", "traits": {"pad": "x" * 30_000}} for i in range(200)]
            report = client.send(calls)
        assert report.accepted == 200
        assert emu.stats()["rate_limited"] > 0
        assert len(emu.snapshot()["people"]) == 200


def test_client_stays_under_its_rate_limit():
    with Emulator(api_keys={KEY}, rate_limit=10, rate_period=1.0) as emu:
        with PipelinesClient(KEY, base_url=emu.url, rate_limit=10, rate_period=1.0, max_concurrency=4) as client:
            calls = [{"type": "identify", "userId": f"u{i}", "traits": {"pad": "x" * 30_000}} for i in range(400)]
            report = client.send(calls)
        stats = emu.stats()
    assert report.accepted == 400
    assert stats["rate_limited"] == 0
    assert stats["max_requests_in_window"] <= 10


def test_unreachable_host_gives_up_with_a_clear_error():
    with PipelinesClient(KEY, base_url="http://127.0.0.1:9", max_attempts=3, max_retry_seconds=5) as client:
        delivered = []
        with pytest.raises(DeliveryError, match="127.0.0.1:9/v1/batch failed 3 times") as raised:
            for result in client.deliver({"type": "identify", "userId": f"u{i}"} for i in range(10)):
                delivered.extend(result.accepted)
    assert delivered == []
    assert KEY not in str(raised.value)


def test_a_delivery_error_says_what_got_through(emulator):
    calls = [{"type": "group", "traits": {"name": "no id"}}]  # refused before sending
    calls += [{"type": "identify", "userId": f"u{i}", "traits": {"pad": "x" * 20_000}} for i in range(200)]
    results = []
    with PipelinesClient(KEY, base_url=emulator.url, max_attempts=2, max_retry_seconds=5) as client:
        with pytest.raises(DeliveryError, match="HTTP 503") as raised:
            for result in client.deliver(calls):
                results.append(result)
                if result.accepted:
                    emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(503,)))
    report = raised.value.report
    assert report is not None
    assert 0 < report.accepted == sum(len(r.accepted) for r in results) == len(people(emulator)) < 200
    assert report.rejected == [rejection for r in results for rejection in r.rejected]
    assert [r.message for r in report.rejected] == [calls[0]]
    assert (report.requests, report.retries) == (sum(r.requests for r in results), sum(r.retries for r in results))


def test_a_failing_request_stops_the_delivery_but_reports_what_arrived(emulator):
    with PipelinesClient(KEY, base_url=emulator.url, max_attempts=2, max_retry_seconds=5) as client:
        accepted = []
        calls = ({"type": "identify", "userId": f"u{i}", "traits": {"pad": "x" * 20_000}} for i in range(200))
        results = client.deliver(calls)
        accepted.extend(next(results).accepted)
        emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(503,)))
        with pytest.raises(DeliveryError, match="HTTP 503"):
            for result in results:
                accepted.extend(result.accepted)
    ids = {call["userId"] for call in accepted}
    assert ids and ids <= set(people(emulator))
    assert len(ids) < 200
