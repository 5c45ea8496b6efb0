"""Source rows to API calls: the upsert call, its key, and the call that will delete it later."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from dagster_cdp.encoding import dumps
from dagster_cdp.packing import MAX_CALL_BYTES
from dagster_cdp.sync.cursor import encode
from dagster_cdp.sync.definition import Objects, People, Relationships, SyncDefinition
from dagster_cdp.sync.errors import SourceError
from dagster_cdp.sync.kinds import CallMapping, MissingKeyError
from dagster_cdp.sync.values import BadValueError, Unreadable, to_json_value, to_key_part

_MESSAGE_ID_FIELD = len(b',"messageId":""') + 36  # every messageId we send is a 36-character uuid


def hash_hex(data: bytes) -> str:
    """The 128-bit hash used for keys and payloads (32 hex characters, fixed width so it can be indexed)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def canonical_json(value: Any) -> bytes:
    return dumps(value, sort_keys=True)


def json_text(value: Any) -> str | None:
    """A call or payload as JSON text for the work file and the state table; None stays None."""
    return None if value is None else dumps(value).decode()


@dataclass
class MappedRow:
    """One source row, ready for the diff. `problem` is set when the row must be reported, not sent."""

    key: str
    key_hash: str
    payload: dict | None
    payload_hash: str | None
    delete_call: dict | None
    problem: str | None = None
    cursor: int | None = None  # the encoded cursor column value, for incremental reads
    check: int = 0  # the warehouse's check of the row's key columns, tallied below the cursor mark (`cursor`)
    row_hash: str | None = None  # the warehouse's hash of the row's columns (in-warehouse diff only)


@dataclass(frozen=True)
class ValueColumns:
    """The source columns a run sends as values, and removed ones it clears at Customer.io (sends as null)."""

    sent: list[str]
    cleared: list[str]
    all_columns: bool  # the mapping takes every column that is not an identifier (its column set is recorded)


@dataclass(frozen=True)
class Key:
    """How a mapping builds a row's key: pieces that are a column's text or a literal, concatenated into one
    string, or (`json`) each an element of a JSON array."""

    pieces: tuple[tuple[str, str], ...]  # ("column", name) or ("literal", text)
    json: bool

    def columns(self) -> list[str]:
        return [value for kind, value in self.pieces if kind == "column"]

    def text(self, parts: Sequence[str]) -> str:
        """The key Python makes of these parts (the one kept in the state)."""
        return orjson.dumps(list(parts)).decode() if self.json else parts[0]


def key_of(definition: SyncDefinition) -> Key:
    m = definition.mapping

    def column(name: str) -> tuple[str, str]:
        return ("column", name)

    if isinstance(m, People):
        key_column = m.id_column or m.email_column
        assert key_column is not None  # People requires id_column or email_column
        return Key((column(key_column),), json=False)
    if isinstance(m, Objects):
        if m.object_type_column:
            return Key((column(m.object_type_column), ("literal", ":"), column(m.id_column)), json=False)
        return Key((("literal", f"{m.object_type}:"), column(m.id_column)), json=False)
    if isinstance(m, Relationships):
        kind = column(m.object_type_column) if m.object_type_column else ("literal", str(m.object_type))
        return Key((column(m.user_id_column), kind, column(m.object_id_column)), json=True)
    assert isinstance(m, CallMapping)
    names = m.key_columns()
    return Key(tuple(map(column, names)), json=len(names) > 1)


def mapping_columns(definition: SyncDefinition) -> tuple[list[str], set[str], list[str] | None]:
    """(identifier columns, columns never sent by default, listed value columns or None for every other one)."""
    m = definition.mapping
    if isinstance(m, People):
        return (
            [c for c in (m.id_column, m.email_column) if c],
            {m.id_column} if m.id_column else set(),
            _listed(m.traits),
        )
    if isinstance(m, Objects):
        keys = [c for c in (m.id_column, m.object_type_column) if c]
        return keys, set(keys), _listed(m.traits)
    if isinstance(m, CallMapping):
        keys = m.identifier_columns()
        never_sent = {*keys, definition.cursor_column} if definition.cursor_column is not None else set(keys)
        return keys, never_sent, _listed(m.value_columns())
    keys = [c for c in (m.user_id_column, m.object_id_column, m.object_type_column) if c]
    return keys, set(keys), _listed(m.attributes)


