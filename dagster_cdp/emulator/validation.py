"""The fields each call needs before the Pipelines API accepts it (the reference's required fields)."""

from __future__ import annotations

from typing import Any

CALL_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})

DEVICE_EVENTS = frozenset({"Device Created or Updated", "Device Deleted"})
USER_EVENTS = frozenset({"User Deleted", "User Suppressed", "User Unsuppressed"})


def is_id(value: Any) -> bool:
    """A usable identifier: a non-empty string or an integer (clients may send numeric ids)."""
    return (isinstance(value, str) and value != "") or (isinstance(value, int) and not isinstance(value, bool))


def effective_context(call: dict[str, Any], batch_context: dict[str, Any] | None) -> dict[str, Any]:
    """Batch-level context updated with the call's own context (the call's keys win)."""
    own = call.get("context")
    if not batch_context:
        return own if isinstance(own, dict) else {}
    if not isinstance(own, dict):
        return batch_context
    return {**batch_context, **own}


def call_error(call: Any, batch_context: dict[str, Any] | None) -> str | None:
    """Why the API would refuse `call`, or None when it is valid."""
    if not isinstance(call, dict):
        return "a call must be a JSON object"
    kind = call.get("type")
    if kind not in CALL_TYPES:
        return f"unknown type {kind!r}; use one of {sorted(CALL_TYPES)}"
    message_id = call.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        return "messageId must be a string"
    for field in ("context", "integrations", "traits", "properties"):
        if call.get(field) is not None and not isinstance(call[field], dict):
            return f"{field} must be an object"
    has_person = is_id(call.get("userId")) or is_id(call.get("anonymousId"))
    if kind == "identify":
        email = (call.get("traits") or {}).get("email")
        by_email = call.get("userId") in (None, "") and isinstance(email, str) and email != ""
        if not (has_person or by_email):
            return "identify needs a userId or anonymousId, or an empty userId with traits.email"
    elif kind in ("page", "screen"):
        if not has_person:
            return f"{kind} needs a userId or anonymousId"
    elif kind == "alias":
        if not (is_id(call.get("previousId")) and is_id(call.get("userId"))):
            return "alias needs previousId and userId"
    elif kind == "group":
        return _group_error(call)
    else:
        return _track_error(call, has_person, batch_context)
    return None


def _group_error(call: dict[str, Any]) -> str | None:
    if not is_id(call.get("groupId")):
        return "group needs a groupId"
    traits = call.get("traits") or {}
    relationship_attributes = traits.get("relationshipAttributes")
    if relationship_attributes is not None and not isinstance(relationship_attributes, dict):
        return "traits.relationshipAttributes must be an object"
    return _object_type_error(traits, "traits")


def _track_error(call: dict[str, Any], has_person: bool, batch_context: dict[str, Any] | None) -> str | None:
    event = call.get("event")
    if not isinstance(event, str) or event == "":
        return "track needs an event name"
    if not has_person:
        return "track needs a userId or anonymousId"
    properties = call.get("properties") or {}
    if event == "Object Deleted":
        if not is_id(call.get("anonymousId")) or not is_id(properties.get("objectId")):
            return "Object Deleted needs anonymousId and properties.objectId"
        return _object_type_error(properties, "properties")
    if event == "Relationship Deleted":
        if not is_id(call.get("userId")) or not is_id(properties.get("objectId")):
            return "Relationship Deleted needs userId and properties.objectId"
        return _object_type_error(properties, "properties")
    if event in DEVICE_EVENTS:
        device = effective_context(call, batch_context).get("device")
        if not is_id(call.get("userId")) or not isinstance(device, dict) or not is_id(device.get("token")):
            return f"{event} needs userId and context.device.token"
    elif event in USER_EVENTS and not is_id(call.get("userId")):
        return f"{event} needs a userId"
    return None


def _object_type_error(fields: dict[str, Any], where: str) -> str | None:
    object_type_id = fields.get("objectTypeId")
    if object_type_id is None:
        return None
    if isinstance(object_type_id, str) and object_type_id.isascii() and object_type_id.isdigit():
        return None
    return f'{where}.objectTypeId must be a string of digits, like "1"; got {object_type_id!r}'
