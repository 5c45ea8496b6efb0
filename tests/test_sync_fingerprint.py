"""The fingerprint fields of every kind, pinned: they are stored in warehouses, so any change to them makes
existing syncs fail with "mapping changed"."""

import pytest

from dagster_cdp import Aliases, DeliveryReports, Devices, Events, Objects, Pages, People, Relationships, Screens, Suppressions, SyncDefinition

CASES = {
    "people": (People(id_column="user_id", email_column="email", traits=["plan", "seats"], active=True), {}),
    "people_email": (People(email_column="email"), {"mode": "upsert"}),
    "objects": (Objects(id_column="account_id", object_type=2, traits=("plan",)), {}),
    "objects_column": (Objects(id_column="account_id", object_type_column="type_id"), {}),
    "relationships": (
        Relationships(user_id_column="user_id", object_id_column="account_id", object_type="3", attributes=["role"]),
        {},
    ),
    "devices": (
        Devices(user_id_column="user_id", token_column="token", platform_column="platform", attributes=["model"]),
        {},
    ),
    "suppressions": (Suppressions(user_id_column="user_id"), {}),
    "events": (
        Events(
            id_column="event_id",
            event_column="event",
            user_id_column="user_id",
            anonymous_id_column="anon",
            timestamp_column="at",
            properties=["a", "b"],
        ),
        {},
    ),
    "pages": (Pages(id_column="view_id", name_column="page", anonymous_id_column="anon"), {}),
    "screens": (
        Screens(id_column="view_id", name_column="screen", user_id_column="user_id", timestamp_column="at"),
        {},
    ),
    "aliases": (Aliases(previous_id_column="previous_id", user_id_column="user_id"), {}),
    "delivery_reports": (
        DeliveryReports(
            id_column="report_id", delivery_id_column="delivery_id", metric_column="metric", properties=["href"]
        ),
        {},
    ),
}

EXPECTED_MAPPING = {
    "people": {
        "kind": "People",
        "id_column": "user_id",
        "email_column": "email",
        "traits": ["plan", "seats"],
        "active": True,
    },
    "people_email": {"kind": "People", "id_column": None, "email_column": "email", "traits": None, "active": False},
    "objects": {
        "kind": "Objects",
        "id_column": "account_id",
        "object_type": "2",
        "object_type_column": None,
        "traits": ["plan"],
    },
    "objects_column": {
        "kind": "Objects",
        "id_column": "account_id",
        "object_type": "1",
        "object_type_column": "type_id",
        "traits": None,
    },
    "relationships": {
        "kind": "Relationships",
        "user_id_column": "user_id",
        "object_id_column": "account_id",
        "object_type": "3",
        "object_type_column": None,
        "attributes": ["role"],
    },
    "devices": {
        "kind": "Devices",
        "user_id_column": "user_id",
        "token_column": "token",
        "platform_column": "platform",
        "attributes": ["model"],
    },
    "suppressions": {"kind": "Suppressions", "user_id_column": "user_id"},
    "events": {
        "kind": "Events",
        "id_column": "event_id",
        "event_column": "event",
        "user_id_column": "user_id",
        "anonymous_id_column": "anon",
        "timestamp_column": "at",
        "properties": ["a", "b"],
    },
    "pages": {
        "kind": "Pages",
        "id_column": "view_id",
        "name_column": "page",
        "user_id_column": None,
        "anonymous_id_column": "anon",
        "timestamp_column": None,
        "properties": None,
    },
    "screens": {
        "kind": "Screens",
        "id_column": "view_id",
        "name_column": "screen",
        "user_id_column": "user_id",
        "anonymous_id_column": None,
        "timestamp_column": "at",
        "properties": None,
    },
    "aliases": {"kind": "Aliases", "previous_id_column": "previous_id", "user_id_column": "user_id"},
    "delivery_reports": {
        "kind": "DeliveryReports",
        "id_column": "report_id",
        "delivery_id_column": "delivery_id",
        "metric_column": "metric",
        "user_id_column": None,
        "anonymous_id_column": None,
        "timestamp_column": None,
        "properties": ["href"],
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_fingerprint_fields_are_pinned(name):
    mapping, settings = CASES[name]
    definition = SyncDefinition(
        name=name, table="t", mapping=mapping, context={"ip": "0"}, integrations={"All": False}, **settings
    )
    assert definition.fingerprint_fields() == {
        "format": 1,
        "mapping": EXPECTED_MAPPING[name],
        "mode": settings.get("mode", "mirror"),
        "context": {"ip": "0"},
        "integrations": {"All": False},
    }


def test_a_declared_sync_has_the_same_fingerprint_as_one_built_in_python():
    from dagster_cdp.dagster.declared_syncs import parse_sync

    declared = parse_sync(
        {
            "kind": "objects",
            "name": "objects",
            "table": "t",
            "id": "account_id",
            "object_type": 2,
            "traits": ["plan"],
            "context": {"ip": "0"},
            "integrations": {"All": False},
        }
    )
    assert declared.to_definition().fingerprint_fields()["mapping"] == EXPECTED_MAPPING["objects"]


@pytest.mark.parametrize("name", list(CASES))
def test_a_definition_recorded_as_json_is_rebuilt_the_same(name):
    """What each run's history row keeps (`dagster-cdp explain` plans with it): every kind, every setting."""
    import orjson

    mapping, settings = CASES[name]
    definition = SyncDefinition(
        name=name, query="select 1", mapping=mapping, context={"ip": "0"}, integrations={"All": False},
        max_delete_fraction=0.5, max_row_attempts=5, partitions=3, on_schema_change="sync_all_columns",
        lock_timeout=5.0, max_calls_per_second=2.5, max_changes_per_run=10, history_days=7, **settings,
    )
    record = orjson.loads(orjson.dumps(definition.as_record()))
    assert SyncDefinition.from_record(record) == definition
    assert SyncDefinition.from_record(record).fingerprint_fields() == definition.fingerprint_fields()
