"""A request that waits for its run's end without sending anything meanwhile: the client may leave."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import Request
from starlette.responses import Response

from agent_api.runs.model import Run
from agent_api.runs.service import RunService
from agent_api.serving import until_disconnected

# What the access log and metrics record for a request whose client left before its answer
# (nginx's code for it); the client is gone and never sees it.
CLIENT_CLOSED_REQUEST = 499


async def wait_for_end(runs: RunService, run_id: str, request: Request, *, cancel_if_abandoned: bool) -> Run | None:
    """The run once it has ended; None if the client disconnected first.

    A server does not cancel a request's handler when its client goes away: without watching for
    the disconnect, a request waiting for its run (``/chat``, a completion without ``stream``)
    would wait on for nobody, and its run would not be cancelled. With ``cancel_if_abandoned``
    the run is cancelled (``RunService.wait``) before this returns.
    """
    waiting = asyncio.ensure_future(runs.wait(run_id, cancel_if_abandoned=cancel_if_abandoned))
    gone = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            waiting.cancel()  # the client left (or this request is cancelled): the wait abandons the run
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    return None if waiting.cancelled() else waiting.result()


def client_closed() -> Response:
    """The answer to a request whose client has gone."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)
