"""The workspace model: how Customer.io applies valid calls to people, objects, relationships and devices."""

from __future__ import annotations

from typing import Any

from dagster_cdp.emulator.validation import DEVICE_EVENTS, effective_context, is_id
from dagster_cdp.encoding import dumps, exact_loads

DEFAULT_OBJECT_TYPE_ID = "1"

_RelationshipKey = tuple[str, str, str]  # (userId, objectTypeId, groupId)
_ObjectKey = tuple[str, str]  # (objectTypeId, groupId)


class Workspace:
    """The state a Customer.io workspace would hold after the calls applied so far.

    Calls are assumed valid (see `validation.call_error`). Not thread-safe: the emulator holds its lock.
    """

    def __init__(self) -> None:
        self._people: dict[str, dict[str, Any]] = {}  # key -> {"traits": {...}, "active": bool}
        self._objects: dict[_ObjectKey, dict[str, Any]] = {}
        self._relationships: dict[_RelationshipKey, dict[str, Any]] = {}
        self._relationships_of_user: dict[str, set[_ObjectKey]] = {}
        self._relationships_of_object: dict[_ObjectKey, set[str]] = {}
        self._devices: dict[str, dict[str, dict[str, Any]]] = {}
        self._suppressions: set[str] = set()
        self._events: list[dict[str, Any]] = []
        self._aliases: list[dict[str, Any]] = []
        self._delivery_reports: list[dict[str, Any]] = []
        self._applied_message_ids: set[str] = set()

    def apply(
        self,
        call: dict[str, Any],
        batch_context: dict[str, Any] | None = None,
        batch_integrations: dict[str, Any] | None = None,
    ) -> bool:
        """Apply one call; False when its messageId was already applied (a repeat, ignored)."""
        message_id = call.get("messageId")
        if message_id is not None:
            if message_id in self._applied_message_ids:
                return False
            self._applied_message_ids.add(message_id)
        if not _reaches_customerio(batch_integrations, call.get("integrations")):
            return True
        context = effective_context(call, batch_context)
        kind = call["type"]
        if kind == "identify":
            self._identify(call, context)
        elif kind == "group":
            self._group(call)
        elif kind == "track":
            self._track(call, context)
        else:
            if kind == "alias":
                self._aliases.append({"previousId": str(call["previousId"]), "userId": str(call["userId"])})
            self._events.append(_event_record(call))
        return True

    def snapshot(self) -> dict[str, Any]:
        """A deep, JSON-able copy of the state."""
        objects: dict[str, dict[str, Any]] = {}
        for (object_type_id, group_id), traits in self._objects.items():
            objects.setdefault(object_type_id, {})[group_id] = traits
        relationships = [
            {"userId": user_id, "objectTypeId": object_type_id, "groupId": group_id, "attributes": attributes}
            for (user_id, object_type_id, group_id), attributes in sorted(self._relationships.items())
        ]
        state = {
            "people": self._people,
            "objects": objects,
            "relationships": relationships,
            "devices": self._devices,
            "suppressions": sorted(self._suppressions),
            "events": self._events,
            "aliases": self._aliases,
            "delivery_reports": self._delivery_reports,
        }
        return exact_loads(dumps(state))

    def _identify(self, call: dict[str, Any], context: dict[str, Any]) -> None:
        traits = call.get("traits") or {}
        key = _person_key(call, traits)
        if key in self._suppressions:
            return
        person = self._person(key)
        _merge(person["traits"], traits)
        person["active"] = context.get("active", True) is not False

    def _group(self, call: dict[str, Any]) -> None:
        traits = dict(call.get("traits") or {})
        object_type_id = traits.pop("objectTypeId", None) or DEFAULT_OBJECT_TYPE_ID
        relationship_attributes = traits.pop("relationshipAttributes", None) or {}
        object_key = (object_type_id, str(call["groupId"]))
        _merge(self._objects.setdefault(object_key, {}), traits)
        if not is_id(call.get("userId")):
            return
        user_id = str(call["userId"])
        if user_id in self._suppressions:
            return
        self._person(user_id)
        _merge(self._relationships.setdefault((user_id, *object_key), {}), relationship_attributes)
        self._relationships_of_user.setdefault(user_id, set()).add(object_key)
        self._relationships_of_object.setdefault(object_key, set()).add(user_id)

    def _track(self, call: dict[str, Any], context: dict[str, Any]) -> None:
        event = call["event"]
        user_id = str(call["userId"]) if is_id(call.get("userId")) else None
        properties = call.get("properties") or {}
        if event == "User Deleted" and user_id is not None:
            self._forget_person(user_id)
        elif event == "User Suppressed" and user_id is not None:
            self._forget_person(user_id)
            self._suppressions.add(user_id)
        elif event == "User Unsuppressed" and user_id is not None:
            self._suppressions.discard(user_id)
        elif event == "Object Deleted":
            object_key = (_object_type_id(properties), str(properties["objectId"]))
            self._objects.pop(object_key, None)
            for member in self._relationships_of_object.get(object_key, set()).copy():
                self._forget_relationship(member, object_key)
        elif event == "Relationship Deleted" and user_id is not None:
            self._forget_relationship(user_id, (_object_type_id(properties), str(properties["objectId"])))
        elif event in DEVICE_EVENTS and user_id is not None:
            self._device(event, user_id, context["device"], properties)
        elif event == "Report Delivery Event":
            self._delivery_reports.append(_event_record(call))
        else:
            self._events.append(_event_record(call))

    def _device(self, event: str, user_id: str, device: dict[str, Any], properties: dict[str, Any]) -> None:
        token = str(device["token"])
        if event == "Device Deleted":
            devices = self._devices.get(user_id, {})
            devices.pop(token, None)
            if not devices:
                self._devices.pop(user_id, None)
        elif user_id not in self._suppressions:
            record = self._devices.setdefault(user_id, {}).setdefault(token, {"type": None, "properties": {}})
            if device.get("type") is not None:
                record["type"] = device["type"]
            _merge(record["properties"], properties)

    def _person(self, key: str) -> dict[str, Any]:
        return self._people.setdefault(key, {"traits": {}, "active": True})

    def _forget_person(self, user_id: str) -> None:
        self._people.pop(user_id, None)
        self._devices.pop(user_id, None)
        for object_key in self._relationships_of_user.get(user_id, set()).copy():
            self._forget_relationship(user_id, object_key)

    def _forget_relationship(self, user_id: str, object_key: _ObjectKey) -> None:
        self._relationships.pop((user_id, *object_key), None)
        _discard(self._relationships_of_user, user_id, object_key)
        _discard(self._relationships_of_object, object_key, user_id)


