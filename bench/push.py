"""Push benchmark entry point: send N identify calls of about 300 bytes through dagster_cdp's client.

    python bench/push.py --base-url URL --api-key KEY --messages N

Exits 0 only if every call was accepted. Timed as a whole process, like a user's script, so it
imports only the client (never Dagster).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

from dagster_cdp.client import PipelinesClient


def identify_calls(count: int) -> Iterator[dict[str, Any]]:
    """About 300 bytes each once encoded (with the messageId the client adds)."""
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
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with PipelinesClient(args.api_key, base_url=args.base_url, max_concurrency=args.concurrency) as client:
        report = client.send(identify_calls(args.messages))
    seconds = time.perf_counter() - started
    print(
        f"accepted={report.accepted} rejected={len(report.rejected)} requests={report.requests} "
        f"bytes={report.bytes} retries={report.retries} seconds={seconds:.3f} "
        f"calls_per_second={report.accepted / seconds:,.0f}"
    )
    for rejection in report.rejected[:5]:
        print(f"rejected: {rejection.reason}", file=sys.stderr)
    return 0 if report.accepted == args.messages and not report.rejected else 1


if __name__ == "__main__":
    sys.exit(main())
