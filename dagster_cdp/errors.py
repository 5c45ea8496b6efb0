"""Exceptions raised by dagster_cdp. Every message names what is wrong and what to do about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster_cdp.delivery_report import DeliveryReport


class CdpError(Exception):
    """Base class of every error dagster_cdp raises on purpose."""


class InvalidMessageError(CdpError, ValueError):
    """A call is malformed (missing a required field, over 32,000 bytes, NaN, ...) and was not sent."""


class AuthenticationError(CdpError):
    """The API refused the key (401/403). Retrying cannot help: fix the key or its region."""


class DeliveryError(CdpError):
    """Calls could not be delivered after every retry. `report` says what did get through (set when the error
    ends a `PipelinesClient.deliver` or `send`)."""

    def __init__(self, message: str, report: DeliveryReport | None = None) -> None:
        super().__init__(message)
        self.report = report
