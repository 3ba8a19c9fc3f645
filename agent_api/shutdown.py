"""Graceful shutdown: on SIGTERM, in-flight runs may finish within a grace period, then stop.

uvicorn stops accepting connections when it receives SIGTERM and waits for the open ones; the
app learns of it by watching the server's exit flag (as sse-starlette does). From then on new
turns are refused (503), running ones go on for ``SHUTDOWN_GRACE_SECONDS``, and after that they
are cancelled: a ``/chat`` gets a 503, a stream gets an ``error`` frame and its ``done`` frame.
Nothing of a cancelled turn is saved.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from sse_starlette.sse import AppStatus

log = logging.getLogger(__name__)


def server_is_exiting() -> bool:
    if AppStatus.should_exit:
        return True
    # uvicorn's SIGTERM handler is a bound method of its Server, whose should_exit flips first.
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return bool(getattr(server, "should_exit", False))


class Shutdown:
    """``draining``: no new turns. ``expired``: the grace period is over, running turns stop."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = asyncio.Event()
        self.expired = asyncio.Event()

    async def watch(self, poll: float = 0.2) -> None:
        while not server_is_exiting():
            await asyncio.sleep(poll)
        await self.begin()

    async def begin(self) -> None:
        if self.draining.is_set():
            return
        self.draining.set()
        log.warning("shutting down: refusing new turns, letting running ones finish for %ss", self.grace)
        await asyncio.sleep(self.grace)
        self.expired.set()
        log.warning("shutdown grace period over: cancelling the runs still going")
