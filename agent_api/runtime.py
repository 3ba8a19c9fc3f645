"""The long-lived parts of a process, built once: stores, job queue, and (where runs execute) the engine.

An API process opens the :class:`Runtime`; so does a worker process (``agent-api worker``).
Either may also start run workers (:func:`start_workers`): the API process does when
``WORKERS_IN_PROCESS`` > 0, which is how the embedded default (no Redis) runs its runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import redis.asyncio as redis

from agent_api.agents.cache import ResponseCache
from agent_api.agents.llm import (
    LLMProvider,
    cache_import_checks,
    cache_openai_kwargs,
    create_llm_provider,
    fast_protocol_checks,
    fast_trigger_matching,
    light_stream_events,
    quiet_autogen_logging,
    skip_chat_request_transforms,
    validate_chat_responses,
)
from agent_api.agents.registry import TeamRegistry
from agent_api.agents.runner import TeamRunner, create_executor
from agent_api.config import Settings
from agent_api.errors import WorkerLost
from agent_api.runs.executor import RunExecutor
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


async def open_engine(runtime: Runtime, stack: AsyncExitStack) -> tuple[LLMProvider, TeamRunner]:
    """The model client, the run threads and the team runner: what executing runs needs."""
    settings = runtime.settings
    quiet_autogen_logging()
    cache_openai_kwargs()
    cache_import_checks()
    fast_trigger_matching()
    fast_protocol_checks()
    light_stream_events()
    validate_chat_responses()
    skip_chat_request_transforms()
    offline_url = None
    if settings.uses_offline_model:
        from agent_api.offline_llm import OfflineServer

        offline = OfflineServer().start()
        stack.callback(offline.stop)
        offline_url = offline.base_url
        log.warning(
            "No model configured (OPENAI_API_KEY, OPENAI_BASE_URL or OAI_CONFIG_LIST): "
            "using the built-in offline model, which gives canned answers."
        )
    llm = create_llm_provider(settings, offline_base_url=offline_url)
    stack.callback(llm.close)
    stack.push_async_callback(llm.aclose)
    executor = create_executor(settings.thread_pool_size)
    stack.callback(executor.shutdown, wait=False, cancel_futures=True)
    response_cache = None
    if settings.llm_cache == "redis":
        from agent_api.services.store import create_sync_redis

        response_cache = ResponseCache(create_sync_redis(settings), ttl=settings.llm_cache_ttl)
        stack.callback(response_cache.close)
        log.info("response cache on: first turns answered from Redis for %ss", settings.llm_cache_ttl)
    runner = TeamRunner(llm, executor, max_history=settings.max_history_messages, cache=response_cache)
    await runner.warm_up(list(runtime.teams))
    return llm, runner


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Workers:
    """Run workers started in this event loop."""

    tasks: list[asyncio.Task[None]]
    stop: Callable[[float], Awaitable[None]]  # let runs finish for that many seconds, then stop


async def start_workers(
    runtime: Runtime, llm: LLMProvider, runner: TeamRunner, stack: AsyncExitStack, *, count: int, in_process: bool
) -> Workers:
    """Start ``count`` run workers in this event loop; they stop when ``stack`` closes, if not before."""
    executor = RunExecutor(
        runtime.store,
        runtime.lifecycle,
        runtime.sessions,
        runner,
        runtime.teams,
        worker_id=worker_id(),
        model=llm.model,
        run_timeout=runtime.settings.run_timeout or None,
        input_timeout=runtime.settings.input_timeout,
    )
    dispatcher = runtime.dispatcher
    grace = runtime.settings.shutdown_grace_seconds
    if isinstance(dispatcher, MemoryDispatcher):
        dispatcher.execute = executor.execute
        return Workers([], dispatcher.stop)
    tasks = []
    workers = []
    concurrency = max(1, runtime.settings.thread_pool_size // max(1, count))
    for _ in range(count):
        worker = dispatcher.worker(executor.execute, concurrency=concurrency, grace=grace, in_process=in_process)
        tasks.append(asyncio.get_running_loop().create_task(worker.start()))
        workers.append(worker)

    loop = asyncio.get_running_loop()
    listeners = [
        loop.create_task(dispatcher.listen_for_cancels()),
        loop.create_task(dispatcher.beat_forever()),
        loop.create_task(runtime.store.listen_for_answers()),
    ]

    async def stop(grace: float) -> None:
        await asyncio.gather(*(dispatcher.stop_gracefully(w, grace) for w in workers))
        for listener in listeners:
            listener.cancel()

    stack.push_async_callback(stop, grace)
    return Workers(tasks, stop)
