"""A local Pipelines API over real HTTP: auth, strict/permissive validation, byte limits, rate limit, faults.

Built on the standard library's `ThreadingHTTPServer` (HTTP/1.1 keep-alive) so it starts without Dagster
or any web framework. Tests and users point a client at `Emulator.url` instead of `https://cdp.customer.io`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import math
import os
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import orjson

from dagster_cdp.emulator.faults import Fault, FaultConfig, FaultInjector
from dagster_cdp.emulator.validation import call_error
from dagster_cdp.emulator.workspace import Workspace
from dagster_cdp.encoding import dumps, exact_loads

MAX_CALL_BYTES = 32_000
MAX_BODY_BYTES = 500_000
REPEATED_IDS_KEPT = 1000

V1_ROUTES = {
    "/v1/identify": "identify",
    "/v1/track": "track",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/alias": "alias",
    "/v1/batch": "batch",
}
GET_ROUTES = frozenset({"/admin/state", "/admin/stats"})
POST_ROUTES = frozenset({*V1_ROUTES, "/admin/reset", "/admin/faults"})


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = b"{}"
    headers: tuple[tuple[str, str], ...] = ()


_OK = _Answer(200)


def _error(status: int, *reasons: str, headers: tuple[tuple[str, str], ...] = ()) -> _Answer:
    """An error in the documented strict-mode shape, `{"meta":{"errors":[...]}}`."""
    return _Answer(status, orjson.dumps({"meta": {"errors": list(reasons)}}), headers)


@dataclass
class _Stats:
    requests: int = 0
    status_counts: Counter[str] = field(default_factory=Counter)
    calls_received: int = 0
    calls_applied: int = 0
    calls_dropped: int = 0
    calls_rejected: int = 0
    repeats: int = 0
    repeated_message_ids: Counter[str] = field(default_factory=Counter)
    bytes_received: int = 0
    max_body_bytes: int = 0
    max_call_bytes: int = 0
    max_calls_per_request: int = 0
    rate_limited: int = 0
    faults_injected: Counter[str] = field(
        default_factory=lambda: Counter({fault.value: 0 for fault in Fault if fault is not Fault.NONE})
    )
    requests_per_path: Counter[str] = field(default_factory=Counter)
    max_requests_in_window: int = 0
    first_request_at: float | None = None  # time.monotonic() as the first /v1 request arrived (to measure rates)
    last_request_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: dict(value) if isinstance(value, dict) else value for name, value in vars(self).items()}


class _RequestWindow:
    """Arrival times of the /v1 requests of the last `period` seconds (a sliding log)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._arrivals: deque[float] = deque()

    def record(self, now: float) -> int:
        """Record an arrival; the number of requests in the window ending now, this one included."""
        cutoff = now - self.period
        arrivals = self._arrivals
        while arrivals and arrivals[0] <= cutoff:
            arrivals.popleft()
        arrivals.append(now)
        return len(arrivals)

    def seconds_until_room(self, now: float, limit: int) -> int:
        """Whole seconds (>= 1) until one more request fits under `limit`."""
        arrivals = self._arrivals
        blocking = arrivals[max(0, len(arrivals) - limit)]
        return max(1, math.ceil(blocking + self.period - now))


