"""The example repo as users run it: real dbt into DuckDB, `dagster` CLI commands in subprocesses, the demo."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from dagster_cdp import Emulator, FaultConfig
from dagster_cdp.sync.database import as_engine
from tests.warehouses import snowflake_schema

REPO = Path(__file__).resolve().parents[1]
DBT_PROJECT = REPO / "example_repo" / "dbt_project"
BIN = Path(sys.executable).parent
SYNCS = "cdp_people,cdp_accounts,cdp_memberships"
MORE_SYNCS = "cdp_devices,cdp_suppressions,cdp_events,cdp_aliases"
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
MARIADB_SERVER = "mysql+pymysql://root@127.0.0.1:3306"


@pytest.fixture(scope="session")
def built_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's dbt project built (seeds, models, tests) into a DuckDB file of this session."""
    path = tmp_path_factory.mktemp("example") / "warehouse.duckdb"
    os.environ["EXAMPLE_DUCKDB_PATH"] = str(path)  # for example_repo.definitions imported in this process
    build = subprocess.run(
        [str(BIN / "dbt"), "build", "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT)],
        cwd=DBT_PROJECT, env=_env(EXAMPLE_DUCKDB_PATH=str(path)), capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:]
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WAREHOUSE_URL", "CDP_REGION", "CDP_BASE_URL")}
    return {**env, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "PYTHONPATH": str(REPO), **extra}


def _rows(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def duckdb_copy(built_warehouse: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(built_warehouse, copy)
    return copy


def _materialize(emulator: Emulator, warehouse_url: str, duckdb_path: Path, select: str = SYNCS,
                 **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "example_repo.definitions", "--select", select],
        cwd=REPO,
        env=_env(
            WAREHOUSE_URL=warehouse_url, CDP_API_KEY="example-key", CDP_BASE_URL=emulator.url,
            EXAMPLE_DUCKDB_PATH=str(duckdb_path), **env,
        ),
        capture_output=True, text=True, timeout=300,
    )


def _assert_emulator_mirrors(emulator: Emulator, warehouse: Path) -> None:
    snapshot = emulator.snapshot()
    people = _rows(warehouse, "select user_id, email, first_name, last_name, plan, strftime(created_at, '%Y-%m-%dT%H:%M:%SZ') from people")
    assert {key: value["traits"] for key, value in snapshot["people"].items()} == {
        str(u): {"email": e, "first_name": f, "last_name": l, "plan": p, "created_at": c} for u, e, f, l, p, c in people
    }
    accounts = _rows(warehouse, "select account_id, name, industry, employees from accounts")
    assert snapshot["objects"] == {"1": {a: {"name": n, "industry": i, "employees": e} for a, n, i, e in accounts}}
    memberships = _rows(warehouse, "select user_id, account_id, role from memberships")
    assert sorted((r["userId"], r["groupId"], r["attributes"]["role"]) for r in snapshot["relationships"]) == sorted(
        (str(u), a, r) for u, a, r in memberships
    )


def test_dbt_builds_people_accounts_and_memberships(built_warehouse: Path) -> None:
    assert _rows(built_warehouse, "select count(*) from people") == [(10,)]
    assert _rows(built_warehouse, "select count(*) from accounts") == [(4,)]
    assert _rows(built_warehouse, "select count(*) from memberships") == [(10,)]
    columns = _rows(built_warehouse, "select column_name from information_schema.columns where table_name = 'people' order by ordinal_position")
    assert [c for (c,) in columns] == ["user_id", "email", "first_name", "last_name", "plan", "created_at"]


def test_definitions_validate(built_warehouse: Path) -> None:
    validate = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "example_repo.definitions"],
        cwd=REPO, env=_env(EXAMPLE_DUCKDB_PATH=str(built_warehouse)), capture_output=True, text=True, timeout=300,
    )
    assert validate.returncode == 0, validate.stderr[-3000:]


