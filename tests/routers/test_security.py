"""Keys, ownership, limits, one run per session, body limits and error hygiene, through HTTP."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis

from agent_api.config import Settings
from agent_api.offline_llm import OfflineServer
from tests.utils.process import serve_refusing_to_start

Serve = Callable[..., AbstractContextManager[httpx.Client]]
KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
A = {"X-API-Key": KEY_A}
B = {"Authorization": f"Bearer {KEY_B}"}
LEAKS = ("Traceback", "Error:", "Exception", 'File "', ".py", "redis://", "127.0.0.1", KEY_A, KEY_B, "sha256")


@pytest.fixture
def keyed(serve: Serve) -> Iterator[httpx.Client]:
    # a blank entry among the keys must not become a valid (empty) key
    with serve(api_keys=f" {KEY_A}, ,{KEY_B},") as client:
        yield client


def routes(sid: str) -> list[tuple[str, str, dict[str, object] | None]]:
    return [
        ("POST", "/chat", {"message": "hi"}),
        ("POST", "/chat/stream", {"message": "hi"}),
        ("GET", f"/session/{sid}", None),
        ("DELETE", f"/session/{sid}", None),
        ("GET", "/agents", None),
    ]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"X-API-Key": ""}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Basic a2V5LWE="}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        (A, 200),
        ({"Authorization": f"Bearer {KEY_A}"}, 200),
    ],
)
def test_every_route_checks_the_key(keyed: httpx.Client, headers: dict[str, str], status: int) -> None:
    sid = keyed.post("/chat", json={"message": "setup"}, headers=A).json()["session_id"]
    for method, path, body in routes(sid):
        response = keyed.request(method, path, json=body, headers=headers)
        assert response.status_code == status, (method, path, response.text)
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "API key" in response.json()["detail"]
        if path.startswith("/session") and method == "DELETE" and status == 200:
            break  # the session is gone now
    for open_path in ("/health", "/docs", "/openapi.json"):
        assert keyed.get(open_path, headers=headers).status_code == 200


def test_a_hashed_key_works_and_the_plain_key_is_never_needed(serve: Serve) -> None:
    digest = "sha256:" + hashlib.sha256(b"s3cret-key").hexdigest()
    with serve(api_keys=digest) as client:
        assert client.get("/agents", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert client.get("/agents", headers={"X-API-Key": digest}).status_code == 401


def test_hash_key_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent_api.cli", "hash-key", "s3cret-key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "sha256:" + hashlib.sha256(b"s3cret-key").hexdigest()


def test_sessions_are_invisible_to_other_keys(keyed: httpx.Client) -> None:
    first = keyed.post("/chat", json={"message": "mine"}, headers=A).json()
    sid = first["session_id"]
    assert keyed.get(f"/session/{sid}", headers=B).status_code == 404
    assert keyed.post("/chat", json={"message": "yours?", "session_id": sid}, headers=B).status_code == 404
    with keyed.stream("POST", "/chat/stream", json={"message": "x", "session_id": sid}, headers=B) as r:
        assert r.status_code == 404
    assert keyed.delete(f"/session/{sid}", headers=B).status_code == 404
    # the owner still has it, untouched
    history = keyed.get(f"/session/{sid}", headers=A).json()["messages"]
    assert [m["content"] for m in history] == ["mine", first["response"]]


def test_session_ids_are_unguessable_and_malformed_ids_are_rejected(keyed: httpx.Client) -> None:
    ids = {keyed.post("/chat", json={"message": "x"}, headers=A).json()["session_id"] for _ in range(5)}
    assert len(ids) == 5 and all(len(i) == 22 for i in ids)  # 16 random bytes, URL-safe base64
    for bad in ("a" * 65, "has space", "semi;colon", "*", "..%2F..%2Fetc"):
        response = keyed.get(f"/session/{bad}", headers=A)
        assert response.status_code in (404, 422), (bad, response.status_code)
        assert not any(leak in response.text for leak in LEAKS)


def test_one_run_at_a_time_per_session(keyed: httpx.Client, redis_client: redis.Redis) -> None:
    first = keyed.post("/chat", json={"message": "start"}, headers=A).json()
    sid = first["session_id"]
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def turn(i: int) -> None:
        response = keyed.post(
            "/chat", json={"message": f"turn {i} [[latency:1:0]]", "session_id": sid}, headers=A, timeout=30
        )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    statuses = Counter(r.status_code for r in results)
    assert statuses == {200: 1, 409: 19}, statuses
    busy = next(r for r in results if r.status_code == 409)
    assert "already running" in busy.json()["detail"]
    history = keyed.get(f"/session/{sid}", headers=A).json()
    assert history["turns"] == 2 and len(history["messages"]) == 4
    # the session was freed: the next turn runs
    assert keyed.post("/chat", json={"message": "next", "session_id": sid}, headers=A).status_code == 200
    assert not redis_client.exists(f"agent-api:session:{sid}:active")


def test_lock_is_released_after_an_error(keyed: httpx.Client, redis_client: redis.Redis) -> None:
    sid = keyed.post("/chat", json={"message": "start"}, headers=A).json()["session_id"]
    failed = keyed.post("/chat", json={"message": "x [[fail:500]]", "session_id": sid}, headers=A)
    assert failed.status_code == 502
    assert keyed.post("/chat", json={"message": "again", "session_id": sid}, headers=A).status_code == 200
    assert not redis_client.exists(f"agent-api:session:{sid}:active")
    assert not redis_client.zcard(next(iter(cast(list[str], redis_client.keys("agent-api:runs:active:*"))), "none"))


def test_session_is_freed_when_a_stream_client_disconnects(keyed: httpx.Client, redis_client: redis.Redis) -> None:
    sid = keyed.post("/chat", json={"message": "start"}, headers=A).json()["session_id"]
    body = {"message": "slow [[latency:0:0.3]] [[tokens:20]]", "session_id": sid}
    with keyed.stream("POST", "/chat/stream", json=body, headers=A) as response:
        run_id = response.headers["x-run-id"]
        for line in response.iter_lines():
            if line.startswith("event: token"):
                break
    frames = keyed.get(f"/runs/{run_id}/events", headers=A).text  # ends once the cancel has ended the run
    assert "event: done" in frames and '"run_status":"cancelled"' in frames
    assert not redis_client.exists(f"agent-api:session:{sid}:active")
    assert keyed.post("/chat", json={"message": "again", "session_id": sid}, headers=A).status_code == 200


def test_rate_limit_counts_across_app_instances(serve: Serve, redis_client: redis.Redis) -> None:
    with serve(api_keys=KEY_A, rate_limit="5/minute") as one, serve(api_keys=KEY_A, rate_limit="5/minute") as two:
        statuses = [c.get("/agents", headers=A).status_code for c in (one, two, one, two, one)]
        assert statuses == [200] * 5
        limited = two.get("/agents", headers=A)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "Rate limit" in limited.json()["detail"]
        # another key has its own budget; health is never limited
        assert one.get("/health").status_code == 200


def test_concurrent_runs_per_key_are_limited(serve: Serve) -> None:
    with serve(api_keys=KEY_A, max_concurrent_runs_per_key=2) as client:
        results: list[httpx.Response] = []

        def run() -> None:
            results.append(client.post("/chat", json={"message": "slow [[latency:1.5:0]]"}, headers=A))

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=30)
        statuses = Counter(r.status_code for r in results)
        assert statuses == {200: 2, 429: 1}, statuses
        limited = next(r for r in results if r.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert client.post("/chat", json={"message": "later"}, headers=A).status_code == 200


def test_oversized_bodies_are_413(client: httpx.Client, redis_client: redis.Redis) -> None:
    big = json.dumps({"message": "x" * 70_000})
    response = client.post("/chat", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "too large" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"message": "'
        for _ in range(80):
            yield b"y" * 1000
        yield b'"}'

    response = client.post("/chat", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert not redis_client.keys("agent-api:*")


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 20_000 + "]" * 20_000,
        '{"message": ' + "[" * 5_000 + "]" * 5_000 + "}",
        '{"message": "hi", "max_turns": 1e999}',
        '{"message": "hi", "max_turns": NaN}',
        '{"message": "\\ud800"}',
        '{"message": {"nested": {"deep": [1, 2, {"x": null}]}}}',
        '"just a string"',
        "null",
        '{"message": "hi", "unknown_field": 1}',
        "\x00\x01\x02",
    ],
)
def test_deep_or_odd_json_is_422_without_internals(client: httpx.Client, raw: str) -> None:
    response = client.post(
        "/chat", content=raw.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert not any(leak in response.text for leak in LEAKS), response.text


def test_no_error_body_leaks_internals(serve: Serve, offline: OfflineServer) -> None:
    with serve(api_keys=KEY_A, llm_timeout=0.5) as client:
        bodies = [
            client.get("/agents"),
            client.get("/agents", headers={"X-API-Key": "nope"}),
            client.post("/chat", json={"message": "x [[fail:500]]"}, headers=A),
            client.post("/chat", json={"message": "x [[fail:401]]"}, headers=A),
            client.post("/chat", json={"message": "x [[fail:429]]"}, headers=A),
            client.post("/chat", json={"message": "x [[sleep:2]]"}, headers=A),
            client.post("/chat", json={"message": "x", "session_id": "zzz"}, headers=A),
            client.post("/chat", json={"message": ""}, headers=A),
            client.get("/nope"),
        ]
    assert [b.status_code for b in bodies] == [401, 401, 502, 502, 503, 504, 404, 422, 404]
    for response in bodies:
        assert set(response.json()) == {"detail"}
        assert not any(leak in response.text for leak in LEAKS), response.text


def test_unreachable_redis_is_503_not_500(serve: Serve) -> None:
    with serve(redis_url="redis://127.0.0.1:1/0", redis_timeout=0.5) as client:
        assert client.get("/health").status_code == 503
        response = client.post("/chat", json={"message": "hi"})
        assert response.status_code == 503 and "store" in response.json()["detail"]
        assert not any(leak in response.text for leak in LEAKS)


def test_production_refuses_to_start_without_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="API_KEYS"):
        Settings(_env_file=None, environment="production")  # type: ignore[call-arg]
    done = serve_refusing_to_start(tmp_path, {"ENVIRONMENT": "production", "API_KEYS": " , "})
    assert "API_KEYS" in done.stderr


def test_cors_is_off_by_default_and_follows_settings(serve: Serve) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with serve(api_keys=KEY_A) as client:
        assert "access-control-allow-origin" not in client.options("/chat", headers=preflight).headers
    with serve(api_keys=KEY_A, cors_origins="https://app.example") as client:
        response = client.options("/chat", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/chat", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
