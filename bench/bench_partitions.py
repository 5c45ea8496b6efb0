"""Scale-out benchmark: a partitioned sync (`partitions: N`) on PostgreSQL, run as a Dagster backfill, for each N.

    python bench/bench_partitions.py [--rows 1000000] [--partitions 1 2 4] [--results bench/results]

For each N: `bench/sync_once.py prepare` generates table `people` (user_id + 5 traits) in schema cdp_bench, with
every state table `cdp_*` of that schema dropped first, so each N is a first sync. A code location in a temp dir
declares the sync in Python (`SyncDefinition(partitions=N)`, People keyed by user_id, every other column a trait,
the state in the warehouse) with a temp DAGSTER_HOME whose dagster.yaml sets the pools' default limit to N (the
sync's pool is `cdp_sync/people`) and uses the DefaultRunCoordinator.

Launching: `dagster job backfill -f defs.py -j __ASSET_JOB --all --noprompt` creates one run per partition and
submits each to the instance. Dagster's default run coordinator (the QueuedRunCoordinator) would only queue them
for the daemon; the DefaultRunCoordinator launches each run as it is submitted (DefaultRunLauncher: a process per
run, the multiprocess executor inside), with no limit on concurrent runs, so the N runs execute at once without a
daemon. The CLI creates the runs one after another (about 2 s each here), so the last starts a little after the
first. With N = 1 the asset has no partitions (a sync of one partition is unpartitioned) and `dagster job backfill`
refuses it, so its one run is submitted the same way by `dagster job launch`.

Timed from the launch to the end of the last run (the runs' end times in the instance, polled until every run
finished). Checked: every run succeeded, the emulator (`dagster-cdp emulator --count-only`, its own process)
counted exactly `rows` calls, `cdp_state` holds exactly `rows` live keys (payload_hash not null) across the
partitions' syncs `people[i/N]`, each key once, the runs overlapped, and at most 3,000 requests arrived in any
3 s (the API's limit, which each partition's client shares: `rate_limit_share`). 429s (the emulator's) and
retries (`cdp_runs`) are reported. Prints a table and writes bench/results/partitions.json and
bench/results/partitions.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from common import EmulatorProcess, sync_once

from dagster_cdp.sync.partitions import rate_limit_share

BENCH_DIR = Path(__file__).resolve().parent
API_KEY = "bench-key"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dcdp_bench"
RATE_LIMIT = 3000  # requests per 3 s, the API's and the emulator's
DEFS = """import dagster as dg
from dagster_cdp import CustomerIOResource, CustomerIOWarehouseResource, People, SyncDefinition
from dagster_cdp import build_customerio_sync_asset

people = SyncDefinition(name="people", table="people", mapping=People(id_column="user_id"), partitions={partitions})
defs = dg.Definitions(
    assets=[build_customerio_sync_asset(people)],
    resources={{
        "customerio": CustomerIOResource(api_key=dg.EnvVar("CDP_API_KEY"), base_url=dg.EnvVar("CDP_BASE_URL")),
        "warehouse": CustomerIOWarehouseResource(url=dg.EnvVar("WAREHOUSE_URL")),
    }},
)
"""
DAGSTER_YAML = """run_coordinator:  # launch each submitted run at once, without a daemon
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
concurrency:
  pools:
    default_limit: {partitions}  # the sync's pool cdp_sync/people runs N partitions at once
telemetry:
  enabled: false
