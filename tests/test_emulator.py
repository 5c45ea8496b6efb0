"""The Pipelines API emulator, over real HTTP with httpx."""

from __future__ import annotations

import base64
import gzip
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from dagster_cdp import Emulator, FaultConfig

KEY = "test-key"
STRICT = {"X-Strict-Mode": "1"}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def post(
    http: httpx.Client,
    emu: Emulator,
    path: str,
    body: Any,
    *,
    strict: bool = False,
    key: str = KEY,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    all_headers = {"Content-Type": "application/json", **(STRICT if strict else {}), **(headers or {})}
    return http.post(emu.url + path, content=content, headers=all_headers, auth=(key, ""))


def batch(
    http: httpx.Client, emu: Emulator, *calls: dict[str, Any], strict: bool = False, **extra: Any
) -> httpx.Response:
    return post(http, emu, "/v1/batch", {"batch": list(calls), **extra}, strict=strict)


def errors(response: httpx.Response) -> list[str]:
    return response.json()["meta"]["errors"]


def assert_calls_add_up(stats: dict[str, Any]) -> None:
    """Every received call is applied, a repeat, dropped or rejected: none vanishes."""
    assert stats["calls_received"] == (
        stats["calls_applied"] + stats["repeats"] + stats["calls_dropped"] + stats["calls_rejected"]
    )


def sized_identify(size: int, user_id: str = "big", typed: bool = True) -> dict[str, Any]:
    """An identify call whose JSON encoding is exactly `size` bytes (`typed=False`: without `type`)."""
    call: dict[str, Any] = {"type": "identify"} if typed else {}
    call.update({"userId": user_id, "traits": {"pad": ""}})
    call["traits"]["pad"] = "x" * (size - len(orjson.dumps(call)))
    assert len(orjson.dumps(call)) == size
    return call


# -- endpoints -----------------------------------------------------------------------------------------


def test_every_endpoint_applies_its_call(http, emulator):
    single_calls = {
        "/v1/identify": {"userId": "u1", "traits": {"name": "Ada"}},
        "/v1/track": {"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"}, "messageId": "t1"},
        "/v1/page": {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}},
        "/v1/screen": {"userId": "u1", "name": "Settings"},
        "/v1/group": {"userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}},
        "/v1/alias": {"previousId": "a1", "userId": "u1"},
    }
    for path, call in single_calls.items():
        response = post(http, emulator, path, call, strict=True)
        assert (response.status_code, response.json()) == (200, {}), path
    response = batch(http, emulator, {"type": "identify", "userId": "u2", "traits": {"name": "Bob"}}, strict=True)
    assert (response.status_code, response.json()) == (200, {})

    state = emulator.snapshot()
    assert state["people"] == {
        "u1": {"traits": {"name": "Ada"}, "active": True},
        "u2": {"traits": {"name": "Bob"}, "active": True},
    }
    assert state["objects"] == {"1": {"acme": {"name": "Acme"}}}
    assert state["relationships"] == [{"userId": "u1", "objectTypeId": "1", "groupId": "acme", "attributes": {}}]
    assert [(e["type"], e.get("event") or e.get("name")) for e in state["events"]] == [
        ("track", "Signed Up"),
        ("page", "Home"),
        ("screen", "Settings"),
        ("alias", None),
    ]
    assert state["events"][0]["properties"] == {"plan": "pro"}
    assert state["events"][0]["messageId"] == "t1"
    assert state["aliases"] == [{"previousId": "a1", "userId": "u1"}]
    stats = emulator.stats()
    assert stats["requests"] == 7
    assert stats["status_counts"] == {"200": 7}
    assert stats["requests_per_path"] == {path: 1 for path in [*single_calls, "/v1/batch"]}
    assert stats["calls_applied"] == 7
    assert_calls_add_up(stats)


def test_unknown_routes_wrong_methods_and_malformed_bodies(http, emulator):
    assert post(http, emulator, "/v1/nope", {"userId": "u1"}).status_code == 404
    assert http.get(emulator.url + "/v1/batch").status_code == 405
    for strict in (False, True):
        response = post(http, emulator, "/v1/batch", b'{"batch": [', strict=strict)
        assert response.status_code == 400
        assert "malformed JSON" in errors(response)[0]
        assert post(http, emulator, "/v1/identify", b"[1, 2]", strict=strict).status_code == 400
    assert emulator.snapshot()["people"] == {}


