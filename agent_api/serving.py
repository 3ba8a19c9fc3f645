"""uvicorn's server, woken once a second and at its exit instead of ten times a second.

uvicorn's main loop wakes every 0.1 s for the life of the process: to refresh the ``Date``
header once a second and to see whether a signal handler has asked it to exit. The app had a
loop of its own beside it (five times a second) to start draining runs as soon as that flag
was set. At rest, those wake-ups were most of an API process's CPU (measured: 3.7 ms a second
each, in a layout of two). :class:`QuietServer` waits instead for its exit flag or for the next
second, whichever comes first: the header is refreshed as often as before, an exit is seen at
once, and whoever needs to act on the exit awaits :meth:`QuietServer.exiting`.

uvicorn builds its server itself when it runs several processes, so an app can also
:meth:`QuietServer.adopt` the server it runs in, before the server's main loop starts (during
the app's startup).

:func:`until_disconnected` is for a request that waits before answering: uvicorn does not cancel
its handler when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from multiprocessing.connection import wait

import uvicorn
from starlette.requests import Request
from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger("uvicorn.error")  # where uvicorn's supervisor logs

TICK_SECONDS = 1.0  # the Date header's resolution, and how often the loop checks its limits


async def until_disconnected(request: Request) -> None:
    """Return once the client has closed its connection (its body read: nothing else comes before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class QuietServer(uvicorn.Server):
    """A ``uvicorn.Server`` whose main loop sleeps until its exit or the next second."""

    # Class-level defaults, so that an adopted server (built as a plain uvicorn.Server) has them.
    _exit_loop: asyncio.AbstractEventLoop | None = None
    _exit_event: asyncio.Event | None = None

    @classmethod
    def adopt(cls, server: object) -> QuietServer | None:
        """``server`` as a :class:`QuietServer`; None if it is not a ``uvicorn.Server``.

        A plain ``uvicorn.Server`` becomes one in place (this class adds behaviour, no state of
        its own beyond two optional attributes); it must not have entered its main loop yet.
        """
        if isinstance(server, cls):
            return server
        if type(server) is not uvicorn.Server:
            return None
        server.__class__ = cls
        return server  # type: ignore[return-value]  # its class is now this one

    @property  # a plain attribute in uvicorn.Server
    def should_exit(self) -> bool:
        return bool(self.__dict__.get("should_exit", False))

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        # Set by uvicorn's signal handler (in the loop's thread, between two steps of it), by a
        # thread that stops a server running in another one, or by the app itself.
        self.__dict__["should_exit"] = value
        if value:
            self._wake()

    def _exiting_event(self) -> asyncio.Event:
        """The event set at the exit, made in the server's loop on first use."""
        event = self._exit_event
        if event is None:
            event = self._exit_event = asyncio.Event()
            self._exit_loop = asyncio.get_running_loop()  # after the event: see _wake
            if self.should_exit:  # set before there was a loop to wake
                event.set()
        return event

    def _wake(self) -> None:
        event, loop = self._exit_event, self._exit_loop
        if event is None or loop is None:
            return  # no loop yet: the main loop checks the flag before it first sleeps
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits any more
            loop.call_soon_threadsafe(event.set)

    async def exiting(self) -> None:
        """Return once the server has been asked to exit (a signal, or ``should_exit`` set)."""
        await self._exiting_event().wait()

    async def main_loop(self) -> None:
        exiting = self._exiting_event()
        # on_tick(0) does the work uvicorn does every tenth tick: the Date header (and the
        # notify callback, when there is one); then the exit flag and the request limit.
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exiting.wait(), TICK_SECONDS)


# How often QuietSupervisor asks each API process whether it still answers (uvicorn: every 0.5 s).
HEALTHCHECK_SECONDS = 5.0


class QuietSupervisor(Multiprocess):
    """uvicorn's supervisor of several API processes, woken by what it acts on, not twice a second.

    uvicorn's wakes every 0.5 s to handle signals and to ping each process over a pipe (each
    process answers from a thread of its own): at rest, most of the CPU of ``serve`` and a
    quarter of each API process's. This one sleeps until a process exits (its sentinel), a signal
    arrives (``signal.set_wakeup_fd``), or the next health check is due: an exit or a signal is
    handled at once, as before, and a process that stops answering (hung) is replaced within two
    health checks instead of within one and a half seconds. Restarts, SIGHUP, TTIN and TTOU are
    uvicorn's own (``handle_signals``, ``keep_subprocess_alive``).
    """

    def run(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        try:
            log.info("Started parent process [%d]", os.getpid())
            self.init_processes()
            next_check = time.monotonic() + HEALTHCHECK_SECONDS
            while not self.should_exit.is_set():
                sentinels = [process.process.sentinel for process in self.processes]
                wait([wake_read, *sentinels], timeout=max(0.0, next_check - time.monotonic()))
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
                self.handle_signals()
                if self.should_exit.is_set():
                    break
                if any(not process.process.is_alive() for process in self.processes):
                    self.keep_subprocess_alive()  # replaces the processes that exited
                elif time.monotonic() >= next_check:
                    self.keep_subprocess_alive()  # pings each one: replaces those that hang
                    next_check = time.monotonic() + HEALTHCHECK_SECONDS
            self.terminate_all()
            self.join_all()
            log.info("Stopping parent process [%d]", os.getpid())
        finally:
            signal.set_wakeup_fd(previous)
            os.close(wake_read)
            os.close(wake_write)
