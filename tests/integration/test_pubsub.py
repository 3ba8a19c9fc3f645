"""services.pubsub.listen against a real redis-server: a quiet channel keeps its one connection
past the client's read timeout, and a lost or silent connection is subscribed again, with the
caller told so that it can look up what it missed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis

from agent_api.services import pubsub
from tests.utils.redis_server import RedisServer
from tests.utils.waiting import until


class Listener:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.subscribed = 0


@pytest.fixture
async def listening(redis_server: RedisServer, redis_client: redis.Redis) -> AsyncIterator[Callable[..., Listener]]:
    tasks: list[asyncio.Task[None]] = []
    clients: list[aioredis.Redis] = []

    def start(idle: float = 30.0) -> Listener:
        # The service's clients time out reads after REDIS_TIMEOUT; a short one here.
        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=0.2)
        clients.append(client)
        listener = Listener()

        def subscribed() -> None:
            listener.subscribed += 1

        tasks.append(
            asyncio.get_running_loop().create_task(
                pubsub.listen(client, "chan", listener.messages.append, on_subscribed=subscribed, idle=idle, retry=0.05)
            )
        )
        return listener

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.aclose()


def subscribers(client: redis.Redis) -> list[str]:
    return [entry["id"] for entry in cast(list[dict[str, str]], client.client_list(_type="pubsub"))]


async def test_a_quiet_channel_keeps_its_connection_past_the_read_timeout(
    listening: Callable[..., Listener], redis_client: redis.Redis
) -> None:
    listener = listening()
    await until(lambda: listener.subscribed == 1)
    first = subscribers(redis_client)
    assert len(first) == 1

    await asyncio.sleep(1.0)  # five read timeouts of the client

    assert subscribers(redis_client) == first
    assert listener.subscribed == 1
    redis_client.publish("chan", "run_1")
    await until(lambda: listener.messages == ["run_1"])


async def test_a_killed_connection_is_subscribed_again_and_the_caller_told(
    listening: Callable[..., Listener], redis_client: redis.Redis
) -> None:
    listener = listening()
    await until(lambda: listener.subscribed == 1)
    redis_client.publish("chan", "before")
    await until(lambda: listener.messages == ["before"])

    assert redis_client.client_kill_filter(_type="pubsub") == 1

    await until(lambda: listener.subscribed == 2)
    redis_client.publish("chan", "after")
    await until(lambda: listener.messages == ["before", "after"])
    assert len(subscribers(redis_client)) == 1


async def test_a_connection_that_stops_answering_is_given_up(
    listening: Callable[..., Listener], redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    listener = listening(idle=0.1)
    await until(lambda: listener.subscribed == 1)
    first = subscribers(redis_client)

    with caplog.at_level(logging.WARNING, logger=pubsub.__name__):
        redis_client.client_pause(600, all=True)  # the PING after 0.1 s idle goes unanswered
        await until(lambda: listener.subscribed == 2)

    assert "lost its connection to Redis (Unanswered)" in caplog.text
    assert subscribers(redis_client) != first
    redis_client.publish("chan", "after")
    await until(lambda: listener.messages == ["after"])


async def test_a_watcher_waiting_for_its_subscription_is_let_go_when_the_connection_is_lost(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    fanout = pubsub.Fanout(client, "home")
    task = asyncio.get_running_loop().create_task(fanout.run())
    await until(lambda: fanout.up)

    async def watch() -> pubsub.Watch | None:
        async with fanout.watching("chan", timeout=30) as watching:
            return watching

    try:
        redis_client.client_pause(3000, all=True)  # the subscription stays unconfirmed
        watcher = asyncio.get_running_loop().create_task(watch())
        await asyncio.sleep(0.1)
        task.cancel()  # the fanout's connection goes before the confirmation comes
        await asyncio.gather(task, return_exceptions=True)
        assert await asyncio.wait_for(watcher, 2) is None  # at once, not after its 30 s
    finally:
        redis_client.client_unpause()
        task.cancel()
        await client.aclose()
