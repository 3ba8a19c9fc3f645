"""The processes a benchmark runs against: redis-server, the offline model, the API and its workers.

Each is a real subprocess on a free loopback port, started by a context manager that stops it at
the end, also when the benchmark fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness import ROOT
from harness.processes import LOOPBACK, child_env, free_port, spawn, stop, tail, wait_until

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


# -- redis-server ---------------------------------------------------------------------------------
def redis_ping(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    return binary


@contextlib.contextmanager
def redis_server(timeout: float = 15.0) -> Iterator[str]:
    """A throw-away ``redis-server`` (no persistence) on a free loopback port; yields its URL."""
    binary = _redis_binary()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="agent-api-bench-redis-data-") as data:
        args = [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
        args += ["--dir", data, "--daemonize", "no", "--loglevel", "warning"]
        with spawn(args, name="redis") as (process, workdir):
            wait_until(lambda: redis_ping(port), process, "redis-server", workdir / "stdout.log", timeout)
            yield f"redis://{LOOPBACK}:{port}/0"


class RedisProcess:
    """A ``redis-server`` with append-only persistence that can be stopped and started again.

    It keeps its port and its data directory across restarts, so a restarted server reloads what
    the stopped one had written (``--appendfsync always``: every acknowledged write).
    """

    def __init__(self, port: int, data_dir: Path, binary: str) -> None:
        self.port = port
        self.data_dir = data_dir
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start the server (it must not be running) and wait until it answers PING."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        args = [self._binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.data_dir)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"]
        args += ["--loglevel", "notice", "--logfile", str(self.log_path)]
        self._process = subprocess.Popen(
            args,
            cwd=self.data_dir,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: redis_ping(self.port), self._process, "redis-server", self.log_path, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> float:
        """Send ``sig`` and wait (bounded) for the exit; return the seconds it took. No-op when not running."""
        process = self._process
        if process is None or process.poll() is not None:
            return 0.0
        start = time.monotonic()
        stop(process, timeout, sig)
        return time.monotonic() - start

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log_path, lines)


@contextlib.contextmanager
def persistent_redis(timeout: float = 15.0) -> Iterator[RedisProcess]:
    """A started :class:`RedisProcess` on a free loopback port with a temp data dir; stopped and removed after."""
    binary = _redis_binary()
    data = Path(tempfile.mkdtemp(prefix="agent-api-bench-redis-aof-"))
    server = RedisProcess(free_port(), data, binary)
    try:
        server.start(timeout)
        yield server
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


# -- the offline model ----------------------------------------------------------------------------
@contextlib.contextmanager
def offline_model(
    first_token_delay: float = 0.0, token_delay: float = 0.0, reply_tokens: int | None = None, timeout: float = 30.0
) -> Iterator[str]:
    """The offline model server in a subprocess on a free loopback port; yields its base URL (``.../v1``)."""
    port = free_port()
    args = [sys.executable, "-m", "agent_api.offline_llm", "--host", LOOPBACK, "--port", str(port)]
    args += ["--first-token-delay", str(first_token_delay), "--token-delay", str(token_delay)]
    if reply_tokens is not None:
        args += ["--reply-tokens", str(reply_tokens)]
    base_url = f"http://{LOOPBACK}:{port}/v1"
    with spawn(args, name="offline-model") as (process, workdir):
        wait_until(
            lambda: httpx.get(f"{base_url}/models", timeout=2).status_code == 200,
            process,
            "the offline model",
            workdir / "stderr.log",
            timeout,
        )
        yield base_url


# -- the API and its workers ----------------------------------------------------------------------
@dataclass(frozen=True)
class ApiServer:
    """A running ``agent-api serve``: its base URL and the pid of the server process."""

    url: str
    pid: int
    workdir: Path

    def stderr_tail(self, lines: int = 40) -> str:
        return tail(self.workdir / "stderr.log", lines)


@contextlib.contextmanager
def api_server(env: Mapping[str, str | None], workers: int | None = 1, timeout: float = 60.0) -> Iterator[ApiServer]:
    """``agent-api serve`` in a subprocess on a free loopback port, with os.environ plus ``env``.

    LOG_LEVEL defaults to warning; a None value in ``env`` removes that variable. The working
    directory is an empty temp dir, so no ``.env`` file is read. ``workers`` sets the API
    processes (``--workers`` and WORKERS); None leaves them to the service's defaults (neither
    is given, so only ``env`` can set them).
    """
    port = free_port()
    args = [sys.executable, "-m", "agent_api.cli", "serve", "--host", LOOPBACK, "--port", str(port)]
    if workers is not None and workers > 1:
        args += ["--workers", str(workers)]
    full_env: dict[str, str | None] = {"LOG_LEVEL": "warning"}
    if workers is not None:
        full_env["WORKERS"] = str(workers)
    full_env.update(env)
    url = f"http://{LOOPBACK}:{port}"
    with spawn(args, name="api", env=full_env) as (process, workdir):
        wait_until(
            lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200,
            process,
            "agent-api",
            workdir / "stderr.log",
            timeout,
        )
        yield ApiServer(url=url, pid=process.pid, workdir=workdir)


@contextlib.contextmanager
def service_at(revision: str) -> Iterator[Path]:
    """The service's source at git ``revision``, checked out in a temporary git worktree; yields the tree's path.

    Run it with the tree first on the path, e.g. ``api_server({**env, "PYTHONPATH": str(tree)})``:
    ``python -m agent_api.cli`` then imports that revision's ``agent_api`` instead of this checkout's.
    The worktree is removed at the end, also on error.
    """
    tree = Path(tempfile.mkdtemp(prefix="agent-api-at-revision-"))
    git = ["git", "-C", str(ROOT), "worktree"]
    added = subprocess.run([*git, "add", "--detach", str(tree), revision], capture_output=True, text=True, timeout=120)
    try:
        if added.returncode != 0:
            raise RuntimeError(f"cannot check out revision {revision!r}: {added.stderr.strip()}")
        yield tree
    finally:
        subprocess.run([*git, "remove", "--force", str(tree)], capture_output=True, timeout=120)
        shutil.rmtree(tree, ignore_errors=True)


@contextlib.contextmanager
def worker(env: Mapping[str, str | None], timeout: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """``agent-api worker`` in a subprocess, once it says it is ready."""
    args = [sys.executable, "-m", "agent_api.cli", "worker"]
    with spawn(args, name="worker", env={**env, "LOG_LEVEL": "info"}) as (process, workdir):
        stderr = workdir / "stderr.log"
        wait_until(lambda: "ready" in stderr.read_text(errors="replace"), process, "agent-api worker", stderr, timeout)
        yield process


def bench_api_env(redis_url: str, model_url: str, **settings: str) -> dict[str, str | None]:
    """The API's environment for a benchmark: every setting of the caller's environment dropped, then these.

    Sessions in ``redis_url``, the model at ``model_url``, no API keys (so no rate limits), and
    ``settings`` (e.g. ``LEASE_TTL="3"``) on top. ``agent-api serve`` starts no worker processes
    of its own (``WORKER_PROCESSES=0``): each script runs the layout it names (in-process run
    workers, or the ``worker`` processes it starts); ``bench/scaling.py`` measures the defaults.
    """
    from agent_api.config import Settings

    env: dict[str, str | None] = {name.upper(): None for name in Settings.model_fields}
    env.update(REDIS_URL=redis_url, OPENAI_BASE_URL=model_url, OPENAI_API_KEY="bench", LOG_LEVEL="warning")
    env.update(WORKER_PROCESSES="0")
    env.update(settings)
    return env


def api_log_lines(api: ApiServer, min_level: str = "WARNING", limit: int = 200) -> list[str]:
    """The API's stderr lines at ``min_level`` or above (JSON log lines, or plain lines such as tracebacks)."""
    wanted = set(LOG_LEVELS[LOG_LEVELS.index(min_level) :])
    try:
        text = (api.workdir / "stderr.log").read_text(errors="replace")
    except OSError:
        return []
    picked: list[str] = []
    for line in text.splitlines():
        try:
            level = json.loads(line).get("level")
        except (ValueError, AttributeError):
            level = None
        if level is None or level in wanted:
            picked.append(line)
    return picked[-limit:]
