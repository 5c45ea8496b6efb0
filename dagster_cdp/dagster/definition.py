"""The declarative form of a sync (YAML in a component, `meta.cdp` on a dbt model), validated before anything runs.

Field names say which column feeds what (`id: user_id`), as in `meta: {cdp: {kind: people, id: user_id}}`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

import pydantic
from dagster.components.resolved.core_models import AssetAttributesModel
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dagster_cdp.errors import CdpError
from dagster_cdp.sync import (
    Aliases,
    DeliveryReports,
    Devices,
    Events,
    Objects,
    Pages,
    People,
    Relationships,
    Screens,
    Suppressions,
    SyncDefinition,
)
from dagster_cdp.sync.declaration import CallMapping
from dagster_cdp.sync.errors import SourceError


class InvalidSyncError(CdpError, ValueError):
    """A declared sync is malformed; `problems` holds (path inside the declaration, message) pairs."""

    def __init__(self, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{'.'.join(map(str, path)) or 'sync'}: {msg}" for path, msg in self.problems))


class SyncModel(BaseModel):
    """Fields every kind of sync shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)
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
        600, description="Seconds a run waits for another run of this sync to finish before failing (0: fail at once)."
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
        if (self.table is None) == (self.query is None):
            raise ValueError(f"sync {self.name!r} needs exactly one of `table` or `query`")
        for fraction in ("max_delete_fraction", "max_rejected_fraction"):
            if not 0 <= getattr(self, fraction) <= 1:
                raise ValueError(f"{fraction} must be between 0 and 1, got {getattr(self, fraction)}")
        if self.max_row_attempts < 1:
            raise ValueError(f"max_row_attempts must be at least 1, got {self.max_row_attempts}")
        if self.partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {self.partitions}")
        if self.lock_timeout < 0:
            raise ValueError(f"lock_timeout must be >= 0 seconds, got {self.lock_timeout}")
        return self

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
        )

    def _mapping(self) -> CallMapping:
        raise NotImplementedError


def object_type_id(value: int | str) -> str:
    """An object type id as the API wants it: a string of digits (YAML may give 1 or "1")."""
    if isinstance(value, bool) or not str(value).isdigit():
        raise ValueError(f"object_type must be an integer object type id such as 1, got {value!r}")
    return str(value)


class PeopleSyncModel(SyncModel):
    """Rows are people → identify calls."""

    kind: Literal["people"]
    id: str | None = Field(None, description="Column sent as userId.")
    email: str | None = Field(None, description="Column identifying people by email when there is no id column.")
    traits: list[str] | None = Field(None, description="Columns sent as traits; default every other column.")
    active: bool = Field(False, description="Send context.active (a warehouse sync is not activity, so default off).")

    @model_validator(mode="after")
    def _identified(self) -> PeopleSyncModel:
        if self.id is None and self.email is None:
            raise ValueError(f"people sync {self.name!r} needs `id` (the userId column) or `email`")
        return self

    def _mapping(self) -> People:
        return People(id_column=self.id, email_column=self.email, traits=self.traits, active=self.active)


class ObjectsSyncModel(SyncModel):
    """Rows are objects (accounts, companies, ...) → group calls without userId."""

    kind: Literal["objects"]
    id: str = Field(description="Column sent as groupId.")
    object_type: int | str = Field("1", description="Object type id (traits.objectTypeId).")
    object_type_column: str | None = Field(None, description="Column holding a per-row object type id instead.")

    _object_type = field_validator("object_type")(object_type_id)
    traits: list[str] | None = Field(None, description="Columns sent as traits; default every other column.")

    def _mapping(self) -> Objects:
        return Objects(
            id_column=self.id,
            object_type=self.object_type,
            object_type_column=self.object_type_column,
            traits=self.traits,
        )


class RelationshipsSyncModel(SyncModel):
    """Rows relate a person to an object → group calls with userId and groupId."""

    kind: Literal["relationships"]
    user_id: str = Field(description="Column sent as userId.")
    object_id: str = Field(description="Column sent as groupId.")
    object_type: int | str = Field("1", description="Object type id (traits.objectTypeId).")
    object_type_column: str | None = Field(None, description="Column holding a per-row object type id instead.")

    _object_type = field_validator("object_type")(object_type_id)
    attributes: list[str] | None = Field(
        None, description="Columns sent as traits.relationshipAttributes; default every other column."
    )

    def _mapping(self) -> Relationships:
        return Relationships(
            user_id_column=self.user_id,
            object_id_column=self.object_id,
            object_type=self.object_type,
            object_type_column=self.object_type_column,
            attributes=self.attributes,
        )


