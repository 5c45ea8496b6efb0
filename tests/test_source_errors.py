"""Errors name the real cause: a missing table or column, an unreachable database, a URL whose dialect or driver
is not installed, a table name in the wrong case, a malformed base_url; never with a password."""

from __future__ import annotations

import pytest

from dagster_cdp import CustomerIOResource
from dagster_cdp.client import PipelinesClient


@pytest.mark.parametrize("base_url", ["localhost:8080", "cdp.customer.io", "ftp://cdp.customer.io"])
def test_a_base_url_without_http_fails_when_the_client_or_resource_is_built(base_url: str) -> None:
    expected = f"base_url must start with http:// or https://, got '{base_url}'"
    with pytest.raises(ValueError, match=expected):
        PipelinesClient("test-key", base_url=base_url)
    with pytest.raises(ValueError, match=expected):
        CustomerIOResource(api_key="test-key", base_url=base_url)
