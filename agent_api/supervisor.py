"""The run worker processes that ``agent-api serve`` starts beside the API, and keeps running.

With Redis, ``agent-api serve`` is the one-command production start: the API processes serve
HTTP only, and ``WORKER_PROCESSES`` ``agent-api worker`` processes (one per core by default)
run the agents, so every core works and a busy agent never delays a stream. Each is a child
process of ``serve`` running exactly what ``agent-api worker`` runs; one that exits is started
again (after a pause that grows while it keeps failing). When the API has stopped, the workers
get SIGTERM and let their runs finish for ``SHUTDOWN_GRACE_SECONDS``. A worker whose parent is
gone stops by itself (``agent-api worker --parent-pid``), so none outlives a killed ``serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import wait

log = logging.getLogger("agent_api.supervisor")

MAX_BACKOFF = 30.0  # seconds between restarts of a worker that keeps exiting at once
POLL_SECONDS = 0.5  # how often the workers are checked where their exits cannot be waited on


def _pidfd(pid: int) -> int | None:
    """A file descriptor readable once the process ``pid`` has exited; None where there are none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux (5.3 or later), or no such process
        return None


async def orphaned(parent_pid: int, poll: float = 1.0) -> None:
    """Return once the process ``parent_pid`` that started this one is gone.

    For the processes ``serve`` starts (its worker processes, and its API processes when there
    are several), so that none outlives a ``serve`` killed without a chance to stop them. On
    Linux the event loop watches a pidfd of the parent, readable once it has exited: nothing
    wakes the process meanwhile. Where there is none, the parent is checked every ``poll`` s.
    """
    pidfd = _pidfd(parent_pid)
    if pidfd is None:  # not Linux (5.3 or later), or the parent is gone already
        while os.getppid() == parent_pid:
            await asyncio.sleep(poll)
        return
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not gone.done():
            gone.set_result(None)

    try:
        loop.add_reader(pidfd, exited)
        try:
            # Still this process's parent once its pidfd is held: then the pidfd is the parent's
            # (had it exited before, its pid might have been another process's by then).
            if os.getppid() == parent_pid:
                await gone
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)


class WorkerProcesses:
    """``count`` ``agent-api worker`` children, each started again if it exits before :meth:`stop`."""

    def __init__(self, count: int, *, stop_timeout: float) -> None:
        self.count = count
        self.stop_timeout = stop_timeout
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = os.pipe()  # written by stop(): the watch wakes at once
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._processes]

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "agent_api.cli", "worker", "--parent-pid", str(os.getpid())]
        return subprocess.Popen(command, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        with self._lock:
            self._processes = [self._spawn() for _ in range(self.count)]
        log.info("started %d run worker processes", self.count)
        self._monitor = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        """Start again each worker that exits, until :meth:`stop`.

        Sleeps until a worker exits (a pidfd of each, readable once it has), :meth:`stop` is
        called, or a restart held back is due; where there are no pidfds, every half second.
        """
        backoff = [0.0] * self.count
        restart_at = [0.0] * self.count
        pidfds: dict[int, int | None] = {}  # by pid, for the processes running
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                for i in range(self.count):
                    with self._lock:
                        process = self._processes[i]
                    code = process.poll()
                    if code is None:
                        backoff[i] = 0.0  # alive: the next failure restarts at once
                        continue
                    if restart_at[i] == 0.0:
                        log.warning("run worker process %d exited with status %s; starting another", process.pid, code)
                        _forget_metrics_of(process.pid)
                        restart_at[i] = now + backoff[i]
                    if now < restart_at[i] or self._stopping.is_set():
                        continue
                    with self._lock:
                        if self._stopping.is_set():
                            return
                        self._processes[i] = self._spawn()
                    restart_at[i] = 0.0
                    backoff[i] = min(MAX_BACKOFF, max(1.0, backoff[i] * 2))
                with self._lock:
                    running = {p.pid for p in self._processes if p.returncode is None}
                for pid in set(pidfds) - running:
                    if (fd := pidfds.pop(pid)) is not None:
                        os.close(fd)
                for pid in running - set(pidfds):
                    pidfds[pid] = _pidfd(pid)
                due = [at - now for at in restart_at if at]
                timeout = max(0.0, min(due)) if due else None
                if None in pidfds.values():
                    timeout = POLL_SECONDS if timeout is None else min(timeout, POLL_SECONDS)
                watched = [fd for fd in pidfds.values() if fd is not None]
                wait([self._wake_read, *watched], timeout)
        finally:
            for fd in pidfds.values():
                if fd is not None:
                    os.close(fd)

    def stop(self) -> None:
        """SIGTERM to every worker (they finish their runs for the grace period), then wait; SIGKILL after."""
        with self._lock:
            self._stopping.set()
            processes = list(self._processes)
        os.write(self._wake_write, b"x")
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        if self._monitor is None or not self._monitor.is_alive():
            os.close(self._wake_read)
            os.close(self._wake_write)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("run worker process %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait(timeout=10)


def _forget_metrics_of(pid: int) -> None:
    """A dead process's live gauges (runs in flight) no longer count in /metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def worker_processes(count: int, *, stop_timeout: float) -> Iterator[WorkerProcesses | None]:
    """Run ``count`` worker processes for the duration of the block (none when ``count`` is 0)."""
    if count <= 0:
        yield None
        return
    workers = WorkerProcesses(count, stop_timeout=stop_timeout)
    workers.start()
    try:
        yield workers
    finally:
        workers.stop()
