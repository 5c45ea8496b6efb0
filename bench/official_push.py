"""The push benchmark's contender: the same N identify calls through the official client.

    python bench/official_push.py --base-url URL --api-key KEY --messages N [--tuned]

Uses `customerio-cdp-analytics` 1.1.0 (import name `customerio`). Without `--tuned` it runs with
the client's defaults (100 calls a batch, a queue of 10,000, one consumer thread). `--tuned` sets
the largest batches it allows (its consumer cuts a batch at 475,000 bytes whatever `upload_size`
says), a queue big enough for every call, and `--threads` consumers. Exits 0 only once every call
was sent and none reported an error; the queue is flushed and the consumers joined before exiting.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from customerio.analytics import Client

_QUEUE_FULL_WAIT_SECONDS = 0.001


def identify_calls(count: int) -> Iterator[dict[str, Any]]:
    """The calls of `push.identify_calls`, copied so this process never imports our client.

    bench_push.py checks that both produce the same calls before it measures anything.
    """
    for i in range(count):
        yield {
            "type": "identify",
            "userId": f"user-{i:09d}",
            "traits": {
                "email": f"user-{i:09d}@example.com",
                "first_name": "Benchmark",
                "last_name": f"Person{i % 9973}",
                "plan": ("free", "pro", "enterprise")[i % 3],
                "created_at": "2024-01-01T00:00:00Z",
                "score": i % 1000,
            },
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="API host, e.g. http://127.0.0.1:8080 (no /v1)")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--tuned", action="store_true", help="largest batches, a queue for every call")
    parser.add_argument("--threads", type=int, default=1, help="consumer threads when --tuned")
    args = parser.parse_args(argv)

    # Its "queue is full" warning is expected below and handled by waiting; upload errors still show.
    logging.getLogger("customerio").setLevel(logging.ERROR)
    errors: list[Exception] = []
    settings: dict[str, Any] = {}
    if args.tuned:
        # upload_size has no upper bound; the consumer's 475,000-byte cut is what limits a batch.
        settings = {"upload_size": args.messages, "max_queue_size": args.messages + 1, "thread": args.threads}
    client = Client(args.api_key, host=args.base_url, on_error=lambda error, batch: errors.append(error), **settings)

    started = time.perf_counter()
    queue_full_waits = 0
    for call in identify_calls(args.messages):
        # The official client drops a call when its queue is full (it returns False and logs a
        # warning), so a user sending more calls than the queue holds has to wait and try again.
        while not client.identify(call["userId"], call["traits"])[0]:
            queue_full_waits += 1
            time.sleep(_QUEUE_FULL_WAIT_SECONDS)
    client.shutdown()  # flush(): wait until every queued call was uploaded; then join the consumer
    seconds = time.perf_counter() - started
    print(
        f"sent={args.messages} errors={len(errors)} queue_full_waits={queue_full_waits} seconds={seconds:.3f} "
        f"calls_per_second={args.messages / seconds:,.0f}"
    )
    for error in errors[:5]:
        print(f"error: {error}", file=sys.stderr)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
