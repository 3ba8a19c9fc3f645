"""Serving a run's event log as Server-Sent Events: the one way every stream route follows a run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

from agent_api.config import Settings
from agent_api.errors import AgentAPIError
from agent_api.runs import frames
from agent_api.runs.model import Run, RunStatus
from agent_api.runs.service import RunService
from agent_api.shutdown import Shutdown

log = logging.getLogger(__name__)


async def _events(
    runs: RunService, run: Run, after: str, *, cancel_on_disconnect: bool, shutdown: Shutdown
) -> AsyncIterator[ServerSentEvent]:
    complete = False
    try:
        async for entry in runs.follow(run.id, after):
            yield ServerSentEvent(data=entry.data, event=entry.event, id=entry.id)
        complete = True
    except AgentAPIError as exc:
        # The 200 has gone out: say what failed in a frame. These frames are not in the run's log,
        # so they carry no id, and a client that re-attaches resumes after the last real event.
        complete = True
        log.info("following run %s failed: %s", run.id, exc.error_type)
        for event, data in frames.failure_frames(run.session_id, exc, "unknown"):
            yield ServerSentEvent(data=data, event=event)
    finally:
        # A client that leaves cancels its run, unless it asked otherwise. A server that stops
        # leaves runs alone: they belong to the workers, and the client can re-attach elsewhere.
        if cancel_on_disconnect and not complete and not shutdown.draining.is_set():
            await asyncio.shield(runs.stop(run.id, RunStatus.CANCELLED))


def follow_response(
    runs: RunService,
    run: Run,
    settings: Settings,
    shutdown: Shutdown,
    *,
    after: str = "0",
    cancel_on_disconnect: bool = False,
) -> EventSourceResponse:
    # sse-starlette rather than a bare StreamingResponse: it notices the client going away, sends
    # keep-alive comments while the run is quiet, and ends streams when the server shuts down.
    return EventSourceResponse(
        _events(runs, run, after, cancel_on_disconnect=cancel_on_disconnect, shutdown=shutdown),
        ping=settings.sse_ping_seconds,
        # On shutdown, runs of in-process workers end themselves (error and done frames) once the
        # grace period is over: sse-starlette must not cut their streams off before that.
        shutdown_grace_period=settings.shutdown_grace_seconds + 5,
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Run-ID": run.id,
            "X-Session-ID": run.session_id,
        },
    )