def test_gzip_bodies_are_accepted(http, emulator):
    body = gzip.compress(orjson.dumps({"batch": [{"type": "identify", "userId": "u1", "traits": {"a": 1}}]}))
    response = post(http, emulator, "/v1/batch", body, strict=True, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert emulator.snapshot()["people"]["u1"]["traits"] == {"a": 1}


# -- validation ----------------------------------------------------------------------------------------

INVALID_CALLS = [
    ("/v1/identify", {"traits": {"name": "nobody"}}, "identify needs a userId"),
    ("/v1/identify", {"userId": "", "traits": {"email": ""}}, "identify needs a userId"),
    ("/v1/identify", {"userId": "u1", "traits": "not an object"}, "traits must be an object"),
    ("/v1/track", {"userId": "u1"}, "track needs an event name"),
    ("/v1/track", {"event": "Signed Up"}, "track needs a userId or anonymousId"),
    ("/v1/page", {"name": "Home"}, "page needs a userId or anonymousId"),
    ("/v1/screen", {"name": "Home"}, "screen needs a userId or anonymousId"),
    ("/v1/group", {"userId": "u1", "traits": {"name": "Acme"}}, "group needs a groupId"),
    ("/v1/group", {"groupId": "acme", "traits": {"objectTypeId": 2}}, "objectTypeId must be a string of digits"),
    ("/v1/group", {"groupId": "acme", "traits": {"objectTypeId": "two"}}, "objectTypeId must be a string of digits"),
    ("/v1/alias", {"userId": "u1"}, "alias needs previousId and userId"),
    ("/v1/alias", {"previousId": "a1"}, "alias needs previousId and userId"),
    ("/v1/track", {"userId": "u1", "event": "Object Deleted", "properties": {"objectId": "a"}}, "Object Deleted needs"),
    ("/v1/track", {"anonymousId": "x", "event": "Object Deleted", "properties": {}}, "Object Deleted needs"),
    ("/v1/track", {"anonymousId": "x", "event": "Relationship Deleted", "properties": {"objectId": "a"}}, "Relat"),
    ("/v1/track", {"userId": "u1", "event": "Relationship Deleted", "properties": {}}, "Relationship Deleted needs"),
    ("/v1/track", {"userId": "u1", "event": "Device Created or Updated"}, "context.device.token"),
    ("/v1/track", {"anonymousId": "x", "event": "Device Deleted", "context": {"device": {"token": "t"}}}, "Device"),
    ("/v1/track", {"anonymousId": "x", "event": "User Deleted"}, "User Deleted needs a userId"),
    ("/v1/track", {"anonymousId": "x", "event": "User Suppressed"}, "User Suppressed needs a userId"),
    ("/v1/track", {"anonymousId": "x", "event": "User Unsuppressed"}, "User Unsuppressed needs a userId"),
    ("/v1/batch", {"batch": []}, "batch must be a non-empty list"),
    ("/v1/batch", {"events": [{"type": "identify", "userId": "u1"}]}, "batch must be a non-empty list"),
    ("/v1/batch", {"batch": [{"userId": "u1"}]}, "unknown type None"),
    ("/v1/batch", {"batch": [{"type": "delete", "userId": "u1"}]}, "unknown type 'delete'"),
]


@pytest.mark.parametrize(("path", "body", "reason"), INVALID_CALLS)
def test_strict_mode_rejects_invalid_calls_with_a_reason(http, emulator, path, body, reason):
    response = post(http, emulator, path, {**body, "messageId": "m-bad"} if path != "/v1/batch" else body, strict=True)
    assert response.status_code == 400
    [message] = errors(response)
    assert reason in message
    if path != "/v1/batch":
        assert message.startswith("call 0 (messageId 'm-bad')")
    state = emulator.snapshot()
    assert state["people"] == state["objects"] == {}
    assert state["events"] == []


@pytest.mark.parametrize(("path", "body", "reason"), INVALID_CALLS)
def test_permissive_mode_answers_200_and_drops_invalid_calls(http, emulator, path, body, reason):
    response = post(http, emulator, path, body)
    assert (response.status_code, response.json()) == (200, {})
    stats = emulator.stats()
    assert stats["calls_applied"] == 0
    assert stats["calls_dropped"] == (len(body.get("batch", [])) if path == "/v1/batch" else 1)
    assert_calls_add_up(stats)


def test_identify_by_email_is_valid_and_keyed_by_email(http, emulator):
    response = post(http, emulator, "/v1/identify", {"userId": "", "traits": {"email": "ada@example.com"}}, strict=True)
    assert response.status_code == 200
    assert emulator.snapshot()["people"] == {
        "email:ada@example.com": {"traits": {"email": "ada@example.com"}, "active": True}
    }


def test_strict_batch_with_one_bad_call_applies_nothing_and_names_it(http, emulator):
    good = {"type": "identify", "userId": "u1", "messageId": "m1"}
    bad = {"type": "track", "userId": "u2", "messageId": "m2"}
    response = batch(http, emulator, good, bad, good | {"userId": "u3", "messageId": "m3"}, strict=True)
    assert response.status_code == 400
    assert errors(response) == ["call 1 (messageId 'm2'): track needs an event name"]
    assert emulator.snapshot()["people"] == {}
    stats = emulator.stats()
    assert (stats["calls_rejected"], stats["calls_applied"]) == (3, 0)

    # The same request without strict mode: the valid calls go through, the bad one is dropped.
    response = batch(http, emulator, good, bad, good | {"userId": "u3", "messageId": "m3"})
    assert response.status_code == 200
    assert set(emulator.snapshot()["people"]) == {"u1", "u3"}
    stats = emulator.stats()
    assert (stats["calls_applied"], stats["calls_dropped"]) == (2, 1)
    assert_calls_add_up(stats)


# -- auth ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_emulator() -> Iterator[Emulator]:
    with Emulator(api_keys={KEY, "pk_us_secret"}) as emu:
        yield emu


def test_basic_and_bearer_keys_are_accepted(http, keyed_emulator):
    call = orjson.dumps({"userId": "u1"})
    basic = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    for authorization in (basic, "Bearer pk_us_secret", f"bearer {KEY}"):
        headers = {"Authorization": authorization}
        response = http.post(keyed_emulator.url + "/v1/identify", content=call, headers=headers)
        assert response.status_code == 200, authorization


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    "authorization",
    [None, "Basic " + base64.b64encode(b"wrong-key:").decode(), "Bearer wrong-key", "Basic !!!", "Token test-key"],
)
def test_missing_or_wrong_keys_get_401_and_nothing_applied(http, keyed_emulator, authorization, strict):
    keyed_emulator.reset()
    headers = {**(STRICT if strict else {}), **({"Authorization": authorization} if authorization else {})}
    response = http.post(keyed_emulator.url + "/v1/identify", content=orjson.dumps({"userId": "u1"}), headers=headers)
    assert response.status_code == 401
    assert "wrong-key" not in response.text
    assert keyed_emulator.snapshot()["people"] == {}
    assert keyed_emulator.stats()["status_counts"] == {"401": 1}


