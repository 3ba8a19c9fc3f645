"""The Redis client: a real server when ``REDIS_URL`` is set, an embedded one otherwise."""

from __future__ import annotations

import logging

import redis as sync_redis
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from agent_api.config import Settings
from agent_api.services.redis_pool import LeanBlockingPool

log = logging.getLogger(__name__)


def create_redis(settings: Settings) -> redis.Redis:
    """One client with one pool for the process.

    The pool blocks: under load a request waits (up to ``REDIS_POOL_TIMEOUT``) for a free
    connection instead of failing with ``MaxConnectionsError`` as the default pool does
    (:class:`LeanBlockingPool`: redis-py's blocking pool, cheaper when a connection is free). Reaching
    Redis itself is bounded by ``REDIS_TIMEOUT``, so an outage still fails fast.
    """
    if settings.redis_url is None:
        import fakeredis

        log.warning(
            "REDIS_URL is not set: sessions live in an embedded in-process store and "
            "are lost when the process exits. Set REDIS_URL for real persistence."
        )
        return fakeredis.FakeAsyncRedis(decode_responses=True)
    pool = LeanBlockingPool.from_url(
        str(settings.redis_url),
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        decode_responses=True,
        # The asyncio Retry (the sync one is silently ignored by the asyncio pool): a connection
        # that went stale while Redis restarted is retried on a fresh one instead of failing.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        driver_info=None,  # no CLIENT SETINFO on each new connection: two fewer round trips, no package metadata read
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def create_sync_redis(settings: Settings) -> sync_redis.Redis:
    """A synchronous client for code that runs in the run threads (the response cache)."""
    if settings.redis_url is None:
        import fakeredis

        return fakeredis.FakeRedis()
    return sync_redis.Redis.from_url(
        str(settings.redis_url),
        max_connections=settings.redis_max_connections,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        driver_info=None,
    )


def create_follow_redis(settings: Settings) -> redis.Redis:
    """The client of blocking reads (an API process's reader of run ends, BLPOP; XREAD BLOCK: other
    waits for a run's end, a stream's follower while pub/sub is down) and of the pub/sub
    connection that carries streams' events.

    Its own pool, so that requests held open by clients never take the connections that turns
    and sessions need. Its read timeout outlasts the longest block.
    """
    assert settings.redis_url is not None
    pool = LeanBlockingPool.from_url(
        str(settings.redis_url),
        max_connections=settings.redis_max_followers,
        timeout=settings.redis_pool_timeout,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout + 30,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        driver_info=None,
    )
    return redis.Redis.from_pool(pool)


def create_queue_redis(settings: Settings) -> redis.Redis:
    """The job queue's client: bytes, as saq expects, and no read timeout (its dequeue blocks)."""
    assert settings.redis_url is not None
    pool = LeanBlockingPool.from_url(
        str(settings.redis_url),
        # Each of a worker's job slots blocks on one connection while it waits for a job.
        max_connections=settings.thread_pool_size + settings.redis_max_connections,
        timeout=settings.redis_pool_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        driver_info=None,
    )
    return redis.Redis.from_pool(pool)
