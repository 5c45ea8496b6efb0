"""`CustomerIOResource`: where and how to reach Customer.io's Data Pipelines API, as a Dagster resource."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import dagster as dg
from pydantic import Field, field_validator

from dagster_cdp.client import PipelinesClient, Region, check_base_url

if TYPE_CHECKING:
    from dagster_cdp.dagster.execution import CustomerIOSyncConfig
    from dagster_cdp.dagster.warehouse import CustomerIOWarehouseResource
    from dagster_cdp.sync.definition import SyncDefinition


class CustomerIOResource(dg.ConfigurableResource):
    """Hands out a `PipelinesClient`. Give the key as `dg.EnvVar("CDP_API_KEY")` so it never shows in the UI.

    .. code-block:: python

        resources = {"customerio": CustomerIOResource(api_key=dg.EnvVar("CDP_API_KEY"), region="eu")}
    """

    api_key: str = Field(description="Pipelines API key (a source's write key). Use dg.EnvVar.", repr=False)
    region: str | None = Field(
        None, description="Data center, us or eu; default: the key's own region (pk_eu_/sk_eu_ keys), else us."
    )
    base_url: str | None = Field(
        None, description="Overrides the region's host (no /v1 suffix), e.g. a local emulator."
    )
    strict: bool = Field(
        True, description="Strict mode: invalid calls come back as rejections instead of being dropped."
    )
    timeout: float = Field(30.0, description="Seconds to wait for one HTTP request.")
    max_retry_seconds: float = Field(120.0, description="Give up retrying a failing request after this many seconds.")
    max_concurrency: int = Field(4, description="Requests in flight at once.")
    rate_limit: int = Field(3000, description="Requests allowed per 3 seconds (Customer.io's documented limit).")

    @field_validator("base_url", mode="before")
    @classmethod
    def _valid_base_url(cls, base_url: str | None) -> str | None:
        """Refused when the resource is built, not retried when a run sends (an EnvVar when a run resolves it)."""
        return base_url if not base_url or isinstance(base_url, dg.EnvVar) else check_base_url(base_url)

    def get_client(self) -> PipelinesClient:
        """A new client; use it as a context manager so its connections are closed."""
        return PipelinesClient(
            self.api_key,
            region=cast("Region | None", self.region or None),  # PipelinesClient refuses all but us/eu
            base_url=self.base_url or None,
            strict=self.strict,
            timeout=self.timeout,
            max_retry_seconds=self.max_retry_seconds,
            max_concurrency=self.max_concurrency,
            rate_limit=self.rate_limit,
        )

    def sync(
        self,
        context: dg.AssetExecutionContext,
        definition: SyncDefinition,
        *,
        warehouse: CustomerIOWarehouseResource,
        config: CustomerIOSyncConfig,
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
        """Runs `definition` inside a `customerio_sync_asset` body and yields its materialization (or, for a dry run, an
        observation) with the rejection check. `config` is the step's run config (dry run, full resync, force).

        .. code-block:: python

            yield from customerio.sync(context, people, warehouse=warehouse, config=config)
        """
        # Imported here: the execution module uses this resource.
        from dagster_cdp.dagster.execution import execute_sync, sync_step

        yield from sync_step(
            context, lambda: execute_sync(context, definition, customerio=self, warehouse=warehouse, config=config)
        )
