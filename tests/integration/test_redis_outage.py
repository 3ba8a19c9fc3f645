"""Redis goes away while a run is followed, and comes back: 503 meanwhile, a clean frame, recovery."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource

from agent_api.offline_llm import OfflineServer
from tests.utils.process import serve_process
from tests.utils.redis_server import RedisServer
from tests.utils.runs import start_run

pytestmark = pytest.mark.slow(seconds=8)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()  # this test stops it: not the shared one
    yield server
    server.stop()


def _restart(server: RedisServer) -> None:
    server.process = subprocess.Popen(server.process.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = server.client()
    for _ in range(100):
        try:
            client.ping()
            return
        except Exception:
            threading.Event().wait(0.05)
    raise AssertionError("redis-server did not come back")


def test_followers_get_an_error_frame_and_service_recovers(
    tmp_path: Path, offline: OfflineServer, own_redis: RedisServer
) -> None:
    # A process of its own: connections broken by the outage are its business, not this test's.
    env = {
        "OPENAI_BASE_URL": offline.base_url,
        "OPENAI_API_KEY": "k",
        "REDIS_URL": own_redis.url,
        "REDIS_TIMEOUT": "1",
        "REDIS_POOL_TIMEOUT": "2",
        "LLM_MAX_RETRIES": "0",
    }
    with serve_process(tmp_path, env) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        run = start_run(client, {"message": "outage [[latency:0:0.2]] [[tokens:100]]"})
        frames: list[tuple[str, dict[str, object]]] = []
        started = threading.Event()

        def follow() -> None:
            with client.stream("GET", f"/runs/{run['run_id']}/events") as response:
                for sse in EventSource(response).iter_sse():
                    frames.append((sse.event, json.loads(sse.data)))
                    if sse.event == "token":
                        started.set()

        follower = threading.Thread(target=follow)
        follower.start()
        assert started.wait(20)
        own_redis.process.kill()
        own_redis.process.wait(timeout=10)
        follower.join(timeout=30)
        assert not follower.is_alive()
        assert [event for event, _ in frames][-2:] == ["error", "done"]
        error = frames[-2][1]
        assert error["error_type"] == "store" and error["status"] == 503
        assert "Traceback" not in json.dumps(frames)
        # while Redis is away, new turns are refused with 503
        assert client.post("/runs", json={"message": "now?"}).status_code == 503
        # and once it is back, everything works again without a restart
        _restart(own_redis)
        answer = client.post("/chat", json={"message": "back"})
        assert answer.status_code == 200, answer.text
