"""The `dagster-cdp` console command."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dagster-cdp", description="Tools of the dagster-cdp plugin.")
    commands = parser.add_subparsers(dest="command", required=True)
    emulator = commands.add_parser(
        "emulator",
        help="Run a local emulator of Customer.io's Pipelines API until interrupted.",
        description="Run a local emulator of Customer.io's Pipelines API in the foreground until SIGINT/SIGTERM. "
        "Prints one line with its URL when ready.",
    )
    emulator.add_argument("--host", default="127.0.0.1", help="Address to bind (default: %(default)s).")
    emulator.add_argument(
        "--port", type=int, default=8080, help="Port to bind; 0 picks a free one (default: %(default)s)."
    )
    emulator.add_argument(
        "--api-key",
        dest="api_keys",
        action="extend",
        nargs="+",
        metavar="KEY",
        help="Accept only these keys (repeatable). Without it, any non-empty key is accepted.",
    )
    emulator.add_argument(
        "--count-only", action="store_true", help="Count calls and bytes only: no state, no per-call validation."
    )
    emulator.add_argument(
        "--rate-limit", type=int, default=3000, help="Requests allowed per 3-second window (default: %(default)s)."
    )
    args = parser.parse_args(argv)
    _run_emulator(args)


def _run_emulator(args: argparse.Namespace) -> None:
    from dagster_cdp.emulator.server import Emulator

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emu = Emulator(
        api_keys=args.api_keys, host=args.host, port=args.port, rate_limit=args.rate_limit, count_only=args.count_only
    )
    try:
        emu.start()
    except OSError as exc:
        raise SystemExit(
            f"dagster-cdp emulator cannot listen on {args.host}:{args.port} ({exc.strerror}); "
            "pick another --port (0 picks a free one)."
        ) from None
    try:
        print(f"dagster-cdp emulator listening on {emu.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        emu.stop()
