"""A sync's own asset attributes (`translation:` on one sync in defs.yaml or dbt `meta.cdp`), applied the way
Dagster's components apply their `translation` block: templated with `{{ sync.* }}` and `{{ spec }}`, tags and
metadata merged, every other attribute replaced."""

import dagster as dg
from dagster.components.resolved.context import ResolutionContext
from dagster.components.resolved.core_models import AssetAttributesModel
from dagster.components.utils.translation import TranslatorResolvingInfo

from dagster_cdp.dagster.declared_syncs import SyncModel


def translated_spec(spec: dg.AssetSpec, sync: SyncModel) -> dg.AssetSpec:
    """`spec` with the sync's own `translation` applied (unchanged without one)."""
    if sync.translation is None:
        return spec
    info = TranslatorResolvingInfo(
        asset_attributes=AssetAttributesModel.model_validate(sync.translation),
        resolution_context=ResolutionContext.default(),
        model_key="translation",
    )
    return info.get_asset_spec(spec, {"sync": sync.declared(), "spec": spec})
