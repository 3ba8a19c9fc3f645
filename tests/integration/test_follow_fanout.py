"""Following runs over one pub/sub connection (RunStore.fanout), on a real redis-server: every
follower gets every event once, in order, whatever it missed while subscribing or while the
connection was lost; no follower holds a Redis connection of its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis
from prometheus_client import REGISTRY

from agent_api.runs.model import IfBusy, Run, RunStatus
from agent_api.runs.service import RunService
from agent_api.runs.store import APPEND_LUA, RunStore
from agent_api.services import pubsub
from tests.utils.redis_server import RedisServer
from tests.utils.runs import queued_run, redis_run_store
from tests.utils.waiting import until


@pytest.fixture
async def store(redis_server: RedisServer, redis_client: redis.Redis) -> AsyncIterator[RunStore]:
    async with redis_run_store(redis_server.port) as store:
        yield store


@pytest.fixture
async def fanout(store: RunStore) -> AsyncIterator[pubsub.Fanout]:
    assert store.fanout is not None
    task = asyncio.get_running_loop().create_task(store.fanout.run())
    await until(lambda: store.fanout is not None and store.fanout.up)
    yield store.fanout
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def service(store: RunStore, follow_block: float = 5.0) -> RunService:
    # follow() needs only the store; the rest of the service is not used here.
    none = cast(Any, None)
    return RunService(
        store, none, none, none, none, max_runs_per_key=None, allow_private_webhooks=False, follow_block=follow_block
    )


async def new_run(store: RunStore, run_id: str) -> Run:
    run = queued_run(run_id)
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    return run


async def collect(runs: RunService, run_id: str, after: str = "0") -> list[str]:
    return [f"{entry.id} {entry.event} {entry.data}" async for entry in runs.follow(run_id, after)]


async def logged(store: RunStore, run_id: str) -> list[str]:
    return [f"{e.id} {e.event} {e.data}" for e in await store.read(run_id, "0", block=0)]


async def finish(store: RunStore, run_id: str) -> None:
    started = await store.start(run_id, "worker-1")
    assert started is not None
    assert await store.finish(started[0], RunStatus.SUCCEEDED, [("usage", "{}"), ("done", "{}")]) is not None


def blocked_readers(client: redis.Redis) -> int:
    connections = cast(list[dict[str, str]], client.client_list())
    return sum(1 for c in connections if c["cmd"] in ("xread", "xreadgroup") and "b" in c["flags"])


def followers_reading_the_log() -> float:
    return REGISTRY.get_sample_value("agent_api_stream_followers", {"via": "log"}) or 0.0


def channels(client: redis.Redis) -> list[str]:
    return cast(list[str], client.pubsub_channels())


def kill_subscribers(client: redis.Redis) -> int:
    return cast(int, client.client_kill_filter(_type="pubsub"))


async def test_followers_share_one_connection_and_get_every_event_once(
    store: RunStore, fanout: pubsub.Fanout, redis_client: redis.Redis
) -> None:
    runs = service(store)
    run = await new_run(store, "run_f")
    early = [asyncio.create_task(collect(runs, run.id)) for _ in range(10)]
    for i in range(100):
        await store.append(run.id, [("token", json.dumps({"i": i}))] * (1 + i % 3))
        if i == 50:  # followers that come in the middle: what came before is read, the rest published
            late = [asyncio.create_task(collect(runs, run.id)) for _ in range(10)]
            resumed = asyncio.create_task(collect(runs, run.id, after=(await logged(store, run.id))[40].split()[0]))
        if i == 60:
            await until(lambda: len(channels(redis_client)) == 2)  # the run's and the fanout's own
            assert blocked_readers(redis_client) == 0
    await finish(store, run.id)

    log = await logged(store, run.id)
    assert len(log) == 1 + 199 + 2 and log[-1].split()[1] == "done"
    for followed in await asyncio.wait_for(asyncio.gather(*early, *late), 10):
        assert followed == log
    assert await asyncio.wait_for(resumed, 10) == log[41:]
    await until(lambda: channels(redis_client) == [fanout_home(store)])  # the last follower unsubscribed


def fanout_home(store: RunStore) -> str:
    return f"{store.prefix}runs:followers"


async def test_a_lost_connection_loses_no_event(
    store: RunStore, fanout: pubsub.Fanout, redis_client: redis.Redis
) -> None:
    runs = service(store, follow_block=60)  # what was missed is read at once, not after a quiet while
    append_now = redis_client.register_script(APPEND_LUA)
    run = await new_run(store, "run_k")
    followers = [asyncio.create_task(collect(runs, run.id)) for _ in range(5)]
    for i in range(60):
        await store.append(run.id, [("token", json.dumps({"i": i}))])
        if i == 20:
            await until(lambda: run.id in " ".join(channels(redis_client)))
            assert kill_subscribers(redis_client) >= 1
            # Written before the fanout can subscribe again (the event loop does not run meanwhile):
            # published to nobody, found in the log.
            for j in range(5):
                append_now(keys=[store.events_key(run.id)], args=["token", json.dumps({"gap": j})])
        await asyncio.sleep(0.005)
    await finish(store, run.id)
    log = await logged(store, run.id)
    for followed in await asyncio.wait_for(asyncio.gather(*followers), 15):
        assert followed == log


async def test_without_the_fanout_followers_read_the_log_themselves(store: RunStore) -> None:
    runs = service(store)  # the fanout is not running: not up
    run = await new_run(store, "run_n")
    reading = followers_reading_the_log()
    follower = asyncio.create_task(collect(runs, run.id))
    await until(lambda: followers_reading_the_log() == reading + 1)  # agent_api_stream_followers{via="log"}
    for i in range(20):
        await store.append(run.id, [("token", json.dumps({"i": i}))])
    await finish(store, run.id)
    assert await asyncio.wait_for(follower, 10) == await logged(store, run.id)


async def test_a_follower_of_a_long_log_reads_all_of_it_before_the_messages(
    store: RunStore, fanout: pubsub.Fanout, redis_client: redis.Redis
) -> None:
    runs = service(store)
    run = await new_run(store, "run_l")
    for i in range(12):  # more than one read's worth (READ_PAGE) before anybody follows
        await store.append(run.id, [("token", json.dumps({"i": i, "j": j})) for j in range(100)])
    follower = asyncio.create_task(collect(runs, run.id))
    await until(lambda: store.events_key(run.id) in channels(redis_client))
    await store.append(run.id, [("token", json.dumps({"after": True}))])
    await finish(store, run.id)
    log = [
        f"{i} {f['e']} {f['d']}"
        for i, f in cast(list[tuple[str, dict[str, str]]], redis_client.xrange(store.events_key(run.id)))
    ]
    assert len(log) == 1 + 1200 + 1 + 2
    assert await asyncio.wait_for(follower, 10) == log


async def test_a_message_that_is_not_events_makes_followers_read_the_log(
    store: RunStore, fanout: pubsub.Fanout, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    runs = service(store, follow_block=60)
    run = await new_run(store, "run_g")
    follower = asyncio.create_task(collect(runs, run.id))
    await until(lambda: store.events_key(run.id) in channels(redis_client))
    subscriber = subscribers(redis_client)
    redis_client.xadd(store.events_key(run.id), {"e": "token", "d": "{}"})  # written without its message...
    redis_client.publish(store.events_key(run.id), "not a list of events")  # ...and a message nobody sends
    await finish(store, run.id)
    assert await asyncio.wait_for(follower, 10) == await logged(store, run.id)
    assert subscribers(redis_client) == subscriber  # the fanout kept its connection
    assert "could not be read" in caplog.text


def subscribers(client: redis.Redis) -> list[str]:
    return [c["id"] for c in cast(list[dict[str, str]], client.client_list(_type="pubsub"))]


async def test_a_follower_of_a_run_whose_writer_does_not_publish_reads_the_log_itself(
    store: RunStore, fanout: pubsub.Fanout, redis_client: redis.Redis
) -> None:
    # A worker of a version before the fanout (during an upgrade) writes its events unpublished.
    runs = service(store, follow_block=0.5)
    run = await new_run(store, "run_u")
    follower = asyncio.create_task(collect(runs, run.id))
    await until(lambda: store.events_key(run.id) in channels(redis_client))
    redis_client.xadd(store.events_key(run.id), {"e": "token", "d": "{}"})
    # Found when the run's channel stays quiet: the follower then blocks on the log itself.
    await until(lambda: blocked_readers(redis_client) == 1)
    redis_client.xadd(store.events_key(run.id), {"e": "done", "d": "{}"})
    assert await asyncio.wait_for(follower, 10) == await logged(store, run.id)
