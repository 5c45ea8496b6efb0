"""How a kind of sync is declared: one pydantic model per kind (its fields, defaults, checks and descriptions, for
Python and, through the fields' YAML names, for YAML and dbt `meta.cdp`) that also maps a row to its calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import orjson
import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict

from dagster_cdp.sync.sync_errors import SourceError
from dagster_cdp.sync.values import BadValueError

Part = Callable[[str], "str | None"]  # a column's value as an identifier string; None for NULL or empty

# Column names, given as any sequence (a list, in Python or YAML) and kept as a tuple, so a mapping is hashable.
ColumnNames = Annotated[Sequence[str], AfterValidator(tuple)]


class MissingKeyError(ValueError):
    """A row has no usable key; it is reported and not sent."""


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


class CallMapping(BaseModel):
    """What a sync's rows are: each row becomes calls through `key` and `calls`, diffed alike for every kind.

    Fields are named after what they hold (`id_column`); their `validation_alias` is the declared name (`id`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    send_once: ClassVar[bool] = False
    kind: str

    def __init__(self, **data: Any) -> None:
        """Built in Python, a bad value raises SourceError like any other bad definition (`model_validate`, used
        for declared syncs, keeps pydantic's located errors)."""
        try:
            super().__init__(**data)
        except pydantic.ValidationError as e:
            raise SourceError("; ".join(self._problem(error) for error in e.errors())) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # so `model_validate` does not call it

    def _problem(self, error: Any) -> str:
        if error["type"] == "value_error":
            return str(error["ctx"]["error"])
        names = {field.validation_alias: name for name, field in type(self).model_fields.items()}
        where = ".".join(str(names.get(part, part)) for part in error["loc"])  # Python's name, not the declared one
        return f"{type(self).__name__}: {where}: {error['msg']}"

    def identifier_columns(self) -> list[str]:
        """Columns read as identifiers (never sent as properties by default)."""
        raise NotImplementedError

    def never_sent_columns(self) -> list[str]:
        """Identifier columns not sent as values when the mapping takes every other column."""
        return self.identifier_columns()

    def always_sent_columns(self) -> list[str]:
        """Identifier columns sent as values even when the value columns are listed."""
        return []

    def value_columns(self) -> Sequence[str] | None:
        """Columns sent as properties/attributes; None means every column that is not an identifier."""
        raise NotImplementedError

    def key_columns(self) -> list[str]:
        """The columns a row's key is made of: one column's value, or the JSON array of several (as `key` makes it,
        and as the in-warehouse diff matches it)."""
        raise NotImplementedError

    def key_shape(self) -> Key:
        """How `key` builds the key from columns and literals, for the in-warehouse diff to build it in SQL."""
        names = self.key_columns()
        return Key(tuple(("column", name) for name in names), json=len(names) > 1)

    def key(self, part: Part) -> str:
        """The row's key in the sync state; raises MissingKeyError."""
        parts = [required(part, column) for column in self.key_columns()]
        return parts[0] if len(parts) == 1 else orjson.dumps(parts).decode()

    def calls(self, part: Part, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(the call to send, the call that undoes it later or None); raises BadValueError for a row to report."""
        raise NotImplementedError

    def batch_context(self) -> dict[str, Any]:
        """`context` fields this kind sends with every batch, on top of the sync's own."""
        return {}

    def mirror_refusal(self) -> str | None:
        """Why this mapping's rows cannot be deleted, so mirror mode is impossible; None when they can."""
        return None


def required(part: Part, column: str) -> str:
    """The column's key part; raises MissingKeyError when it is NULL or empty."""
    value = part(column)
    if value is None:
        raise MissingKeyError(f"NULL or empty key in column {column!r}")
    return value


def present(part: Part, column: str, what: str) -> str:
    """The column's value; raises BadValueError (the row is reported) when it is NULL or empty."""
    value = part(column)
    if value is None:
        raise BadValueError(f"NULL or empty {what} in column {column!r}")
    return value


def columns(*names: str | None) -> list[str]:
    """The columns that are set, in order."""
    return [c for c in names if c]
