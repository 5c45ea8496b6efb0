"""The resources a `CustomerIOSyncComponent` configures in its own defs.yaml, and which one a run uses.

A defs.yaml may configure `customerio` and `warehouse` itself (templated with `{{ env.* }}`), so it stands alone.
Resources given in Python under the same keys (`Definitions(resources=...)`, `dg.materialize(resources=...)`)
win: Dagster refuses two resources under one key, so the component's own are not registered as Dagster resources
but held by the component, and a run looks for the Python ones first.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg
import pydantic
from dagster.components.resolved.errors import ResolutionException

R = TypeVar("R", bound=dg.ConfigurableResource)


def yaml_model(resource_type: type[dg.ConfigurableResource]) -> type[pydantic.BaseModel]:
    """The YAML form of a resource: its fields and descriptions, each also taking a `{{ ... }}` template."""
    fields: dict[str, Any] = {
        name: (
            field.annotation | str,  # a template, checked once rendered (when the resource is built)
            pydantic.Field(... if field.is_required() else field.default, description=field.description),
        )
        for name, field in resource_type.model_fields.items()
    }
    return pydantic.create_model(
        f"{resource_type.__name__}Yaml", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )


def resource_resolver(key: str, resource_type: type[R]) -> dg.Resolver:
    """Builds the resource from its rendered YAML; an error names the field and masks what templates rendered."""

    def resolve(context: dg.ResolutionContext, model: pydantic.BaseModel | None) -> R | None:
        if model is None:
            return None
        raw = model.model_dump(exclude_unset=True)
        values = context.resolve_value(raw)
        try:
            return resource_type(**{name: value for name, value in values.items() if value is not None})
        except pydantic.ValidationError as e:
            problems = "; ".join(_problem(err, raw, values) for err in e.errors())
        raise ResolutionException(f"{key} ({resource_type.__name__}): {problems}")  # outside: no chained values

    return dg.Resolver(
        resolve,
        model_field_type=yaml_model(resource_type) | None,
        description=f"The {resource_type.__name__} of these syncs; a resource given in Python under `{key}` wins.",
    )


def _problem(error: Any, raw: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """What is wrong with a field, naming the template that rendered to nothing (an unset environment variable);
    what templates rendered (secrets, maybe) is masked."""
    field = ".".join(map(str, error["loc"]))
    template = raw.get(field)
    if values.get(field) is None and isinstance(template, str):
        return f"{field}: {template!r} rendered to nothing; is the environment variable it reads set?"
    message = str(error["msg"])
    for name, rendered in values.items():
        if isinstance(rendered, str) and rendered and "{{" in str(raw.get(name)):
            message = message.replace(rendered, "***")
    return f"{field}: {message}"


@contextmanager
def run_resource(
    context: dg.AssetExecutionContext, key: str, configured: R | None, resource_type: type[R]
) -> Iterator[R]:
    """The resource a run uses: the one given in Python under `key` if any (set up by Dagster's `build_resources`
    for the run, its EnvVars resolved), else the one defs.yaml configures."""
    python = context.job_def.resource_defs.get(key) if configured is not None else None
    if configured is None:  # the asset requires the Python resource
        yield getattr(context.resources, key)
    elif python is None:
        yield configured
    else:
        with dg.build_resources({key: python}) as built:
            resource = getattr(built, key)
            if not isinstance(resource, resource_type):
                raise dg.Failure(
                    f"The resource given in Python under {key!r} is a {type(resource).__name__}, not a "
                    f"{resource_type.__name__}; rename it, or remove `{key}` from defs.yaml's attributes."
                )
            context.log.info(f"{key}: using the {resource_type.__name__} given in Python (it wins over defs.yaml's).")
            yield resource
