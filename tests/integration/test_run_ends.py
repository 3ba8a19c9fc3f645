"""EndNotices on a real redis-server: a waiting request learns its run's end from the end step's
notice, pushed to its process's list, without a read of its own; a missed notice costs a block."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from agent_api.runs import ends
from agent_api.runs.ends import NOTICE_TTL, parse_notice, record_of
from agent_api.runs.model import IfBusy, Run, RunStatus
from agent_api.runs.store import RunStore
from tests.utils.redis_server import RedisServer
from tests.utils.runs import queued_run, redis_run_store


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RunStore]:
    async with redis_run_store(redis_server.port) as store:
        yield store


@contextlib.asynccontextmanager
async def reading(store: RunStore) -> AsyncIterator[None]:
    """The process's reader of notices, as the API's lifespan runs it."""
    assert store.ends is not None
    task = asyncio.create_task(store.ends.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _run(run_id: str) -> Run:
    return replace(queued_run(run_id), session_id=f"s_{run_id}")  # a session each


async def _create(store: RunStore, run_id: str, *, notify: bool) -> None:
    await store.create(_run(run_id), if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}", notify=notify)


async def test_a_waiter_gets_the_ended_record_from_the_notice(store: RunStore) -> None:
    assert store.ends is not None
    async with reading(store):
        await _create(store, "run_n1", notify=True)
        waiting = asyncio.create_task(store.wait_end("run_n1", block=30))
        started = await store.start("run_n1", "worker-1")
        assert started is not None
        await store.finish(started[0], RunStatus.SUCCEEDED, [("done", "{}")], result={"response": "ok"})
        ended, run = await asyncio.wait_for(waiting, 10)  # well before the block runs out
    assert ended and run is not None
    assert run == await store.get("run_n1")  # the record as the end left it, every field
    assert run.status is RunStatus.SUCCEEDED and run.result == {"response": "ok"} and run.started_at
    assert await store.follow_client.llen(store.ends.key) == 0  # type: ignore[union-attr,misc]
    assert 0 < await store.redis.ttl(store.ends.key) or not await store.redis.exists(store.ends.key)


async def test_a_run_ended_before_its_waiter_waits_is_not_missed(store: RunStore) -> None:
    async with reading(store):
        await _create(store, "run_n2", notify=True)
        await store.finish(_run("run_n2"), RunStatus.CANCELLED, [("done", "{}")])
        await asyncio.sleep(0.2)  # the notice is read before anyone waits on it
        ended, run = await asyncio.wait_for(store.wait_end("run_n2", block=30), 10)
    assert ended and run is not None and run.status is RunStatus.CANCELLED


async def test_many_ends_at_once_each_reach_their_waiter(store: RunStore) -> None:
    ids = [f"run_m{i:03d}" for i in range(120)]
    async with reading(store):
        for run_id in ids:
            await _create(store, run_id, notify=True)
        waiting = [asyncio.create_task(store.wait_end(run_id, block=30)) for run_id in ids]
        for i, run_id in enumerate(ids):
            await store.finish(_run(run_id), RunStatus.FAILED, [("done", "{}")], error={"n": i})
        results = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert [(ended, run.id if run else None, run.error if run else None) for ended, run in results] == [
        (True, run_id, {"n": i}) for i, run_id in enumerate(ids)
    ]


@pytest.mark.parametrize("blmpop", [True, False], ids=["redis-7", "without-blmpop"])
async def test_the_notices_on_the_list_come_in_one_read(
    store: RunStore, monkeypatch: pytest.MonkeyPatch, blmpop: bool
) -> None:
    # One BLMPOP takes them all; a Redis without it (before 7.0) is read with a pipeline instead.
    assert store.ends is not None
    if not blmpop:

        async def unknown(*args: object, **kwargs: object) -> None:
            raise ResponseError("unknown command 'BLMPOP', with args beginning with: '5' '1' ")

        monkeypatch.setattr(store.ends.client, "blmpop", unknown)
    reads: list[int] = []
    read = store.ends._read

    async def counted() -> list[str]:
        notices = await read()
        reads.append(len(notices))
        return notices

    monkeypatch.setattr(store.ends, "_read", counted)
    ids = [f"run_b{int(blmpop)}{i:02d}" for i in range(50)]
    for run_id in ids:
        await _create(store, run_id, notify=True)
    waiting = [asyncio.create_task(store.wait_end(run_id, block=30)) for run_id in ids]
    for run_id in ids:
        await store.finish(_run(run_id), RunStatus.CANCELLED, [("done", "{}")])
    async with reading(store):  # every notice is on the list before the first read
        results = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert [(ended, run.id if run else None) for ended, run in results] == [(True, run_id) for run_id in ids]
    assert reads[0] == len(ids)
    assert store.ends._blmpop is blmpop


async def test_without_its_notice_a_waiter_reads_the_record_after_its_block(store: RunStore) -> None:
    # Nobody reads the notices (a reply lost with its connection): the block runs out, the record tells.
    await _create(store, "run_n3", notify=True)
    await store.start("run_n3", "worker-1")
    await store.finish(_run("run_n3"), RunStatus.SUCCEEDED, [("done", "{}")], result={"response": "late"})
    ended, run = await store.wait_end("run_n3", block=0.2)
    assert not ended and run is not None and run.status is RunStatus.SUCCEEDED and run.result == {"response": "late"}


async def test_only_runs_created_with_notify_push_a_notice(store: RunStore) -> None:
    assert store.ends is not None
    await _create(store, "run_n4", notify=False)
    await store.finish(_run("run_n4"), RunStatus.CANCELLED, [("done", "{}")])
    assert not await store.redis.exists(store.ends.key)
    ended, run = await store.wait_end("run_n4", block=0.05)  # the end marker's way, as before
    assert ended and run is not None and run.status is RunStatus.CANCELLED
    await _create(store, "run_n5", notify=True)
    await store.finish(_run("run_n5"), RunStatus.CANCELLED, [("done", "{}")])
    assert await store.redis.llen(store.ends.key) == 1  # type: ignore[misc]
    assert 0 < await store.redis.ttl(store.ends.key) <= NOTICE_TTL


async def test_a_forgotten_run_s_notice_is_dropped_and_the_reader_rests(store: RunStore) -> None:
    assert store.ends is not None
    async with reading(store):
        await _create(store, "run_n6", notify=True)
        store.forget_end("run_n6")
        assert not store.ends.expects("run_n6")
        await store.finish(_run("run_n6"), RunStatus.CANCELLED, [("done", "{}")])
        await _create(store, "run_n7", notify=True)  # a reader that still reads takes both
        await store.finish(_run("run_n7"), RunStatus.CANCELLED, [("done", "{}")])
        ended, run = await asyncio.wait_for(store.wait_end("run_n7", block=30), 10)
        assert ended and run is not None and run.id == "run_n7"
        store.forget_end("run_n7")
        assert await store.redis.llen(store.ends.key) == 0  # type: ignore[misc]


def test_a_notice_is_the_run_id_and_its_record() -> None:
    assert parse_notice('run_x\n["id","run_x"]') == ("run_x", '["id","run_x"]')
    run = queued_run("run_y")
    flat = [part for item in run.to_fields().items() for part in item]
    assert record_of(json.dumps(flat)) == run


async def test_the_reader_goes_on_after_a_failed_read(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.ends is not None
    monkeypatch.setattr(ends, "RETRY_SECONDS", 0.01)
    read = store.ends._read
    failures = [RedisConnectionError("lost"), ValueError("a bug")]

    async def failing_first() -> list[str]:
        if failures:
            raise failures.pop(0)
        return await read()

    monkeypatch.setattr(store.ends, "_read", failing_first)
    async with reading(store):
        await _create(store, "run_n8", notify=True)
        await store.finish(_run("run_n8"), RunStatus.CANCELLED, [("done", "{}")])
        ended, run = await asyncio.wait_for(store.wait_end("run_n8", block=30), 10)
    assert not failures and ended and run is not None and run.status is RunStatus.CANCELLED
