"""A memory bound for embedded DuckDB while a sync runs: by default it may take 80% of the machine's RAM.

The in-warehouse diff, the appended acknowledgements and `settle` all run inside the warehouse's DuckDB
(and the work file is a DuckDB of its own), so without a bound a sync's peak memory would grow with the
table. Within the bound DuckDB spills to disk. A lower limit the user set is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

WAREHOUSE_MEMORY_LIMIT = "320MB"  # plus WorkFile's 256MB: ~576MB of DuckDB memory for a sync of any size
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*([\d.]+)\s*([a-z]*)\s*$", re.IGNORECASE)


@contextmanager
def bounded_duckdb(engine: sa.Engine) -> Iterator[None]:
    """Lowers a DuckDB engine's memory limit (a setting of the whole database) for the block, then restores it."""
    if engine.dialect.name != "duckdb":
        yield
        return
    with engine.connect() as connection:
        before, order = connection.exec_driver_sql(
            "SELECT current_setting('memory_limit'), current_setting('preserve_insertion_order')").one()
        lowered = _bytes(before) > _bytes(WAREHOUSE_MEMORY_LIMIT)
        if lowered:
            connection.exec_driver_sql(f"SET memory_limit = '{WAREHOUSE_MEMORY_LIMIT}'")
        connection.exec_driver_sql("SET preserve_insertion_order = false")  # lets large joins stream and spill
    try:
        yield
    finally:
        with engine.connect() as connection:
            if lowered:
                # The setting reads back rounded ("18.8 GiB"), so the default is restored by RESET, exactly.
                connection.exec_driver_sql("RESET memory_limit")
                if connection.exec_driver_sql("SELECT current_setting('memory_limit')").scalar_one() != before:
                    connection.exec_driver_sql(f"SET memory_limit = '{before}'")
            connection.exec_driver_sql(f"SET preserve_insertion_order = {'true' if order else 'false'}")


def _bytes(size: str) -> float:
    match = _SIZE.match(size)
    if match is None:
        return float("inf")
    number, unit = match.groups()
    return float(number) * _UNITS.get(unit.upper() or "B", 1)
