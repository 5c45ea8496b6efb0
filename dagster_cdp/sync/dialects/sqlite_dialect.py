"""SQLite: values come back by their declared type, text may not be UTF-8, and md5 is ours (portable diff)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import sqlalchemy as sa

from dagster_cdp.sync.dialects.base import Dialect
from dagster_cdp.sync.locks import Lock, file_lock
from dagster_cdp.sync.reading import utf8_or_unreadable


class SQLiteDialect(Dialect):
    names: ClassVar[tuple[str, ...]] = ("sqlite",)

    @contextmanager
    def session(self, connection: sa.Connection) -> Iterator[None]:
        raw = connection.connection.dbapi_connection
        assert raw is not None  # an open Connection holds its DB-API connection
        before = raw.text_factory
        raw.text_factory = utf8_or_unreadable  # sqlite3 would fail the whole fetch on one value that is not UTF-8
        raw.create_function("cdp_bucket", 1, _bucket, deterministic=True)  # SQLite has no md5 of its own
        try:
            yield
        finally:
            raw.text_factory = before

    def key_text(self, expression: str) -> str:
        return f"CAST({expression} AS TEXT)"

    def bucket(self, expression: str) -> str:
        return f"cdp_bucket({expression})"

    def lock(self, engine: sa.Engine, locks: sa.Table, name: str, sync: str) -> Lock:
        return file_lock(engine, name)


def _bucket(text: str | bytes | None) -> int | None:
    """`Dialect.bucket` for SQLite, registered on the connection while a sync reads."""
    if text is None:
        return None
    data = text if isinstance(text, bytes) else str(text).encode()
    return int(hashlib.md5(data).hexdigest()[:7], 16)
