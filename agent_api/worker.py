"""``agent-api worker``: a process that executes runs taken from the job queue (needs Redis).

Start as many as the machine's cores (or more machines) allow; each takes up to
``THREAD_POOL_SIZE`` runs at once. SIGTERM lets running runs finish for
``SHUTDOWN_GRACE_SECONDS``, then fails the rest (``shutdown``); nothing half-done is saved.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from agent_api import __version__
from agent_api.agents.loader import load_teams
from agent_api.agents.registry import TeamRegistry
from agent_api.config import Settings
from agent_api.engine import open_engine, start_workers
from agent_api.heap import settle_heap
from agent_api.runtime import open_runtime, worker_id
from agent_api.supervisor import orphaned

log = logging.getLogger("agent_api.worker")


async def run_worker(settings: Settings, *, metrics_port: int | None = None, parent_pid: int | None = None) -> None:
    if settings.redis_url is None:
        raise ValueError("agent-api worker needs REDIS_URL: it takes runs from the job queue in Redis")
    teams = TeamRegistry(load_teams(settings.teams_dir, settings.team_plugin_list))
    async with AsyncExitStack() as stack:
        runtime = await open_runtime(settings, teams, stack)
        llm, runner = await open_engine(settings, teams, stack)
        if metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr=settings.host)
        workers = await start_workers(runtime, llm, runner, stack, count=1, in_process=False)
        settle_heap()
        log.info(
            "agent-api %s worker %s ready: model=%s (%s), up to %d runs at once",
            __version__,
            worker_id(),
            llm.model,
            llm.backend,
            settings.thread_pool_size,
        )
        # SIGTERM or SIGINT: leaving this block stops the worker, after its grace period for runs.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        done = loop.create_task(stop.wait())
        if parent_pid is not None:
            orphaned = loop.create_task(_stop_when_orphaned(parent_pid, stop))
            stack.callback(orphaned.cancel)
        await asyncio.wait([done, *workers.tasks], return_when=asyncio.FIRST_COMPLETED)
        log.info("worker stopping: letting runs in progress finish for %ss", settings.shutdown_grace_seconds)
        await workers.stop(settings.shutdown_grace_seconds)


async def _stop_when_orphaned(parent_pid: int, stop: asyncio.Event) -> None:
    """Stop the worker (gracefully, as SIGTERM does) once the process that started it is gone."""
    await orphaned(parent_pid)
    log.warning("the process that started this worker (%d) is gone: stopping", parent_pid)
    stop.set()
