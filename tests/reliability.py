"""A small customer model for the reliability tests: people, companies and memberships, mutated at random.

`World` keeps the source tables in a real warehouse and knows what Customer.io must hold once the three
syncs have run, so a test can check exact convergence after faults, crashes or random edits.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from typing import Any

import sqlalchemy as sa

from dagster_cdp.client import PipelinesClient
from dagster_cdp import Emulator, FaultConfig
from dagster_cdp import Objects, People, Relationships, SyncDefinition, SyncReport, run_sync
from tests.warehouses import Warehouse

PEOPLE = SyncDefinition(name="people", table="people", mapping=People(id_column="id"))
COMPANIES = SyncDefinition(name="companies", table="companies", mapping=Objects(id_column="id", object_type=2))
MEMBERSHIPS = SyncDefinition(name="memberships", table="memberships", mapping=Relationships(
    user_id_column="user_id", object_id_column="company_id", object_type=2))
SYNCS = (PEOPLE, COMPANIES, MEMBERSHIPS)  # in this order: a relationship's person and object exist first

_PEOPLE_COLUMNS = {"id": sa.Integer, "name": sa.String(40), "plan": sa.String(20), "score": sa.Float,
                   "padding": sa.Text}
_COMPANY_COLUMNS = {"id": sa.String(20), "name": sa.String(40), "tier": sa.Integer, "padding": sa.Text}
_MEMBERSHIP_COLUMNS = {"user_id": sa.Integer, "company_id": sa.String(20), "role": sa.String(20), "padding": sa.Text}
_NULLABLE = {"people": ("plan", "score"), "companies": ("tier",), "memberships": ("role",)}


class World:
    """Source tables and the state Customer.io must reach. `padding` bytes per row set how many requests a sync takes.

    Deleting a person or a company also deletes their memberships, as Customer.io does on `User Deleted`
    and `Object Deleted`; new rows always get new keys.
    """

    def __init__(self, warehouse: Warehouse, rng: random.Random, *, people: int, companies: int, memberships: int,
                 padding: int = 100) -> None:
        self.warehouse = warehouse
        self.rng = rng
        self.padding = padding
        self._next = 0
        self.people = {i: self._person(i) for i in range(1, people + 1)}
        self.companies = {c["id"]: c for c in (self._company(f"c{i}") for i in range(1, companies + 1))}
        self.memberships: dict[tuple[int, str], dict[str, Any]] = {}
        self._add_memberships(memberships)
        self._tables = {
            "people": warehouse.create("people", _PEOPLE_COLUMNS, list(self.people.values())),
            "companies": warehouse.create("companies", _COMPANY_COLUMNS, list(self.companies.values())),
            "memberships": warehouse.create("memberships", _MEMBERSHIP_COLUMNS, list(self.memberships.values())),
        }
        self._next = people + companies

    def _pad(self) -> str:
        self._next += 1
        return (f"{self._next:08d}" * (self.padding // 8 + 1))[:self.padding]

    def _person(self, i: int) -> dict[str, Any]:
        return {"id": i, "name": f"Person {i}", "plan": self.rng.choice(["free", "pro", None]),
                "score": self.rng.choice([0.5, 1.25, None]), "padding": self._pad()}

    def _company(self, company_id: str) -> dict[str, Any]:
        return {"id": company_id, "name": f"Company {company_id}", "tier": self.rng.choice([1, 2, 3, None]),
                "padding": self._pad()}

    def _add_memberships(self, count: int) -> None:
        people, companies = sorted(self.people), sorted(self.companies)
        for _ in range(count * 3):
            if count <= 0 or not people or not companies:
                return
            key = (self.rng.choice(people), self.rng.choice(companies))
            if key not in self.memberships:
                self.memberships[key] = {"user_id": key[0], "company_id": key[1],
                                         "role": self.rng.choice(["admin", "member", None]), "padding": self._pad()}
                count -= 1

    def mutate(self, fraction: float = 0.1) -> None:
        """Inserts, updates, NULLs out and deletes about `fraction` of each table's rows each, then writes them."""
        rng = self.rng
        for table, rows in (("people", self.people), ("companies", self.companies),
                            ("memberships", self.memberships)):
            keys = sorted(rows)
            n = max(1, int(len(keys) * fraction))
            for key in rng.sample(keys, min(n, len(keys))):
                rows[key] = {**rows[key], "padding": self._pad(), **(
                    {"name": f"Renamed {self._next}"} if table != "memberships" else {"role": "owner"})}
            for key in rng.sample(keys, min(n, len(keys))):
                rows[key] = {**rows[key], rng.choice(_NULLABLE[table]): None}
            for key in rng.sample(keys, min(n, len(keys))):
                del rows[key]
        self.memberships = {k: m for k, m in self.memberships.items() if k[0] in self.people and k[1] in self.companies}
        for _ in range(max(1, int(len(self.people) * fraction))):
            self._next += 1
            person = self._person(self._next)
            self.people[person["id"]] = person
        for _ in range(max(1, int(len(self.companies) * fraction))):
            self._next += 1
            company = self._company(f"c{self._next}")
            self.companies[company["id"]] = company
        self._add_memberships(max(1, int(len(self.memberships) * fraction)))
        self.write()

    def write(self) -> None:
        for name, rows in (("people", self.people), ("companies", self.companies), ("memberships", self.memberships)):
            self.warehouse.replace(self._tables[name], list(rows.values()))

    def expected(self) -> dict[str, Any]:
        """What `Emulator.snapshot()` must show for people, objects and relationships (NULL traits are absent)."""
        def present(row: dict[str, Any], *leave_out: str) -> dict[str, Any]:
            return {k: v for k, v in row.items() if v is not None and k not in leave_out}

        relationships = sorted(
            ({"userId": str(u), "objectTypeId": "2", "groupId": c, "attributes": present(m, "user_id", "company_id")}
             for (u, c), m in self.memberships.items()), key=lambda r: (r["userId"], r["objectTypeId"], r["groupId"]))
        return {
            "people": {str(i): {"traits": present(p, "id"), "active": False} for i, p in self.people.items()},
            "objects": {"2": {c: present(row, "id") for c, row in self.companies.items()}} if self.companies else {},
            "relationships": relationships,
        }


def held(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The part of an emulator snapshot that the three syncs write."""
    return {name: snapshot[name] for name in ("people", "objects", "relationships")}


def sync_all(warehouse: Warehouse | str | sa.Engine, client: PipelinesClient, **options: Any) -> list[SyncReport]:
    """Runs the three syncs in order once; deletions are forced since the tests delete at random on purpose."""
    engine = warehouse.engine if isinstance(warehouse, Warehouse) else warehouse
    return [run_sync(definition, warehouse=engine, client=client, force=True, **options) for definition in SYNCS]


def kill_after_requests(warehouse: Warehouse, emulator: Emulator, child: str, requests: int) -> None:
    """Runs the Python code `child` (argv: warehouse URL, API URL) in a process against a slow API, and SIGKILLs
    it once the API has answered `requests` more requests, while more are in flight."""
    warehouse.release()  # DuckDB: one process may hold the file
    emulator.set_faults(FaultConfig(delay_rate=1.0, delay_seconds=0.2))
    before = emulator.stats()["requests"]
    process = subprocess.Popen([sys.executable, "-c", child, warehouse.url, emulator.url])
    try:
        while process.poll() is None and emulator.stats()["requests"] < before + requests:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the sync finished before it could be killed"
    emulator.set_faults(FaultConfig())
