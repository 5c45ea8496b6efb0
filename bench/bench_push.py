"""Push benchmark: our client against the official one, side by side, against one counting emulator.

    python bench/bench_push.py [--messages 200000] [--repeats 3]

Starts `dagster-cdp emulator --count-only` once, then times each contender as a whole process (like
a user's script) sending the same identify calls: `bench/push.py` (ours), `bench/official_push.py`
(customerio-cdp-analytics with its defaults) and `bench/official_push.py --tuned` (its largest
batches). The emulator's counters are reset before every run and read after it. Rounds are
interleaved (ours, defaults, tuned, ours, ...) so a slow moment of the machine hits every contender;
each contender's median run is reported. Prints a table and writes bench/results/push.json and
bench/results/push.png.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import EmulatorProcess, run_timed

BENCH_DIR = Path(__file__).resolve().parent
API_KEY = "bench-key"
MAX_BODY_BYTES = 500_000
RATE_LIMIT_PER_3S = 3_000
MARKS = {"vs_defaults": 5.0, "vs_tuned": 3.0, "efficiency": 0.95}
OURS, DEFAULTS, TUNED = "dagster-cdp", "official (defaults)", "official (tuned)"


@dataclass
class Run:
    """One timed run of a contender, with what the emulator counted during it."""

    seconds: float
    peak_rss_bytes: int
    requests: int
    calls_received: int
    bytes_received: int
    max_body_bytes: int
    max_requests_in_window: int
    rate_limited: int


def contender_commands(url: str, messages: int, tuned_threads: int) -> dict[str, list[str]]:
    common = ["--base-url", url, "--api-key", API_KEY, "--messages", str(messages)]
    return {
        OURS: [sys.executable, str(BENCH_DIR / "push.py"), *common],
        DEFAULTS: [sys.executable, str(BENCH_DIR / "official_push.py"), *common],
        TUNED: [sys.executable, str(BENCH_DIR / "official_push.py"), *common, "--tuned", "--threads", str(tuned_threads)],
    }


def shown(command: list[str], url: str) -> str:
    """A contender's command as a reader would type it, without this run's URL or key."""
    replacements = {sys.executable: "python", url: "URL", API_KEY: "KEY"}
    parts = [replacements.get(part, part) for part in command]
    return " ".join(f"bench/{Path(part).name}" if part.startswith(str(BENCH_DIR)) else part for part in parts)


def check_same_calls(count: int = 20_000) -> None:
    """Both contenders must send the same calls, or the comparison means nothing.

    Called after the runs: importing both clients here first would raise every child's reported peak
    RSS to this process's (Linux carries a process's peak over `exec`), so this process stays small
    while it starts contenders.
    """
    import official_push
    import push

    for ours, theirs in zip(push.identify_calls(count), official_push.identify_calls(count), strict=True):
        if ours != theirs:
            raise SystemExit(f"bench/push.py and bench/official_push.py build different calls: {ours} != {theirs}")


def push_imports_dagster(url: str) -> bool:
    """Whether `bench/push.py` imports Dagster, from `python -X importtime` (it must not: it is timed)."""
    command = [sys.executable, "-X", "importtime", str(BENCH_DIR / "push.py"), "--base-url", url,
               "--api-key", API_KEY, "--messages", "1"]
    run = run_timed(command)
    if run.returncode != 0:
        raise SystemExit(f"bench/push.py failed to send one call:\n{run.stdout}{run.stderr}")
    modules = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    return any(module == "dagster" or module.startswith("dagster.") for module in modules)


def measure(emulator: EmulatorProcess, name: str, command: list[str], messages: int) -> Run:
    emulator.reset()
    timed = run_timed(command)
    stats = emulator.stats()
    if timed.returncode != 0 or stats["calls_received"] != messages:
        raise SystemExit(
            f"{name} failed (exit {timed.returncode}, the emulator received {stats['calls_received']:,} of "
            f"{messages:,} calls):\n{timed.stdout}{timed.stderr[-2000:]}"
        )
    return Run(
        seconds=timed.seconds,
        peak_rss_bytes=timed.peak_rss_bytes,
        requests=stats["requests"],
        calls_received=stats["calls_received"],
        bytes_received=stats["bytes_received"],
        max_body_bytes=stats["max_body_bytes"],
        max_requests_in_window=stats["max_requests_in_window"],
        rate_limited=stats["rate_limited"],
    )


def summarise(runs: list[Run], messages: int) -> dict[str, Any]:
    """The median run by wall time; the worst 3-second window over all runs."""
    median = sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]
    fewest_requests = math.ceil(median.bytes_received / MAX_BODY_BYTES)
    return {
        "seconds": median.seconds,
        "calls_per_second": messages / median.seconds,
        "requests": median.requests,
        "mean_body_bytes": median.bytes_received / median.requests,
        "body_bytes_per_call": median.bytes_received / median.calls_received,
        "request_efficiency": fewest_requests / median.requests,
        "max_body_bytes": median.max_body_bytes,
        "max_requests_in_3s": max(run.max_requests_in_window for run in runs),
        "rate_limited": sum(run.rate_limited for run in runs),
        "peak_rss_mib": median.peak_rss_bytes / 2**20,
        "seconds_all_runs": [run.seconds for run in runs],
    }


def table(summaries: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'contender':<20} {'calls/s':>9} {'seconds':>8} {'requests':>8} {'mean body B':>11} {'B/call':>6} "
        f"{'efficiency':>10} {'max req/3s':>10} {'RSS MiB':>7} {'x defaults':>10} {'x tuned':>7}"
    )
    lines = [header, "-" * len(header)]
    for name, s in summaries.items():
        lines.append(
            f"{name:<20} {s['calls_per_second']:>9,.0f} {s['seconds']:>8.2f} {s['requests']:>8,} "
            f"{s['mean_body_bytes']:>11,.0f} {s['body_bytes_per_call']:>6.0f} {s['request_efficiency']:>10.3f} "
            f"{s['max_requests_in_3s']:>10,} {s['peak_rss_mib']:>7.0f} {s['speedup_vs_defaults']:>9.1f}x "
            f"{s['speedup_vs_tuned']:>6.1f}x"
        )
    return "\n".join(lines)


def marks(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ours = summaries[OURS]
    return {
        "speed vs official defaults": {"value": ours["speedup_vs_defaults"], "mark": f">= {MARKS['vs_defaults']}x",
                                       "met": ours["speedup_vs_defaults"] >= MARKS["vs_defaults"]},
        "speed vs official tuned": {"value": ours["speedup_vs_tuned"], "mark": f">= {MARKS['vs_tuned']}x",
                                    "met": ours["speedup_vs_tuned"] >= MARKS["vs_tuned"]},
        "request efficiency": {"value": ours["request_efficiency"], "mark": f">= {MARKS['efficiency']}",
                               "met": ours["request_efficiency"] >= MARKS["efficiency"]},
        "max requests in any 3 s": {"value": ours["max_requests_in_3s"], "mark": f"<= {RATE_LIMIT_PER_3S}",
                                    "met": ours["max_requests_in_3s"] <= RATE_LIMIT_PER_3S},
    }


def chart(summaries: dict[str, dict[str, Any]], messages: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    colours = ["#2a7ab9", "#b0b0b0", "#707070"]
    figure, (speed, requests) = plt.subplots(1, 2, figsize=(10, 4))
    bars = speed.bar(names, [summaries[n]["calls_per_second"] for n in names], color=colours)
    speed.bar_label(bars, labels=[f"{summaries[n]['calls_per_second']:,.0f}" for n in names])
    speed.set_ylabel("identify calls per second (whole process)")
    speed.set_title(f"Throughput, {messages:,} calls (higher is better)")
    bars = requests.bar(names, [summaries[n]["requests"] for n in names], color=colours)
    requests.bar_label(bars, labels=[
        f"{summaries[n]['requests']:,}\n{summaries[n]['body_bytes_per_call']:.0f} B/call" for n in names
    ])
    requests.set_ylabel("HTTP requests")
    requests.set_title("Requests made (lower is better)")
    for axes in (speed, requests):
        axes.tick_params(axis="x", labelsize=9)
        axes.margins(y=0.2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tuned-threads", type=int, default=1,
                        help="consumer threads of the tuned official client (1 was its fastest here)")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="where push.json/png go")
    args = parser.parse_args(argv)

    load_at_start = os.getloadavg()
    with EmulatorProcess(API_KEY) as emulator:
        imports_dagster = push_imports_dagster(emulator.url)
        commands = contender_commands(emulator.url, args.messages, args.tuned_threads)
        runs: dict[str, list[Run]] = {name: [] for name in commands}
        for repeat, (name, command) in itertools.product(range(args.repeats), commands.items()):
            run = measure(emulator, name, command, args.messages)
            runs[name].append(run)
            print(f"round {repeat + 1}/{args.repeats} {name}: {run.seconds:.2f}s", file=sys.stderr, flush=True)

    check_same_calls()
    summaries = {name: summarise(name_runs, args.messages) for name, name_runs in runs.items()}
    for summary in summaries.values():
        summary["speedup_vs_defaults"] = summary["calls_per_second"] / summaries[DEFAULTS]["calls_per_second"]
        summary["speedup_vs_tuned"] = summary["calls_per_second"] / summaries[TUNED]["calls_per_second"]
    outcome = marks(summaries)

    print(table(summaries))
    print(f"\nbench/push.py imports Dagster: {'YES (it must not)' if imports_dagster else 'no'}")
    for mark, result in outcome.items():
        print(f"{mark}: {result['value']:,.3g} (mark {result['mark']}): {'met' if result['met'] else 'MISSED'}")

    args.results.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["python", "bench/bench_push.py", *(argv if argv is not None else sys.argv[1:])]),
        "messages": args.messages,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "official_client": f"customerio-cdp-analytics {importlib.metadata.version('customerio-cdp-analytics')}",
        "contenders": {
            name: {
                "command": shown(commands[name], emulator.url),
                "median": summaries[name],
                "runs": [asdict(run) for run in runs[name]],
            }
            for name in commands
        },
        "push_imports_dagster": imports_dagster,
        "marks": outcome,
    }
    (args.results / "push.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(summaries, args.messages, args.results / "push.png")
    print(f"\nwrote {args.results / 'push.json'} and {args.results / 'push.png'}")
    return 0 if not imports_dagster else 1


if __name__ == "__main__":
    sys.exit(main())
