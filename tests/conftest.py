"""Shared fixtures."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator
from tests.warehouses import KINDS, MARIADB, POSTGRES, Warehouse, snowflake_schema


@pytest.fixture(scope="session", autouse=True)
def temp_dir_inside_pytests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Work files go under pytest's own temp dir: a sync the tests SIGKILL leaves its work file behind,
    as it would for a user, and children inherit TMPDIR."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmp"))
    tempfile.tempdir = None  # gettempdir() caches its answer
    yield
    if before is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None


@pytest.fixture(scope="session", autouse=True)
def short_leases() -> Iterator[None]:
    """Lease locks (Snowflake's) of runs the tests SIGKILL expire after 10 s, not 60 (children inherit it)."""
    before = os.environ.get("CDP_LEASE_SECONDS")
    os.environ["CDP_LEASE_SECONDS"] = "10"
    yield
    if before is None:
        del os.environ["CDP_LEASE_SECONDS"]
    else:
        os.environ["CDP_LEASE_SECONDS"] = before


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[Emulator]:
    """One emulator for the whole session (accepts any non-empty key); use `emulator` for a clean one."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emulator(emulator_session: Emulator) -> Emulator:
    """The session's emulator with its state, stats and faults cleared."""
    emulator_session.reset()
    return emulator_session


@pytest.fixture
def client(emulator: Emulator) -> Iterable[PipelinesClient]:
    """A client of the clean emulator that retries for up to 20 s."""
    with PipelinesClient("test-key", base_url=emulator.url, max_retry_seconds=20) as c:
        yield c


@pytest.fixture(params=KINDS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """An empty database of each kind (tests/warehouses.py), dropped after; narrow the kinds with
    `@pytest.mark.parametrize("warehouse", [...], indirect=True)`."""
    kind = request.param
    name = f"cdp_test_{uuid.uuid4().hex[:12]}"
    if kind in ("sqlite", "duckdb"):
        yield from _released(Warehouse(kind, f"{kind}:///{tmp_path / f'warehouse.{kind}'}", "main"))
    elif kind == "postgresql":
        with _namespace(POSTGRES, f'CREATE SCHEMA "{name}"', f'DROP SCHEMA "{name}" CASCADE'):
            yield from _released(Warehouse(kind, f"{POSTGRES}?options=-csearch_path%3D{name}", name))
    elif kind == "snowflake":
        with snowflake_schema(name) as url:
            yield from _released(Warehouse(kind, url, name))
    else:
        with _namespace(MARIADB, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4", f"DROP DATABASE `{name}`"):
            yield from _released(Warehouse(kind, f"{MARIADB}/{name}?charset=utf8mb4", name))


def _released(place: Warehouse) -> Iterator[Warehouse]:
    """Yields the warehouse, then releases its engines (before its namespace is dropped)."""
    try:
        yield place
    finally:
        place.release()


@contextmanager
def _namespace(admin_url: str, create: str, drop: str) -> Iterator[None]:
    """A schema or database created on a server for one test, and dropped after it."""
    admin = sa.create_engine(admin_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(create)
    try:
        yield
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(drop)
        admin.dispose()
