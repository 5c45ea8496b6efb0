"""The messageId of every call a sync sends, made in the work file's SQL with the planned calls.

A messageId is `uuid5(MESSAGE_ID_NAMESPACE, name)`, text, with

- name `<sync>|<operation>|<key>|<payload hash>|<version>` for a call of a mirror or upsert sync: a resend of an
  unacknowledged call gets the same id, so it is recognisable; `version` (calls accepted so far for the key) makes
  every new send distinct, or a row that goes A -> B -> A -> B, or is deleted and comes back unchanged, would repeat
  an old id and be de-duplicated away;
- name `<sync>|once|<key>` for a send-once key (an event id, an alias pair): one messageId ever, whatever its row
  holds when sent.

DuckDB computes the SHA-1 of the namespace's bytes and the name's UTF-8 and sets uuid5's version and variant bits
on its first 16 bytes, as `uuid.uuid5` does, while the planned calls are read: no Python per call.
"""

from __future__ import annotations

import uuid

import duckdb

MESSAGE_ID_NAMESPACE = uuid.UUID("5f0c7a4e-2d1b-5c8e-9a3f-6b7d8e9f0a1b")


def digest_sql(*, send_once: bool) -> str:
    """DuckDB SQL of the SHA-1 (hex) of the namespace and the name of a planned call, over the plan's columns
    operation, key, payload_hash and version; its one parameter is the sync's name."""
    if send_once:
        name = "CAST(? AS VARCHAR) || '|once|' || key"
    else:
        name = (
            "CAST(? AS VARCHAR) || '|' || operation || '|' || key || '|' || payload_hash || '|' "
            "|| CAST(version AS VARCHAR)"
        )
    return f"sha1(from_hex('{MESSAGE_ID_NAMESPACE.hex}') || encode({name}))"


def uuid_sql(digest: str) -> str:
    """DuckDB SQL of the uuid5 text of the column `digest` (`digest_sql`): its first 16 bytes with the version nibble
    (the 13th) 5 and the variant bits of the 17th 10xx (so 8, 9, a or b)."""
    variant = f"substr('89ab', CAST(('0x' || substr({digest}, 17, 1))::INTEGER % 4 + 1 AS INTEGER), 1)"
    return (
        f"substr({digest}, 1, 8) || '-' || substr({digest}, 9, 4) || '-5' || substr({digest}, 14, 3) || '-' || "
        f"{variant} || substr({digest}, 18, 3) || '-' || substr({digest}, 21, 12)"
    )


def check_message_ids(db: duckdb.DuckDBPyConnection) -> None:
    """Raises unless this DuckDB makes the messageIds Python's uuid5 makes (checked once per work file): a DuckDB
    that hashed other bytes would give every call a new messageId, and resend what was already accepted."""
    name = ("sync", "update", "clé 🔑", "0" * 32, 7)
    made = db.execute(
        f"SELECT {uuid_sql('d')} FROM (SELECT {digest_sql(send_once=False)} AS d "
        "FROM (SELECT ? AS operation, ? AS key, ? AS payload_hash, ? AS version))",
        list(name),
    ).fetchone()
    expected = str(uuid.uuid5(MESSAGE_ID_NAMESPACE, "|".join(map(str, name))))
    if made is None or made[0] != expected:
        raise RuntimeError(
            f"DuckDB {duckdb.__version__} makes messageId {made and made[0]!r} where uuid5 makes {expected!r}; "
            "install the DuckDB version in constraints.txt."
        )
