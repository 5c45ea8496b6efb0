"""Packing encoded calls into /v1/batch bodies by bytes, never over the API's limits.

The API silently drops an over-limit request, so sizes are exact: every body is measured as it
will be sent, including the batch-level context/integrations and the `sentAt` stamp.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dagster_cdp.encoding import encode

MAX_CALL_BYTES = 32_000
MAX_BODY_BYTES = 500_000

_SENT_AT_LENGTH = len("2026-01-01T00:00:00.000000Z")


@dataclass(frozen=True, slots=True)
class EncodedCall:
    """A call its sender has checked (`calls.problem_with`) and encoded (`encoding.encode`) itself, for the client to
    send as is once it has checked its size: the sync engine sends millions, already checked when mapped.
    `message` stands for the call in results (accepted, rejected): its messageId at least."""

    message: dict[str, Any]
    encoded: bytes


def sent_at_now() -> bytes:
    """The `sentAt` stamp of a request, always the same length so sizes stay exact."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


@dataclass
class Batch:
    """Calls bound for one request, with their encoded form."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes of the encoded calls plus their separating commas

    def __len__(self) -> int:
        return len(self.messages)

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, for isolating a bad call by bisection."""
        middle = len(self.messages) // 2
        return _batch_of(self.messages[:middle], self.encoded[:middle]), _batch_of(
            self.messages[middle:], self.encoded[middle:]
        )


def _batch_of(messages: list[dict[str, Any]], encoded: list[bytes]) -> Batch:
    return Batch(messages, encoded, sum(map(len, encoded)) + max(len(encoded) - 1, 0))


class BatchPacker:
    """Fills batches up to the body limit, given the batch-level fields every request carries, and to
    `max_calls_per_request` calls if given."""

    def __init__(
        self,
        *,
        context: dict[str, Any] | None = None,
        integrations: dict[str, Any] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_calls_per_request: int | None = None,
    ) -> None:
        if max_calls_per_request is not None and max_calls_per_request < 1:
            raise ValueError(f"max_calls_per_request must be at least 1, got {max_calls_per_request}")
        self._max_calls = max_calls_per_request
        shared = b""
        if context:
            shared += b',"context":' + encode(context, path="batch context")
        if integrations:
            shared += b',"integrations":' + encode(integrations, path="batch integrations")
        self._shared = shared
        overhead = len(b'{"batch":[]') + len(shared) + len(b',"sentAt":""}') + _SENT_AT_LENGTH
        self.capacity = max_body_bytes - overhead
        if self.capacity < MAX_CALL_BYTES:
            raise ValueError("the batch-level context and integrations leave no room for calls")
        self._current = Batch()

    def add(self, message: dict[str, Any], encoded: bytes) -> Batch | None:
        """Add one call; return the batch it completed: the previous one when this call did not fit in it, or the
        one this call filled to `max_calls_per_request` (at once, so a caller pacing its calls sends it without
        waiting for the next call)."""
        current = self._current
        needed = len(encoded) + (1 if current.encoded else 0)
        full = None
        if current.encoded and current.size + needed > self.capacity:
            full = current
            current = self._current = Batch()
            needed = len(encoded)
        current.messages.append(message)
        current.encoded.append(encoded)
        current.size += needed
        if self._max_calls is not None and len(current.messages) >= self._max_calls:
            full, self._current = current, Batch()  # `full` was None: a batch at the limit went when it reached it
        return full

    def flush(self) -> Iterator[Batch]:
        """The last, partly filled batch, if any."""
        if self._current.encoded:
            yield self._current
            self._current = Batch()

    def body(self, batch: Batch) -> bytes:
        """The request body for a batch, stamped with `sentAt` now."""
        return b"".join(
            (b'{"batch":[', b",".join(batch.encoded), b"]", self._shared, b',"sentAt":"', sent_at_now(), b'"}')
        )
