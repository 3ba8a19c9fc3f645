"""LeanBlockingPool against a real redis-server: what redis-py's blocking pool promises still holds
with the installed redis-py (waiting for a busy pool, its timeout, stale connections replaced)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from agent_api.services.redis_pool import LeanBlockingPool
from tests.utils.redis_server import RedisServer
from tests.utils.waiting import until

Client = Callable[..., aioredis.Redis]


@pytest.fixture
async def lean_client(redis_server: RedisServer, redis_client: redis.Redis) -> AsyncIterator[Client]:
    clients: list[aioredis.Redis] = []

    def make(max_connections: int = 4, timeout: float = 5.0) -> aioredis.Redis:
        pool = LeanBlockingPool.from_url(
            redis_server.url,
            max_connections=max_connections,
            timeout=timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),  # no retry: a stale connection must not be hidden by one
        )
        client = aioredis.Redis.from_pool(pool)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_many_commands_share_few_connections_first_come_first_served(lean_client: Client) -> None:
    client = lean_client(max_connections=2)
    pool = client.connection_pool
    assert isinstance(pool, LeanBlockingPool)

    async def bump(n: int) -> None:
        for _ in range(n):
            await client.incr("counter")

    await asyncio.gather(*(bump(20) for _ in range(50)))
    assert await client.get("counter") == "1000"
    assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
    assert not pool._in_use_connections  # every connection came back


async def test_a_full_pool_waits_for_a_connection_then_times_out(lean_client: Client) -> None:
    client = lean_client(max_connections=1, timeout=0.3)
    pool = client.connection_pool
    assert isinstance(pool, LeanBlockingPool)
    held = await pool.get_connection()

    async def set_k() -> object:
        return await client.set("k", "v")

    waiting = asyncio.create_task(set_k())
    await until(lambda: bool(pool._condition._waiters))
    await pool.release(held)  # handed to the waiting command
    assert await waiting is True
    held = await pool.get_connection()
    with pytest.raises(RedisConnectionError, match="No connection available"):
        await client.get("k")
    await pool.release(held)
    assert await client.get("k") == "v"


async def test_a_connection_the_server_closed_is_replaced_before_use(
    lean_client: Client, redis_client: redis.Redis
) -> None:
    client = lean_client(max_connections=1)
    assert await client.set("before", "kill") is True
    connection: AbstractConnection = next(iter(client.connection_pool._available_connections))
    redis_client.client_kill_filter(_type="normal", skipme=True)
    await until(lambda: connection._reader is not None and connection._reader.at_eof())
    assert await client.set("after", "kill") is True  # no retry configured: a fresh connection did it
    assert await client.get("after") == "kill"


async def test_a_connection_left_with_an_unread_reply_is_replaced(lean_client: Client) -> None:
    client = lean_client(max_connections=1)
    await client.set("k", "value")
    pool = client.connection_pool
    assert isinstance(pool, LeanBlockingPool)
    connection = await pool.get_connection()
    await connection.send_command("ECHO", "stale reply")  # its reply is never read
    await until(lambda: not connection._socket_is_empty())  # type: ignore[no-untyped-call]
    await pool.release(connection)
    assert await client.get("k") == "value"  # not "stale reply"
