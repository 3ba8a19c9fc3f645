"""Expiring leases in Redis: one run at a time per session, a few at a time per API key.

A run holds two leases while it works:

    {prefix}lock:session:{id}   string: the holder's token        (SET NX PX; one holder)
    {prefix}runs:{key_id}       sorted set: token -> expiry (ms)  (at most N live members)

Both expire after ``ttl`` seconds unless refreshed; the holder refreshes them every ttl/3 while
its run goes on, and releases them when it ends (completion, error, cancel, disconnect). A
worker that dies mid-run stops refreshing, so its leases lapse within ``ttl`` and the session
is usable again. Releases compare the token, so a lease that lapsed and was taken by another
run is never released by the old holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator

import redis.asyncio as redis
from redis.exceptions import RedisError

from agent_api.errors import RateLimited, SessionBusy, StoreUnavailable

log = logging.getLogger(__name__)

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

_EXTEND_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1] the set; ARGV: now_ms, expiry_ms, limit, token. Returns 1 if taken, else -(ms until a slot frees).
_ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return -(tonumber(first[2]) - tonumber(ARGV[1]))
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""

_EXTEND_SLOT = """
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], last[2])
  return 1
end
return 0
"""


class Lease:
    """The leases one run holds; :meth:`release` is idempotent."""

    def __init__(self, leases: Leases, session_key: str, slot_key: str | None, token: str) -> None:
        self._leases = leases
        self.session_key = session_key
        self.slot_key = slot_key
        self.token = token
        self._heartbeat: asyncio.Task[None] | None = None
        self._released = False

    def start_heartbeat(self) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        interval = self._leases.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._leases.extend(self)
            except RedisError:  # keep trying: the lease lives for ttl, Redis may be back
                log.warning("could not refresh the run's leases; retrying")

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        # Shielded: a release started while the caller is being cancelled (a disconnect) must
        # finish; it goes on in the background while the cancellation proceeds.
        try:
            await asyncio.shield(self._leases.release(self))
        except RedisError:
            log.warning("could not release the run's leases; they expire in %ss", self._leases.ttl)


class Leases:
    """Takes and refreshes the leases that keep runs apart."""

    def __init__(self, client: redis.Redis, *, ttl: float, prefix: str = "agent-api:") -> None:
        self.redis = client
        self.ttl = ttl
        self.prefix = prefix
        self._release_lock = client.register_script(_RELEASE_LOCK)
        self._extend_lock = client.register_script(_EXTEND_LOCK)
        self._acquire_slot = client.register_script(_ACQUIRE_SLOT)
        self._extend_slot = client.register_script(_EXTEND_SLOT)

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    async def acquire(self, session_id: str, key_id: str, max_runs: int | None) -> Lease:
        """Take the session (409 when busy), then a run slot for ``key_id`` (429 when all are busy)."""
        token = secrets.token_hex(16)
        session_key = f"{self.prefix}lock:session:{session_id}"
        slot_key = f"{self.prefix}runs:{key_id}" if max_runs else None
        try:
            if not await self.redis.set(session_key, token, nx=True, px=self._ttl_ms):
                raise SessionBusy()
            if slot_key is not None and max_runs:
                now = int(time.time() * 1000)
                taken = int(await self._acquire_slot(keys=[slot_key], args=[now, now + self._ttl_ms, max_runs, token]))
                if taken < 0:
                    await self._release_lock(keys=[session_key], args=[token])
                    raise RateLimited(
                        f"Too many runs in progress for this API key (at most {max_runs} at a time); "
                        "retry when one has finished.",
                        retry_after=math.ceil(-taken / 1000),
                    )
        except RedisError as exc:
            raise StoreUnavailable() from exc
        lease = Lease(self, session_key, slot_key, token)
        lease.start_heartbeat()
        return lease

    async def extend(self, lease: Lease) -> None:
        await self._extend_lock(keys=[lease.session_key], args=[lease.token, self._ttl_ms])
        if lease.slot_key is not None:
            expiry = int(time.time() * 1000) + self._ttl_ms
            await self._extend_slot(keys=[lease.slot_key], args=[expiry, lease.token])

    async def release(self, lease: Lease) -> None:
        keys = [lease.session_key] if lease.slot_key is None else [lease.session_key, lease.slot_key]
        await self._release_lock(keys=keys, args=[lease.token])

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str, key_id: str, max_runs: int | None) -> AsyncIterator[Lease]:
        lease = await self.acquire(session_id, key_id, max_runs)
        try:
            yield lease
        finally:
            await lease.release()
