"""The kinds whose rows are Customer.io's entities: people (`identify`), objects and relationships (`group`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from dagster_cdp.sync.declaration import CallMapping, ColumnNames, Key, MissingKeyError, Part, columns, required

_OBJECT_TYPE = "Object type id (traits.objectTypeId)."
_OBJECT_TYPE_COLUMN = "Column holding a per-row object type id instead."


class People(CallMapping):
    """Rows are people: each becomes an `identify` call; mirror-mode deletions send `User Deleted`."""

    kind: Literal["people"] = "people"
    id_column: str | None = Field(None, validation_alias="id", description="Column sent as userId.")
    email_column: str | None = Field(
        None, validation_alias="email", description="Column identifying people by email when there is no id column."
    )
    traits: ColumnNames | None = Field(None, description="Columns sent as traits; default every other column.")
    active: bool = Field(False, description="Send context.active (a warehouse sync is not activity, so default off).")

    @model_validator(mode="after")
    def _identified(self) -> People:
        if not self.id_column and not self.email_column:
            raise ValueError("People needs id_column (userId) or email_column (identify by email); neither was given.")
        return self

    def identifier_columns(self) -> list[str]:
        return columns(self.id_column, self.email_column)

    def never_sent_columns(self) -> list[str]:
        return columns(self.id_column)  # the email is sent as a trait too

    def always_sent_columns(self) -> list[str]:
        return columns(self.email_column)

    def value_columns(self) -> Sequence[str] | None:
        return self.traits

    def key_columns(self) -> list[str]:
        return columns(self.id_column or self.email_column)

    def key(self, part: Part) -> str:
        user_id, email = self._ids(part)  # both read first: an unreadable email rejects the row too
        key = user_id if self.id_column else email
        if key is None:
            raise MissingKeyError(f"NULL or empty key in column {self.id_column or self.email_column!r}")
        return key

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        user_id, email = self._ids(part)
        if self.id_column:
            delete: dict[str, Any] = {"type": "track", "event": "User Deleted", "userId": user_id}
        else:
            delete = {"type": "track", "event": "User Deleted", "userId": "", "context": {"traits": {"email": email}}}
        return {"type": "identify", "userId": user_id if self.id_column else "", "traits": values}, delete

    def _ids(self, part: Part) -> tuple[str | None, str | None]:
        return (
            part(self.id_column) if self.id_column else None,
            part(self.email_column) if self.email_column else None,
        )

    def batch_context(self) -> dict[str, Any]:
        return {"active": self.active}

    def mirror_refusal(self) -> str | None:
        if self.id_column is not None:
            return None
        return (
            "people identified only by email cannot be deleted (User Deleted needs a userId), so mirror mode is "
            "not possible; use mode='upsert' or set id_column."
        )


def object_type_id(value: Any) -> str:
    """An object type id as the API wants it: a string of digits (YAML may give 1 or "1")."""
    if isinstance(value, bool) or not str(value).isdigit():
        raise ValueError(f"object_type must be an integer object type id such as 1, got {value!r}.")
    return str(value)


def _type_id(part: Part, object_type: int | str, type_column: str | None) -> str:
    """The row's object type id; raises MissingKeyError when its column holds no integer id."""
    if not type_column:
        return str(object_type)
    type_id = part(type_column)
    if type_id is None or not type_id.isdigit():
        raise MissingKeyError(f"object type {type_id!r} in column {type_column!r} is not an integer id")
    return type_id


class Objects(CallMapping):
    """Rows are objects (accounts, companies, ...): each becomes a `group` call with no userId."""

    kind: Literal["objects"] = "objects"
    id_column: str = Field(validation_alias="id", description="Column sent as groupId.")
    object_type: int | str = Field("1", description=_OBJECT_TYPE)
    object_type_column: str | None = Field(None, description=_OBJECT_TYPE_COLUMN)
    traits: ColumnNames | None = Field(None, description="Columns sent as traits; default every other column.")

    _object_type = field_validator("object_type", mode="before")(object_type_id)

    def identifier_columns(self) -> list[str]:
        return columns(self.id_column, self.object_type_column)

    def value_columns(self) -> Sequence[str] | None:
        return self.traits

    def key_shape(self) -> Key:
        if self.object_type_column:
            return Key((("column", self.object_type_column), ("literal", ":"), ("column", self.id_column)), json=False)
        return Key((("literal", f"{self.object_type}:"), ("column", self.id_column)), json=False)

    def key(self, part: Part) -> str:
        object_id, type_id = self._object(part)
        return f"{type_id}:{object_id}"

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        object_id, type_id = self._object(part)
        delete = {
            "type": "track",
            "event": "Object Deleted",
            "anonymousId": object_id,
            "properties": {"objectId": object_id, "objectTypeId": type_id},
        }
        return {"type": "group", "groupId": object_id, "traits": {**values, "objectTypeId": type_id}}, delete

    def _object(self, part: Part) -> tuple[str, str]:
        object_id = required(part, self.id_column)
        return object_id, _type_id(part, self.object_type, self.object_type_column)


class Relationships(CallMapping):
    """Rows relate a person to an object: each becomes a `group` call with userId and groupId."""

    kind: Literal["relationships"] = "relationships"
    user_id_column: str = Field(validation_alias="user_id", description="Column sent as userId.")
    object_id_column: str = Field(validation_alias="object_id", description="Column sent as groupId.")
    object_type: int | str = Field("1", description=_OBJECT_TYPE)
    object_type_column: str | None = Field(None, description=_OBJECT_TYPE_COLUMN)
    attributes: ColumnNames | None = Field(
        None, description="Columns sent as traits.relationshipAttributes; default every other column."
    )

    _object_type = field_validator("object_type", mode="before")(object_type_id)

    def identifier_columns(self) -> list[str]:
        return columns(self.user_id_column, self.object_id_column, self.object_type_column)

    def value_columns(self) -> Sequence[str] | None:
        return self.attributes

    def key_shape(self) -> Key:
        column = self.object_type_column
        type_piece = ("column", column) if column else ("literal", str(self.object_type))
        return Key((("column", self.user_id_column), type_piece, ("column", self.object_id_column)), json=True)

    def key(self, part: Part) -> str:
        return orjson.dumps(list(self._relationship(part))).decode()

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        user_id, type_id, object_id = self._relationship(part)
        delete = {
            "type": "track",
            "event": "Relationship Deleted",
            "userId": user_id,
            "properties": {"objectId": object_id, "objectTypeId": type_id},
        }
        traits = {"objectTypeId": type_id, "relationshipAttributes": values}
        return {"type": "group", "userId": user_id, "groupId": object_id, "traits": traits}, delete

    def _relationship(self, part: Part) -> tuple[str, str, str]:
        """(user id, object type id, object id), read in the order their problems are reported."""
        object_id = required(part, self.object_id_column)
        type_id = _type_id(part, self.object_type, self.object_type_column)
        return required(part, self.user_id_column), type_id, object_id