class DevicesSyncModel(SyncModel):
    """Rows are a person's devices → `Device Created or Updated`; a device gone → `Device Deleted` (mirror mode)."""

    kind: Literal["devices"]
    user_id: str = Field(description="Column sent as userId (the device's person).")
    token: str = Field(description="Column sent as context.device.token.")
    platform: str = Field(description="Column sent as context.device.type (ios, android, ...).")
    attributes: list[str] | None = Field(
        None, description="Columns sent as device attributes; default every other column."
    )

    def _mapping(self) -> Devices:
        return Devices(
            user_id_column=self.user_id,
            token_column=self.token,
            platform_column=self.platform,
            attributes=self.attributes,
        )


class SuppressionsSyncModel(SyncModel):
    """Rows are suppressed person ids → `User Suppressed`; an id gone → `User Unsuppressed` (mirror mode)."""

    kind: Literal["suppressions"]
    user_id: str = Field(description="Column holding the suppressed userId.")

    def _mapping(self) -> Suppressions:
        return Suppressions(user_id_column=self.user_id)


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

    @model_validator(mode="after")
    def _valid_send_once(self) -> SendOnceSyncModel:
        for field in ("mode", "max_delete_fraction"):
            if field in self.model_fields_set:
                raise ValueError(
                    f"{field!r} does not apply to {self.kind} syncs: each row is sent once, never updated "
                    "or deleted; leave it out"
                )
        if self.lookback and self.cursor is None:
            raise ValueError("lookback needs `cursor` (the column to read incrementally by)")
        if self.lookback < 0:
            raise ValueError(f"lookback must be >= 0 seconds, got {self.lookback}")
        try:
            self._mapping()
        except SourceError as e:
            raise ValueError(str(e)) from None
        return self

    def to_definition(self) -> SyncDefinition:
        return dataclasses.replace(super().to_definition(), cursor_column=self.cursor, lookback=self.lookback)


class EventsSyncModel(SendOnceSyncModel):
    """Rows are events → `track` calls backdated to their timestamp, each event id sent once."""

    kind: Literal["events"]
    id: str = Field(description="Event id column: each id is sent once; the messageId derives from it.")
    event: str = Field(description="Column holding the event name.")
    user_id: str | None = Field(None, description="Column sent as userId.")
    anonymous_id: str | None = Field(None, description="Column sent as anonymousId (when there is no userId).")
    timestamp: str | None = Field(None, description="Column sent as timestamp (when the event happened).")
    properties: list[str] | None = Field(None, description="Columns sent as properties; default every other column.")

    def _mapping(self) -> Events:
        return Events(
            id_column=self.id,
            event_column=self.event,
            user_id_column=self.user_id,
            anonymous_id_column=self.anonymous_id,
            timestamp_column=self.timestamp,
            properties=self.properties,
        )


class PagesSyncModel(SendOnceSyncModel):
    """Rows are page views → `page` calls, each view id sent once."""

    kind: Literal["pages"]
    id: str = Field(description="View id column: each id is sent once.")
    page_name: str = Field(description="Column sent as the page's name.")
    user_id: str | None = Field(None, description="Column sent as userId.")
    anonymous_id: str | None = Field(None, description="Column sent as anonymousId (when there is no userId).")
    timestamp: str | None = Field(None, description="Column sent as timestamp (when the view happened).")
    properties: list[str] | None = Field(None, description="Columns sent as properties; default every other column.")

    def _mapping(self) -> Pages:
        return Pages(
            id_column=self.id,
            name_column=self.page_name,
            user_id_column=self.user_id,
            anonymous_id_column=self.anonymous_id,
            timestamp_column=self.timestamp,
            properties=self.properties,
        )


class ScreensSyncModel(SendOnceSyncModel):
    """Rows are mobile screen views → `screen` calls, each view id sent once."""

    kind: Literal["screens"]
    id: str = Field(description="View id column: each id is sent once.")
    screen_name: str = Field(description="Column sent as the screen's name.")
    user_id: str | None = Field(None, description="Column sent as userId.")
    anonymous_id: str | None = Field(None, description="Column sent as anonymousId (when there is no userId).")
    timestamp: str | None = Field(None, description="Column sent as timestamp (when the view happened).")
    properties: list[str] | None = Field(None, description="Columns sent as properties; default every other column.")

    def _mapping(self) -> Screens:
        return Screens(
            id_column=self.id,
            name_column=self.screen_name,
            user_id_column=self.user_id,
            anonymous_id_column=self.anonymous_id,
            timestamp_column=self.timestamp,
            properties=self.properties,
        )