def test_sync_assets_sit_downstream_of_their_dbt_models(built_warehouse: Path) -> None:
    from example_repo.definitions import defs

    graph = defs.resolve_asset_graph()
    for model in ("people", "accounts", "memberships", "devices", "suppressions", "events", "aliases"):
        node = graph.get(dg.AssetKey(f"cdp_{model}"))
        assert node.parent_keys == {dg.AssetKey(model)}
        assert node.kinds == {"customerio", "duckdb"}
        assert node.automation_condition is not None
    assert dg.AssetKey("raw_people") in graph.get(dg.AssetKey("people")).parent_keys
    assert defs.resolve_schedule_def("cdp_syncs_schedule")


def test_cli_materialize_with_a_duckdb_warehouse(emulator: Emulator, duckdb_copy: Path) -> None:
    url = f"duckdb:///{duckdb_copy}"
    first = _materialize(emulator, url, duckdb_copy)
    assert first.returncode == 0, first.stderr[-3000:]
    _assert_emulator_mirrors(emulator, duckdb_copy)
    requests = emulator.stats()["requests"]
    assert _materialize(emulator, url, duckdb_copy).returncode == 0
    assert emulator.stats()["requests"] == requests  # nothing changed, nothing sent


def _rebuild_people(path: Path, select: str) -> None:
    """Rebuilds the people table as `select` over its current rows (another column order, a new column)."""
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE people_rebuilt AS {select}")
        con.execute("DROP TABLE people")
        con.execute("ALTER TABLE people_rebuilt RENAME TO people")


def test_cli_people_unchanged_in_another_column_order_or_time_zone_then_a_new_column_fails(
        emulator: Emulator, duckdb_copy: Path) -> None:
    url = f"duckdb:///{duckdb_copy}"
    assert _materialize(emulator, url, duckdb_copy, select="cdp_people").returncode == 0
    requests = emulator.stats()["requests"]
    _rebuild_people(duckdb_copy, "SELECT plan, created_at, last_name, first_name, email, user_id FROM people")
    reordered = _materialize(emulator, url, duckdb_copy, select="cdp_people", TZ="America/Los_Angeles")
    assert reordered.returncode == 0, reordered.stderr[-3000:]
    assert emulator.stats()["requests"] == requests  # same payloads: nothing sent
    _rebuild_people(duckdb_copy, "SELECT *, 'gold' AS tier FROM people")
    drifted = _materialize(emulator, url, duckdb_copy, select="cdp_people")
    assert drifted.returncode != 0
    assert "added 'tier'" in drifted.stderr and "on_schema_change" in drifted.stderr
    assert emulator.stats()["requests"] == requests


def _copy_example_tables(built_warehouse: Path, url: str) -> None:
    """Creates the example's tables at `url` with SQLAlchemy (not dbt) and copies their rows from the build."""
    engine = as_engine(url)
    metadata = sa.MetaData()
    tables = {
        "people": sa.Table(
            "people", metadata, sa.Column("user_id", sa.Integer), sa.Column("email", sa.Text),
            sa.Column("first_name", sa.Text), sa.Column("last_name", sa.Text), sa.Column("plan", sa.Text),
            sa.Column("created_at", sa.DateTime),
        ),
        "accounts": sa.Table(
            "accounts", metadata, sa.Column("account_id", sa.Text), sa.Column("name", sa.Text),
            sa.Column("industry", sa.Text), sa.Column("employees", sa.Integer),
        ),
        "memberships": sa.Table(
            "memberships", metadata, sa.Column("user_id", sa.Integer),
            sa.Column("account_id", sa.Text), sa.Column("role", sa.Text),
        ),
        "devices": sa.Table(
            "devices", metadata, sa.Column("user_id", sa.Integer),
            sa.Column("token", sa.Text), sa.Column("platform", sa.Text), sa.Column("app_version", sa.Text),
        ),
        "suppressions": sa.Table("suppressions", metadata, sa.Column("user_id", sa.Integer)),
        "events": sa.Table(
            "events", metadata, sa.Column("event_id", sa.Integer), sa.Column("user_id", sa.Integer),
            sa.Column("event", sa.Text), sa.Column("occurred_at", sa.DateTime), sa.Column("product", sa.Text),
            sa.Column("amount", sa.Integer),
        ),
        "aliases": sa.Table(
            "aliases", metadata, sa.Column("previous_id", sa.Text),
            sa.Column("user_id", sa.Integer),
        ),
    }
    metadata.create_all(engine)
    with engine.begin() as connection:
        for table_name, table in tables.items():
            rows = _rows(built_warehouse, f"select {', '.join(table.columns.keys())} from {table_name}")
            connection.execute(table.insert(), [dict(zip(table.columns.keys(), row)) for row in rows])
    engine.dispose()


