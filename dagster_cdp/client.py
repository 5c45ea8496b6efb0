"""A client for Customer.io's Data Pipelines API that never loses a call silently.

The API answers 200 to calls it drops (over-limit or invalid ones outside strict mode), so this
client checks every call before sending, packs batches by bytes under the limits, turns strict-mode
refusals into per-call rejections, and retries what may succeed later. It does not import Dagster.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import itertools
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson

from dagster_cdp.calls import problem_with
from dagster_cdp.delivery_report import BatchResult, DeliveryReport, Rejection
from dagster_cdp.encoding import encode
from dagster_cdp.errors import AuthenticationError, CdpError, DeliveryError, InvalidMessageError
from dagster_cdp.packing import MAX_CALL_BYTES, Batch, BatchPacker, EncodedCall, sent_at_now
from dagster_cdp.rate_limit import RateLimiter

Region = Literal["us", "eu"]

REGION_HOSTS: dict[str, str] = {"us": "https://cdp.customer.io", "eu": "https://cdp-eu.customer.io"}

_KEY_WITH_REGION = re.compile(r"^(?:pk|sk)_(us|eu)_")
_PROGRESS_EVERY_SECONDS = 10.0

log = logging.getLogger("dagster_cdp.client")


class _RequestFailed(Exception):
    """A batch gave up; carries what it had delivered before that."""

    def __init__(self, error: CdpError, partial: BatchResult) -> None:
        super().__init__(str(error))
        self.error = error
        self.partial = partial


def _server_reasons(response: httpx.Response) -> str:
    """The reasons in a strict-mode error body (`{"meta":{"errors":[...]}}`), or its text."""
    try:
        errors = orjson.loads(response.content)["meta"]["errors"]
        if isinstance(errors, list) and errors:
            return "; ".join(str(error) for error in errors)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    text = response.text.strip()
    return text[:500] if text else f"HTTP {response.status_code} with no reason given"


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _within_limit(message: dict[str, Any], encoded: bytes) -> bytes | Rejection:
    """The encoded call, or why it must not be sent: the API silently drops a call over its size limit."""
    if len(encoded) > MAX_CALL_BYTES:
        return Rejection(
            message,
            f"the call is {len(encoded):,} bytes; the API's limit is {MAX_CALL_BYTES:,} bytes a call "
            "and it silently drops larger ones",
        )
    return encoded


def check_base_url(base_url: str) -> str:
    """The API host without a trailing slash; refused early if malformed, as it would otherwise be retried as a
    network fault until the retries run out."""
    url = base_url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    if url.endswith("/v1"):
        raise ValueError(f"base_url {url!r} must not end with /v1: give the host only")
    return url


class PipelinesClient:
    """Sends calls to the Data Pipelines API: single calls, or many at once with `deliver`/`send`.

    >>> with PipelinesClient("my-key", region="eu") as client:  # doctest: +SKIP
    ...     report = client.send({"type": "identify", "userId": str(i)} for i in range(100_000))

    The key goes as HTTP Basic (key as username, blank password); keys of the form
    `pk_eu_…`/`sk_us_…` imply their region and go as a Bearer token. Strict mode is on by default so
    that invalid calls come back as errors instead of being dropped with a 200.
    """

    def __init__(
        self,
        api_key: str,
        *,
        region: Region | None = None,
        base_url: str | None = None,
        strict: bool = True,
        timeout: float = 30.0,
        max_concurrency: int = 4,
        rate_limit: int = 3000,
        rate_period: float = 3.0,
        max_attempts: int = 6,
        max_retry_seconds: float = 120.0,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ValueError("the Customer.io API key is empty: set it (for example from CDP_API_KEY)")
        key_region = match.group(1) if (match := _KEY_WITH_REGION.match(api_key)) else None
        if region is not None and region not in REGION_HOSTS:
            raise ValueError(f"region must be 'us' or 'eu', not {region!r}")
        if region is not None and key_region is not None and region != key_region:
            raise ValueError(
                f"the API key is a {key_region.upper()} key but region {region!r} was given: "
                f"drop the region or use a {region.upper()} key"
            )
        self.region: str = region or key_region or "us"
        self.base_url = check_base_url(base_url or REGION_HOSTS[self.region])
        if max_concurrency < 1 or max_attempts < 1:
            raise ValueError("max_concurrency and max_attempts must be at least 1")
        self.strict = strict
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        if key_region is not None:
            authorization = f"Bearer {api_key}"
        else:
            authorization = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
        headers = {"Authorization": authorization, "Content-Type": "application/json"}
        if strict:
            headers["X-Strict-Mode"] = "1"
        self._limiter = RateLimiter(rate_limit, rate_period)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_concurrency + 1, max_keepalive_connections=max_concurrency + 1),
        )
        self._id_prefix = uuid.uuid4().hex  # unique per client; a counter makes each messageId unique
        self._id_counter = itertools.count()
        self._random = random.Random()
        self._random_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PipelinesClient(base_url={self.base_url!r}, strict={self.strict})"

    def __enter__(self) -> PipelinesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- single calls -------------------------------------------------------------------------

    def identify(
        self,
        user_id: str | None = None,
        *,
        traits: dict[str, Any] | None = None,
        anonymous_id: str | None = None,
        **options: Any,
    ) -> None:
        """Add or update a person. With no ids and `traits["email"]`, identifies by email."""
        if user_id is None and anonymous_id is None:
            user_id = ""
        self._single("identify", {"userId": user_id, "anonymousId": anonymous_id, "traits": traits}, options)

    def track(
        self,
        event: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        properties: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Record an event, or send a semantic event such as `User Deleted`."""
        fields = {"event": event, "userId": user_id, "anonymousId": anonymous_id, "properties": properties}
        self._single("track", fields, options)

    def page(
        self,
        name: str | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        properties: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Record a page view."""
        fields = {"name": name, "userId": user_id, "anonymousId": anonymous_id, "properties": properties}
        self._single("page", fields, options)

    def screen(
        self,
        name: str | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        properties: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Record a mobile screen view."""
        fields = {"name": name, "userId": user_id, "anonymousId": anonymous_id, "properties": properties}
        self._single("screen", fields, options)

    def group(
        self,
        group_id: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        traits: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Create or update an object (no user) or a person's relationship to it."""
        fields = {"groupId": group_id, "userId": user_id, "anonymousId": anonymous_id, "traits": traits}
        self._single("group", fields, options)

    def alias(self, previous_id: str, user_id: str, **options: Any) -> None:
        """Merge `previous_id` into the profile `user_id`."""
        self._single("alias", {"previousId": previous_id, "userId": user_id}, options)

    _OPTIONS = {
        "context": "context",
        "integrations": "integrations",
        "message_id": "messageId",
        "timestamp": "timestamp",
    }

    def _single(self, kind: str, fields: dict[str, Any], options: dict[str, Any]) -> None:
        unknown = set(options) - set(self._OPTIONS)
        if unknown:
            raise TypeError(f"{kind}() got unexpected options {sorted(unknown)}; allowed: {sorted(self._OPTIONS)}")
        call: dict[str, Any] = {"type": kind}
        call.update((name, value) for name, value in fields.items() if value is not None)
        call.update((self._OPTIONS[name], value) for name, value in options.items() if value is not None)
        encoded = self._prepare(call)
        if isinstance(encoded, Rejection):
            raise InvalidMessageError(encoded.reason)
        prefix = encoded[:-1] + b',"sentAt":"'
        if len(prefix) + len(sent_at_now()) + 2 > MAX_CALL_BYTES:
            raise InvalidMessageError(f"the {kind} call is over the API's limit of {MAX_CALL_BYTES:,} bytes a request")
        response = self._post(f"/v1/{kind}", lambda: prefix + sent_at_now() + b'"}', BatchResult())
        if response.status_code >= 300:
            raise InvalidMessageError(f"Customer.io rejected the {kind} call: {_server_reasons(response)}")

    # --- many calls ---------------------------------------------------------------------------

    def send(
        self,
        messages: Iterable[dict[str, Any]],
        *,
        context: dict[str, Any] | None = None,
        integrations: dict[str, Any] | None = None,
    ) -> DeliveryReport:
        """Deliver every call and return the summed-up report (see `deliver`; a DeliveryError carries the report so
        far)."""
        report = DeliveryReport()
        for result in self.deliver(messages, context=context, integrations=integrations):
            report.add(result)
        return report

    def deliver(
        self,
        messages: Iterable[dict[str, Any] | EncodedCall],
        *,
        context: dict[str, Any] | None = None,
        integrations: dict[str, Any] | None = None,
        max_calls_per_request: int | None = None,
    ) -> Iterator[BatchResult]:
        """Send calls in byte-packed /v1/batch requests and yield each request's outcome as it finishes.

        Calls are dicts with `type` and the API's camelCase fields; a missing `messageId` is filled in
        on the dict. `context`/`integrations` are sent once per request at batch level, for every
        call. Calls refused before sending come back as rejections in a result with `requests == 0`.
        Results are yielded in the caller's thread, so acknowledgements can be recorded durably.
        With `max_calls_per_request`, a request goes as soon as it holds that many calls: a caller that
        paces `messages` (say, 100 calls a second, in requests of 100) has each sent without waiting
        for the body to fill.

        When a request fails for good (retries exhausted, or the key refused), no further calls are
        taken from `messages`; requests already in flight finish and are yielded, then the error is
        raised: a DeliveryError's `report` sums up every result yielded. Calls not yielded as accepted
        or rejected were not confirmed.
        """
        delivered = DeliveryReport()
        packer = BatchPacker(context=context, integrations=integrations, max_calls_per_request=max_calls_per_request)
        with contextlib.closing(self._deliver(messages, packer)) as results:
            try:
                for result in results:
                    delivered.add(result)
                    yield result
            except DeliveryError as error:
                error.report = delivered
                raise

    def _deliver(
        self, messages: Iterable[dict[str, Any] | EncodedCall], packer: BatchPacker
    ) -> Generator[BatchResult, None, None]:
        """`deliver` but for its report: packs, sends concurrently, and stops at a request failed for good."""
        pending: set[Future[BatchResult]] = set()
        refused = BatchResult()
        progress = DeliveryReport()
        failures: list[CdpError] = []
        last_progress = time.monotonic()

        def finished(block: bool) -> Iterator[BatchResult]:
            nonlocal last_progress
            done, _ = (
                wait(pending, return_when=FIRST_COMPLETED)
                if block
                else ({future for future in pending if future.done()}, None)
            )
            for future in done:
                pending.discard(future)
                try:
                    result = future.result()
                except _RequestFailed as failed:
                    failures.append(failed.error)
                    result = failed.partial
                progress.add(result)
                yield result
            if time.monotonic() - last_progress >= _PROGRESS_EVERY_SECONDS:
                last_progress = time.monotonic()
                log.info(
                    "delivered %d calls in %d requests so far (%d rejected, %d retries)",
                    progress.accepted,
                    progress.requests,
                    len(progress.rejected),
                    progress.retries,
                )

        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="cdp-send") as pool:
            batches = self._batches(messages, packer, refused)
            abandoned = False
            try:
                for batch in batches:
                    if refused.rejected:
                        yield refused
                        refused = BatchResult()
                    pending.add(pool.submit(self._send_batch, packer, batch))
                    yield from finished(block=len(pending) >= self.max_concurrency)
                    if failures:
                        break
            except GeneratorExit:
                abandoned = True
                raise
            finally:
                batches.close()
                if abandoned:
                    wait(pending)
                while pending and not abandoned:
                    yield from finished(block=True)
        if refused.rejected:
            yield refused
        if failures:
            auth = [failure for failure in failures if isinstance(failure, AuthenticationError)]
            raise (auth or failures)[0]

    def _batches(
        self, messages: Iterable[dict[str, Any] | EncodedCall], packer: BatchPacker, refused: BatchResult
    ) -> Generator[Batch, None, None]:
        for given in messages:
            if isinstance(given, EncodedCall):
                message, encoded = given.message, _within_limit(given.message, given.encoded)
            else:
                message, encoded = given, self._prepare(given)
            if isinstance(encoded, Rejection):
                refused.rejected.append(encoded)
                continue
            full = packer.add(message, encoded)
            if full is not None:
                yield full
        yield from packer.flush()

    def _prepare(self, message: dict[str, Any]) -> bytes | Rejection:
        """Check and encode one call, or say why it must not be sent."""
        problem = problem_with(message)
        if problem is not None:
            return Rejection(message, problem)
        if "messageId" not in message:
            message["messageId"] = f"{self._id_prefix}-{next(self._id_counter)}"
        try:
            encoded = encode(message)
        except InvalidMessageError as exc:
            return Rejection(message, str(exc))
        return _within_limit(message, encoded)

    def _send_batch(self, packer: BatchPacker, batch: Batch) -> BatchResult:
        """Send one batch; when strict mode refuses it, split it until the bad calls are isolated."""
        result = BatchResult()
        parts = [batch]
        while parts:
            part = parts.pop()
            try:
                response = self._post("/v1/batch", functools.partial(packer.body, part), result)
            except CdpError as error:
                raise _RequestFailed(error, result) from error
            if response.status_code < 300:
                result.accepted.extend(part.messages)
            elif response.status_code in (400, 413) and len(part) > 1:
                first, second = part.split()
                parts.extend((second, first))
            elif response.status_code in (400, 413):
                result.rejected.append(Rejection(part.messages[0], _server_reasons(response)))
            else:
                failure = DeliveryError(
                    f"POST {self.base_url}/v1/batch answered HTTP {response.status_code} "
                    f"({_server_reasons(response)}); check that base_url points at the Pipelines API"
                )
                raise _RequestFailed(failure, result)
        return result

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        with self._random_lock:
            jittered = self._random.uniform(0, min(30.0, 0.5 * 2 ** (attempt - 1)))
        return max(jittered, retry_after or 0.0)

    def _post(self, path: str, body: Callable[[], bytes], tally: BatchResult) -> httpx.Response:
        """POST with retries of 429, 5xx and transport failures; other answers are returned."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            content = body()
            self._limiter.acquire()
            tally.requests += 1
            tally.bytes += len(content)
            retry_after = None
            try:
                response = self._http.post(path, content=content)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if status in (401, 403):
                    raise AuthenticationError(
                        f"Customer.io refused the API key at {self.base_url} (HTTP {status}): check the key, "
                        "and that its region matches the host (US and EU keys are not interchangeable)"
                    )
                if status != 429 and status < 500:
                    return response
                problem = f"HTTP {status}"
                retry_after = _retry_after_seconds(response)
            elapsed = time.monotonic() - started
            delay = self._backoff(attempt, retry_after)
            if attempt >= self.max_attempts or elapsed + delay > self.max_retry_seconds:
                raise DeliveryError(
                    f"POST {self.base_url}{path} failed {attempt} times over {elapsed:.0f}s (last: {problem}); "
                    "check that the host is reachable and healthy, then run again: calls not confirmed are "
                    "sent again with the same messageId"
                )
            tally.retries += 1
            log.warning("POST %s%s: %s; retry %d in %.1fs", self.base_url, path, problem, attempt, delay)
            time.sleep(delay)
