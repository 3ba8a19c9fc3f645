"""The one-command production start: `agent-api serve` with Redis starts its run worker processes.

Real processes: `agent-api serve`, the `agent-api worker` children it starts and restarts, a
real redis-server, the offline model.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agent_api.offline_llm import OfflineServer
from tests.utils.process import serve_process, worker_process
from tests.utils.redis_server import RedisServer

pytestmark = pytest.mark.slow(seconds=12)


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``, with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = command
    return found


def _workers(pid: int) -> set[int]:
    return {child for child, command in _children(pid).items() if "agent_api.cli worker" in command}


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _gone(pid: int) -> bool:
    """The process has exited (it no longer exists, or is a zombie waiting for its parent)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _serve_env(offline: OfflineServer, redis_server: RedisServer, **extra: str | None) -> dict[str, str | None]:
    """`serve` on Redis and the offline model, with ``extra`` settings."""
    return {
        "OPENAI_BASE_URL": offline.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MODEL": "offline-model",
        "REDIS_URL": redis_server.url,
        "LLM_MAX_RETRIES": "0",
        **extra,
    }


def test_serve_runs_its_turns_on_worker_processes_it_keeps_alive_and_stops(
    tmp_path: Path, offline: OfflineServer, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    env = _serve_env(offline, redis_server, THREAD_POOL_SIZE="16", SHUTDOWN_GRACE_SECONDS="5")
    # No WORKERS, WORKERS_IN_PROCESS or WORKER_PROCESSES: the defaults, one worker per core.
    with serve_process(tmp_path, {**env, "WORKERS": None, "WORKER_PROCESSES": None}) as api:
        cores = os.cpu_count() or 1
        _wait_for(lambda: len(_workers(api.process.pid)) == cores, f"{cores} worker processes")
        workers = _workers(api.process.pid)
        # The API answers before its workers are ready (runs wait in the queue meanwhile); the
        # turns below are to be taken by every worker, so wait until each takes runs.
        _wait_for(lambda: all(f":{pid} ready" in api.stderr.read_text() for pid in workers), "workers ready")
        with httpx.Client(base_url=api.url, timeout=30) as client:
            _wait_for(lambda: client.get("/health/ready").status_code == 200, "readiness")
            first = client.post("/chat", json={"message": "who answers?"})
            assert first.status_code == 200, first.text
            # The turn ran in one of the worker processes, not in the API process.
            ran_on = redis_client.hget(f"agent-api:run:{first.json()['run_id']}", "worker")
            assert ran_on is not None and int(str(ran_on).rsplit(":", 1)[1]) in workers
            # The request waited for the run's end on its process's list of notices (EndNotices): the
            # record names the list, and the API process has read the notice off it.
            notify = redis_client.hget(f"agent-api:run:{first.json()['run_id']}", "notify")
            assert notify is not None and str(notify).startswith("agent-api:runs:ends:")
            assert redis_client.llen(str(notify)) == 0

            # Turns one after another go to the worker processes in turn, not all to the first one.
            ran_on_each = set()
            for i in range(3 * cores):
                turn = client.post("/chat", json={"message": f"turn {i}"})
                assert turn.status_code == 200, turn.text
                worker = redis_client.hget(f"agent-api:run:{turn.json()['run_id']}", "worker")
                ran_on_each.add(int(str(worker).rsplit(":", 1)[1]))
            assert ran_on_each == workers

            # /metrics sums every process: the API process's own metrics (its requests) and the
            # workers' (their runs).
            metrics = client.get("/metrics").text
            assert 'agent_api_http_requests_total{method="POST",route="/chat",status="200"}' in metrics
            assert "agent_api_runs_total{" in metrics

            # A worker that dies is replaced, and turns go on.
            killed = min(workers)
            os.kill(killed, signal.SIGKILL)
            _wait_for(
                lambda: killed not in _workers(api.process.pid) and len(_workers(api.process.pid)) == cores,
                "a new worker process",
            )
            again = client.post("/chat", json={"message": "still there?", "session_id": first.json()["session_id"]})
            assert again.status_code == 200, again.text
            assert "1 earlier message" in again.json()["response"] or "2 earlier messages" in again.json()["response"]

        # SIGTERM: the API stops, then its workers; nothing is left behind.
        workers = _workers(api.process.pid)
        api.terminate(timeout=60)
        assert api.process.returncode == 0, api.stderr.read_text()[-2000:]
        for pid in workers:
            assert _gone(pid)
        # ... quietly: the job queue's own stop has nothing to warn about (runs/queue.py).
        assert '"level": "WARNING", "logger": "saq"' not in api.stderr.read_text()


def test_nothing_outlives_a_killed_serve(
    tmp_path: Path, offline: OfflineServer, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """SIGKILL leaves serve no time to stop its processes: its API processes and workers stop themselves."""
    env = _serve_env(offline, redis_server, WORKERS="2", WORKER_PROCESSES="1", SHUTDOWN_GRACE_SECONDS="1")
    with serve_process(tmp_path, env) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        _wait_for(lambda: len(_children(api.process.pid)) >= 3, "2 API processes and a worker")
        _wait_for(lambda: client.get("/health/ready").status_code == 200, "readiness")
        assert client.post("/chat", json={"message": "hello"}).status_code == 200
        children = set(_children(api.process.pid))
        api.process.kill()
        api.process.wait(timeout=30)
        _wait_for(lambda: all(_gone(pid) for pid in children), "the API processes and the worker to stop")


def _imports(log: str) -> Counter[str]:
    """How many processes writing ``log`` imported each module (``PYTHONPROFILEIMPORTTIME``'s report:
    every interpreter writes one line per module it imports)."""
    return Counter(line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:"))


def test_api_processes_leave_the_agent_engine_to_the_workers(
    tmp_path: Path, offline: OfflineServer, redis_server: RedisServer
) -> None:
    """API processes serve turns through every way in without loading AutoGen; the worker running them does.

    Python writes each module a process imports to its stderr (``PYTHONPROFILEIMPORTTIME``): for
    ``serve`` that is the supervisor, the short-lived process that checks the teams' tool schemas
    before anything starts (the one that loads AutoGen), and the two API processes; for the worker
    its own. The layout is serve's own with worker processes (no workers in the API processes),
    the worker started here so that its report is apart.
    """
    env = _serve_env(offline, redis_server, WORKERS="2", WORKERS_IN_PROCESS="0", PYTHONPROFILEIMPORTTIME="1")
    worker_env = {k: v for k, v in env.items() if v is not None}
    with (
        serve_process(tmp_path, env) as api,
        worker_process(tmp_path, worker_env) as worker,
        httpx.Client(base_url=api.url, timeout=30) as client,
    ):
        _wait_for(lambda: client.get("/health/ready").status_code == 200, "readiness")
        for _ in range(4):  # the two API processes take turns
            chat = client.post("/chat", json={"message": "hello", "agent": "research_team"})
            assert chat.status_code == 200, chat.text
            completion = client.post(
                "/v1/chat/completions", json={"model": "research", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert completion.status_code == 200, completion.text
        assert client.get("/agents").status_code == 200
    served, ran = _imports(api.stderr.read_text()), _imports(worker.stderr.read_text())
    # AutoGen in one of serve's processes, the check; AgentChat in none of them.
    assert served["autogen"] == 1 and served["autogen_agentchat"] == 0, (served["autogen"], served["autogen_agentchat"])
    assert served["agent_api.routers.chat"] == 2  # the report covers both API processes
    assert served["agent_api.agents.loader"] == 4  # ... and the supervisor and its check
    assert ran["autogen"] == ran["autogen_agentchat"] == 1
