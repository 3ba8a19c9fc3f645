"""`agent-api serve` as a real subprocess on a loopback port, for tests of the process itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from agent_api.tls import client_tls_context
from tests.utils.redis_server import free_port

# Settings a developer may have in their shell; tests state the ones they want.
_SCRUBBED = (
    "OPENAI_",
    "REDIS_",
    "OAI_",
    "API_KEYS",
    "SESSION_",
    "MAX_",
    "LLM_",
    "TEAMS_",
    "TEAM_",
    "WORKERS",
    "ENVIRONMENT",
    "PROMETHEUS_",
    "LOG_",
    "SHUTDOWN_",
    "RATE_LIMIT",
    "CORS_",
    "WORKERS_IN_PROCESS",
    "WORKER_PROCESSES",
    "RUN_",
    "WEBHOOK_",
    "OTEL_",
    "TRACE_",
    "ADMIN_",
    "DAILY_",
    "KEY_TOKEN",
    "USAGE_",
    "INPUT_",
)


def clean_environment() -> dict[str, str]:
    """This process's environment without the service's settings (a developer's shell may have some)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path

    def terminate(self, timeout: float = 60) -> float:
        """SIGTERM, and the seconds it took the process to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - started


@contextmanager
def serve_process(tmp_path: Path, env: Mapping[str, str | None], *args: str) -> Iterator[ServeProcess]:
    """`agent-api serve` with ``env`` on top of a scrubbed environment (a None value leaves a setting unset)."""
    port = free_port()
    clean = clean_environment()
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # from an empty directory, so that no .env is read
        process = subprocess.Popen(
            [sys.executable, "-m", "agent_api.cli", "serve", "--port", str(port), *args],
            cwd=tmp_path,
            # Tests start the worker processes they need themselves, and one API process unless they
            # ask `serve` for more (or for its defaults, with None).
            env={k: v for k, v in {"WORKER_PROCESSES": "0", "WORKERS": "1", **clean, **env}.items() if v is not None},
            stdout=stdout,
            stderr=stderr,
        )
    served = ServeProcess(process, f"http://127.0.0.1:{port}", out, err)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2, verify=client_tls_context()) as poll:
            while True:
                try:
                    if poll.get(f"{served.url}/health").status_code in (200, 503):
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def serve_refusing_to_start(tmp_path: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `agent-api serve` expecting it to refuse to start; its completed process."""
    done = subprocess.run(
        [sys.executable, "-m", "agent_api.cli", "serve", "--port", "0"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, "the server started"
    assert "Traceback" not in done.stderr, done.stderr
    return done


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    stderr: Path

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


@contextmanager
def worker_process(tmp_path: Path, env: Mapping[str, str], name: str = "worker") -> Iterator[WorkerProcess]:
    """`agent-api worker` as a real subprocess, once it says it is ready."""
    clean = clean_environment()
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    err = workdir / "stderr.log"
    with err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent_api.cli", "worker"],
            cwd=workdir,
            env={**clean, **env},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    worker = WorkerProcess(process, err)
    try:
        deadline = time.monotonic() + 60
        while "ready" not in err.read_text():
            assert process.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.1)
        yield worker
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
