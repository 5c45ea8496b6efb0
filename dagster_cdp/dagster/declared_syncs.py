"""The declarative form of a sync (YAML in a component, `meta.cdp` on a dbt model), validated before anything runs.

Field names say which column feeds what (`id: user_id`), as in `meta: {cdp: {kind: people, id: user_id}}`. A kind's
fields, checks and descriptions are its mapping class's (`dagster_cdp.sync.definition.KINDS`), under their declared
names; the model of a kind here adds those every sync has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, cast

import pydantic
from dagster.components.resolved.core_models import AssetAttributesModel
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dagster_cdp.errors import CdpError
from dagster_cdp.sync.declaration import CallMapping
from dagster_cdp.sync.definition import KINDS, SyncDefinition
from dagster_cdp.sync.sync_errors import SourceError


class InvalidSyncError(CdpError, ValueError):
    """A declared sync is malformed; `problems` holds (path inside the declaration, message) pairs."""

    def __init__(self, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{'.'.join(map(str, path)) or 'sync'}: {msg}" for path, msg in self.problems))


class SyncModel(BaseModel):
    """Fields every kind of sync shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    IGNORED: ClassVar[tuple[str, ...]] = ()  # settings this kind ignores: refused when written, not in its schema
    kind: str = Field(description="What the rows are, and so which calls they become.")

    name: str = Field(description="Unique, stable name; it keys the stored state, so renaming starts from scratch.")
    table: str | None = Field(None, description='Source table, "table" or "schema.table". Exactly one of table/query.')
    query: str | None = Field(None, description="Source SQL query. Exactly one of table/query.")
    mode: Literal["mirror", "upsert"] = Field("mirror", description="mirror also sends deletions; upsert never does.")
    max_delete_fraction: float = Field(0.25, description="Abort when deletions exceed this share of the synced rows.")
    max_row_attempts: int = Field(3, description="Attempts for a rejected row before it is skipped (still reported).")
    context: dict[str, Any] | None = Field(None, description="Extra `context` fields sent with every call.")
    integrations: dict[str, Any] | None = Field(None, description="`integrations` sent with every call.")
    asset_key: str | None = Field(None, description='Asset key, "/"-separated; default "cdp_<name>".')
    deps: list[str] = Field(
        default_factory=list, description='Upstream asset keys ("/"-separated), e.g. the source model.'
    )
    max_rejected_fraction: float = Field(
        0.0, description="The rejection check fails when rejected rows exceed this share of source rows."
    )
    partitions: int = Field(
        1,
        description=(
            "Hash partitions of the key, one Dagster partition each (run in parallel; they share the rate limit)."
        ),
    )
    on_schema_change: Literal["fail", "append_new_columns", "sync_all_columns"] = Field(
        "fail",
        description="When a mapping that sends every column sees columns added or removed (as in dbt): "
        "fail (send nothing), append_new_columns (send new ones), sync_all_columns (also clear removed ones).",
    )
    lock_timeout: float = Field(
        600,
        description="Seconds a run waits for another run of this sync (or, on a DuckDB file, for another process "
        "using the file) to finish before failing (0: fail at once).",
    )
    max_calls_per_second: float | None = Field(
        None,
        description="Never send faster than this many calls per second (each request carries at most a second's "
        "worth; with partitions, each partition sends its share). Unset: as fast as the client's rate limit allows.",
    )
    max_changes_per_run: int | None = Field(
        None,
        description="Send at most this many calls (inserts, updates, deletions) in one run; the next run sends the "
        "rest, so a large first sync is spread over scheduled runs. Unset: every change in one run.",
    )
    history_days: int = Field(
        90,
        description="Days each run of this sync is kept in the history table cdp_runs (at least 1); the rows it "
        "could not sync are kept in cdp_rejections until they are.",
    )
    translation: dict[str, Any] | None = Field(
        None,
        description="This sync's asset attributes (key, group_name, tags, owners, kinds, description, "
        "automation_condition, ...), templated with {{ sync.* }}; applied after the component's `translation`.",
        json_schema_extra={"propertyNames": {"enum": list(AssetAttributesModel.model_fields)}},
    )

    @field_validator("translation")
    @classmethod
    def _asset_attributes(cls, translation: dict[str, Any] | None) -> dict[str, Any] | None:
        """Checked as Dagster's translation blocks are (kept as a mapping: Dagster's component models refuse
        nested models they cannot template)."""
        if translation is not None:
            AssetAttributesModel.model_validate(translation)
        return translation

    @model_validator(mode="after")
    def _valid(self) -> SyncModel:
        """The engine's checks of a sync (one set of rules for Python, YAML and dbt), and those of this model's own
        fields."""
        self._refuse_ignored_settings()
        if not 0 <= self.max_rejected_fraction <= 1:
            raise ValueError(f"max_rejected_fraction must be between 0 and 1, got {self.max_rejected_fraction}")
        try:
            self.to_definition()
        except SourceError as e:
            raise ValueError(str(e)) from None
        return self

    def declared(self) -> dict[str, Any]:
        """The sync under its declared names (`id`, not the Python `id_column`): what `{{ sync.* }}` templates read."""
        return {
            field.validation_alias if isinstance(field.validation_alias, str) else name: getattr(self, name)
            for name, field in type(self).model_fields.items()
        }

    def _refuse_ignored_settings(self) -> None:
        """Raises ValueError for settings written out that this kind ignores (the engine cannot tell them from
        defaults)."""
        for field in self.IGNORED:
            if field in self.model_fields_set:
                raise ValueError(
                    f"{field!r} does not apply to {self.kind} syncs: each row is sent once, never updated "
                    "or deleted; leave it out"
                )

    def to_definition(self) -> SyncDefinition:
        """The engine's definition of this sync."""
        return SyncDefinition(
            name=self.name,
            mapping=self._mapping(),
            table=self.table,
            query=self.query,
            mode=self.mode,
            max_delete_fraction=self.max_delete_fraction,
            max_row_attempts=self.max_row_attempts,
            context=self.context,
            integrations=self.integrations,
            partitions=self.partitions,
            on_schema_change=self.on_schema_change,
            lock_timeout=self.lock_timeout,
            max_calls_per_second=self.max_calls_per_second,
            max_changes_per_run=self.max_changes_per_run,
            history_days=self.history_days,
        )

    def _mapping(self) -> CallMapping:
        """The engine's mapping, built from this model's mapping fields (those of its kind's class)."""
        mapping = KINDS[self.kind]
        return mapping(**{name: getattr(self, name) for name in mapping.model_fields})


