"""Graceful shutdown: on SIGTERM, runs in progress may finish within a grace period, then stop.

The server (``agent_api.main``) notices that it is asked to exit and calls :meth:`Shutdown.begin`.
From then on new turns are refused (503), runs of this process's workers go on for
``SHUTDOWN_GRACE_SECONDS``, and after that they are stopped: they end ``failed`` with
``shutdown``, a ``/chat`` gets a 503, a stream an ``error`` frame and its ``done`` frame.
Nothing of a stopped run is saved.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class Shutdown:
    """``draining``: the process is stopping; no new turns. Its workers stop after ``grace`` seconds."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = asyncio.Event()

    async def begin(self) -> None:
        if self.draining.is_set():
            return
        self.draining.set()
        log.warning("shutting down: refusing new turns, letting running ones finish for %ss", self.grace)
