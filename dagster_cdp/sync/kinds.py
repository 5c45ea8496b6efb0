"""Sync kinds beyond people/objects/relationships: devices, suppressions, events, page and screen views,
aliases and delivery reports. Each maps one source row to one call (and, for keyed kinds, the call that
undoes it); `send_once` kinds send each key once ever and never update or delete it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from dagster_cdp.sync.errors import SourceError
from dagster_cdp.sync.values import BadValueError, to_json_value

Part = Callable[[str], "str | None"]  # a column's value as an identifier string; None for NULL or empty


class MissingKeyError(ValueError):
    """A row has no usable key; it is reported and not sent."""


class CallMapping:
    """A mapping whose rows become calls through `key` and `calls`; the engine diffs them like any other kind."""

    kind: ClassVar[str]
    send_once: ClassVar[bool] = False

    def identifier_columns(self) -> list[str]:
        """Columns read as identifiers (never sent as properties by default)."""
        raise NotImplementedError

    def value_columns(self) -> Sequence[str] | None:
        """Columns sent as properties/attributes; None means every column that is not an identifier."""
        raise NotImplementedError

    def key_columns(self) -> list[str]:
        """The columns a row's key is made of: one column's value, or the JSON array of several (as `key` makes it,
        and as the in-warehouse diff matches it)."""
        raise NotImplementedError

    def key(self, part: Part) -> str:
        """The row's key in the sync state; raises MissingKeyError."""
        parts = [_required(part, column) for column in self.key_columns()]
        return parts[0] if len(parts) == 1 else orjson.dumps(parts).decode()

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(the call to send, the call that undoes it later or None); raises BadValueError for a row to report."""
        raise NotImplementedError


def _required(part: Part, column: str) -> str:
    value = part(column)
    if value is None:
        raise MissingKeyError(f"NULL or empty key in column {column!r}")
    return value


def _present(part: Part, column: str, what: str) -> str:
    value = part(column)
    if value is None:
        raise BadValueError(f"NULL or empty {what} in column {column!r}")
    return value


def _columns(*columns: str | None) -> list[str]:
    return [c for c in columns if c]


def iso_timestamp(text: str, column: str) -> str:
    """A timestamp as ISO-8601 UTC (`2024-03-01T12:00:00Z`); text from drivers that return dates as text is parsed."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadValueError(f"column {column!r} holds {text[:40]!r}, which is not an ISO-8601 date-time") from None
    return to_json_value(moment, column)


@dataclass(frozen=True)
class Devices(CallMapping):
    """Rows are a person's mobile devices → `Device Created or Updated`; a device gone → `Device Deleted`.

    The token goes in `context.device.token`, the platform (ios, android, ...) in `context.device.type`
    and the other columns are the device's attributes (`properties`).
    """

    kind: ClassVar[str] = "devices"
    user_id_column: str
    token_column: str
    platform_column: str
    attributes: Sequence[str] | None = None

    def identifier_columns(self) -> list[str]:
        return [self.user_id_column, self.token_column, self.platform_column]

    def value_columns(self) -> Sequence[str] | None:
        return self.attributes

    def key_columns(self) -> list[str]:
        return [self.user_id_column, self.token_column]

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        user_id, token = part(self.user_id_column), part(self.token_column)
        platform = _present(part, self.platform_column, "platform")
        upsert = {
            "type": "track",
            "event": "Device Created or Updated",
            "userId": user_id,
            "context": {"device": {"token": token, "type": platform}},
            "properties": values,
        }
        delete = {
            "type": "track",
            "event": "Device Deleted",
            "userId": user_id,
            "context": {"device": {"token": token}},
        }
        return upsert, delete


@dataclass(frozen=True)
class Suppressions(CallMapping):
    """Rows are suppressed person ids → `User Suppressed`; an id gone from the source → `User Unsuppressed`."""

    kind: ClassVar[str] = "suppressions"
    user_id_column: str

    def identifier_columns(self) -> list[str]:
        return [self.user_id_column]

    def value_columns(self) -> Sequence[str] | None:
        return []

    def key_columns(self) -> list[str]:
        return [self.user_id_column]

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        user_id = part(self.user_id_column)
        return (
            {"type": "track", "event": "User Suppressed", "userId": user_id},
            {"type": "track", "event": "User Unsuppressed", "userId": user_id},
        )


