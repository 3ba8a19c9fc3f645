"""`agent-api serve` with nothing configured: embedded store, offline model, clean stdout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent_api.config import Settings
from tests.utils.process import serve_process, serve_refusing_to_start


@pytest.mark.slow(seconds=10)
def test_serve_runs_on_embedded_defaults(tmp_path: Path) -> None:
    with serve_process(tmp_path, {"LOG_FORMAT": "text"}) as server:
        base = server.url
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200
        assert health.json()["store"] == "embedded" and health.json()["model_backend"] == "offline"

        first = httpx.post(f"{base}/chat", json={"message": "Does this work without a key?"}, timeout=30)
        assert first.status_code == 200, first.text
        sid = first.json()["session_id"]
        second = httpx.post(f"{base}/chat", json={"message": "And now?", "session_id": sid}, timeout=30)
        assert "I can see 2 earlier messages" in second.json()["response"]
        assert httpx.get(f"{base}/docs").status_code == 200
        server.terminate()

    log = server.stderr.read_text()
    assert "offline model" in log and "embedded" in log
    printed = server.stdout.read_text()
    for autogen_output in ("TERMINATE", "research_assistant", "(to ", ">>>>", "Offline answer"):
        assert autogen_output not in printed, printed


@pytest.mark.slow(seconds=7)
def test_embedded_runs_can_be_followed_and_cancelled(tmp_path: Path) -> None:
    """The embedded default runs runs in-process: the same routes, with no Redis at all."""
    with serve_process(tmp_path, {"LOG_FORMAT": "text"}) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        run = c.post("/runs", json={"message": "embedded [[tokens:5]]"}).json()
        events = c.get(f"/runs/{run['run_id']}/events").text
        assert "event: done" in events and '"run_status":"succeeded"' in events
        first_id = events.split("id: ", 2)[1].split()[0]
        rest = c.get(f"/runs/{run['run_id']}/events", headers={"Last-Event-ID": first_id}).text
        assert "event: session" not in rest and rest.count("event: done") == 1
        slow = c.post("/runs", json={"message": "slow [[latency:0:0.2]] [[tokens:50]]"}).json()
        assert c.post(f"/runs/{slow['run_id']}/cancel").json()["status"] == "cancelled"


@pytest.mark.slow(seconds=1)
def test_worker_needs_redis(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent_api.cli", "worker"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("REDIS_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "needs REDIS_URL" in done.stderr and "Traceback" not in done.stderr


def test_workers_in_process_zero_needs_redis(tmp_path: Path) -> None:
    done = serve_refusing_to_start(tmp_path, {"WORKERS_IN_PROCESS": "0"})
    assert "WORKERS_IN_PROCESS=0 needs REDIS_URL" in done.stderr


@pytest.mark.slow(seconds=3)
def test_a_wrong_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for env, named in (
        ({"OAI_CONFIG_LIST": str(tmp_path / "missing.json")}, "OAI_CONFIG_LIST: cannot read"),
        ({"OAI_CONFIG_LIST": "[not json"}, "OAI_CONFIG_LIST: not a valid config list"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL:"),
        ({"PORT": "http"}, "PORT:"),
        ({"KEY_TOKEN_BUDGETS": "alice=lots"}, "KEY_TOKEN_BUDGETS:"),
    ):
        done = serve_refusing_to_start(tmp_path, env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith("agent-api: cannot start: ") and named in lines[0], lines[0]


@pytest.mark.slow(seconds=5)
def test_a_busy_port_fails_first_and_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "agent_api.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env={**os.environ, "LOG_FORMAT": "text"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"agent-api: cannot start: PORT: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_key_id_names_a_key_as_usage_and_budgets_do() -> None:
    cli = [sys.executable, "-m", "agent_api.cli"]
    plain = subprocess.run([*cli, "key-id", "alice-key"], capture_output=True, text=True, check=True).stdout.strip()
    hashed = subprocess.run([*cli, "hash-key", "alice-key"], capture_output=True, text=True, check=True).stdout.strip()
    from_hash = subprocess.run([*cli, "key-id", hashed], capture_output=True, text=True, check=True).stdout.strip()
    assert plain == from_hash and len(plain) == 32 and hashed.startswith("sha256:" + plain)


def test_the_cli_does_not_import_the_metrics_library_before_it_sets_their_directory() -> None:
    # prometheus_client chooses where metrics live (memory, or the multiprocess directory that
    # `serve` sets for its processes) when it is imported: importing it first would keep the API
    # process's own metrics out of /metrics (tests/integration/test_serve_workers.py).
    probe = "import sys, agent_api.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(("cores", "api", "workers"), [(1, 1, 1), (2, 2, 2), (3, 2, 3), (4, 2, 4), (8, 4, 8)])
def test_serve_sizes_itself_to_the_machine_with_redis(
    monkeypatch: pytest.MonkeyPatch, cores: int, api: int, workers: int
) -> None:
    """One API process per two cores, two where there are two or three (docs/performance.md)."""
    for name in ("WORKERS", "WORKER_PROCESSES", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.api_processes, settings.run_worker_processes) == (api, workers)
    monkeypatch.delenv("REDIS_URL")
    embedded = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (embedded.api_processes, embedded.run_worker_processes) == (1, 0)
