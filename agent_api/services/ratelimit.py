"""Per-key request rate limits, counted in Redis so that they hold across workers.

Uses the ``limits`` library's moving window: at most N requests in any window of the given
length (``RATE_LIMIT``, e.g. ``60/minute``). In the embedded mode (no ``REDIS_URL``) the
counts live in the process, like the sessions.
"""

from __future__ import annotations

import math
import time

import redis.asyncio as redis
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from agent_api.errors import RateLimited, StoreUnavailable


class RequestRateLimiter:
    """Counts each key's requests; :meth:`check` raises :class:`RateLimited` past the limit."""

    def __init__(self, rate: str, storage: Storage) -> None:
        self.item: RateLimitItem = parse(rate)
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)

    @classmethod
    def create(cls, rate: str, client: redis.Redis | None) -> RequestRateLimiter:
        """Count in Redis through ``client``'s pool, or in memory when there is no real Redis."""
        if client is None:
            return cls(rate, MemoryStorage())
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix="agent-api:rate",
            connection_pool=client.connection_pool,  # type: ignore[arg-type]  # passed on to redis-py
        )
        return cls(rate, storage)

    async def check(self, key_id: str) -> None:
        try:
            if await self.limiter.hit(self.item, key_id):
                return
            stats = await self.limiter.get_window_stats(self.item, key_id)
        except (StorageError, RedisError) as exc:
            raise StoreUnavailable() from exc
        retry_after = math.ceil(stats.reset_time - time.time())
        raise RateLimited(
            f"Rate limit exceeded for this API key ({self.item.amount} requests per "
            f"{self.item.get_expiry()} seconds); retry after the Retry-After delay.",
            retry_after=retry_after,
        )
