"""Operations: metrics, JSON logs, the response cache, several workers, graceful shutdown, Docker."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis
from httpx_sse import EventSource
from prometheus_client.parser import text_string_to_metric_families

from agent_api.heap import YOUNG_COLLECTION_EVERY
from agent_api.offline_llm import OfflineServer
from tests.utils.process import clean_environment, serve_process
from tests.utils.redis_server import RedisServer, free_port
from tests.utils.sse import read_frames

Serve = Callable[..., AbstractContextManager[httpx.Client]]
ROOT = Path(__file__).resolve().parent.parent


def samples(client: httpx.Client | str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = client.get("/metrics").text if isinstance(client, httpx.Client) else httpx.get(f"{client}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and wanted <= ls)


def test_metrics_show_tokens_turns_and_errors(client: httpx.Client, offline: OfflineServer) -> None:
    before = samples(client)
    answers = [client.post("/chat", json={"message": f"question {i}"}).json() for i in range(3)]
    client.post("/chat", json={"message": ""})  # 422
    client.post("/chat", json={"message": "x [[fail:500]]"})  # 502
    # A run's own metrics (its duration, its count by status) are recorded just after its end
    # step, which may already have answered its request: read them once all four runs' are in.
    for _ in range(100):
        after = samples(client)
        runs = "agent_api_run_duration_seconds_count"
        if value(after, runs, team="research") - value(before, runs, team="research") >= 4:
            break
        time.sleep(0.05)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    completion = sum(a["usage"]["completion_tokens"] for a in answers)
    prompt = sum(a["usage"]["prompt_tokens"] for a in answers)
    assert delta("agent_api_model_tokens_total", kind="completion", team="research") == completion > 0
    assert delta("agent_api_model_tokens_total", kind="prompt", team="research") == prompt > 0
    assert delta("agent_api_run_agent_turns_count", team="research") == 3
    assert delta("agent_api_run_agent_turns_sum", team="research") == 3
    assert delta("agent_api_errors_total", type="validation") == 1
    assert delta("agent_api_errors_total", type="upstream_error") == 1
    assert delta("agent_api_http_requests_total", route="/chat", status="200") == 3
    assert delta("agent_api_http_requests_total", route="/chat", status="502") == 1
    assert delta("agent_api_run_duration_seconds_count", team="research", outcome="upstream_error") == 1
    assert value(after, "agent_api_runs_in_flight", team="research") == 0
    # runs by final status, and the time they waited for a worker
    assert delta("agent_api_runs_total", team="research", status="succeeded") == 3
    assert delta("agent_api_runs_total", team="research", status="failed") == 1
    assert delta("agent_api_run_queued_seconds_count") == 4
    assert value(after, "agent_api_run_queue_depth") == 0


def test_metrics_count_live_workers_and_cancelled_runs(serve: Serve) -> None:
    with serve() as client:
        run = client.post("/runs", json={"message": "long [[latency:0:0.2]] [[tokens:40]]"}).json()
        client.post(f"/runs/{run['run_id']}/cancel")
        # counted just after the run's end step, which may already have answered the cancel
        deadline = time.monotonic() + 5
        while value(samples(client), "agent_api_runs_total", status="cancelled") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert value(samples(client), "agent_api_runs_total", status="cancelled") >= 1
        # the in-process worker reports to the queue; the API's upkeep counts it (every 5 s)
        deadline = time.monotonic() + 15
        while value(samples(client), "agent_api_run_workers") < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert value(samples(client), "agent_api_run_workers") >= 1


def test_metrics_count_stream_followers_by_how_their_events_come(serve: Serve) -> None:
    with serve() as client:
        run = client.post("/runs", json={"message": "long [[latency:0:0.2]] [[tokens:40]]"}).json()
        frames: list[str] = []

        def follow() -> None:
            with client.stream("GET", f"/runs/{run['run_id']}/events") as response:
                for line in response.iter_lines():
                    frames.append(line)

        follower = threading.Thread(target=follow)
        follower.start()
        deadline = time.monotonic() + 15
        while not any(line.startswith("event: token") for line in frames) and time.monotonic() < deadline:
            time.sleep(0.05)
        # With Redis, through the API process's pub/sub connection. (The gauge is the test process's:
        # followers of earlier tests that are still closing may be counted too.)
        during = value(samples(client), "agent_api_stream_followers", via="pubsub")
        assert during >= 1
        client.post(f"/runs/{run['run_id']}/cancel")
        follower.join(15)
        assert not follower.is_alive() and "event: done" in frames
        assert value(samples(client), "agent_api_stream_followers", via="pubsub") <= during - 1


def test_response_cache(serve: Serve, offline: OfflineServer, redis_client: redis.Redis) -> None:
    with serve(llm_cache="redis") as client:
        first = client.post("/chat", json={"message": "What is the boiling point of water?"}).json()
        calls = len(offline.model.requests)
        second = client.post("/chat", json={"message": "What is the boiling point of water?"}).json()
        assert len(offline.model.requests) == calls  # answered from the cache
        assert second["cached"] is True and first["cached"] is False
        assert second["response"] == first["response"] and second["session_id"] != first["session_id"]
        keys = cast(list[str], redis_client.keys("agent-api:llm-cache:*"))
        assert keys
        stored = json.loads(str(redis_client.get(keys[0])))  # JSON, never pickle
        assert stored["object"] == "chat.completion" and stored["choices"][0]["message"]["content"]
        assert "cost" in stored
        # a continued session has history: it never hits
        follow = client.post(
            "/chat", json={"message": "What is the boiling point of water?", "session_id": second["session_id"]}
        ).json()
        assert follow["cached"] is False and len(offline.model.requests) == calls + 1
        # a cached answer still streams as text
        _, frames = read_frames(client, {"message": "What is the boiling point of water?"})
        assert frames[-1].data["cached"] is True
        assert "".join(f.data["chunk"] for f in frames) == first["response"]
    offline.model.reset()
    with serve() as client:  # off by default: both reach the model
        for _ in range(2):
            answer = client.post("/chat", json={"message": "What is the boiling point of water?"}).json()
            assert answer["cached"] is False
        assert len(offline.model.requests) == 2


def test_a_cache_value_is_data_never_code(serve: Serve, offline: OfflineServer, redis_client: redis.Redis) -> None:
    """Whoever can write to Redis cannot make the service run code through the cache."""
    import pickle

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('unpickled')",))

    with serve(llm_cache="redis") as client:
        first = client.post("/chat", json={"message": "Planted?"}).json()
        (key,) = cast(list[str], redis_client.keys("agent-api:llm-cache:*"))
        redis_client.set(key, pickle.dumps(Boom()))
        again = client.post("/chat", json={"message": "Planted?"})
        assert again.status_code == 200 and again.json()["cached"] is False
        assert again.json()["response"] == first["response"]
        assert json.loads(str(redis_client.get(key)))["object"] == "chat.completion"  # replaced by the real answer


@pytest.mark.slow(seconds=10)
def test_json_logs_carry_the_request_id(tmp_path: Path, offline: OfflineServer, redis_server: RedisServer) -> None:
    env = {"OPENAI_BASE_URL": offline.base_url, "OPENAI_API_KEY": "k", "REDIS_URL": redis_server.url}
    with serve_process(tmp_path, env) as server:
        secret = "my-private-question-text"
        response = httpx.post(
            f"{server.url}/chat", json={"message": secret}, headers={"X-Request-ID": "req-42.abc"}, timeout=30
        )
        assert response.headers["x-request-id"] == "req-42.abc"
        generated = httpx.get(f"{server.url}/agents").headers["x-request-id"]
        assert len(generated) >= 16
        server.terminate()
    lines = [json.loads(line) for line in server.stderr.read_text().splitlines() if line.strip()]
    access = [line for line in lines if line.get("logger") == "agent_api.access"]
    chat = next(line for line in access if line["route"] == "/chat")
    assert chat["request_id"] == "req-42.abc" and chat["status"] == 200 and chat["team"] == "research"
    assert chat["session_id"] == response.json()["session_id"] and chat["completion_tokens"] > 0
    assert chat["duration_ms"] > 0
    assert any(line["request_id"] == generated for line in access)
    assert secret not in server.stderr.read_text()
    assert server.stdout.read_text().strip() == ""


@pytest.mark.slow(seconds=11)
def test_two_workers_share_sessions_and_metrics(
    tmp_path: Path, offline: OfflineServer, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    temp = tmp_path / "tmp"  # where `serve` makes the metrics' directory
    temp.mkdir()
    env = {"OPENAI_BASE_URL": offline.base_url, "OPENAI_API_KEY": "k", "REDIS_URL": redis_server.url}
    with serve_process(tmp_path, env | {"TMPDIR": str(temp)}, "--workers", "2") as server:
        # serve_process waits for the first worker's "ready"; the second may start a moment later
        # (on a loaded machine): ask until both have answered, a bounded number of times.
        workers: set[int] = set()
        for _ in range(400):
            workers.add(httpx.get(f"{server.url}/health").json()["worker"])
            if len(workers) == 2:
                break
            time.sleep(0.05)
        assert len(workers) == 2, "both workers should answer"
        sid = None
        completion = 0
        for turn in range(12):  # a new connection each time: the kernel spreads them over the workers
            body = {"message": f"turn {turn}"} | ({"session_id": sid} if sid else {})
            answer = httpx.post(f"{server.url}/chat", json=body, timeout=30).json()
            sid = answer["session_id"]
            completion += answer["usage"]["completion_tokens"]
            assert f"I can see {2 * turn} earlier messages" in answer["response"]
        history = httpx.get(f"{server.url}/session/{sid}").json()
        assert history["turns"] == 12 and len(history["messages"]) == 24
        metrics = samples(server.url)
        assert value(metrics, "agent_api_http_requests_total", route="/chat", status="200") == 12
        assert value(metrics, "agent_api_model_tokens_total", kind="completion") == completion
        assert value(metrics, "agent_api_http_requests_total", route="/health") >= 2  # and the start-up probe
        (metrics_dir,) = temp.glob("agent-api-metrics-*")
        assert list(metrics_dir.glob("*.db"))  # each process's metrics
        server.terminate()
    assert not list(temp.iterdir()), "serve leaves its metrics' directory behind"


@pytest.mark.slow(seconds=5)
def test_sigterm_lets_short_runs_finish_and_ends_long_streams(
    tmp_path: Path, offline: OfflineServer, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    grace = 2.0
    env = {
        "OPENAI_BASE_URL": offline.base_url,
        "OPENAI_API_KEY": "k",
        "REDIS_URL": redis_server.url,
        "SHUTDOWN_GRACE_SECONDS": str(grace),
    }
    with serve_process(tmp_path, env) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            sid = client.post("/chat", json={"message": "before"}).json()["session_id"]
        results: dict[str, list[dict[str, object]]] = {}
        streaming = {"long": threading.Event(), "short": threading.Event()}

        def stream(name: str, body: dict[str, object]) -> None:
            frames: list[dict[str, object]] = []
            with (
                httpx.Client(base_url=server.url, timeout=60) as own,
                own.stream("POST", "/chat/stream", json=body) as response,
            ):
                for sse in EventSource(response).iter_sse():
                    frames.append({"event": sse.event, **json.loads(sse.data)})
                    if sse.event == "token":
                        streaming[name].set()
            results[name] = frames

        long = threading.Thread(
            target=stream, args=("long", {"message": "long [[latency:0:0.5]] [[tokens:40]]", "session_id": sid})
        )
        short = threading.Thread(target=stream, args=("short", {"message": "short [[latency:0:0.25]] [[tokens:6]]"}))
        long.start()
        short.start()
        assert streaming["long"].wait(20) and streaming["short"].wait(20)
        took = server.terminate()
        long.join(timeout=30)
        short.join(timeout=30)
        assert took < grace + 8, took
    long_frames, short_frames = results["long"], results["short"]
    assert [f["event"] for f in long_frames][-2:] == ["error", "done"]
    assert long_frames[-2]["error_type"] == "shutdown" and long_frames[-2]["status"] == 503
    assert short_frames[-1]["event"] == "done" and short_frames[-1]["finished"] is True, short_frames[-3:]
    # the cancelled turn was not saved and left the session free
    stored = cast(list[str], redis_client.lrange(f"agent-api:session:{sid}:messages", 0, -1))
    assert len(stored) == 2
    assert not redis_client.exists(f"agent-api:session:{sid}:active")


def test_compose_file_validates() -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is not installed; `make test` installs Debian's package"
    done = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    config = done.stdout
    for expected in (
        "condition: service_healthy",
        "--appendonly",
        "redis-cli",
        "REDIS_URL: redis://redis:6379/0",
        "monitoring",
        "stop_grace_period",
    ):
        assert expected in config, expected


def test_dockerfile_runs_a_slim_non_root_image_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "\nUSER agent" in text and "useradd" in text
    assert "HEALTHCHECK" in text and "/health" in text
    # the dependency layer is built from pyproject.toml alone, before the code is copied
    assert text.index("COPY pyproject.toml") < text.index("COPY agent_api")
    assert 'CMD ["agent-api", "serve"]' in text and "WORKERS=" in text


@pytest.mark.parametrize("path", ["/metrics", "/health"])
def test_operations_routes_need_no_key(serve: Serve, path: str) -> None:
    with serve(api_keys="k1") as client:
        assert client.get(path).status_code == 200


# uvicorn serving the app in this interpreter's main thread, as `agent-api serve` and `uvicorn
# agent_api.main:app` do; a thread reports the collector's state once the app answers, then stops it.
SERVED_APP_PROBE = """
import gc, os, signal, sys, threading, time
import httpx, uvicorn

