"""The long-lived parts of a process, built once: stores and job queue.

An API process opens the :class:`Runtime`; so does a worker process (``agent-api worker``).
Where runs execute, the process then opens the engine on it (:mod:`agent_api.engine`).
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass

import redis.asyncio as redis

from agent_api.agents.registry import TeamRegistry
from agent_api.config import Settings
from agent_api.errors import WorkerLost
from agent_api.runs.lifecycle import RunLifecycle
from agent_api.runs.queue import MemoryDispatcher, SaqDispatcher
from agent_api.runs.store import RunStore
from agent_api.runs.webhooks import WebhookSender
from agent_api.services.sessions import SessionManager
from agent_api.services.store import create_follow_redis, create_queue_redis, create_redis
from agent_api.services.usage import Budgets, UsageStore
from agent_api.telemetry import setup_tracing

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Stores and queue of one process."""

    settings: Settings
    redis: redis.Redis
    sessions: SessionManager
    store: RunStore
    lifecycle: RunLifecycle
    dispatcher: SaqDispatcher | MemoryDispatcher
    teams: TeamRegistry
    usage: UsageStore


async def open_runtime(settings: Settings, teams: TeamRegistry, stack: AsyncExitStack) -> Runtime:
    tracing = setup_tracing(settings)
    if tracing is not None:
        stack.callback(tracing.force_flush)
    client = create_redis(settings)
    stack.push_async_callback(client.aclose)
    follow = None
    dispatcher: SaqDispatcher | MemoryDispatcher
    if settings.redis_url is None:
        dispatcher = MemoryDispatcher(concurrency=settings.thread_pool_size)
        stack.push_async_callback(dispatcher.stop, settings.shutdown_grace_seconds)
    else:
        follow = create_follow_redis(settings)
        stack.push_async_callback(follow.aclose)
        saq_dispatcher = SaqDispatcher(create_queue_redis(settings), heartbeat=settings.run_heartbeat)
        stack.push_async_callback(saq_dispatcher.close)
        dispatcher = saq_dispatcher
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None
    webhooks = WebhookSender(
        secret,
        timeout=settings.webhook_timeout,
        max_attempts=settings.webhook_max_attempts,
        allow_private=settings.webhook_allow_private,
    )
    stack.push_async_callback(webhooks.aclose)
    store = RunStore(client, follow_client=follow, run_ttl=settings.run_ttl)
    usage = UsageStore(
        client,
        Budgets.parse(settings.daily_token_budget, settings.key_token_budgets),
        retention_days=settings.usage_retention_days,
    )
    lifecycle = RunLifecycle(store, dispatcher, webhooks, usage)
    sessions = SessionManager(client, ttl=settings.session_ttl, max_history=settings.max_history_messages)
    runtime = Runtime(settings, client, sessions, store, lifecycle, dispatcher, teams, usage)
    if isinstance(dispatcher, SaqDispatcher):
        dispatcher.queue.on_lost = lambda run_id: mark_lost(runtime, run_id)
    return runtime


async def mark_lost(runtime: Runtime, run_id: str) -> None:
    """The job queue gave up a run's job: its worker stopped beating. Fail the run, free its session."""
    run = await runtime.store.get(run_id)
    if run is not None and not run.status.final and await runtime.lifecycle.fail(run, WorkerLost()):
        log.warning("run %s failed: its worker stopped (no heartbeat)", run_id)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
