"""The whole story on a fresh clone: build the dbt models, sync them to a local Customer.io emulator, change a few
rows, sync again, and show that only the changes went out.

    python -m example_repo.demo

Exits non-zero if anything failed or the second run sent more than the changes.
"""

import os
import sys
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent
SYNC_KEYS = ["cdp_people", "cdp_accounts", "cdp_memberships"]
COUNTS = ["inserted", "updated", "deleted", "unchanged", "rejected", "requests", "bytes"]
# What the changes below must produce in the second run, per sync: (inserted, updated, deleted).
EXPECTED_SECOND_RUN = {"cdp_people": (1, 1, 1), "cdp_accounts": (0, 0, 0), "cdp_memberships": (1, 0, 1)}


def main() -> int:
    duckdb_path = Path(os.environ.setdefault("EXAMPLE_DUCKDB_PATH", str(EXAMPLE_DIR / "warehouse.duckdb")))
    os.environ.pop("WAREHOUSE_URL", None)  # the demo reads the embedded DuckDB that dbt builds
    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    for stale in (duckdb_path, duckdb_path.with_name(duckdb_path.name + ".wal")):
        stale.unlink(missing_ok=True)  # a fresh warehouse: its sync state must match the fresh emulator

    from dagster_cdp import Emulator

    with Emulator(api_keys={"demo-key"}) as emulator:
        os.environ.update(CDP_API_KEY="demo-key", CDP_BASE_URL=emulator.url)
        os.environ.pop("CDP_REGION", None)
        print(f"Customer.io emulator listening on {emulator.url}\n")
        from example_repo.definitions import defs

        print("Run 1: dbt builds people, accounts and memberships into the embedded DuckDB, then every sync runs.")
        first = _materialize(defs, selection=None)
        _print_reports(first)

        print("Changing the warehouse: person 2 upgrades to enterprise, person 11 signs up and joins initech,")
        print("person 9 (a member of acme) is deleted.\n")
        _change_rows(duckdb_path)

        print("Run 2: only the syncs run.")
        second = _materialize(defs, selection=SYNC_KEYS)
        _print_reports(second)

        _print_emulator(emulator)
        return _check_second_run(second)


def _materialize(defs, selection: list[str] | None) -> dict[str, dict]:
    import dagster as dg

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the reports below say what happened
    result = dg.materialize(list(defs.assets), resources=defs.resources, selection=selection, run_config=quiet)
    return {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() in SYNC_KEYS
    }


def _print_reports(reports: dict[str, dict]) -> None:
    print(f"  {'asset':<16}" + "".join(f"{name:>10}" for name in COUNTS))
    for key in SYNC_KEYS:
        metadata = reports[key]
        print(f"  {key:<16}" + "".join(f"{metadata[name]:>10}" for name in COUNTS))
    print()


def _change_rows(duckdb_path: Path) -> None:
    import duckdb

    with duckdb.connect(str(duckdb_path)) as con:
        con.execute("update people set plan = 'enterprise' where user_id = 2")
        con.execute(
            "insert into people values (11, 'katherine@example.com', 'Katherine', 'Johnson', 'pro', "
            "timestamp '2024-07-01 09:00:00')"
        )
        con.execute("insert into memberships values (11, 'initech', 'member')")
        con.execute("delete from memberships where user_id = 9")
        con.execute("delete from people where user_id = 9")


def _print_emulator(emulator) -> None:
    snapshot = emulator.snapshot()
    objects = sum(len(by_id) for by_id in snapshot["objects"].values())
    print("What the Customer.io emulator now holds:")
    print(f"  {len(snapshot['people'])} people, {objects} objects, {len(snapshot['relationships'])} relationships")
    for user_id in ("2", "9", "11"):
        person = snapshot["people"].get(user_id)
        print(f"  person {user_id}: {person['traits'] if person else 'deleted'}")
    memberships = sorted(f"{r['userId']}->{r['groupId']}" for r in snapshot["relationships"] if r["userId"] in ("9", "11"))
    print(f"  memberships of persons 9 and 11: {', '.join(memberships)}")
    print(f"  {emulator.stats()['requests']} requests received in total\n")


def _check_second_run(second: dict[str, dict]) -> int:
    wrong = {
        key: (second[key]["inserted"], second[key]["updated"], second[key]["deleted"])
        for key in SYNC_KEYS
        if (second[key]["inserted"], second[key]["updated"], second[key]["deleted"]) != EXPECTED_SECOND_RUN[key]
    }
    if wrong:
        print(f"FAILED: the second run should have sent only the changes {EXPECTED_SECOND_RUN}, but sent {wrong}")
        return 1
    print("Only the changes went out: 2 inserts, 1 update and 2 deletions; accounts sent nothing.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