class Emulator:
    """A local, faithful Customer.io Pipelines API. Start it, point a client at `url`, inspect `snapshot()`.

    `api_keys=None` accepts any non-empty key. `count_only=True` keeps no state and skips per-call
    validation, so benchmarks measure the client rather than the emulator.
    """

    def __init__(
        self,
        api_keys: Collection[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int = 3000,
        rate_period: float = 3.0,
        count_only: bool = False,
    ) -> None:
        if rate_limit < 1 or rate_period <= 0:
            raise ValueError(
                f"Emulator rate limit {rate_limit} per {rate_period}s is impossible; "
                "use rate_limit >= 1 and rate_period > 0."
            )
        self._api_keys = frozenset(api_keys) if api_keys is not None else None
        self._host = host
        self._port = port
        self.rate_limit = rate_limit
        self.rate_period = rate_period
        self.count_only = count_only
        self._lock = threading.Lock()
        self._workspace = Workspace()
        self._stats = _Stats()
        self._window = _RequestWindow(rate_period)
        self._faults = FaultInjector(FaultConfig())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError(f"The emulator is already running at {self.url}; stop() it before starting again.")
        self._server = _Server((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="dagster-cdp-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL without `/v1`, e.g. `http://127.0.0.1:51234`."""
        if self._server is None:
            raise RuntimeError("The emulator is not running; call start() (or use it as a context manager) first.")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- control and inspection --------------------------------------------------------------------

    def set_faults(self, config: FaultConfig) -> None:
        """Inject faults into the following /v1 requests; `FaultConfig()` turns them off."""
        with self._lock:
            self._faults = FaultInjector(config)

    def reset(self) -> None:
        """Forget state, stats, faults and the rate-limit window."""
        with self._lock:
            self._workspace = Workspace()
            self._stats = _Stats()
            self._window = _RequestWindow(self.rate_period)
            self._faults = FaultInjector(FaultConfig())

    def snapshot(self) -> dict[str, Any]:
        """JSON-able copy of the workspace state.

        `{"people": {key: {"traits", "active"}}, "objects": {objectTypeId: {groupId: traits}},
        "relationships": [{"userId", "objectTypeId", "groupId", "attributes"}] (sorted),
        "devices": {userId: {token: {"type", "properties"}}}, "suppressions": [...], "events": [...],
        "aliases": [{"previousId", "userId"}], "delivery_reports": [...]}`. People identified by email
        alone are keyed `email:<email>`, anonymous ones `anonymous:<anonymousId>`.
        """
        with self._lock:
            return self._workspace.snapshot()

    def stats(self) -> dict[str, Any]:
        """JSON-able counters of what the emulator received, applied, dropped, rejected and injected, and when the
        first and last /v1 requests arrived (`first_request_at`, `last_request_at`: `time.monotonic()` values)."""
        with self._lock:
            return self._stats.as_dict()

    # -- request handling (called by the HTTP handler) ---------------------------------------------

    def _set_faults_from_json(self, body: bytes) -> _Answer:
        try:
            config = FaultConfig.from_json(orjson.loads(body))
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            return _error(400, str(exc))
        self.set_faults(config)
        return _OK

    def _handle_v1(self, path: str, headers: Message, body: bytes) -> _Answer | None:
        """The answer to a /v1 request, or None to reset the connection without answering."""
        now = time.monotonic()
        with self._lock:
            stats = self._stats
            stats.requests += 1
            stats.requests_per_path[path] += 1
            if stats.first_request_at is None:
                stats.first_request_at = now
            stats.last_request_at = now
            in_window = self._window.record(now)
            stats.max_requests_in_window = max(stats.max_requests_in_window, in_window)
            retry_after = self._window.seconds_until_room(now, self.rate_limit) if in_window > self.rate_limit else 0
            fault, error_status = self._faults.draw()
            delay = self._faults.config.delay_seconds
            if fault is not Fault.NONE:
                stats.faults_injected[fault.value] += 1
        if fault is Fault.RESET:
            return None
        if fault is Fault.ERROR:
            retry = (("Retry-After", "1"),) if error_status == 429 else ()
            answer = _error(error_status, "injected fault: try again later", headers=retry)
        else:
            answer = self._answer(V1_ROUTES[path], headers, body, retry_after)
            if fault is Fault.APPLY_THEN_ERROR:
                answer = _error(500, "injected fault: the request was applied, but the answer is an error")
        with self._lock:
            self._stats.status_counts[str(answer.status)] += 1
        if fault is Fault.DELAY:
            time.sleep(delay)  # applied and counted already: like an answer lost to a client's read timeout
        return answer

    def _answer(self, kind: str, headers: Message, body: bytes, retry_after: int) -> _Answer:
        if not self._authorized(headers.get("Authorization")):
            return _error(401, "unauthorized: send your API key as the Basic-auth username (blank password)")
        if retry_after:
            with self._lock:
                self._stats.rate_limited += 1
            return _error(
                429,
                f"rate limit: more than {self.rate_limit} requests in {self.rate_period:g}s",
                headers=(("Retry-After", str(retry_after)),),
            )
        strict = headers.get("X-Strict-Mode") == "1"
        if (headers.get("Content-Encoding") or "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                return _error(400, "malformed body: Content-Encoding is gzip but the body is not gzip data")
        try:
            payload = exact_loads(body)  # numbers keep every digit, as Customer.io's parser would
        except ValueError as exc:
            return _error(400, f"malformed JSON: {exc}")
        if not isinstance(payload, dict):
            return _error(400, "malformed body: send a JSON object")

        calls, batch_context, batch_integrations, shape_error = _unpack(kind, payload)
        call_sizes = [len(dumps(call)) for call in calls]
        if kind != "batch":
            payload["type"] = kind  # the route names a single call's type (sized above as received)
        with self._lock:
            stats = self._stats
            stats.calls_received += len(calls)
            stats.bytes_received += len(body)
            stats.max_body_bytes = max(stats.max_body_bytes, len(body))
            stats.max_call_bytes = max(stats.max_call_bytes, *call_sizes, 0)
            stats.max_calls_per_request = max(stats.max_calls_per_request, len(calls))
        if shape_error is not None:
            return self._refuse(strict, [shape_error], len(calls))
        limit_errors = _limit_errors(len(body), call_sizes, calls)
        if limit_errors:
            return self._refuse(strict, limit_errors, len(calls))
        if self.count_only:
            with self._lock:
                self._stats.calls_applied += len(calls)
            return _OK

        errors: list[str] = []
        valid: list[dict[str, Any]] = []
        for index, call in enumerate(calls):
            reason = call_error(call, batch_context)
            if reason is None:
                valid.append(call)
            else:
                errors.append(f"{_call_name(index, call)}: {reason}")
        if errors and strict:
            return self._refuse(strict, errors, len(calls))
        with self._lock:
            stats = self._stats
            stats.calls_dropped += len(errors)
            for call in valid:
                if self._workspace.apply(call, batch_context, batch_integrations):
                    stats.calls_applied += 1
                else:
                    stats.repeats += 1
                    message_id = call["messageId"]
                    if message_id in stats.repeated_message_ids or len(stats.repeated_message_ids) < REPEATED_IDS_KEPT:
                        stats.repeated_message_ids[message_id] += 1
        return _OK

    def _refuse(self, strict: bool, reasons: list[str], call_count: int) -> _Answer:
        """Strict mode: 400 and nothing applied. Permissive: 200 and every call of the request dropped."""
        with self._lock:
            if strict:
                self._stats.calls_rejected += call_count
            else:
                self._stats.calls_dropped += call_count
        return _error(400, *reasons) if strict else _OK

    def _authorized(self, authorization: str | None) -> bool:
        key = _api_key(authorization)
        return key is not None and (self._api_keys is None or key in self._api_keys)


def _api_key(authorization: str | None) -> str | None:
    """The key of `Basic base64(key:)` or `Bearer key`; None when absent or unreadable."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        key = credentials.strip()
    elif scheme == "basic":
        try:
            key = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
    else:
        return None
    return key or None


def _unpack(
    kind: str, payload: dict[str, Any]
) -> tuple[list[Any], dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """(calls, batch context, batch integrations, error in the request's shape)."""
    if kind != "batch":
        return [payload], None, None, None
    calls = payload.get("batch")
    if not isinstance(calls, list) or not calls:
        return calls if isinstance(calls, list) else [], None, None, "batch must be a non-empty list of calls"
    context, integrations = payload.get("context"), payload.get("integrations")
    for name, value in (("context", context), ("integrations", integrations)):
        if value is not None and not isinstance(value, dict):
            return calls, None, None, f"batch-level {name} must be an object"
    return calls, context, integrations, None


def _limit_errors(body_bytes: int, call_sizes: list[int], calls: list[Any]) -> list[str]:
    errors = [
        f"{_call_name(index, calls[index])}: {size} bytes is over the {MAX_CALL_BYTES}-byte limit of a call"
        for index, size in enumerate(call_sizes)
        if size > MAX_CALL_BYTES
    ]
    if body_bytes > MAX_BODY_BYTES:
        errors.insert(0, f"request body: {body_bytes} bytes is over the {MAX_BODY_BYTES}-byte limit of a request")
    return errors


def _call_name(index: int, call: Any) -> str:
    message_id = call.get("messageId") if isinstance(call, dict) else None
    return f"call {index} (messageId {message_id!r})"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dagster-cdp-emulator"
    disable_nagle_algorithm = True  # headers and body are two writes; don't let Nagle hold the body back
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing per request (and so never a header)."""

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        emulator = self.server.emulator
        if path == "/admin/state":
            self._send(_Answer(200, dumps(emulator.snapshot())))
        elif path == "/admin/stats":
            self._send(_Answer(200, orjson.dumps(emulator.stats())))
        else:
            self._send_not_routed(path)

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = self.path.partition("?")[0]
        emulator = self.server.emulator
        if path in V1_ROUTES:
            answer = emulator._handle_v1(path, self.headers, body)
            if answer is None:
                self._reset_connection()
                return
            self._send(answer)
        elif path == "/admin/reset":
            emulator.reset()
            self._send(_OK)
        elif path == "/admin/faults":
            self._send(emulator._set_faults_from_json(body))
        else:
            self._send_not_routed(path)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._send(_error(411, "send the request body with a Content-Length header"))
            return None
        return self.rfile.read(int(length))

    def _send_not_routed(self, path: str) -> None:
        if path in GET_ROUTES or path in POST_ROUTES:
            method = "GET" if path in GET_ROUTES else "POST"
            self._send(_error(405, f"{path} answers {method} only", headers=(("Allow", method),)))
        else:
            self._send(_error(404, f"no route {path}; the API lives under /v1 (e.g. /v1/batch)"))

    def _send(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    def _reset_connection(self) -> None:
        """Close with SO_LINGER (1, 0) so the kernel sends a TCP reset: the client sees a connection reset."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        os.close(self.connection.detach())


class _Server(ThreadingHTTPServer):
    server_address: tuple[str, int]  # an IPv4 socket's (host, port), as bound
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections when many clients connect at once

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut open keep-alive connections, so nothing is served after `Emulator.stop()`."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (or time out) are normal here; anything else is a bug worth a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)
