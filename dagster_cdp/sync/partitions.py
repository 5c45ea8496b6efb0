"""Hash partitions of a sync's keys: `partitions=N` splits one large sync into N independent syncs.

A key's partition is the first 28 bits of the MD5 of the key (the string the API gets) modulo N, a function
Python and every warehouse with the in-warehouse diff compute identically (`Dialect.bucket`), so a row
lands in the same partition whichever path reads it. Each partition keeps its own state (under `partition_name`)
and sees only its own keys, so its deletions and its delete guard concern its keys alone. Rows without a key are
reported by partition 0 only.
"""

from __future__ import annotations

import hashlib

_BITS = 7  # hex digits of the MD5: 28 bits, positive in a 32-bit integer everywhere (as `Dialect.bucket`)


def partition_of(key: str, partitions: int) -> int:
    return int(hashlib.md5(key.encode()).hexdigest()[:_BITS], 16) % partitions


def partition_name(name: str, partition: int, partitions: int) -> str:
    """The name one partition's state, messageIds and report go by: its own, so partitions never interfere."""
    return f"{name}[{partition + 1}/{partitions}]"


def partition_sql(bucket: str, partitions: int) -> str:
    """`partition_of` in SQL, given the key's `Dialect.bucket`; NULL keys fall in partition 0 (where they are
    reported)."""
    return f"coalesce({bucket} % {int(partitions)}, 0)"


def rate_limit_share(rate_limit: int, partitions: int) -> int:
    """Each partition's client gets an equal share of the API's rate limit, so all N running at once stay within it."""
    return max(1, rate_limit // partitions)
