"""Source rows to API calls: the upsert call, its key, and the call that will delete it later."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagster_cdp.calls import problem_with
from dagster_cdp.encoding import dumps
from dagster_cdp.packing import MAX_CALL_BYTES
from dagster_cdp.sync.cursor import encode
from dagster_cdp.sync.declaration import MissingKeyError
from dagster_cdp.sync.definition import SyncDefinition
from dagster_cdp.sync.sync_errors import SourceError
from dagster_cdp.sync.values import BadValueError, Unreadable, to_json_value, to_key_part

_AS_THEY_ARE = frozenset({str, bool, type(None)})  # what `to_json_value` returns unchanged, checked first there
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
    # the call passed the client's checks here, so it may be sent as its JSON with the messageId spliced in
    checked: bool = False


@dataclass(frozen=True)
class ValueColumns:
    """The source columns a run sends as values, and removed ones it clears at Customer.io (sends as null)."""

    sent: list[str]
    cleared: list[str]
    all_columns: bool  # the mapping takes every column that is not an identifier (its column set is recorded)


def mapping_columns(definition: SyncDefinition) -> tuple[list[str], set[str], list[str] | None]:
    """(identifier columns, columns never sent by default, listed value columns or None for every other one)."""
    m = definition.mapping
    cursor = [definition.cursor_column] if definition.cursor_column is not None else []
    return m.identifier_columns(), {*m.never_sent_columns(), *cursor}, _listed(m.value_columns())


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
        sent.extend(c for c in self._mapping.always_sent_columns() if c not in sent)
        self._values = [(c, self._columns.index(c)) for c in sent]
        self._cleared = dict.fromkeys(values.cleared)
        self._index = {c: self._columns.index(c) for c in key_columns}
        self._cursor_column = definition.cursor_column
        self._cursor_index = self._columns.index(definition.cursor_column) if definition.cursor_column else None
        self.cursor_kind: str | None = None  # how the cursor values read so far are encoded (cursor.KINDS)

    def map(self, row: Sequence[Any]) -> MappedRow | tuple[None, str]:
        """A MappedRow, or (None, reason) for a row that has no usable key."""
        try:
            return self._with_cursor(row, self._mapped(row))
        except BadValueError as exc:  # a key value that cannot be an identifier (NaN, unreadable)
            return None, str(exc)

    def _row_values(self, row: Sequence[Any]) -> dict[str, Any]:
        """The mapped values (removed columns being cleared first, as null); raises BadValueError."""
        values = dict.fromkeys(self._cleared)
        column = ""
        try:
            for column, index in self._values:
                value = row[index]  # text, NULL and booleans are sent as they are: no call for the commonest values
                values[column] = value if type(value) in _AS_THEY_ARE else to_json_value(value, column)
        except RecursionError:
            raise BadValueError(f"column {column!r} holds JSON nested too deep to send") from None
        return values

    def _mapped(self, row: Sequence[Any]) -> MappedRow | tuple[None, str]:
        parts: dict[str, str | None] = {}

        def part(column: str) -> str | None:  # key() and calls() both read the identifiers: read each once
            if column not in parts:
                parts[column] = self._key_part(row, column)
            return parts[column]

        try:
            key = self._mapping.key(part)
        except MissingKeyError as exc:
            return None, str(exc)
        key_hash = hash_hex(key.encode())
        try:
            payload, delete_call = self._mapping.calls(part, self._row_values(row))
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
        checked = "messageId" not in payload and problem_with(payload) is None  # the client's check, once here
        return MappedRow(key, key_hash, payload, hash_hex(encoded), delete_call, checked=checked)

    def _key_part(self, row: Sequence[Any], column: str) -> str | None:
        part = to_key_part(row[self._index[column]], column)
        return part or None
