"""What a delivery did: accepted and rejected calls, requests, bytes and retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rejection:
    """A call that was not delivered, and the reason (from this client or from the API)."""

    message: dict[str, Any]
    reason: str


@dataclass
class BatchResult:
    """The outcome of one request (or of calls refused before sending, with `requests == 0`)."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    requests: int = 0
    bytes: int = 0
    retries: int = 0


@dataclass
class DeliveryReport:
    """A whole delivery summed up."""

    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    requests: int = 0
    bytes: int = 0
    retries: int = 0

    def add(self, result: BatchResult) -> None:
        self.accepted += len(result.accepted)
        self.rejected.extend(result.rejected)
        self.requests += result.requests
        self.bytes += result.bytes
        self.retries += result.retries
