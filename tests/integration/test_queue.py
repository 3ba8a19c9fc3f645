"""The job queue's sweep against a real redis-server: a live worker's fresh job is kept, a dead one's given up."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from saq import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now as saq_now

from agent_api.runs.model import IfBusy, RunStatus
from agent_api.runs.queue import SaqDispatcher
from agent_api.runs.store import RunStore
from tests.utils.redis_server import RedisServer
from tests.utils.runs import queued_run


async def test_a_just_dequeued_job_is_kept_and_an_orphan_given_up(
    redis_server: RedisServer, redis_client: object
) -> None:
    client = aioredis.Redis(port=redis_server.port)
    dispatcher = SaqDispatcher(client, heartbeat=2)
    lost: list[str] = []

    async def on_lost(run_id: str) -> None:
        lost.append(run_id)

    dispatcher.queue.on_lost = on_lost
    try:
        await dispatcher.enqueue("run_a")
        # what a worker's dequeue does first: the job moves to the active list, still "queued"
        moved = await client.lmove(dispatcher.queue._queued, dispatcher.queue._active, "LEFT", "RIGHT")
        assert moved is not None

        async def sweep() -> list[str]:
            await client.delete(dispatcher.queue._sweep)  # the interval's lock, as if it had expired
            return await dispatcher.queue.sweep(lock=5, abort=0.1)

        assert await sweep() == [] and lost == []  # a live worker is about to mark it active
        assert await sweep() != [] and lost == ["run_a"]  # still not active a sweep later: orphaned
        job = await dispatcher.queue.job("run_a")
        assert job is not None and job.status == "aborted"
    finally:
        await dispatcher.close()
        await client.aclose()


async def test_a_heartbeat_moves_only_the_touched_time_of_each_job(
    redis_server: RedisServer, redis_client: object
) -> None:
    """One script beats every job of a worker; the rest of each saq record (an abort above all) is kept."""
    client = aioredis.Redis(port=redis_server.port)
    dispatcher = SaqDispatcher(client, heartbeat=2)
    queue = dispatcher.queue
    try:
        for run_id in ("run_a", "run_b"):
            await dispatcher.enqueue(run_id)
            job = await queue.job(run_id)
            assert job is not None
            await queue.update(job, status=Status.ACTIVE)  # as saq's worker marks a job it starts
            job.touched = saq_now() - 10_000  # its last beat 10 s ago: past the 2 s heartbeat
            await client.set(job.id, queue.serialize(job), ex=600)
            stale = await queue.job(run_id)
            assert stale is not None and stale.stuck
        aborted = await queue.job("run_b")
        assert aborted is not None
        await queue.abort(aborted, "cancelled")  # an abort written by another process meanwhile
        after_abort = await queue.job("run_b")
        assert after_abort is not None and after_abort.status != Status.ACTIVE

        assert await dispatcher.touch(["run_a", "run_b", "run_gone"]) == 2

        beaten = await queue.job("run_a")
        assert beaten is not None and not beaten.stuck and beaten.status == Status.ACTIVE
        assert beaten.kwargs == {"run_id": "run_a"} and beaten.heartbeat == 2
        still_aborted = await queue.job("run_b")
        assert still_aborted is not None and not still_aborted.stuck
        assert still_aborted.status == after_abort.status and still_aborted.error == "cancelled"
        assert 0 < await client.ttl(queue.job_id("run_a")) <= 600  # the record keeps its expiry
    finally:
        await dispatcher.close()
        await client.aclose()


async def test_a_job_s_start_and_success_are_not_published_but_its_abort_is(
    redis_server: RedisServer, redis_client: object
) -> None:
    """Only the sweep waits on a job's changes, for the jobs it aborts: every run's start and
    success go unpublished (two round trips per run), an abort is published as saq does."""
    client = aioredis.Redis(port=redis_server.port)
    dispatcher = SaqDispatcher(client, heartbeat=2)
    queue = dispatcher.queue
    try:
        async with client.pubsub() as pubsub:
            await pubsub.psubscribe(queue.job_id("*"))
            await pubsub.get_message(timeout=1)  # the subscription's confirmation
            for run_id in ("run_ok", "run_aborted"):
                await dispatcher.enqueue(run_id)
            ok = await queue.job("run_ok")
            aborted = await queue.job("run_aborted")
            assert ok is not None and aborted is not None
            await queue.update(ok, status=Status.ACTIVE)
            await queue.finish(ok, Status.COMPLETE)
            await queue.finish(aborted, Status.ABORTED, error="swept")
            message = None
            for _ in range(50):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None:
                    break
            assert message is not None  # the first message heard is the abort's, not run_ok's
            assert message["channel"] == queue.job_id("run_aborted").encode() and message["data"] == b"aborted"
    finally:
        await dispatcher.close()
        await client.aclose()


async def test_a_run_s_creation_writes_its_job_as_saq_s_enqueue_would(
    redis_server: RedisServer, redis_client: object
) -> None:
    """The step that creates a run also enqueues its job (SaqDispatcher.enqueue_step): the same
    record, queued list and incomplete set as saq's own enqueue, and saq's dequeue takes it."""
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    raw = aioredis.Redis(port=redis_server.port)
    dispatcher = SaqDispatcher(raw, heartbeat=2)
    queue = dispatcher.queue
    store = RunStore(client, follow_client=None, run_ttl=60)
    try:
        await dispatcher.enqueue("run_saq")  # saq's own enqueue, to compare with
        run = queued_run("run_ours")
        admission = await store.create(
            run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}", enqueue=dispatcher.enqueue_step(run.id)
        )
        assert admission.dispatch and admission.enqueued
        job_ids = [queue.job_id(run_id).encode() for run_id in ("run_saq", "run_ours")]
        assert await raw.lrange(queue._queued, 0, -1) == job_ids  # type: ignore[misc]
        assert sorted(await raw.zrange(queue._incomplete, 0, -1)) == sorted(job_ids)
        theirs, ours = await queue.job("run_saq"), await queue.job("run_ours")
        assert theirs is not None and ours is not None
        differ = {"key", "kwargs", "queued"}
        assert {k: v for k, v in ours.to_dict().items() if k not in differ} == {
            k: v for k, v in theirs.to_dict().items() if k not in differ
        }
        assert ours.kwargs == {"run_id": "run_ours"} and ours.status == Status.QUEUED and ours.queued > 0
        first, second = await queue.dequeue(timeout=1), await queue.dequeue(timeout=1)
        assert first is not None and second is not None and second.key == "run_ours"

        behind = replace(queued_run("run_behind"), session_id=run.session_id)  # the session is busy
        step = dispatcher.enqueue_step(behind.id)
        admission = await store.create(behind, if_busy=IfBusy.ENQUEUE, max_runs=None, session_frame="{}", enqueue=step)
        assert not admission.dispatch and not admission.enqueued
        assert await queue.job("run_behind") is None  # its job is written when its turn comes
    finally:
        await dispatcher.close()
        await client.aclose()
        await raw.aclose()


async def test_a_run_s_start_and_end_write_its_job_as_saq_s_worker_would(
    redis_server: RedisServer, redis_client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's job is marked active by the run's start step and completed by the run's end
    step (SaqDispatcher.job_write), each in the step's round trip: saq's own two writes are
    skipped, and the records are what saq would have written."""
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    raw = aioredis.Redis(port=redis_server.port)
    dispatcher = SaqDispatcher(raw, heartbeat=2)
    queue = dispatcher.queue
    store = RunStore(client, follow_client=None, run_ttl=60)
    seen: dict[str, Job | None] = {}
    saq_writes: list[str] = []
    for name in ("_update", "_finish"):  # saq's writes, under RunJobQueue's
        original = getattr(RedisQueue, name)

        async def spy(
            self: RedisQueue, job: Job, *args: Any, _name: str = name, _call: Any = original, **kw: Any
        ) -> Any:
            saq_writes.append(_name)
            return await _call(self, job, *args, **kw)

        monkeypatch.setattr(RedisQueue, name, spy)

    async def execute(run_id: str) -> None:  # what RunExecutor.execute does around the team
        taken = await store.start(run_id, "worker-1", job=dispatcher.job_write(run_id, ending=False))
        assert taken is not None
        seen["started"] = await queue.job(run_id)
        ending = dispatcher.job_write(run_id, ending=True)
        await store.finish(taken[0], RunStatus.SUCCEEDED, [("done", "{}")], job=ending)
        seen["ended"] = await queue.job(run_id)

    run = queued_run("run_job")
    step = dispatcher.enqueue_step(run.id)
    await store.create(run, if_busy=IfBusy.REJECT, max_runs=None, session_frame="{}", enqueue=step)
    worker = dispatcher.worker(execute, concurrency=2, grace=1, in_process=False)
    assert queue.starts_written_by_runs
    started = asyncio.get_running_loop().create_task(worker.start())
    try:
        for _ in range(100):
            if "ended" in seen and not queue._ended_by_runs:
                break
            await asyncio.sleep(0.05)
        active, ended = seen["started"], seen["ended"]
        assert active is not None and active.status == Status.ACTIVE
        assert active.attempts == 1 and active.started > 0 and active.worker_id == worker.id
        assert ended is not None and ended.status == Status.COMPLETE and ended.completed >= active.started
        assert ended.progress == 1.0 and ended.result is None and ended.error is None
        assert not queue._ended_by_runs  # saq's completion came, and was skipped
        final = await queue.job(run.id)
        assert final is not None and final.to_dict() == ended.to_dict()
        assert await raw.lrange(queue._active, 0, -1) == []  # type: ignore[misc]
        assert await raw.zscore(queue._incomplete, queue.job_id(run.id)) is None
        assert 0 < await raw.ttl(queue.job_id(run.id)) <= ended.ttl
        assert saq_writes == []  # saq's own writes of the job's start and end did not run
        await queue.update(final, progress=0.5)
        assert saq_writes == ["_update"]  # (any other change of the job is saq's to write)
    finally:
        await worker.stop()
        started.cancel()
        await dispatcher.close()
        await client.aclose()
        await raw.aclose()