def test_any_non_empty_key_is_accepted_without_a_key_list(http, emulator):
    assert post(http, emulator, "/v1/identify", {"userId": "u1"}, key="anything").status_code == 200
    assert post(http, emulator, "/v1/identify", {"userId": "u1"}, key="").status_code == 401


# -- byte limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/identify", "/v1/batch"])
def test_a_call_of_32000_bytes_passes_and_32001_is_over_the_limit(http, emulator, path):
    single = path == "/v1/identify"

    def send(size: int, user_id: str, strict: bool) -> httpx.Response:
        call = sized_identify(size, user_id, typed=not single)  # sized as sent: a single call needs no type
        return post(http, emulator, path, call if single else {"batch": [call]}, strict=strict)

    assert send(32_000, "fits", strict=True).status_code == 200
    response = send(32_001, "over", strict=True)
    assert response.status_code == 400
    assert "32001 bytes is over the 32000-byte limit" in errors(response)[0]
    assert send(32_001, "over", strict=False).status_code == 200
    assert set(emulator.snapshot()["people"]) == {"fits"}
    stats = emulator.stats()
    assert (stats["calls_rejected"], stats["calls_dropped"], stats["max_call_bytes"]) == (1, 1, 32_001)


def test_an_over_limit_call_drops_its_whole_batch_in_permissive_mode(http, emulator):
    response = batch(http, emulator, {"type": "identify", "userId": "small"}, sized_identify(32_001))
    assert (response.status_code, response.json()) == (200, {})
    assert emulator.snapshot()["people"] == {}
    assert emulator.stats()["calls_dropped"] == 2