def _listed(columns: Sequence[str] | None) -> list[str] | None:
    return None if columns is None else list(columns)


def value_columns(definition: SyncDefinition, columns: Sequence[str]) -> ValueColumns:
    """The value columns of a source with these columns, before any recorded column set is considered."""
    _, default_exclude, listed = mapping_columns(definition)
    if listed is not None:
        return ValueColumns(listed, [], all_columns=False)
    return ValueColumns([c for c in columns if c not in default_exclude], [], all_columns=True)


class RowMapper:
    """Maps rows of a source with known columns; built once per run so column checks happen before any send."""

    def __init__(self, definition: SyncDefinition, columns: Sequence[str], values: ValueColumns | None = None) -> None:
        self._mapping = definition.mapping
        self._columns = list(columns)
        key_columns, _, listed = mapping_columns(definition)
        values = values or value_columns(definition, self._columns)
        cursor = [definition.cursor_column] if definition.cursor_column else []
        for column in [*key_columns, *(listed or []), *cursor]:
            if column not in self._columns:
                raise SourceError(
                    f"Sync {definition.name!r}: the mapping names column {column!r}, which the source does not have. "
                    f"Its columns are: {', '.join(map(repr, self._columns))}."
                )
        sent = list(values.sent)
        m = self._mapping
        if isinstance(m, People) and m.email_column and m.email_column not in sent:
            sent.append(m.email_column)
        self._values = [(c, self._columns.index(c)) for c in sent]
        self._cleared = dict.fromkeys(values.cleared)
        self._index = {c: self._columns.index(c) for c in key_columns}
        self._cursor_column = definition.cursor_column
        self._cursor_index = self._columns.index(definition.cursor_column) if definition.cursor_column else None
        self.cursor_kind: str | None = None  # how the cursor values read so far are encoded (cursor.KINDS)

    def map(self, row: Sequence[Any]) -> MappedRow | tuple[None, str]:
        """A MappedRow, or (None, reason) for a row that has no usable key."""
        m = self._mapping
        try:
            if isinstance(m, CallMapping):
                return self._with_cursor(row, self._map_call(row, m))
            return self._map_entity(row, m)
        except BadValueError as exc:  # a key value that cannot be an identifier (NaN, unreadable)
            return None, str(exc)

    def _row_values(self, row: Sequence[Any]) -> dict[str, Any]:
        """The mapped values (removed columns being cleared first, as null); raises BadValueError."""
        values = dict.fromkeys(self._cleared)
        column = ""
        try:
            for column, index in self._values:
                values[column] = to_json_value(row[index], column)
        except RecursionError:
            raise BadValueError(f"column {column!r} holds JSON nested too deep to send") from None
        return values

    def _map_entity(self, row: Sequence[Any], m: People | Objects | Relationships) -> MappedRow | tuple[None, str]:
        if isinstance(m, People):
            parts = [
                self._key_part(row, m.id_column) if m.id_column else None,
                self._key_part(row, m.email_column) if m.email_column else None,
            ]
            user_id, email = parts
            if m.id_column:
                if user_id is None:
                    return None, f"NULL or empty key in column {m.id_column!r}"
                key = user_id
            else:
                if email is None:
                    return None, f"NULL or empty key in column {m.email_column!r}"
                key = email
            payload_key: dict[str, Any] = {"type": "identify", "userId": user_id if m.id_column else ""}
            delete_call: dict[str, Any] = (
                {"type": "track", "event": "User Deleted", "userId": user_id}
                if m.id_column
                else {"type": "track", "event": "User Deleted", "userId": "", "context": {"traits": {"email": email}}}
            )
        else:
            if isinstance(m, Objects):
                object_id_column = m.id_column
            else:
                object_id_column = m.object_id_column
            object_id = self._key_part(row, object_id_column)
            if object_id is None:
                return None, f"NULL or empty key in column {object_id_column!r}"
            if m.object_type_column:
                type_id = self._key_part(row, m.object_type_column)
                if type_id is None or not type_id.isdigit():
                    return None, f"object type {type_id!r} in column {m.object_type_column!r} is not an integer id"
            else:
                type_id = str(m.object_type)
            if isinstance(m, Objects):
                key = f"{type_id}:{object_id}"
                payload_key = {"type": "group", "groupId": object_id}
                delete_call = {
                    "type": "track",
                    "event": "Object Deleted",
                    "anonymousId": object_id,
                    "properties": {"objectId": object_id, "objectTypeId": type_id},
                }
            else:
                user_id = self._key_part(row, m.user_id_column)
                if user_id is None:
                    return None, f"NULL or empty key in column {m.user_id_column!r}"
                key = orjson.dumps([user_id, type_id, object_id]).decode()
                payload_key = {"type": "group", "userId": user_id, "groupId": object_id}
                delete_call = {
                    "type": "track",
                    "event": "Relationship Deleted",
                    "userId": user_id,
                    "properties": {"objectId": object_id, "objectTypeId": type_id},
                }
        key_hash = hash_hex(key.encode())
        try:
            values = self._row_values(row)
        except BadValueError as exc:
            return MappedRow(key, key_hash, None, None, None, problem=str(exc))
        if isinstance(m, People):
            payload = {**payload_key, "traits": values}
        elif isinstance(m, Objects):
            payload = {**payload_key, "traits": {**values, "objectTypeId": type_id}}
        else:
            payload = {**payload_key, "traits": {"objectTypeId": type_id, "relationshipAttributes": values}}
        return self._sized(key, key_hash, payload, delete_call)

    def _map_call(self, row: Sequence[Any], m: CallMapping) -> MappedRow | tuple[None, str]:
        def part(column: str) -> str | None:
            return self._key_part(row, column)

        try:
            key = m.key(part)
        except MissingKeyError as exc:
            return None, str(exc)
        key_hash = hash_hex(key.encode())
        try:
            payload, delete_call = m.calls(part, self._row_values(row))
        except BadValueError as exc:
            return MappedRow(key, key_hash, None, None, None, problem=str(exc))
        return self._sized(key, key_hash, payload, delete_call)

    def _with_cursor(self, row: Sequence[Any], mapped: MappedRow | tuple[None, str]) -> MappedRow | tuple[None, str]:
        """Adds the encoded cursor (None for a NULL one); a row whose cursor cannot be read is reported."""
        if self._cursor_index is None or not isinstance(mapped, MappedRow):
            return mapped
        value = row[self._cursor_index]
        if isinstance(value, Unreadable):
            return MappedRow(
                mapped.key,
                mapped.key_hash,
                None,
                None,
                None,
                problem=f"cursor column {self._cursor_column!r} holds {value.text[:40]!r}, {value.reason}",
            )
        mapped.cursor = self.cursor_of(row)
        return mapped

    def cursor_of(self, row: Sequence[Any]) -> int | None:
        """The row's encoded cursor value (None when NULL or unreadable); one sync's values must share a kind."""
        if self._cursor_index is None or self._cursor_column is None:
            return None  # no cursor column: as for a NULL value
        value = row[self._cursor_index]
        encoded = None if isinstance(value, Unreadable) else encode(value, self._cursor_column)
        if encoded is None:
            return None
        kind, cursor = encoded
        if self.cursor_kind is None:
            self.cursor_kind = kind
        elif kind != self.cursor_kind:
            raise SourceError(
                f"Cursor column {self._cursor_column!r} mixes {self.cursor_kind} and {kind} values; "
                "cast it to one type in the query."
            )
        return cursor

    def _sized(self, key: str, key_hash: str, payload: dict, delete_call: dict | None) -> MappedRow:
        """The row, or a problem row when its call is over the API's size limit."""
        try:
            encoded = canonical_json(payload)
        except TypeError as exc:  # orjson's: nesting past its limit, lone surrogates
            return MappedRow(key, key_hash, None, None, None, problem=f"call cannot be encoded as JSON: {exc}")
        if len(encoded) + _MESSAGE_ID_FIELD > MAX_CALL_BYTES:
            return MappedRow(
                key,
                key_hash,
                None,
                None,
                None,
                problem=f"call is {len(encoded) + _MESSAGE_ID_FIELD:,} bytes encoded, over the API's "
                f"{MAX_CALL_BYTES:,}-byte limit per call; trim the mapped columns",
            )
        return MappedRow(key, key_hash, payload, hash_hex(encoded), delete_call)

    def _key_part(self, row: Sequence[Any], column: str) -> str | None:
        part = to_key_part(row[self._index[column]], column)
        return part or None
