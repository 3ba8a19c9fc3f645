"""Runs across real processes: two API processes, `agent-api worker` processes, a real redis-server.

Re-attaching to another API process, a worker killed mid-run, webhooks delivered to a receiver
that verifies them with the `standardwebhooks` package.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent_api.offline_llm import OfflineServer, ThreadedServer
from agent_api.runs.webhooks import new_secret
from tests.utils.process import ServeProcess, serve_process, worker_process
from tests.utils.redis_server import RedisServer
from tests.utils.runs import follow, start_run, wait_for_end

pytestmark = pytest.mark.slow(seconds=15)


@pytest.fixture
def env(offline: OfflineServer, redis_server: RedisServer, redis_client: Any) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": offline.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MODEL": "offline-model",
        "REDIS_URL": redis_server.url,
        "LLM_MAX_RETRIES": "0",
        "LOG_FORMAT": "text",
        "RUN_HEARTBEAT": "2",
        "THREAD_POOL_SIZE": "16",
    }


def _api(stack: ExitStack, tmp_path: Path, env: dict[str, str], name: str) -> httpx.Client:
    return _api_process(stack, tmp_path, env, name)[1]


def _api_process(stack: ExitStack, tmp_path: Path, env: dict[str, str], name: str) -> tuple[ServeProcess, httpx.Client]:
    workdir = tmp_path / name
    workdir.mkdir()
    api = stack.enter_context(serve_process(workdir, {**env, "WORKERS_IN_PROCESS": "0"}))
    return api, stack.enter_context(httpx.Client(base_url=api.url, timeout=30))


def test_reattach_to_another_api_process_gets_exactly_the_rest(tmp_path: Path, env: dict[str, str]) -> None:
    with ExitStack() as stack:
        (process_a, a), b = _api_process(stack, tmp_path, env, "api-a"), _api(stack, tmp_path, env, "api-b")
        stack.enter_context(worker_process(tmp_path, env))
        run = start_run(a, {"message": "reattach [[latency:0:0.05]] [[tokens:60]]"})
        head = follow(a, run["run_id"], stop_after=6)  # the connection breaks here
        process_a.terminate()  # and its API process restarts: the run, on a worker, goes on
        assert [f.event for f in head][:1] == ["session"] and head[-1].event == "token"
        tail = follow(b, run["run_id"], last_event_id=head[-1].id)
        assert tail[-1].event == "done" and tail[-1].data["run_status"] == "succeeded"
        whole = follow(b, run["run_id"])
        assert [f.id for f in head + tail] == [f.id for f in whole]  # no gap, no duplicate
        assert [f.data for f in head + tail] == [f.data for f in whole]
        assert "".join(f.data["chunk"] for f in whole) == tail[-1].data["response"]


def test_a_killed_worker_fails_its_run_and_frees_the_session(tmp_path: Path, env: dict[str, str]) -> None:
    with ExitStack() as stack:
        api = _api(stack, tmp_path, env, "api")
        doomed = stack.enter_context(worker_process(tmp_path, env, "doomed"))
        first = api.post("/chat", json={"message": "keep"}).json()
        run = start_run(api, {"message": "die [[latency:0:0.2]] [[tokens:200]]", "session_id": first["session_id"]})
        follow(api, run["run_id"], stop_at_event="token")
        doomed.kill()
        frames = follow(api, run["run_id"])  # bounded: the sweep fails the run within seconds
        assert [f.event for f in frames][-2:] == ["error", "done"]
        assert frames[-2].data["error_type"] == "worker_lost"
        ended = api.get(f"/runs/{run['run_id']}").json()
        assert ended["status"] == "failed" and ended["error"]["type"] == "worker_lost"
        # no half turn saved, and the session takes a new run on another worker
        history = api.get(f"/session/{first['session_id']}").json()["messages"]
        assert [m["content"] for m in history] == ["keep", first["response"]]
        stack.enter_context(worker_process(tmp_path, env, "replacement"))
        again = api.post("/chat", json={"message": "again", "session_id": first["session_id"]})
        assert again.status_code == 200 and "2 earlier messages" in again.json()["response"]


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[tuple[bytes, dict[str, str]]]]]:
    received: queue.Queue[tuple[bytes, dict[str, str]]] = queue.Queue()

    async def hook(request: Request) -> Response:
        received.put((await request.body(), dict(request.headers)))
        return Response(status_code=204)

    with ThreadedServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as server:
        yield f"{server.url}/hook", received


def test_webhook_arrives_signed(
    tmp_path: Path, env: dict[str, str], receiver: tuple[str, queue.Queue[tuple[bytes, dict[str, str]]]]
) -> None:
    url, received = receiver
    secret = new_secret()
    hooks_env = {**env, "WEBHOOK_SECRET": secret, "WEBHOOK_ALLOW_PRIVATE": "true"}
    with ExitStack() as stack:
        api = _api(stack, tmp_path, hooks_env, "api")
        stack.enter_context(worker_process(tmp_path, hooks_env))
        run = start_run(api, {"message": "notify me", "webhook": url, "metadata": {"order": 7}})
        ended = wait_for_end(api, run["run_id"])
        body, headers = received.get(timeout=30)
        payload = Webhook(secret).verify(body, headers)
        assert headers["webhook-id"] == run["run_id"]
        assert payload["type"] == "run.succeeded"
        assert payload["data"]["run_id"] == run["run_id"] and payload["data"]["status"] == "succeeded"
        assert payload["data"]["result"]["response"] == ended["result"]["response"]
        assert payload["data"]["metadata"] == {"order": 7}
        # a cancelled run is reported too, from the API process that cancelled it before it started
        waiting = start_run(api, {"message": "x [[latency:0:0.2]] [[tokens:50]]", "webhook": url})
        queued = start_run(
            api, {"message": "y", "session_id": waiting["session_id"], "if_busy": "enqueue", "webhook": url}
        )
        api.post(f"/runs/{queued['run_id']}/cancel")
        api.post(f"/runs/{waiting['run_id']}/cancel")
        reports = {}
        for _ in range(2):
            body, headers = received.get(timeout=30)
            reports[headers["webhook-id"]] = Webhook(secret).verify(body, headers)["type"]
        assert reports == {queued["run_id"]: "run.cancelled", waiting["run_id"]: "run.cancelled"}


def test_a_run_waiting_for_a_person_is_answered_through_another_api_process(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env = {**env, "TEAMS_DIR": str(Path(__file__).resolve().parents[2] / "examples" / "teams")}
    with ExitStack() as stack:
        a, b = _api(stack, tmp_path, env, "api-a"), _api(stack, tmp_path, env, "api-b")
        stack.enter_context(worker_process(tmp_path, env))
        run = start_run(a, {"agent": "concierge", "message": "Plan my trip."})
        asked = follow(a, run["run_id"], stop_at_event="input_request")[-1]
        request = asked.data["input_request"]
        # B never saw the run: it reads the request and answers it; the worker (a third process) goes on.
        assert b.get(f"/runs/{run['run_id']}").json()["input_request"] == request
        body = {"request_id": request["request_id"], "content": "By train, please."}
        assert b.post(f"/runs/{run['run_id']}/input", json=body).status_code == 200
        again = follow(b, run["run_id"], last_event_id=asked.id, stop_at_event="input_request")[-1]
        second = again.data["input_request"]
        assert a.post(
            f"/runs/{run['run_id']}/input", json={"request_id": second["request_id"], "content": ""}
        ).is_success
        ended = wait_for_end(a, run["run_id"])
        assert ended["status"] == "succeeded"
        history = b.get(f"/session/{run['session_id']}").json()["messages"]
        assert [m["content"] for m in history if m["role"] == "user"] == ["Plan my trip.", "By train, please."]