def body_of_size(size: int, prefix: str) -> bytes:
    """A valid batch body of exactly `size` bytes (padded with JSON whitespace)."""
    calls = [sized_identify(31_000, f"{prefix}{i}") for i in range(16)]
    body = orjson.dumps({"batch": calls})
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_a_body_of_500000_bytes_passes_and_500001_is_over_the_limit(http, emulator):
    assert post(http, emulator, "/v1/batch", body_of_size(500_000, "fits"), strict=True).status_code == 200
    response = post(http, emulator, "/v1/batch", body_of_size(500_001, "over"), strict=True)
    assert response.status_code == 400
    assert "500001 bytes is over the 500000-byte limit" in errors(response)[0]
    response = post(http, emulator, "/v1/batch", body_of_size(500_001, "over"))
    assert (response.status_code, response.json()) == (200, {})
    people = emulator.snapshot()["people"]
    assert len(people) == 16 and all(key.startswith("fits") for key in people)
    stats = emulator.stats()
    assert (stats["calls_rejected"], stats["calls_dropped"], stats["max_body_bytes"]) == (16, 16, 500_001)
    assert stats["bytes_received"] == 1_500_002


# -- the state model -----------------------------------------------------------------------------------


def test_identify_merges_traits_and_null_removes_one(http, emulator):
    batch(http, emulator, {"type": "identify", "userId": "u1", "traits": {"name": "Ada", "plan": "free", "age": 36}})
    batch(http, emulator, {"type": "identify", "userId": "u1", "traits": {"plan": "pro", "age": None}})
    assert emulator.snapshot()["people"]["u1"] == {"traits": {"name": "Ada", "plan": "pro"}, "active": True}


def test_active_flag_comes_from_the_effective_context(http, emulator):
    batch(
        http,
        emulator,
        {"type": "identify", "userId": "quiet", "traits": {"a": 1}},
        {"type": "identify", "userId": "loud", "context": {"active": True}},
        context={"active": False, "ip": "0.0.0.0"},
    )
    people = emulator.snapshot()["people"]
    assert (people["quiet"]["active"], people["loud"]["active"]) == (False, True)
    batch(http, emulator, {"type": "identify", "userId": "quiet"})
    assert emulator.snapshot()["people"]["quiet"] == {"traits": {"a": 1}, "active": True}


def test_group_calls_build_objects_and_relationships(http, emulator):
    batch(
        http,
        emulator,
        {"type": "group", "groupId": "acme", "traits": {"name": "Acme", "objectTypeId": "2", "tier": "gold"}},
        {
            "type": "group",
            "userId": "u1",
            "groupId": "acme",
            "traits": {"objectTypeId": "2", "relationshipAttributes": {"role": "admin", "seat": 3}},
        },
        {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"tier": None}},
        strict=True,
    )
    batch(
        http,
        emulator,
        {
            "type": "group",
            "userId": "u1",
            "groupId": "acme",
            "traits": {"objectTypeId": "2", "relationshipAttributes": {"seat": None, "since": "2024"}},
        },
        strict=True,
    )
    state = emulator.snapshot()
    assert state["objects"] == {"2": {"acme": {"name": "Acme", "tier": "gold"}}, "1": {"acme": {}}}
    assert state["relationships"] == [
        {"userId": "u1", "objectTypeId": "1", "groupId": "acme", "attributes": {}},
        {"userId": "u1", "objectTypeId": "2", "groupId": "acme", "attributes": {"role": "admin", "since": "2024"}},
    ]
    assert state["people"] == {"u1": {"traits": {}, "active": True}}


def test_a_group_without_user_changes_only_the_object(http, emulator):
    batch(http, emulator, {"type": "group", "groupId": "acme", "anonymousId": "a1", "traits": {"name": "Acme"}})
    state = emulator.snapshot()
    assert state["objects"] == {"1": {"acme": {"name": "Acme"}}}
    assert (state["people"], state["relationships"]) == ({}, [])


