"""Helpers shared by the benchmark scripts in ``bench/``.

Every process a benchmark needs (redis-server, the offline model, the API) is started here as a
real subprocess on a loopback port, and stopped by the context manager that started it, also when
the benchmark fails or is interrupted. Every wait is bounded.

The scripts import this module as a sibling (``from _common import ...``): running
``python bench/<script>.py`` puts ``bench/`` first on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOC_PATH = ROOT / "docs" / "benchmarks.md"
DOC_TITLE = "# Benchmarks"
DOC_INTRO = ("Measurements of agent-api made by the scripts in `bench/`; each section is rewritten by "
             "the script named in it.")
LOOPBACK = "127.0.0.1"

if str(ROOT) not in sys.path:  # so that `agent_api` imports from this checkout even without an install
    sys.path.append(str(ROOT))


# -- processes ------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def _child_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """os.environ plus ``extra`` (a None value removes the variable); this checkout comes first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` and wait up to ``timeout`` s; if it is still running, SIGKILL its process group."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Still running, so the group (its own session, see _spawn) is ours: kill it with any children.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


@contextlib.contextmanager
def _spawn(args: Sequence[str], *, name: str, env: Mapping[str, str | None] | None = None
           ) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Start ``args`` in a fresh temp dir (its cwd, also holding stdout/stderr files); stop and clean up after."""
    workdir = Path(tempfile.mkdtemp(prefix=f"agent-api-bench-{name}-"))
    try:
        with open(workdir / "stdout.log", "wb") as out, open(workdir / "stderr.log", "wb") as err:
            process = subprocess.Popen(list(args), cwd=workdir, env=_child_env(env), stdout=out, stderr=err,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield process, workdir
        finally:
            _stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until(ready: Any, process: subprocess.Popen[bytes], what: str, stderr: Path, timeout: float) -> None:
    """Poll ``ready()`` until it returns True; raise (with the stderr tail) on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}:\n{_tail(stderr)}")
        try:
            if ready():
                return
        except (OSError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready after {timeout:.0f} s:\n{_tail(stderr)}")
        time.sleep(0.1)


def _redis_ping(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


@contextlib.contextmanager
def redis_server(timeout: float = 15.0) -> Iterator[str]:
    """A throw-away ``redis-server`` (no persistence) on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="agent-api-bench-redis-data-") as data:
        args = [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                "--dir", data, "--daemonize", "no", "--loglevel", "warning"]
        with _spawn(args, name="redis") as (process, workdir):
            _wait_until(lambda: _redis_ping(port), process, "redis-server", workdir / "stdout.log", timeout)
            yield f"redis://{LOOPBACK}:{port}/0"


@contextlib.contextmanager
def offline_model(first_token_delay: float = 0.0, token_delay: float = 0.0, reply_tokens: int | None = None,
                  timeout: float = 30.0) -> Iterator[str]:
    """The offline model server in a subprocess on a free loopback port; yields its base URL (``.../v1``)."""
    port = free_port()
    args = [sys.executable, "-m", "agent_api.offline_llm", "--host", LOOPBACK, "--port", str(port),
            "--first-token-delay", str(first_token_delay), "--token-delay", str(token_delay)]
    if reply_tokens is not None:
        args += ["--reply-tokens", str(reply_tokens)]
    base_url = f"http://{LOOPBACK}:{port}/v1"
    with _spawn(args, name="offline-model") as (process, workdir):
        _wait_until(lambda: httpx.get(f"{base_url}/models", timeout=2).status_code == 200,
                    process, "the offline model", workdir / "stderr.log", timeout)
        yield base_url


@dataclass(frozen=True)
class ApiServer:
    """A running ``agent-api serve``: its base URL and the pid of the server process."""

    url: str
    pid: int
    workdir: Path

    def stderr_tail(self, lines: int = 40) -> str:
        return _tail(self.workdir / "stderr.log", lines)


@contextlib.contextmanager
def api_server(env: Mapping[str, str | None], workers: int = 1, timeout: float = 60.0) -> Iterator[ApiServer]:
    """``agent-api serve`` in a subprocess on a free loopback port, with os.environ plus ``env``.

    LOG_LEVEL defaults to warning; a None value in ``env`` removes that variable. The working
    directory is an empty temp dir, so no ``.env`` file is read.
    """
    port = free_port()
    args = [sys.executable, "-m", "agent_api.cli", "serve", "--host", LOOPBACK, "--port", str(port)]
    if workers > 1:
        args += ["--workers", str(workers)]
    full_env: dict[str, str | None] = {"LOG_LEVEL": "warning", "WORKERS": str(workers), **env}
    url = f"http://{LOOPBACK}:{port}"
    with _spawn(args, name="api", env=full_env) as (process, workdir):
        _wait_until(lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200,
                    process, "agent-api", workdir / "stderr.log", timeout)
        yield ApiServer(url=url, pid=process.pid, workdir=workdir)


def service_revision() -> str:
    """The commit under test, e.g. ``5bb31b6``, with ``+ uncommitted changes`` when agent_api/ differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "agent_api", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} + uncommitted changes" if dirty else commit


# -- measurements ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessStats:
    """CPU time and memory of one process (not its children), from /proc."""

    cpu_seconds: float  # user + system
    peak_rss_mib: float  # VmHWM: the high-water mark of the resident set
    rss_mib: float  # VmRSS: the resident set now
    threads: int


def process_stats(pid: int) -> ProcessStats:
    """Read /proc/PID/stat and /proc/PID/status (Linux only)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()

    def mib(key: str) -> float:
        return int(status.get(key, "0 kB").split()[0]) / 1024  # the kernel reports kB

    return ProcessStats(cpu_seconds=(utime + stime) / ticks, peak_rss_mib=mib("VmHWM"), rss_mib=mib("VmRSS"),
                        threads=int(status.get("Threads", "0")))


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_index(values: Sequence[float]) -> int:
    """The index of the median of ``values`` (the lower middle one when their number is even)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2]


# -- output ---------------------------------------------------------------------------------------
def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_raw(name: str, data: Any) -> Path:
    """Write ``data`` as JSON to bench/results/{name}.json; return the path."""
    path = RESULTS_DIR / f"{name}.json"
    _write_atomically(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path


def update_doc_section(name: str, markdown: str) -> Path:
    """Replace the text between ``<!-- {name}:start -->`` and ``<!-- {name}:end -->`` in docs/benchmarks.md.

    The file is created (title and intro) when missing, and the marked section appended when absent.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = f"{start}\n{markdown.strip()}\n{end}"
    text = DOC_PATH.read_text() if DOC_PATH.exists() else f"{DOC_TITLE}\n\n{DOC_INTRO}\n"
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i >= 0 and j >= 0:
        text = text[:i] + body + text[j + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    _write_atomically(DOC_PATH, text)
    return DOC_PATH


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table for the terminal."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- fault injection and checks (bench/faults.py, bench/soak.py) ---------------------------------
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
        args = [self._binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.data_dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
                "--loglevel", "notice", "--logfile", str(self.log_path)]
        self._process = subprocess.Popen(args, cwd=self.data_dir, env=_child_env(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        _wait_until(lambda: _redis_ping(self.port), self._process, "redis-server", self.log_path, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> float:
        """Send ``sig`` and wait (bounded) for the exit; return the seconds it took. No-op when not running."""
        process = self._process
        if process is None or process.poll() is not None:
            return 0.0
        start = time.monotonic()
        _stop(process, timeout, sig)
        return time.monotonic() - start

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)


@contextlib.contextmanager
def persistent_redis(timeout: float = 15.0) -> Iterator[RedisProcess]:
    """A started :class:`RedisProcess` on a free loopback port with a temp data dir; stopped and removed after."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    data = Path(tempfile.mkdtemp(prefix="agent-api-bench-redis-aof-"))
    server = RedisProcess(free_port(), data, binary)
    try:
        server.start(timeout)
        yield server
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def bench_api_env(redis_url: str, model_url: str, **settings: str) -> dict[str, str | None]:
    """The API's environment for a benchmark: every setting of the caller's environment dropped, then these.

    Sessions in ``redis_url``, the model at ``model_url``, no API keys (so no rate limits), and
    ``settings`` (e.g. ``LEASE_TTL="3"``) on top.
    """
    from agent_api.config import Settings

    env: dict[str, str | None] = {name.upper(): None for name in Settings.model_fields}
    env.update(REDIS_URL=redis_url, OPENAI_BASE_URL=model_url, OPENAI_API_KEY="bench", LOG_LEVEL="warning")
    env.update(settings)
    return env


def offline_control(model_url: str) -> str:
    """The base URL of the offline model's control routes (``/_offline/...``) for its ``.../v1`` URL."""
    return model_url.removesuffix("/v1")


def api_log_lines(api: ApiServer, min_level: str = "WARNING", limit: int = 200) -> list[str]:
    """The API's stderr lines at ``min_level`` or above (JSON log lines, or plain lines such as tracebacks)."""
    order = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    wanted = set(order[order.index(min_level):])
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


async def sse_frames(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield ``(event, data)`` for each Server-Sent Event of ``response`` as it arrives (``data`` parsed as JSON).

    Comment lines (``: ping``) are skipped; a frame whose data is not JSON yields ``{"raw": text}``.
    """
    event, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = {"raw": text}
                yield event, parsed
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def run_metadata(benchmark: str, command: str, revision: str, load: float | None) -> dict[str, Any]:
    """The header of every raw results file: what ran, when, on which revision and machine."""
    import datetime
    import platform

    return {
        "benchmark": benchmark,
        "date": datetime.date.today().isoformat(),
        "command": command,
        "service_revision": revision,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system(),
                    "load_average_at_start": load},
    }
