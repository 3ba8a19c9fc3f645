"""EndNotices: the ends of the runs an API process waits for, pushed to it by the runs' end step.

A request that waits for its run's end (a ``/chat`` that is not streamed) used to block on a read
of the run's end marker, on a pooled connection of its own: under a burst of 1000 requests, 1000
connections opened and held, and a round trip per request. Instead, a run created with a notice
address (the ``notify`` field of its record: this process's list) has its end step push
``"<run id>\\n<the ended record>"`` onto that list, in the same Lua step that ends it. One task
per process reads the list (one blocking read and the rest of the list in one round trip, however
many runs ended meanwhile) and hands each record to the request waiting for it; nothing else is
read.

A notice can be missed (the reading connection dropped with a reply in flight, the process
restarted): a waiter gives up after its block and reads the run's record itself, as before.
Notices nobody waits for any more are dropped; the list expires a minute after its last push.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from agent_api.runs.model import Run

log = logging.getLogger(__name__)

# A list nobody reads (its process gone) expires this long after its last notice.
NOTICE_TTL = 60
# The most notices one round trip takes.
BATCH = 500
# How long the reader blocks before it looks again whether anyone still waits.
READ_BLOCK = 5.0
# After a failed read, the reader tries again this much later (waiters fall back meanwhile).
RETRY_SECONDS = 1.0

# The end step's part (Lua, inside RunStore's finish script): KEYS[1] is the run's record.
PUSH_NOTICE_LUA = f"""
local notify = redis.call('HGET', KEYS[1], 'notify')
if notify then
  redis.call('RPUSH', notify, ARGV[1] .. '\\n' .. cjson.encode(redis.call('HGETALL', KEYS[1])))
  redis.call('EXPIRE', notify, {NOTICE_TTL})
end
"""


def parse_notice(notice: str) -> tuple[str, str]:
    """The run id of a notice, and the rest (its record, as JSON)."""
    run_id, _, record = notice.partition("\n")
    return run_id, record


def record_of(record: str) -> Run:
    """The run from a notice's record: HGETALL's reply (name, value, ...) as JSON."""
    flat = json.loads(record)
    return Run.from_fields(dict(zip(flat[::2], flat[1::2], strict=True)))


class EndNotices:
    """This process's list of run ends, and the waiters for them."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}runs:ends:{uuid.uuid4().hex}"
        self._waiters: dict[str, asyncio.Future[str]] = {}
        self._wanted = asyncio.Event()
        self._blmpop = True  # until Redis says it has no such command

    def expect(self, run_id: str) -> None:
        """Wait for ``run_id``'s end from now on (before the run is created: it may end at once)."""
        if run_id not in self._waiters:
            self._waiters[run_id] = asyncio.get_running_loop().create_future()
            self._wanted.set()

    def expects(self, run_id: str) -> bool:
        return run_id in self._waiters

    def forget(self, run_id: str) -> None:
        future = self._waiters.pop(run_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def wait(self, run_id: str, timeout: float) -> Run | None:
        """The run once its notice has come; None after ``timeout`` seconds without it."""
        future = self._waiters[run_id]
        try:
            record = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None
        return record_of(record)

    async def run(self) -> None:
        """Read the notices while anyone waits for one (a task for the process's lifetime)."""
        while True:
            if not self._waiters:
                self._wanted.clear()
                await self._wanted.wait()
            try:
                notices = await self._read()
            except (RedisError, OSError) as exc:
                log.warning("reading the ends of runs failed (%s); waiters read their runs themselves", exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except Exception:  # never leave the waiters to their fallback for the process's lifetime
                log.exception("reading the ends of runs failed; waiters read their runs themselves")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for notice in notices:
                run_id, record = parse_notice(notice)
                future = self._waiters.get(run_id)
                if future is not None and not future.done():
                    future.set_result(record)

    async def _read(self) -> list[str]:
        """The notices on the list, in one round trip: one blocking pop of up to ``BATCH``.

        BLMPOP (Redis 7.0) is one command; on an older Redis, a pipeline of a blocking pop and
        a pop of the rest does the same (redis-py packs and parses a pipeline for about twice
        the CPU of a command).
        """
        if self._blmpop:
            try:
                reply = await self.client.blmpop(READ_BLOCK, 1, self.key, direction="LEFT", count=BATCH)  # type: ignore[misc]
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                log.info("Redis has no BLMPOP (it came in 7.0): the ends of runs are read with a pipeline")
                self._blmpop = False
            else:
                return [str(notice) for notice in reply[1]] if reply else []
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.blpop([self.key], timeout=READ_BLOCK)
            pipe.lpop(self.key, BATCH)
            first, rest = await pipe.execute()
        if not first:
            return []
        return [str(first[1]), *(str(notice) for notice in rest or [])]