def _seed_people_objects_and_devices(http: httpx.Client, emu: Emulator) -> None:
    device = {"device": {"token": "tok-1", "type": "ios"}}
    response = batch(
        http,
        emu,
        *(
            {"type": "identify", "userId": user, "traits": {"name": user}}
            for user in ("u1", "u2")
        ),
        *(
            {"type": "group", "userId": user, "groupId": group, "traits": {"relationshipAttributes": {"r": 1}}}
            for user in ("u1", "u2")
            for group in ("g1", "g2")
        ),
        {"type": "track", "userId": "u1", "event": "Device Created or Updated", "context": device,
         "properties": {"app_version": "1.0", "push": True}},
        {"type": "track", "userId": "u2", "event": "Device Created or Updated", "context": device},
        strict=True,
    )
    assert response.status_code == 200


def semantic(user: str | None, event: str, anonymous: str | None = None, **fields: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "track", "event": event, **fields}
    if user is not None:
        call["userId"] = user
    if anonymous is not None:
        call["anonymousId"] = anonymous
    return call


def test_devices_are_upserted_and_deleted(http, emulator):
    _seed_people_objects_and_devices(http, emulator)
    assert emulator.snapshot()["devices"]["u1"] == {
        "tok-1": {"type": "ios", "properties": {"app_version": "1.0", "push": True}}
    }
    batch(
        http,
        emulator,
        semantic("u1", "Device Created or Updated", context={"device": {"token": "tok-1"}},
                 properties={"app_version": "1.1", "push": None}),
        semantic("u2", "Device Deleted", context={"device": {"token": "tok-1"}}),
        strict=True,
    )
    devices = emulator.snapshot()["devices"]
    assert devices == {"u1": {"tok-1": {"type": "ios", "properties": {"app_version": "1.1"}}}}


def test_user_deleted_removes_the_person_their_relationships_and_devices(http, emulator):
    _seed_people_objects_and_devices(http, emulator)
    assert batch(http, emulator, semantic("u1", "User Deleted"), strict=True).status_code == 200
    state = emulator.snapshot()
    assert set(state["people"]) == {"u2"}
    assert {r["userId"] for r in state["relationships"]} == {"u2"}
    assert set(state["devices"]) == {"u2"}
    assert set(state["objects"]["1"]) == {"g1", "g2"}


def test_suppression_removes_the_person_and_keeps_them_out_until_unsuppressed(http, emulator):
    _seed_people_objects_and_devices(http, emulator)
    batch(http, emulator, semantic("u1", "User Suppressed"), strict=True)
    batch(http, emulator, {"type": "identify", "userId": "u1", "traits": {"back": True}})
    state = emulator.snapshot()
    assert (set(state["people"]), state["suppressions"]) == ({"u2"}, ["u1"])
    assert {r["userId"] for r in state["relationships"]} == {"u2"}

    batch(http, emulator, semantic("u1", "User Unsuppressed"), strict=True)
    batch(http, emulator, {"type": "identify", "userId": "u1", "traits": {"back": True}})
    state = emulator.snapshot()
    assert state["suppressions"] == []
    assert state["people"]["u1"]["traits"] == {"back": True}


def test_object_deleted_removes_the_object_and_its_relationships(http, emulator):
    _seed_people_objects_and_devices(http, emulator)
    response = batch(
        http, emulator, semantic(None, "Object Deleted", anonymous="x", properties={"objectId": "g1"}), strict=True
    )
    assert response.status_code == 200
    state = emulator.snapshot()
    assert state["objects"] == {"1": {"g2": {}}}
    assert {(r["userId"], r["groupId"]) for r in state["relationships"]} == {("u1", "g2"), ("u2", "g2")}
    assert set(state["people"]) == {"u1", "u2"}


def test_relationship_deleted_removes_only_that_relationship(http, emulator):
    _seed_people_objects_and_devices(http, emulator)
    batch(
        http,
        emulator,
        semantic("u1", "Relationship Deleted", properties={"objectId": "g1", "objectTypeId": "1"}),
        semantic("u2", "Relationship Deleted", properties={"objectId": "g2", "objectTypeId": "7"}),
        strict=True,
    )
    state = emulator.snapshot()
    assert {(r["userId"], r["groupId"]) for r in state["relationships"]} == {("u1", "g2"), ("u2", "g1"), ("u2", "g2")}
    assert set(state["objects"]["1"]) == {"g1", "g2"}


