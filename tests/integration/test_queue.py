"""The job queue's sweep against a real redis-server: a live worker's fresh job is kept, a dead one's given up."""

from __future__ import annotations

import redis.asyncio as aioredis

from agent_api.runs.queue import SaqDispatcher
from tests.utils.redis_server import RedisServer


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
