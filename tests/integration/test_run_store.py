"""RunStore on a real redis-server and embedded: waiting for a run's end (what /chat waits on)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import fakeredis
import pytest
import redis

from agent_api.errors import RateLimited, SessionNotFound
from agent_api.runs.model import IfBusy, RunStatus
from agent_api.runs.store import RunStore
from agent_api.services.sessions import SessionManager
from agent_api.services.usage import Counters
from tests.services.test_sessions import msg
from tests.utils.redis_server import RedisServer
from tests.utils.runs import queued_run, redis_run_store


@pytest.fixture(params=["redis-server", "embedded"])
async def store(
    request: pytest.FixtureRequest, redis_server: RedisServer, redis_client: redis.Redis
) -> AsyncIterator[RunStore]:
    if request.param == "embedded":
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
        yield RunStore(client, follow_client=None, run_ttl=60)
        await client.aclose()
    else:
        async with redis_run_store(redis_server.port) as store:
            yield store


async def test_wait_end_answers_only_the_end_and_gives_the_record(store: RunStore) -> None:
    run = queued_run("run_a")
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    ended, current = await store.wait_end(run.id, block=0.05)  # not ended: the block runs out
    assert not ended and current is not None and current.status is RunStatus.QUEUED
    waiting = asyncio.create_task(store.wait_end(run.id, block=10))
    await store.append(run.id, [("message", "{}"), ("token", "{}")])
    started = await store.start(run.id, "worker-1")
    assert started is not None
    await store.finish(started[0], RunStatus.SUCCEEDED, [("done", "{}")], result={"response": "ok"})
    ended, current = await asyncio.wait_for(waiting, 10)
    assert ended and current is not None  # the record as the end left it, read after the end came
    assert current.status is RunStatus.SUCCEEDED and current.result == {"response": "ok"}
    ended, current = await store.wait_end(run.id, block=0.05)  # ended: at once, however late
    assert ended and current == await store.get(run.id)


async def test_a_deleted_run_has_no_end_left(store: RunStore) -> None:
    run = queued_run("run_b")
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    await store.finish(run, RunStatus.CANCELLED, [("done", "{}")])
    await store.delete(run)
    assert await store.wait_end(run.id, block=0.05) == (False, None)
    assert await store.get(run.id) is None


async def test_counters_are_added_by_the_one_end_of_a_run(store: RunStore) -> None:
    run = queued_run("run_c")
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    counters = Counters("usage:key:today", 600, [("runs|assistant", 1), ("tokens", 42)])
    assert await store.finish(run, RunStatus.FAILED, [("done", "{}")], counters=counters) is not None
    assert await store.finish(run, RunStatus.CANCELLED, [("done", "{}")], counters=counters) is None
    assert await store.redis.hgetall("usage:key:today") == {"runs|assistant": "1", "tokens": "42"}  # type: ignore[misc]
    assert 0 < await store.redis.ttl("usage:key:today") <= 600
    events = await store.read(run.id, "0", block=0)
    assert [entry.event for entry in events] == ["session", "done"]  # the events after the counters


async def test_a_turn_is_saved_by_the_run_s_end_and_only_by_it(store: RunStore) -> None:
    sessions = SessionManager(store.redis, ttl=600, max_history=10)
    await sessions.create("assistant", "key", session_id="s1")
    turn = sessions.turn("s1", [msg("user", "hi"), msg("assistant", "hello")])

    ended_elsewhere = queued_run("run_d")
    await store.create(ended_elsewhere, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    assert await store.start(ended_elsewhere.id, "worker-1") is not None
    await store.finish(ended_elsewhere, RunStatus.CANCELLED, [("done", "{}")])  # a cancel won the race
    assert await store.finish(ended_elsewhere, RunStatus.SUCCEEDED, [("done", "{}")], turn=turn) is None
    assert (await sessions.load("s1", "key")).turns == 0  # the cancelled run's turn is not saved

    run = queued_run("run_e")
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    assert await store.start(run.id, "worker-1") is not None
    finished = await store.finish(run, RunStatus.SUCCEEDED, [("done", "{}")], turn=turn)
    assert finished is not None and finished.turns == 1
    saved = await sessions.load("s1", "key")
    assert saved.turns == 1 and [m.content for m in saved.messages] == ["hi", "hello"]


async def test_a_run_whose_session_expired_saves_nothing_and_stays_to_be_ended(store: RunStore) -> None:
    sessions = SessionManager(store.redis, ttl=600, max_history=10)
    run = queued_run("run_f")
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    turn = sessions.turn("s1", [msg("user", "hi")])  # s1 was never created: expired
    with pytest.raises(SessionNotFound):
        await store.finish(run, RunStatus.FAILED, [("done", "{}")], turn=turn)
    assert not await store.redis.exists("agent-api:session:s1:messages")
    current = await store.get(run.id)
    assert current is not None and current.status is RunStatus.QUEUED  # nothing of the end was written
    assert await store.finish(run, RunStatus.FAILED, [("done", "{}")]) is not None  # ended as a failure


async def test_a_new_session_is_written_with_its_run_and_only_if_the_run_is_admitted(store: RunStore) -> None:
    sessions = SessionManager(store.redis, ttl=600, max_history=10)
    first = queued_run("run_g")
    await store.create(first, if_busy=IfBusy.REJECT, max_runs=1, session_frame="{}")
    refused = replace(queued_run("run_h"), session_id="s2")
    with pytest.raises(RateLimited):  # the key's one run is in progress
        await store.create(
            refused,
            if_busy=IfBusy.REJECT,
            max_runs=1,
            session_frame="{}",
            new_session=sessions.new_record("assistant", "key", "s2"),
        )
    assert not await store.redis.exists("agent-api:session:s2")  # no empty session left behind

    admitted = replace(queued_run("run_i"), session_id="s3")
    record = sessions.new_record("assistant", "key", "s3")
    await store.create(admitted, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}", new_session=record)
    session = await sessions.load("s3", "key")
    assert session.agent == "assistant" and session.turns == 0 and 0 < session.expires_in <= 600


async def test_a_run_starts_with_its_session_read_and_its_ttl_refreshed(store: RunStore) -> None:
    sessions = SessionManager(store.redis, ttl=600, max_history=10)
    await sessions.create("assistant", "key", session_id="s1")
    await sessions.append_messages("s1", [msg("user", "earlier"), msg("assistant", "answer")])
    await store.redis.expire("agent-api:session:s1", 5)  # about to expire
    run = queued_run("run_j")
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    taken = await store.start(run.id, "worker-1", sessions.keys())
    assert taken is not None
    started, stored = taken
    assert started.status is RunStatus.RUNNING and stored is not None
    session = sessions.loaded("s1", "key", stored)
    assert [m.content for m in session.messages] == ["earlier", "answer"] and session.expires_in > 5
    assert await store.redis.ttl("agent-api:session:s1:messages") > 5
    assert await store.start(run.id, "worker-2", sessions.keys()) is None  # taken once only

    stateless = replace(queued_run("run_k"), session_id="s9", history=[])
    await store.create(stateless, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    taken = await store.start(stateless.id, "worker-1", sessions.keys())
    assert taken is not None and taken[1] is None  # brings its own history: no session read

    orphan = replace(queued_run("run_l"), session_id="gone")
    await store.create(orphan, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}")
    taken = await store.start(orphan.id, "worker-1", sessions.keys())
    assert taken is not None and taken[1] is not None
    with pytest.raises(SessionNotFound):
        sessions.loaded("gone", "key", taken[1])