class AliasesSyncModel(SendOnceSyncModel):
    """Rows are (previous id, user id) pairs → `alias` calls, each pair sent once."""

    kind: Literal["aliases"]
    previous_id: str = Field(description="Column sent as previousId (the id being merged away).")
    user_id: str = Field(description="Column sent as userId (the id it merges into).")

    def _mapping(self) -> Aliases:
        return Aliases(previous_id_column=self.previous_id, user_id_column=self.user_id)


class DeliveryReportsSyncModel(SendOnceSyncModel):
    """Rows are message delivery metrics → `Report Delivery Event` tracks, each report id sent once."""

    kind: Literal["delivery_reports"]
    id: str = Field(description="Report id column: each id is sent once.")
    delivery_id: str = Field(description="Column sent as properties.deliveryId.")
    metric: str = Field(description="Column sent as properties.metric (delivered, opened, clicked, bounced, ...).")
    user_id: str | None = Field(None, description="Column sent as userId; default anonymousId = the delivery id.")
    anonymous_id: str | None = Field(None, description="Column sent as anonymousId.")
    timestamp: str | None = Field(None, description="Column sent as timestamp (when the metric happened).")
    properties: list[str] | None = Field(
        None,
        description="Columns sent as further properties (e.g. recipient, reason, href); default every other column.",
    )

    def _mapping(self) -> DeliveryReports:
        return DeliveryReports(
            id_column=self.id,
            delivery_id_column=self.delivery_id,
            metric_column=self.metric,
            user_id_column=self.user_id,
            anonymous_id_column=self.anonymous_id,
            timestamp_column=self.timestamp,
            properties=self.properties,
        )


_MODELS: dict[str, type[SyncModel]] = {
    get_args(m.model_fields["kind"].annotation)[0]: m
    for m in (
        PeopleSyncModel,
        ObjectsSyncModel,
        RelationshipsSyncModel,
        DevicesSyncModel,
        SuppressionsSyncModel,
        EventsSyncModel,
        PagesSyncModel,
        ScreensSyncModel,
        AliasesSyncModel,
        DeliveryReportsSyncModel,
    )
}
KINDS = tuple(_MODELS)

# A sync as declared: one model per kind, chosen by `kind` (what the component's JSON schema lists).
SyncDeclaration = Annotated[
    PeopleSyncModel
    | ObjectsSyncModel
    | RelationshipsSyncModel
    | DevicesSyncModel
    | SuppressionsSyncModel
    | EventsSyncModel
    | PagesSyncModel
    | ScreensSyncModel
    | AliasesSyncModel
    | DeliveryReportsSyncModel,
    Field(discriminator="kind"),
]


def declarations_json_schema() -> dict[str, Any]:
    """The JSON schema of a list of declared syncs, which editors and `dg check yaml` read: each kind's fields,
    chosen by `kind` with if/then (so a wrong field is reported as such, where a `oneOf` would only say that no kind
    matched), references resolved in place so it can be nested in a component's schema."""
    schema = pydantic.TypeAdapter(SyncDeclaration).json_schema()
    models = schema.pop("$defs")

    def resolved(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolved(models[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolved(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolved(item) for item in node]
        return node

    kinds = [resolved(model) for model in schema["oneOf"]]
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


def parse_sync(raw: Mapping[str, Any]) -> SyncModel:
    """Validates one declared sync (a mapping with `kind`); raises InvalidSyncError listing every problem."""
    if not isinstance(raw, Mapping):
        raise InvalidSyncError([((), f"a sync must be a mapping with `kind` and `name`, got {raw!r}")])
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in _MODELS:
        raise InvalidSyncError([(("kind",), f"kind must be one of {', '.join(KINDS)}; got {kind!r}")])
    model = _MODELS[kind]
    try:
        return model.model_validate(raw)
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
        return f"{error['loc'][-1]!r} is not a field of {kind} syncs; their fields are {', '.join(model.model_fields)}"
    if error["type"] == "missing":
        return f"{error['loc'][-1]!r} is required for {kind} syncs"
    return str(error["msg"]).removeprefix("Value error, ")
