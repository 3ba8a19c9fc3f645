"""Serving a run's event log as Server-Sent Events: the one way every stream route follows a run."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from sse_starlette import EventSourceResponse, ServerSentEvent

from agent_api.config import Settings
from agent_api.errors import AgentAPIError
from agent_api.runs import frames
from agent_api.runs.model import Run
from agent_api.runs.service import RunService

log = logging.getLogger(__name__)

T = TypeVar("T")


class FrameEncoder(Protocol[T]):
    """Turns a run's log into one protocol's frames (native SSE, OpenAI chunks, AG-UI, A2A)."""

    def start(self) -> list[T]:
        """What goes out before the run's first event."""
        ...

    def feed(self, event: str, data: str, event_id: str = "") -> list[T]:
        """What goes out for one event of the run's log."""
        ...

    def fail(self, error: AgentAPIError) -> list[T]:
        """The end of a stream whose run could not be followed any more (the 200 has gone out)."""
        ...


async def encode_run(
    runs: RunService,
    run: Run,
    encoder: FrameEncoder[T],
    *,
    after: str = "0",
    cancel_on_leave: bool,
    until: Callable[[], bool] | None = None,
) -> AsyncIterator[T]:
    """The run's events from after ``after``, as ``encoder`` writes them, until the run ends, or
    until ``until()`` is true after an event (a protocol whose stream ends while the run waits for
    a person): the stream is then complete, and the run goes on as it is.

    A reader that leaves before the end cancels the run if ``cancel_on_leave``; a failure to read
    the log ends the stream with the encoder's failure frames.
    """
    complete = False
    try:
        for item in encoder.start():
            yield item
        async for entry in runs.follow(run.id, after):
            items = encoder.feed(entry.event, entry.data, entry.id)
            complete = until is not None and until()  # before the last frames go out: leaving now is not leaving
            for item in items:
                yield item
            if complete:
                break
        complete = True
    except AgentAPIError as exc:
        complete = True
        log.info("following run %s failed: %s", run.id, exc.error_type)
        for item in encoder.fail(exc):
            yield item
    finally:
        if cancel_on_leave and not complete:
            await runs.abandon(run.id)


class NativeFrames:
    """The frames of ``/chat/stream`` and ``/runs/{id}/events``: the log's events as they are."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def start(self) -> list[ServerSentEvent]:
        return []

    def feed(self, event: str, data: str, event_id: str = "") -> list[ServerSentEvent]:
        return [ServerSentEvent(data=data, event=event, id=event_id)]

    def fail(self, error: AgentAPIError) -> list[ServerSentEvent]:
        # These frames are not in the run's log, so they carry no id: a client that re-attaches
        # resumes after the last real event.
        return [
            ServerSentEvent(data=data, event=event)
            for event, data in frames.failure_frames(self.run.session_id, error, "unknown")
        ]


def sse_response(
    body: AsyncIterator[Any], settings: Settings, headers: dict[str, str], *, media_type: str = "text/event-stream"
) -> EventSourceResponse:
    """A stream of Server-Sent Events, as every stream route sends them.

    sse-starlette rather than a bare StreamingResponse: it notices the client going away, sends
    keep-alive comments while the run is quiet, and ends streams when the server shuts down. It
    passes bytes through as they are (for protocols that encode their own events).
    """
    return EventSourceResponse(
        body,
        ping=settings.sse_ping_seconds,
        # On shutdown, runs of in-process workers end themselves (error and done frames) once the
        # grace period is over: sse-starlette must not cut their streams off before that.
        shutdown_grace_period=settings.shutdown_grace_seconds + 5,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
    )


def follow_response(
    runs: RunService, run: Run, settings: Settings, *, after: str = "0", cancel_on_disconnect: bool = False
) -> EventSourceResponse:
    """The run's native event stream (``/chat/stream``, ``/runs/{id}/events``)."""
    body = encode_run(runs, run, NativeFrames(run), after=after, cancel_on_leave=cancel_on_disconnect)
    return sse_response(body, settings, {"X-Run-ID": run.id, "X-Session-ID": run.session_id})