def test_delivery_reports_and_other_events_are_logged(http, emulator):
    batch(
        http,
        emulator,
        semantic("u1", "Report Delivery Event", properties={"deliveryId": "d1", "metric": "opened"}, messageId="r1"),
        semantic("u1", "Order Completed", properties={"total": 10}, timestamp="2024-01-01T00:00:00Z"),
        strict=True,
    )
    state = emulator.snapshot()
    [report] = state["delivery_reports"]
    assert (report["properties"], report["messageId"]) == ({"deliveryId": "d1", "metric": "opened"}, "r1")
    [event] = state["events"]
    assert (event["event"], event["properties"]) == ("Order Completed", {"total": 10})
    assert event["timestamp"] == "2024-01-01T00:00:00Z"


def test_calls_with_the_customerio_destination_turned_off_change_nothing(http, emulator):
    batch(
        http,
        emulator,
        {"type": "identify", "userId": "off", "integrations": {"Customer.io": False}},
        {"type": "identify", "userId": "all-off"},
        {"type": "identify", "userId": "on", "integrations": {"Customer.io": True}},
        integrations={"All": False},
    )
    assert set(emulator.snapshot()["people"]) == {"on"}


# -- messageId de-duplication --------------------------------------------------------------------------


def test_a_repeated_message_id_is_not_applied_again(http, emulator):
    first = {"type": "identify", "userId": "u1", "traits": {"n": 1}, "messageId": "m1"}
    batch(http, emulator, first, {"type": "track", "userId": "u1", "event": "E", "messageId": "m2"})
    batch(
        http,
        emulator,
        first | {"traits": {"n": 2}},
        {"type": "track", "userId": "u1", "event": "E", "messageId": "m2"},
        {"type": "track", "userId": "u1", "event": "E", "messageId": "m2"},
        {"type": "track", "userId": "u1", "event": "E"},
        {"type": "track", "userId": "u1", "event": "E"},
    )
    state = emulator.snapshot()
    assert state["people"]["u1"]["traits"] == {"n": 1}
    assert len(state["events"]) == 3
    stats = emulator.stats()
    assert (stats["repeats"], stats["repeated_message_ids"]) == (3, {"m1": 1, "m2": 2})
    assert_calls_add_up(stats)


def test_message_ids_of_a_rejected_request_are_not_remembered(http, emulator):
    good = {"type": "identify", "userId": "u1", "messageId": "m1"}
    batch(http, emulator, good, {"type": "track", "userId": "u1"}, strict=True)
    batch(http, emulator, good, strict=True)
    assert "u1" in emulator.snapshot()["people"]
    assert emulator.stats()["repeats"] == 0


# -- rate limit ----------------------------------------------------------------------------------------


def test_requests_over_the_rate_limit_get_429_with_retry_after(http):
    with Emulator(rate_limit=5, rate_period=1.0) as emu:
        statuses = [
            post(http, emu, "/v1/identify", {"userId": f"u{i}"}, strict=True).status_code for i in range(5)
        ]
        limited = post(http, emu, "/v1/identify", {"userId": "u5"}, strict=True)
        assert statuses == [200] * 5
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert "u5" not in emu.snapshot()["people"]
        stats = emu.stats()
        assert (stats["rate_limited"], stats["max_requests_in_window"]) == (1, 6)
        assert stats["status_counts"] == {"200": 5, "429": 1}


# -- faults --------------------------------------------------------------------------------------------


def test_error_faults_answer_the_status_without_applying(http, emulator):
    emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(503,)))
    assert post(http, emulator, "/v1/identify", {"userId": "u1"}).status_code == 503
    emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(429,)))
    response = post(http, emulator, "/v1/identify", {"userId": "u1"})
    assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    assert emulator.snapshot()["people"] == {}
    assert emulator.stats()["faults_injected"]["error"] == 2


def test_reset_faults_look_like_a_connection_reset_and_apply_nothing(http, emulator, capfd):
    emulator.set_faults(FaultConfig(reset_rate=1.0))
    with pytest.raises(httpx.TransportError):
        post(http, emulator, "/v1/identify", {"userId": "u1"})
    emulator.set_faults(FaultConfig())
    assert post(http, emulator, "/v1/identify", {"userId": "u2"}).status_code == 200
    assert set(emulator.snapshot()["people"]) == {"u2"}
    assert emulator.stats()["faults_injected"]["reset"] == 1
    assert "Traceback" not in capfd.readouterr().err


def test_apply_then_error_applies_the_request_and_answers_500(http, emulator):
    emulator.set_faults(FaultConfig(apply_then_error_rate=1.0))
    response = batch(http, emulator, {"type": "identify", "userId": "u1", "messageId": "m1"})
    assert response.status_code == 500
    assert "u1" in emulator.snapshot()["people"]
    emulator.set_faults(FaultConfig())
    batch(http, emulator, {"type": "identify", "userId": "u1", "messageId": "m1"})
    assert emulator.stats()["repeats"] == 1