@pytest.fixture
def postgres_warehouse(built_warehouse: Path) -> Iterator[str]:
    """A fresh PostgreSQL database holding the example's tables, written by SQLAlchemy (not dbt)."""
    name = f"cdp_example_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.exec_driver_sql(f'create database "{name}"')
    url = f"{POSTGRES_SERVER}/{name}"
    _copy_example_tables(built_warehouse, url)
    try:
        yield url
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'drop database "{name}" with (force)')
        server.dispose()


@pytest.fixture
def snowflake_warehouse(built_warehouse: Path) -> Iterator[str]:
    """A fresh schema on the fakesnow server holding the example's tables, created with unquoted (so upper-case)
    names by SQLAlchemy; the URL names the database and schema in its path."""
    with snowflake_schema(f"cdp_example_{uuid.uuid4().hex[:10]}") as url:
        _copy_example_tables(built_warehouse, url)
        yield url


@pytest.fixture(params=["sqlite", "mariadb"])
def sqlite_or_mariadb_warehouse(request: pytest.FixtureRequest, built_warehouse: Path, tmp_path: Path
                                ) -> Iterator[str]:
    """A SQLite file or a fresh MariaDB database holding the example's tables, written by SQLAlchemy (not dbt)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
        _copy_example_tables(built_warehouse, url)
        yield url
        return
    name = f"cdp_example_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(MARIADB_SERVER)
    with server.begin() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    url = f"{MARIADB_SERVER}/{name}?charset=utf8mb4"
    _copy_example_tables(built_warehouse, url)
    try:
        yield url
    finally:
        with server.begin() as connection:
            connection.exec_driver_sql(f"DROP DATABASE `{name}`")
        server.dispose()


def test_cli_materialize_every_kind_with_a_sqlite_or_mariadb_warehouse_then_a_late_event(
    emulator: Emulator, sqlite_or_mariadb_warehouse: str, built_warehouse: Path
) -> None:
    url = sqlite_or_mariadb_warehouse
    run = _materialize(emulator, url, built_warehouse, select=f"{SYNCS},{MORE_SYNCS}")
    assert run.returncode == 0, run.stderr[-3000:]
    _assert_emulator_mirrors(emulator, built_warehouse)
    _assert_emulator_holds_the_other_kinds(emulator, built_warehouse)
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # a late event, a year older than any sent, and a new alias
        connection.exec_driver_sql("INSERT INTO events VALUES (9001, 1, 'Viewed', '2023-01-01 00:00:00', 'x', 1)")
        connection.exec_driver_sql("INSERT INTO aliases VALUES ('anon-late', 2)")
    engine.dispose()
    assert _materialize(emulator, url, built_warehouse, select=f"{SYNCS},{MORE_SYNCS}").returncode == 0
    late = [e for e in emulator.snapshot()["events"] if e.get("timestamp") == "2023-01-01T00:00:00Z"]
    assert [(e["userId"], e["event"], e["properties"]) for e in late] == [("1", "Viewed", {"product": "x", "amount": 1})]
    assert ("anon-late", "2") in [(a["previousId"], a["userId"]) for a in emulator.snapshot()["aliases"]]
    requests = emulator.stats()["requests"]
    assert _materialize(emulator, url, built_warehouse, select=f"{SYNCS},{MORE_SYNCS}").returncode == 0
    assert emulator.stats()["requests"] == requests  # nothing changed, nothing sent


def test_cli_materialize_with_a_postgres_warehouse(
    emulator: Emulator, postgres_warehouse: str, built_warehouse: Path
) -> None:
    run = _materialize(emulator, postgres_warehouse, built_warehouse)
    assert run.returncode == 0, run.stderr[-3000:]
    _assert_emulator_mirrors(emulator, built_warehouse)
    engine = sa.create_engine(postgres_warehouse)
    with engine.connect() as connection:  # the sync state lives in the warehouse itself
        assert connection.exec_driver_sql("select count(*) from cdp_state").scalar() == 24
    engine.dispose()


def _assert_emulator_holds_the_other_kinds(emulator: Emulator, warehouse: Path,
                                           kinds: tuple[str, ...] = ("devices", "suppressions", "events", "aliases")
                                           ) -> None:
    snapshot = emulator.snapshot()
    if "devices" in kinds:
        devices: dict[str, dict] = {}
        for user_id, token, platform, app_version in _rows(warehouse, "select * from devices"):
            devices.setdefault(str(user_id), {})[token] = {"type": platform, "properties": {"app_version": app_version}}
        assert snapshot["devices"] == devices
    if "suppressions" in kinds:
        assert snapshot["suppressions"] == sorted(str(u) for (u,) in _rows(warehouse, "select user_id from suppressions"))
    tracks = [e for e in snapshot["events"] if e["type"] == "track"]
    assert len({e["messageId"] for e in tracks}) == len(tracks)
    assert sorted((e["userId"], e["event"], e["timestamp"], e["properties"]["product"], e["properties"]["amount"])
                  for e in tracks) == sorted(_rows(warehouse, """
        select cast(user_id as varchar), event, strftime(occurred_at, '%Y-%m-%dT%H:%M:%SZ'), product, amount from events"""))
    assert sorted((a["previousId"], a["userId"]) for a in snapshot["aliases"]) == sorted(
        _rows(warehouse, "select previous_id, cast(user_id as varchar) from aliases"))


def test_cli_materialize_the_other_kinds_with_a_duckdb_warehouse(emulator: Emulator, duckdb_copy: Path) -> None:
    url = f"duckdb:///{duckdb_copy}"
    first = _materialize(emulator, url, duckdb_copy, select=MORE_SYNCS)
    assert first.returncode == 0, first.stderr[-3000:]
    _assert_emulator_holds_the_other_kinds(emulator, duckdb_copy)
    with duckdb.connect(str(duckdb_copy)) as con:  # an event already sent changes: it is not sent again
        con.execute("update events set amount = 0")
    requests = emulator.stats()["requests"]
    assert _materialize(emulator, url, duckdb_copy, select=MORE_SYNCS).returncode == 0
    assert emulator.stats()["requests"] == requests  # nothing new, nothing sent


def test_cli_materialize_the_other_kinds_with_a_postgres_warehouse(
    emulator: Emulator, postgres_warehouse: str, built_warehouse: Path
) -> None:
    run = _materialize(emulator, postgres_warehouse, built_warehouse, select=MORE_SYNCS)
    assert run.returncode == 0, run.stderr[-3000:]
    _assert_emulator_holds_the_other_kinds(emulator, built_warehouse)
    engine = sa.create_engine(postgres_warehouse)
    with engine.begin() as connection:  # a late event, a year older than any sent: the next run sends it
        connection.exec_driver_sql("insert into events values (9001, 1, 'Viewed', '2023-01-01 00:00:00', 'x', 1)")
    engine.dispose()
    assert _materialize(emulator, postgres_warehouse, built_warehouse, select="cdp_events").returncode == 0
    late = [e for e in emulator.snapshot()["events"] if e.get("timestamp") == "2023-01-01T00:00:00Z"]
    assert [(e["userId"], e["event"], e["properties"]) for e in late] == [("1", "Viewed", {"product": "x", "amount": 1})]


def test_cli_late_tied_and_newer_events_each_arrive_once_through_faults(emulator: Emulator, duckdb_copy: Path) -> None:
    url = f"duckdb:///{duckdb_copy}"
    assert _materialize(emulator, url, duckdb_copy, select="cdp_events,cdp_aliases").returncode == 0
    rng = random.Random(5)
    next_id = 10_000
    for round_ in range(3):
        with duckdb.connect(str(duckdb_copy)) as con:
            newest = con.execute("select max(occurred_at) from events").fetchone()[0]
            for _ in range(rng.randint(200, 400)):  # newer, tied with the newest, late by up to a day, up to a year
                minutes = rng.choice([rng.randint(1, 600), 0, -rng.randint(1, 1440), -rng.randint(1441, 525_600)])
                occurred = newest + dt.timedelta(minutes=minutes)
                con.execute("insert into events values (?, ?, 'Viewed', ?, 'p', ?)",
                            [next_id, next_id % 50, occurred, next_id % 7])
                next_id += 1
            con.execute("insert into aliases values (?, ?)", [f"anon-{round_}", round_ + 1])
        emulator.set_faults(FaultConfig(error_rate=0.3, error_statuses=(503,), apply_then_error_rate=0.3, seed=round_))
        _materialize(emulator, url, duckdb_copy, select="cdp_events,cdp_aliases")  # retried; may still fail
        emulator.set_faults(FaultConfig())
        run = _materialize(emulator, url, duckdb_copy, select="cdp_events,cdp_aliases")
        assert run.returncode == 0, run.stderr[-3000:]
        _assert_emulator_holds_the_other_kinds(emulator, duckdb_copy, kinds=("events", "aliases"))


def test_cli_run_that_cannot_deliver_exits_nonzero_and_the_next_run_sends_it(emulator: Emulator, duckdb_copy: Path) -> None:
    url = f"duckdb:///{duckdb_copy}"
    emulator.set_faults(FaultConfig(error_rate=1.0, error_statuses=(503,)))
    failed = _materialize(emulator, url, duckdb_copy, select="cdp_people")
    assert failed.returncode != 0
    assert "example-key" not in failed.stdout + failed.stderr
    emulator.set_faults(FaultConfig())
    assert emulator.snapshot()["people"] == {}
    recovered = _materialize(emulator, url, duckdb_copy)
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    _assert_emulator_mirrors(emulator, duckdb_copy)


def test_demo_shows_that_only_changes_go_out(tmp_path: Path, built_warehouse: Path) -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "example_repo.demo"],
        cwd=REPO, env=_env(EXAMPLE_DUCKDB_PATH=str(tmp_path / "demo.duckdb")), capture_output=True, text=True, timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "Only the changes went out" in demo.stdout
    assert "person 9: deleted" in demo.stdout


def test_cli_materialize_every_kind_with_a_snowflake_warehouse(
    emulator: Emulator, snowflake_warehouse: str, built_warehouse: Path
) -> None:
    run = _materialize(emulator, snowflake_warehouse, built_warehouse, select=f"{SYNCS},{MORE_SYNCS}")
    assert run.returncode == 0, run.stderr[-3000:]
    _assert_emulator_mirrors(emulator, built_warehouse)
    _assert_emulator_holds_the_other_kinds(emulator, built_warehouse)
    engine = as_engine(snowflake_warehouse)
    with engine.connect() as connection:  # the state lives in the warehouse, in upper-case tables
        assert connection.exec_driver_sql("SELECT count(*) FROM CDP_STATE").scalar() > 24
    engine.dispose()
    requests = emulator.stats()["requests"]
    again = _materialize(emulator, snowflake_warehouse, built_warehouse, select=f"{SYNCS},{MORE_SYNCS}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert emulator.stats()["requests"] == requests  # nothing changed, nothing sent
