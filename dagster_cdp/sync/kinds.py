"""Sync kinds beyond people/objects/relationships: devices, suppressions, events, page and screen views,
aliases and delivery reports. Each maps one source row to one call (and, for keyed kinds, the call that
undoes it); `send_once` kinds send each key once ever and never update or delete it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from dagster_cdp.sync.declaration import CallMapping, ColumnNames, Part, columns, present
from dagster_cdp.sync.values import BadValueError, to_json_value

_USER_ID = "Column sent as userId."
_ANONYMOUS_ID = "Column sent as anonymousId (when there is no userId)."
_PROPERTIES = "Columns sent as properties; default every other column."


def iso_timestamp(text: str, column: str) -> str:
    """A timestamp as ISO-8601 UTC (`2024-03-01T12:00:00Z`); text from drivers that return dates as text is parsed."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadValueError(f"column {column!r} holds {text[:40]!r}, which is not an ISO-8601 date-time") from None
    return to_json_value(moment, column)


class Devices(CallMapping):
    """Rows are a person's mobile devices → `Device Created or Updated`; a device gone → `Device Deleted`.

    The token goes in `context.device.token`, the platform (ios, android, ...) in `context.device.type`
    and the other columns are the device's attributes (`properties`).
    """

    kind: Literal["devices"] = "devices"
    user_id_column: str = Field(validation_alias="user_id", description="Column sent as userId (the device's person).")
    token_column: str = Field(validation_alias="token", description="Column sent as context.device.token.")
    platform_column: str = Field(
        validation_alias="platform", description="Column sent as context.device.type (ios, android, ...)."
    )
    attributes: ColumnNames | None = Field(
        None, description="Columns sent as device attributes; default every other column."
    )

    def identifier_columns(self) -> list[str]:
        return [self.user_id_column, self.token_column, self.platform_column]

    def value_columns(self) -> Sequence[str] | None:
        return self.attributes

    def key_columns(self) -> list[str]:
        return [self.user_id_column, self.token_column]

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        user_id, token = part(self.user_id_column), part(self.token_column)
        platform = present(part, self.platform_column, "platform")
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


class Suppressions(CallMapping):
    """Rows are suppressed person ids → `User Suppressed`; an id gone from the source → `User Unsuppressed`."""

    kind: Literal["suppressions"] = "suppressions"
    user_id_column: str = Field(validation_alias="user_id", description="Column holding the suppressed userId.")

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
    if TYPE_CHECKING:  # each kind declares these fields, in its own order and with its own descriptions
        id_column: str
        user_id_column: str | None
        anonymous_id_column: str | None
        timestamp_column: str | None
        properties: ColumnNames | None

    @model_validator(mode="after")
    def _has_person(self) -> _SentOnce:
        if self.person_required and self.user_id_column is None and self.anonymous_id_column is None:
            raise ValueError(f"{self.kind} need user_id_column or anonymous_id_column (or both); neither was given.")
        return self

    def _own_columns(self) -> list[str]:
        return []

    def identifier_columns(self) -> list[str]:
        return columns(
            self.id_column, self.user_id_column, self.anonymous_id_column, self.timestamp_column, *self._own_columns()
        )

    def value_columns(self) -> Sequence[str] | None:
        return self.properties

    def key_columns(self) -> list[str]:
        return [self.id_column]

    def _person(self, part: Part) -> dict[str, Any]:
        person = {
            "userId": part(self.user_id_column) if self.user_id_column else None,
            "anonymousId": part(self.anonymous_id_column) if self.anonymous_id_column else None,
        }
        if person["userId"] is None and person["anonymousId"] is None:
            names = " and ".join(map(repr, columns(self.user_id_column, self.anonymous_id_column)))
            raise BadValueError(f"NULL or empty person id in {names}; the call would belong to nobody")
        return {k: v for k, v in person.items() if v is not None}

    def _timestamp(self, part: Part) -> dict[str, Any]:
        if self.timestamp_column is None:
            return {}
        return {"timestamp": iso_timestamp(present(part, self.timestamp_column, "timestamp"), self.timestamp_column)}