"""


def launch(partitions: int, workdir: Path, emulator_url: str, timeout: float) -> tuple[float, list[Any]]:
    """Launch the sync's runs with the Dagster CLI and wait for all of them; (launch time, their run records)."""
    import dagster as dg

    (workdir / "defs.py").write_text(DEFS.format(partitions=partitions))
    home = workdir / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(partitions=partitions))
    env = {**os.environ, "DAGSTER_HOME": str(home), "CDP_API_KEY": API_KEY, "CDP_BASE_URL": emulator_url,
           "WAREHOUSE_URL": POSTGRES}
    dagster = str(Path(sys.executable).parent / "dagster")
    target = ["-f", str(workdir / "defs.py"), "-j", "__ASSET_JOB"]
    command = [dagster, "job", "backfill", *target, "--all", "--noprompt"] if partitions > 1 else [
        dagster, "job", "launch", *target]
    log = workdir / "launch.log"
    started = time.time()
    with log.open("w") as output:
        cli = subprocess.run(command, env=env, stdout=output, stderr=subprocess.STDOUT, timeout=timeout)
    if cli.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:3])} failed:\n{log.read_text()[-3000:]}")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while True:
            records = instance.get_run_records()
            if len(records) == partitions and all(r.dagster_run.is_finished for r in records):
                break
            if time.time() - started > timeout:
                raise SystemExit(f"the runs did not finish within {timeout:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    return started, records


def measure(emulator: EmulatorProcess, rows: int, partitions: int, timeout: float) -> dict[str, Any]:
    sync_once(["prepare", "--warehouse", POSTGRES, "--rows", str(rows)])  # no state or history left
    emulator.reset()
    with tempfile.TemporaryDirectory(prefix=f"cdp-bench-partitions-{partitions}-") as workdir:
        started, records = launch(partitions, Path(workdir), emulator.url, timeout)
        statuses = sorted(r.dagster_run.status.value for r in records)
        if statuses != ["SUCCESS"] * partitions:
            raise SystemExit(f"N={partitions}: the runs ended {statuses}:\n"
                             f"{(Path(workdir) / 'launch.log').read_text()[-3000:]}")
    seconds = max(r.end_time for r in records) - started
    runs = sorted([round(r.start_time - started, 2), round(r.end_time - started, 2)] for r in records)
    stats = emulator.stats()
    engine = sa.create_engine(POSTGRES)
    with engine.connect() as connection:
        live = dict(connection.exec_driver_sql(
            "SELECT sync, count(*) FROM cdp_state WHERE payload_hash IS NOT NULL GROUP BY sync").all())
        distinct = connection.exec_driver_sql(
            "SELECT count(DISTINCT key) FROM cdp_state WHERE payload_hash IS NOT NULL").scalar_one()
        retries = connection.exec_driver_sql("SELECT sum(retries) FROM cdp_runs").scalar_one()
    engine.dispose()
    syncs = ["people"] if partitions == 1 else [f"people[{i + 1}/{partitions}]" for i in range(partitions)]
    if stats["calls_received"] != rows or sorted(live) != sorted(syncs) or not sum(live.values()) == distinct == rows:
        raise SystemExit(f"N={partitions}: the emulator counted {stats['calls_received']:,} calls and cdp_state "
                         f"holds {live} live keys ({distinct:,} distinct); expected {rows:,} of each in {syncs}")
    if max(start for start, _ in runs) >= min(end for _, end in runs):
        raise SystemExit(f"N={partitions}: the runs did not overlap (start and end seconds: {runs})")
    return {"partitions": partitions, "rows": rows, "seconds": round(seconds, 2),
            "calls_per_second": round(rows / seconds), "runs_succeeded": len(records),
            "runs_start_end_seconds_after_launch": runs, "calls": stats["calls_received"], "live_keys": live,
            "requests": stats["requests"], "retries": int(retries),
            "max_requests_per_3s": stats["max_requests_in_window"], "rate_limited_429": stats["rate_limited"],
            "status_counts": stats["status_counts"], "client_limit_per_3s": rate_limit_share(RATE_LIMIT, partitions),
            "within_api_limit": stats["max_requests_in_window"] <= RATE_LIMIT}


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["partitions"] for r in results]
    figure, (seconds_axis, rate_axis) = plt.subplots(1, 2, figsize=(10, 4))
    seconds_axis.plot(n, [r["seconds"] for r in results], "-o")
    rate_axis.plot(n, [r["calls_per_second"] for r in results], "-o", label="measured")
    rate_axis.plot(n, [results[0]["calls_per_second"] * x / n[0] for x in n], ":", color="grey", label="linear")
    rate_axis.legend()
    for axis, title in ((seconds_axis, "wall time (s)"), (rate_axis, "calls/s")):
        axis.set_xlabel("partitions N (runs at once)")
        axis.set_xticks(n)
        axis.set_ylim(bottom=0)
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    figure.suptitle(f"dagster-cdp: a {results[0]['rows']:,}-row PostgreSQL first sync as a Dagster backfill of N "
                    f"partitions ({os.cpu_count()} cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4], metavar="N")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each N's runs")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    print(f"{'N':>3} {'rows':>11} {'seconds':>9} {'calls/s':>9} {'runs ok':>7} {'calls':>11} {'requests':>8} "
          f"{'max req/3s':>10} {'limit each':>10} {'429s':>5} {'retries':>7}")
    print("-" * 101)
    results = []
    with EmulatorProcess(API_KEY) as emulator:
        for partitions in args.partitions:
            r = measure(emulator, args.rows, partitions, args.timeout)
            results.append(r)
            print(f"{partitions:>3} {r['rows']:>11,} {r['seconds']:>9.2f} {r['calls_per_second']:>9,} "
                  f"{r['runs_succeeded']:>7} {r['calls']:>11,} {r['requests']:>8,} {r['max_requests_per_3s']:>10,} "
                  f"{r['client_limit_per_3s']:>10,} {r['rate_limited_429']:>5} {r['retries']:>7}", flush=True)
    report = {"command": "python bench/bench_partitions.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_before": [round(x, 2) for x in load_before],
                          "load_average_after": [round(x, 2) for x in os.getloadavg()]},
              "results": results}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "partitions.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(results, args.results / "partitions.png")
    print(f"\nload average before {report['machine']['load_average_before']}, after "
          f"{report['machine']['load_average_after']}")
    return 0 if all(r["within_api_limit"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