url = "http://127.0.0.1:%(port)d"

def probe():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(url + "/chat", json={"message": "settled?"}, timeout=30)
            print("answered", answer.status_code, gc.get_freeze_count(), gc.get_threshold()[0], flush=True)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
uvicorn.run("agent_api.main:app", host="127.0.0.1", port=%(port)d, log_config=None)
"""


@pytest.mark.slow(seconds=8)
def test_an_app_served_in_a_process_of_its_own_settles_its_heap(tmp_path: Path) -> None:
    """Once started, what the process built is frozen out of the collector's way (agent_api.heap)."""
    code = SERVED_APP_PROBE % {"port": free_port()}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=120
    )
    assert "answered" in done.stdout, done.stderr[-2000:]
    _, status, frozen, young = done.stdout.split()
    assert status == "200"
    assert int(frozen) > 100_000  # FastAPI, pydantic's models, the SDKs (the embedded default: AutoGen too)
    assert int(young) == YOUNG_COLLECTION_EVERY


def test_an_app_in_a_test_process_leaves_its_collector_alone(serve: Serve) -> None:
    """An app under a test client or in a server thread is not its process's: nothing is frozen."""
    frozen, thresholds = gc.get_freeze_count(), gc.get_threshold()
    with serve() as client:
        assert client.post("/chat", json={"message": "hello"}).status_code == 200
        assert (gc.get_freeze_count(), gc.get_threshold()) == (frozen, thresholds)
