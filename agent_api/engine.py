"""The engine of a process that runs agents: the model client, the run threads, the run workers.

A worker process (``agent-api worker``) opens it on its :class:`~agent_api.runtime.Runtime`; so
does an API process with ``WORKERS_IN_PROCESS`` > 0, which is how the embedded default (no Redis)
runs its runs. An API process that leaves the runs to worker processes never imports this module:
it would load AutoGen and what it imports (about 65 MB per process) for nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from agent_api.agents.cache import ResponseCache
from agent_api.agents.llm import (
    LLMProvider,
    cache_import_checks,
    cache_openai_kwargs,
    chunks_from_json,
    create_llm_provider,
    fast_protocol_checks,
    fast_stream_event_json,
    fast_trigger_matching,
    light_stream_events,
    quiet_autogen_logging,
    share_openai_clients,
    skip_chat_request_transforms,
    validate_chat_responses,
)
from agent_api.agents.runner import TeamRunner, create_executor
from agent_api.agents.teams import Team
from agent_api.config import Settings
from agent_api.runs.executor import RunExecutor
from agent_api.runs.queue import MemoryDispatcher
from agent_api.runtime import Runtime, worker_id

log = logging.getLogger(__name__)


async def open_engine(
    settings: Settings, teams: Iterable[Team], stack: AsyncExitStack
) -> tuple[LLMProvider, TeamRunner]:
    """The model client, the run threads and the team runner: what executing runs needs; ``teams`` warmed up."""
    quiet_autogen_logging()
    cache_openai_kwargs()
    cache_import_checks()
    share_openai_clients()
    fast_trigger_matching()
    fast_protocol_checks()
    light_stream_events()
    validate_chat_responses()
    fast_stream_event_json()
    chunks_from_json()
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
    await runner.warm_up(list(teams))
    return llm, runner


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