class SendOnceSyncModel(SyncModel):
    """Kinds whose rows are each sent once ever, optionally read incrementally by a cursor column."""

    cursor: str | None = Field(
        None,
        description="Cursor column (e.g. loaded_at, occurred_at): the portable diff reads only rows at or "
        "after the sync's mark, once the rows below it are verified to be those already settled, "
        "else every row; late rows are never missed. The in-warehouse diff does not need it.",
    )
    lookback: float = Field(
        0,
        description="Seconds (units, for an integer cursor) also re-read below the cursor's "
        "mark; not needed, since the rows below the mark are verified.",
    )

    IGNORED = ("mode", "max_delete_fraction")

    def to_definition(self) -> SyncDefinition:
        return dataclasses.replace(super().to_definition(), cursor_column=self.cursor, lookback=self.lookback)


def _sync_model(mapping: type[CallMapping]) -> type[SyncModel]:
    """A kind's declared form: its mapping's fields, under their declared names, and the fields every sync has."""
    base = SendOnceSyncModel if mapping.send_once else SyncModel
    kind: Any = mapping.model_fields["kind"].annotation  # its Literal, required here, unlike in Python
    model = pydantic.create_model(
        f"{mapping.__name__}SyncModel",
        __base__=(mapping, base),
        __doc__=mapping.__doc__,
        __module__=__name__,
        kind=(kind, Field(description=SyncModel.model_fields["kind"].description)),
    )
    return cast(type[SyncModel], model)


_MODELS: dict[str, type[SyncModel]] = {kind: _sync_model(mapping) for kind, mapping in KINDS.items()}
globals().update({model.__name__: model for model in _MODELS.values()})  # importable by name, so declared syncs pickle


def declarations_json_schema() -> dict[str, Any]:
    """The JSON schema of a list of declared syncs, which editors and `dg check yaml` read: each kind's fields,
    chosen by `kind` with if/then (so a wrong field is reported as such, where a `oneOf` would only say that no kind
    matched), with no references (no field is a model) so it can be nested in a component's schema."""
    kinds = [_kind_schema(model) for model in _MODELS.values()]
    item = {
        "type": "object",
        "required": ["kind", "name"],
        "properties": {"kind": {"enum": list(KINDS), "description": "What the rows are; it decides the other fields."}},
        "allOf": [
            {"if": {"properties": {"kind": kinds_schema["properties"]["kind"]}}, "then": kinds_schema}
            for kinds_schema in kinds
        ],
    }
    return {"type": "array", "items": item}


def _kind_schema(model: type[SyncModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    for field in model.IGNORED:
        del schema["properties"][field]
    return schema


def parse_sync(raw: Mapping[str, Any]) -> SyncModel:
    """Validates one declared sync (a mapping with `kind`); raises InvalidSyncError listing every problem."""
    if not isinstance(raw, Mapping):
        raise InvalidSyncError([((), f"a sync must be a mapping with `kind` and `name`, got {raw!r}")])
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in _MODELS:
        raise InvalidSyncError([(("kind",), f"kind must be one of {', '.join(KINDS)}; got {kind!r}")])
    model = _MODELS[kind]
    try:
        return model.model_validate(raw, by_alias=True, by_name=False)  # `id`, not the Python `id_column`
    except pydantic.ValidationError as e:
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")  # a typo explains the rest
        raise InvalidSyncError([(tuple(err["loc"]), _message(kind, model, err)) for err in errors]) from None


def name_clash(names: Sequence[str]) -> tuple[int, str] | None:
    """(position, problem) of the first name equal to an earlier one, or differing from it only in case.

    Names key the stored state; names differing only in case are refused too, since people (and MySQL's default
    collations) take them for one name.
    """
    seen: dict[str, str] = {}
    for index, name in enumerate(names):
        earlier = seen.get(name.casefold())
        if earlier == name:
            return index, f"sync name {name!r} is used twice; names key the state"
        if earlier is not None:
            return index, f"sync names {earlier!r} and {name!r} differ only in case; names key the state: rename one"
        seen[name.casefold()] = name
    return None


def check_names(definitions: Sequence[SyncDefinition]) -> None:
    """Refuses syncs built in Python whose names clash (see `name_clash`), before any asset exists."""
    if clash := name_clash([d.name for d in definitions]):
        raise ValueError(clash[1])


def _message(kind: str, model: type[SyncModel], error: Any) -> str:
    if error["type"] == "extra_forbidden":
        fields = [str(field.validation_alias or name) for name, field in model.model_fields.items()]
        return f"{error['loc'][-1]!r} is not a field of {kind} syncs; their fields are {', '.join(fields)}"
    if error["type"] == "missing":
        return f"{error['loc'][-1]!r} is required for {kind} syncs"
    return str(error["msg"]).removeprefix("Value error, ")