def _person_key(call: dict[str, Any], traits: dict[str, Any]) -> str:
    """userId; else `email:<email>` for identify-by-email; else `anonymous:<anonymousId>`."""
    if is_id(call.get("userId")):
        return str(call["userId"])
    email = traits.get("email")
    if isinstance(email, str) and email:
        return f"email:{email}"
    return f"anonymous:{call['anonymousId']}"


def _object_type_id(properties: dict[str, Any]) -> str:
    return properties.get("objectTypeId") or DEFAULT_OBJECT_TYPE_ID


def _merge(target: dict[str, Any], updates: dict[str, Any]) -> None:
    """Set each update on target; a null value removes the key."""
    for key, value in updates.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def _discard(index: dict[Any, set[Any]], key: Any, member: Any) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]


def _event_record(call: dict[str, Any]) -> dict[str, Any]:
    record = {
        "type": call["type"],
        "userId": call.get("userId"),
        "anonymousId": call.get("anonymousId"),
        "properties": call.get("properties") or {},
        "timestamp": call.get("timestamp"),
        "messageId": call.get("messageId"),
    }
    if call["type"] == "track":
        record["event"] = call["event"]
    elif call["type"] == "alias":
        record["previousId"] = call["previousId"]
    else:
        record["name"] = call.get("name")
    return record


def _reaches_customerio(batch_integrations: dict[str, Any] | None, own: Any) -> bool:
    """False when `integrations` turn the Customer.io destination off (`"Customer.io": false`, or `"All": false`)."""
    integrations = {**(batch_integrations or {}), **(own if isinstance(own, dict) else {})}
    return bool(integrations.get("Customer.io", integrations.get("All", True)))