def test_delay_faults_apply_the_request_but_answer_after_a_client_read_timeout(capfd):
    with Emulator() as emu:
        emu.set_faults(FaultConfig(delay_rate=1.0, delay_seconds=0.3))
        with httpx.Client(timeout=0.05) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.post(emu.url + "/v1/identify", content=b'{"userId": "u1"}', auth=(KEY, ""))
        assert "u1" in emu.snapshot()["people"]
        assert emu.stats()["faults_injected"]["delay"] == 1
    assert "Traceback" not in capfd.readouterr().err


def test_seeded_faults_repeat_exactly(http):
    def statuses() -> list[int]:
        with Emulator() as emu:
            emu.set_faults(FaultConfig(error_rate=0.5, error_statuses=(500, 502), seed=7))
            return [post(http, emu, "/v1/identify", {"userId": "u"}).status_code for _ in range(30)]

    first = statuses()
    assert first == statuses()
    assert {200, 500, 502} <= set(first)


def test_fault_config_refuses_impossible_rates():
    with pytest.raises(ValueError, match="reset_rate"):
        FaultConfig(reset_rate=1.5)
    with pytest.raises(ValueError, match="add up to"):
        FaultConfig(error_rate=0.6, reset_rate=0.6)


# -- admin routes and count-only mode ------------------------------------------------------------------


def test_admin_routes_show_state_and_stats_set_faults_and_reset(http, emulator):
    batch(http, emulator, {"type": "identify", "userId": "u1"})
    assert http.get(emulator.url + "/admin/state").json() == emulator.snapshot()
    assert http.get(emulator.url + "/admin/stats").json()["calls_applied"] == 1

    response = http.post(emulator.url + "/admin/faults", json={"error_rate": 1.0, "error_statuses": [502]})
    assert response.status_code == 200
    assert post(http, emulator, "/v1/identify", {"userId": "u2"}).status_code == 502
    response = http.post(emulator.url + "/admin/faults", json={"error_rte": 1.0})
    assert response.status_code == 400
    assert "error_rte" in errors(response)[0]

    assert http.post(emulator.url + "/admin/reset").status_code == 200
    assert emulator.snapshot()["people"] == {}
    assert emulator.stats()["requests"] == 0
    assert post(http, emulator, "/v1/identify", {"userId": "u3"}).status_code == 200


def test_count_only_counts_without_state_or_validation_but_keeps_limits(http):
    with Emulator(count_only=True) as emu:
        calls = [{"type": "identify", "userId": f"u{i}", "traits": {"n": i}} for i in range(1000)]
        assert batch(http, emu, *calls, {"type": "track"}, strict=True).status_code == 200
        assert post(http, emu, "/v1/batch", body_of_size(500_001, "over"), strict=True).status_code == 400
        assert emu.snapshot()["people"] == {}
        stats = emu.stats()
        assert (stats["calls_received"], stats["calls_applied"], stats["calls_rejected"]) == (1017, 1001, 16)


def test_stop_drops_keep_alive_connections(http):
    emu = Emulator().start()
    url = emu.url
    assert http.post(url + "/v1/identify", content=b'{"userId": "u"}', auth=(KEY, "")).status_code == 200
    emu.stop()
    with pytest.raises(httpx.TransportError):
        http.post(url + "/v1/identify", content=b'{"userId": "u"}', auth=(KEY, ""))


# -- the console command -------------------------------------------------------------------------------


def test_cli_runs_the_emulator_until_terminated(http):
    command = Path(sys.executable).with_name("dagster-cdp")
    process = subprocess.Popen(
        [str(command), "emulator", "--port", "0", "--api-key", KEY, "--rate-limit", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("dagster-cdp emulator listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert not url.endswith(":0")
        ok = http.post(url + "/v1/identify", content=b'{"userId": "u1"}', auth=(KEY, ""))
        wrong = http.post(url + "/v1/identify", content=b'{"userId": "u1"}', auth=("other", ""))
        assert (ok.status_code, wrong.status_code) == (200, 401)
        assert "u1" in http.get(url + "/admin/state").json()["people"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert KEY not in stderr
