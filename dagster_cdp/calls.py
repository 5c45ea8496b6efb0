"""The API's call types and the fields each one requires, checked before anything is sent.

The API in permissive mode answers 200 to an invalid call and drops it, so a call that would be
dropped must be caught here, where it can still be reported.
"""

from __future__ import annotations

from typing import Any

CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")

#: Semantic events with special meaning at Customer.io, and the fields each needs beyond `event`.
SEMANTIC_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "User Deleted": ("userId",),
    "User Suppressed": ("userId",),
    "User Unsuppressed": ("userId",),
    "Object Deleted": ("anonymousId", "properties.objectId"),
    "Relationship Deleted": ("userId", "properties.objectId"),
    "Device Created or Updated": ("userId", "context.device.token"),
    "Device Deleted": ("userId", "context.device.token"),
}


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _field(call: dict[str, Any], dotted: str) -> Any:
    value: Any = call
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _has_identity(call: dict[str, Any]) -> bool:
    return _present(call.get("userId")) or _present(call.get("anonymousId"))


def problem_with(call: Any) -> str | None:
    """Why the API would refuse this call, or None if it has what its type requires."""
    if not isinstance(call, dict):
        return f"a call must be a JSON object, not {type(call).__name__}"
    kind = call.get("type")
    if kind not in CALL_TYPES:
        return f"type {kind!r} is not one of {', '.join(CALL_TYPES)}"
    if kind == "identify":
        if _has_identity(call):
            return None
        traits = call.get("traits")
        if isinstance(traits, dict) and _present(traits.get("email")):
            return None
        return "identify needs a userId, an anonymousId, or an empty userId with traits.email"
    if kind == "track":
        event: Any = call.get("event")  # any JSON value; a semantic event is named by a string
        if not _present(event):
            return "track needs an event name"
        if not _has_identity(call):
            return f"track {event!r} needs a userId or an anonymousId"
        for dotted in SEMANTIC_EVENT_FIELDS.get(event, ()):
            if not _present(_field(call, dotted)):
                return f"semantic event {event!r} needs {dotted}"
        return None
    if kind in ("page", "screen"):
        return None if _has_identity(call) else f"{kind} needs a userId or an anonymousId"
    if kind == "group":
        if not _present(call.get("groupId")):
            return "group needs a groupId"
        traits = call.get("traits")
        if isinstance(traits, dict) and "objectTypeId" in traits:
            type_id = traits["objectTypeId"]
            if not (isinstance(type_id, str) and type_id.isdigit()):
                return f'traits.objectTypeId must be a string of digits such as "1", not {type_id!r}'
        return None
    # alias
    if not _present(call.get("previousId")) or not _present(call.get("userId")):
        return "alias needs both previousId and userId"
    return None
