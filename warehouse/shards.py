"""Customer shards: which part of the bank a customer's rows belong to on the iceberg backend.

A customer's shard is the first 8 bytes of md5(customer_id as text), read as a big-endian unsigned integer,
modulo the number of shards. md5 rather than an engine's own hash: DuckDB's `hash()` may change between
versions, and md5 is there in every engine a bank reads the lake with (Trino `from_big_endian_64(md5(...))`,
Spark `conv(substr(md5(id), 1, 16), 16, 10)`), so the same customer lands in the same shard everywhere.
"""

from __future__ import annotations

import hashlib

MAX_SHARDS = 4096


def check(shards: int) -> int:
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be a whole number from 1 to {MAX_SHARDS}, not {shards!r}")
    return shards


def shard_sql(column: str, shards: int) -> str:
    """The shard of `column` (an SQL expression of the customer id) in DuckDB SQL, as INTEGER."""
    return f"((('0x' || left(md5(({column})::VARCHAR), 16))::UBIGINT % {check(shards)})::INTEGER)"


def shard_of(customer_id: object, shards: int) -> int:
    """The same in Python (tests, tools)."""
    digest = hashlib.md5(str(customer_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") % check(shards)