class _SentOnce(CallMapping):
    """Rows keyed by an id column, each sent once ever, for a person (userId or anonymousId) at a time."""

    send_once: ClassVar[bool] = True
    person_required: ClassVar[bool] = True
    id_column: str
    user_id_column: str | None
    anonymous_id_column: str | None
    timestamp_column: str | None

    def __post_init__(self) -> None:
        if self.person_required and self.user_id_column is None and self.anonymous_id_column is None:
            raise SourceError(f"{self.kind} need user_id_column or anonymous_id_column (or both); neither was given.")

    def _own_columns(self) -> list[str]:
        return []

    def identifier_columns(self) -> list[str]:
        return _columns(
            self.id_column, self.user_id_column, self.anonymous_id_column, self.timestamp_column, *self._own_columns()
        )

    def key_columns(self) -> list[str]:
        return [self.id_column]

    def _person(self, part: Part) -> dict[str, Any]:
        person = {
            "userId": part(self.user_id_column) if self.user_id_column else None,
            "anonymousId": part(self.anonymous_id_column) if self.anonymous_id_column else None,
        }
        if person["userId"] is None and person["anonymousId"] is None:
            columns = " and ".join(map(repr, _columns(self.user_id_column, self.anonymous_id_column)))
            raise BadValueError(f"NULL or empty person id in {columns}; the call would belong to nobody")
        return {k: v for k, v in person.items() if v is not None}

    def _timestamp(self, part: Part) -> dict[str, Any]:
        if self.timestamp_column is None:
            return {}
        return {"timestamp": iso_timestamp(_present(part, self.timestamp_column, "timestamp"), self.timestamp_column)}


@dataclass(frozen=True)
class Events(_SentOnce):
    """Rows are events that happened → `track` calls backdated to `timestamp`, each event id sent once ever."""

    kind: ClassVar[str] = "events"
    id_column: str
    event_column: str
    user_id_column: str | None = None
    anonymous_id_column: str | None = None
    timestamp_column: str | None = None
    properties: Sequence[str] | None = None

    def _own_columns(self) -> list[str]:
        return [self.event_column]

    def value_columns(self) -> Sequence[str] | None:
        return self.properties

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        event = _present(part, self.event_column, "event name")
        return (
            {"type": "track", "event": event, **self._person(part), **self._timestamp(part), "properties": values},
            None,
        )


@dataclass(frozen=True)
class _Views(_SentOnce):
    view: ClassVar[str]
    id_column: str
    name_column: str
    user_id_column: str | None = None
    anonymous_id_column: str | None = None
    timestamp_column: str | None = None
    properties: Sequence[str] | None = None

    def _own_columns(self) -> list[str]:
        return [self.name_column]

    def value_columns(self) -> Sequence[str] | None:
        return self.properties

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        name = part(self.name_column)
        return (
            {
                "type": self.view,
                **({"name": name} if name is not None else {}),
                **self._person(part),
                **self._timestamp(part),
                "properties": values,
            },
            None,
        )


@dataclass(frozen=True)
class Pages(_Views):
    """Rows are page views → `page` calls (name, properties, timestamp), each view id sent once ever."""

    kind: ClassVar[str] = "pages"
    view: ClassVar[str] = "page"


@dataclass(frozen=True)
class Screens(_Views):
    """Rows are mobile screen views → `screen` calls (name, properties, timestamp), each view id sent once ever."""

    kind: ClassVar[str] = "screens"
    view: ClassVar[str] = "screen"


@dataclass(frozen=True)
class Aliases(CallMapping):
    """Rows are (previous id, user id) pairs → `alias` calls merging the first into the second, each pair once."""

    kind: ClassVar[str] = "aliases"
    send_once: ClassVar[bool] = True
    previous_id_column: str
    user_id_column: str

    def identifier_columns(self) -> list[str]:
        return [self.previous_id_column, self.user_id_column]

    def value_columns(self) -> Sequence[str] | None:
        return []

    def key_columns(self) -> list[str]:
        return [self.previous_id_column, self.user_id_column]

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return {"type": "alias", "previousId": part(self.previous_id_column), "userId": part(self.user_id_column)}, None


@dataclass(frozen=True)
class DeliveryReports(_SentOnce):
    """Rows are message delivery metrics → `Report Delivery Event` tracks, each report id sent once ever.

    `properties.deliveryId` and `properties.metric` (delivered, opened, clicked, converted, bounced, ...) come
    from their columns, other columns (e.g. recipient, reason, href) are further properties. Without a
    user id column the call's `anonymousId` is the delivery id: the delivery, not a person, is what it reports on.
    """

    kind: ClassVar[str] = "delivery_reports"
    person_required: ClassVar[bool] = False
    id_column: str
    delivery_id_column: str
    metric_column: str
    user_id_column: str | None = None
    anonymous_id_column: str | None = None
    timestamp_column: str | None = None
    properties: Sequence[str] | None = None

    def _own_columns(self) -> list[str]:
        return [self.delivery_id_column, self.metric_column]

    def value_columns(self) -> Sequence[str] | None:
        return self.properties

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        delivery_id = _present(part, self.delivery_id_column, "delivery id")
        metric = _present(part, self.metric_column, "metric")
        if self.user_id_column is None and self.anonymous_id_column is None:
            person = {"anonymousId": delivery_id}
        else:
            person = self._person(part)
        return (
            {
                "type": "track",
                "event": "Report Delivery Event",
                **person,
                **self._timestamp(part),
                "properties": {**values, "deliveryId": delivery_id, "metric": metric},
            },
            None,
        )


CALL_KINDS: tuple[type[CallMapping], ...] = (Devices, Suppressions, Events, Pages, Screens, Aliases, DeliveryReports)
