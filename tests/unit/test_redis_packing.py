"""The service's Redis connections pack commands with hiredis: the same bytes redis-py's own
(Python) packer writes, the same errors for what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from agent_api.services.redis_pool import HiredisPacking, LeanBlockingPool, hiredis_packing

COMMANDS: list[tuple[Any, ...]] = [
    ("PING",),
    ("SET", "key", "value", "EX", 3600),
    ("CONFIG GET", "maxmemory"),  # a command name of two words
    (b"CLIENT SETNAME", b"agent-api"),
    ("EVALSHA", "a" * 40, 2, "agent-api:run:1", "agent-api:session:s", '{"message": "é ✓ 🙂"}', 1.5, -7, 0.1),
    ("HSET", "h", "big", "x" * 20_000, "int", 2**70, "float", 1e20, "nan", float("nan")),
    ("SET", b"bytes\x00key", memoryview(b"a view")),
    ("XADD", "stream", "*", "data", ""),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_hiredis_packs_the_bytes_redis_py_packs(command: tuple[Any, ...]) -> None:
    python, packing = Connection(), hiredis_packing(Connection)()
    assert isinstance(packing, HiredisPacking)
    assert b"".join(packing.pack_command(*command)) == b"".join(python.pack_command(*command))
    assert b"".join(packing.pack_commands([command, ("PING",)])) == b"".join(python.pack_commands([command, ("PING",)]))


@pytest.mark.parametrize("value", [None, True, bytearray(b"x"), [1], {"a": 1}], ids=repr)
def test_what_redis_py_refuses_is_refused_the_same_way(value: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "key", value)
    with pytest.raises(DataError):
        hiredis_packing(Connection)().pack_command("SET", "key", value)


def test_a_lone_surrogate_fails_as_in_redis_py() -> None:
    with pytest.raises(UnicodeEncodeError):
        Connection().pack_command("SET", "key", "\ud800")
    with pytest.raises(UnicodeEncodeError):
        hiredis_packing(Connection)().pack_command("SET", "key", "\ud800")


def test_another_encoding_packs_the_python_way() -> None:
    command = ("SET", "key", "café")
    latin = hiredis_packing(Connection)(encoding="latin-1")
    assert b"".join(latin.pack_command(*command)) == b"".join(Connection(encoding="latin-1").pack_command(*command))
    assert b"caf\xe9" in b"".join(latin.pack_command(*command))


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_every_kind_of_connection_of_the_pool_packs_with_hiredis(url: str, base: type[Connection]) -> None:
    pool = LeanBlockingPool.from_url(url, max_connections=2, timeout=1)
    assert issubclass(pool.connection_class, base) and issubclass(pool.connection_class, HiredisPacking)
    assert hiredis_packing(pool.connection_class) is pool.connection_class  # not wrapped twice