class Events(_SentOnce):
    """Rows are events that happened → `track` calls backdated to `timestamp`, each event id sent once ever."""

    kind: Literal["events"] = "events"
    id_column: str = Field(
        validation_alias="id", description="Event id column: each id is sent once; the messageId derives from it."
    )
    event_column: str = Field(validation_alias="event", description="Column holding the event name.")
    user_id_column: str | None = Field(None, validation_alias="user_id", description=_USER_ID)
    anonymous_id_column: str | None = Field(None, validation_alias="anonymous_id", description=_ANONYMOUS_ID)
    timestamp_column: str | None = Field(
        None, validation_alias="timestamp", description="Column sent as timestamp (when the event happened)."
    )
    properties: ColumnNames | None = Field(None, description=_PROPERTIES)

    def _own_columns(self) -> list[str]:
        return [self.event_column]

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        event = present(part, self.event_column, "event name")
        return (
            {"type": "track", "event": event, **self._person(part), **self._timestamp(part), "properties": values},
            None,
        )


class _Views(_SentOnce):
    """Page or screen views; each kind names its name column (`page_name`, `screen_name`)."""

    view: ClassVar[str]
    id_column: str = Field(validation_alias="id", description="View id column: each id is sent once.")
    name_column: str
    user_id_column: str | None = Field(None, validation_alias="user_id", description=_USER_ID)
    anonymous_id_column: str | None = Field(None, validation_alias="anonymous_id", description=_ANONYMOUS_ID)
    timestamp_column: str | None = Field(
        None, validation_alias="timestamp", description="Column sent as timestamp (when the view happened)."
    )
    properties: ColumnNames | None = Field(None, description=_PROPERTIES)

    def _own_columns(self) -> list[str]:
        return [self.name_column]

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


class Pages(_Views):
    """Rows are page views → `page` calls (name, properties, timestamp), each view id sent once ever."""

    kind: Literal["pages"] = "pages"
    view: ClassVar[str] = "page"
    name_column: str = Field(validation_alias="page_name", description="Column sent as the page's name.")


class Screens(_Views):
    """Rows are mobile screen views → `screen` calls (name, properties, timestamp), each view id sent once ever."""

    kind: Literal["screens"] = "screens"
    view: ClassVar[str] = "screen"
    name_column: str = Field(validation_alias="screen_name", description="Column sent as the screen's name.")


class Aliases(CallMapping):
    """Rows are (previous id, user id) pairs → `alias` calls merging the first into the second, each pair once."""

    kind: Literal["aliases"] = "aliases"
    send_once: ClassVar[bool] = True
    previous_id_column: str = Field(
        validation_alias="previous_id", description="Column sent as previousId (the id being merged away)."
    )
    user_id_column: str = Field(
        validation_alias="user_id", description="Column sent as userId (the id it merges into)."
    )

    def identifier_columns(self) -> list[str]:
        return [self.previous_id_column, self.user_id_column]

    def value_columns(self) -> Sequence[str] | None:
        return []

    def key_columns(self) -> list[str]:
        return [self.previous_id_column, self.user_id_column]

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return {"type": "alias", "previousId": part(self.previous_id_column), "userId": part(self.user_id_column)}, None


class DeliveryReports(_SentOnce):
    """Rows are message delivery metrics → `Report Delivery Event` tracks, each report id sent once ever.

    `properties.deliveryId` and `properties.metric` (delivered, opened, clicked, converted, bounced, ...) come
    from their columns, other columns (e.g. recipient, reason, href) are further properties. Without a
    user id column the call's `anonymousId` is the delivery id: the delivery, not a person, is what it reports on.
    """

    kind: Literal["delivery_reports"] = "delivery_reports"
    person_required: ClassVar[bool] = False
    id_column: str = Field(validation_alias="id", description="Report id column: each id is sent once.")
    delivery_id_column: str = Field(validation_alias="delivery_id", description="Column sent as properties.deliveryId.")
    metric_column: str = Field(
        validation_alias="metric",
        description="Column sent as properties.metric (delivered, opened, clicked, bounced, ...).",
    )
    user_id_column: str | None = Field(
        None, validation_alias="user_id", description="Column sent as userId; default anonymousId = the delivery id."
    )
    anonymous_id_column: str | None = Field(
        None, validation_alias="anonymous_id", description="Column sent as anonymousId."
    )
    timestamp_column: str | None = Field(
        None, validation_alias="timestamp", description="Column sent as timestamp (when the metric happened)."
    )
    properties: ColumnNames | None = Field(
        None,
        description="Columns sent as further properties (e.g. recipient, reason, href); default every other column.",
    )

    def _own_columns(self) -> list[str]:
        return [self.delivery_id_column, self.metric_column]

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        delivery_id = present(part, self.delivery_id_column, "delivery id")
        metric = present(part, self.metric_column, "metric")
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
