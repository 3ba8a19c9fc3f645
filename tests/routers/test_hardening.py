"""What a new user and an operator hit: strict input, clear media-type errors, honest error types,
model replies that are not JSON, teams that cannot answer in the turns given, idle connections."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.utils.process import serve_process
from tests.utils.sse import read_frames
from tests.utils.waiting import abandoned

Serve = Callable[..., AbstractContextManager[httpx.Client]]


@pytest.mark.parametrize(
    "body",
    [
        {"message": "hi", "max_turns": True},
        {"message": "hi", "max_turns": "5"},
        {"message": "hi", "max_turns": 5.5},
        {"message": "hi", "stream": "yes"},
        {"message": "hi", "stream": 1},
        {"message": 42},
        {"message": "   \n\t"},
    ],
)
@pytest.mark.parametrize("route", ["/chat", "/runs"])
def test_wrong_types_and_blank_messages_are_422(client: httpx.Client, route: str, body: dict[str, Any]) -> None:
    response = client.post(route, json=body)
    assert response.status_code == 422, response.text
    field = response.json()["detail"][0]["loc"][-1]
    assert field in ("max_turns", "stream", "message")
    assert client.get("/runs").json()["runs"] == []  # nothing was created


def test_an_integral_number_is_an_integer_as_json_schema_says(client: httpx.Client) -> None:
    response = client.post("/chat", json={"message": "hi", "max_turns": 2.0})
    assert response.status_code == 200, response.text


def test_a_body_that_is_not_json_is_415_and_says_so(client: httpx.Client) -> None:
    form = client.post(
        "/chat", content=b'{"message": "hi"}', headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 415 and "application/json" in form.json()["detail"]
    text = client.post("/v1/chat/completions", content=b"{}", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and text.json()["error"]["code"] == "unsupported_media_type"
    empty = client.post("/chat")
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body"]
    assert client.post("/chat", json={"message": "hi"}).status_code == 200


def errors_by_type(client: httpx.Client) -> dict[str, float]:
    found = re.findall(r'agent_api_errors_total\{type="([a-z_]+)"\} ([0-9.]+)', client.get("/metrics").text)
    return {kind: float(value) for kind, value in found}


def test_errors_are_counted_under_their_own_type(client: httpx.Client) -> None:
    before = errors_by_type(client)
    client.put("/chat")  # 405
    client.post("/chat", content=b"x", headers={"Content-Type": "text/plain"})  # 415
    client.get("/no/such/route")  # 404
    client.post("/chat", json={"message": ""})  # 422
    after = errors_by_type(client)
    gained = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after}
    assert {k: v for k, v in gained.items() if v} == {
        "method_not_allowed": 1,
        "unsupported_media_type": 1,
        "not_found": 1,
        "validation": 1,
    }


def test_a_model_reply_that_is_not_json_is_502_without_a_traceback(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    plain = client.post("/chat", json={"message": "break [[malformed]]"})
    assert plain.status_code == 502 and plain.json()["detail"].startswith("The model provider returned an error")
    _, frames = read_frames(client, {"message": "break it streaming [[malformed]]"})
    error = next(f for f in frames if f.event == "error")
    assert error.data["status"] == 502 and error.data["error_type"] == "upstream_error"
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("agent_api")]


def test_a_max_turns_the_team_cannot_answer_in_is_refused_with_the_minimum(client: httpx.Client) -> None:
    response = client.post("/chat", json={"message": "hi", "agent": "research_team", "max_turns": 2})
    assert response.status_code == 422 and "at least 3" in response.json()["detail"][0]["msg"]
    teams = {t["name"]: t for t in client.get("/agents").json()["teams"]}
    assert teams["research_team"]["min_turns"] == 3 and teams["research"]["min_turns"] == 1
    enough = client.post("/chat", json={"message": "hi", "agent": "research_team", "max_turns": 3})
    assert enough.status_code == 200 and enough.json()["response"].startswith("Offline answer")


def test_only_the_answering_agent_ends_a_group_chat(client: httpx.Client) -> None:
    # every agent says TERMINATE; the researcher's and the critic's do not end the turn
    response = client.post("/chat", json={"message": "[[say:done TERMINATE]]", "agent": "research_team"})
    body = response.json()
    assert response.status_code == 200, body
    assert [m["name"] for m in body["messages"]] == ["user", "researcher", "critic", "writer"]
    assert body["response"] == "done" and body["finished"] is True


@pytest.mark.slow(seconds=12)
def test_idle_connections_outlive_common_client_pools(tmp_path: Path) -> None:
    # uvicorn's default keeps an idle connection 5 s, the pool time of many clients: a request sent
    # as the server closes the connection fails. KEEP_ALIVE_TIMEOUT (75 s) keeps it open.
    with serve_process(tmp_path, {"LOG_FORMAT": "text"}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(request)
            assert read_response(conn).startswith(b"HTTP/1.1 200")
            time.sleep(6.5)
            conn.sendall(request)
            assert read_response(conn).startswith(b"HTTP/1.1 200")


def read_response(conn: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (headers and a Content-Length body) from ``conn``; b"" if closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length: *(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_readiness_tells_an_unreachable_model_apart_from_liveness(serve: Serve) -> None:
    with serve() as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "problems": []}
    with serve(openai_base_url="http://127.0.0.1:9/v1") as client:  # nothing listens on port 9
        assert client.get("/health").status_code == 200  # alive
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert ready.json()["problems"] == ["the model server is unreachable (ConnectError)"]


def test_a_run_past_run_timeout_fails_whole_and_saves_nothing(serve: Serve, offline: Any) -> None:
    with serve(run_timeout=1) as client:
        response = client.post("/chat", json={"message": "slow [[latency:0:0.2]] [[tokens:40]]"})
        assert response.status_code == 504, response.text
        assert "RUN_TIMEOUT" in response.json()["detail"]
        run = client.get(f"/runs/{response.headers['x-run-id']}").json()
        assert run["status"] == "failed" and run["error"]["type"] == "run_timeout"
        session = client.get(f"/session/{response.headers['x-session-id']}").json()
        assert session["messages"] == []
        # the model's request was dropped at the time-out, before its 40 tokens' answer
        assert abandoned(offline, "slow") == [True]


def test_a_cancelled_run_leaves_the_model_it_waits_on_at_once(serve: Serve, offline: Any) -> None:
    # One run thread, a model that answers /chat's run (a request without stream) after a minute:
    # the run cancelled by its time-out must not hold the thread until then, or the next /chat
    # waits for it and times out in its turn.
    with serve(run_timeout=2, thread_pool_size=1, llm_timeout=120) as client:
        response = client.post("/chat", json={"message": "thinking [[latency:60:0]]"})
        assert response.status_code == 504, response.text
        response = client.post("/chat", json={"message": "next"})
        assert response.status_code == 200, response.text
    assert abandoned(offline, "thinking") == [True]


def test_the_default_max_turns_leaves_a_late_answerer_its_turn(serve: Serve, tmp_path: Path) -> None:
    agents = [
        {"name": f"a{i}", "system_message": "Help." + (" End with TERMINATE." if i == 6 else "")} for i in range(7)
    ]
    team = {"name": "seven", "description": "Seven in a row.", "pattern": "group", "agents": agents}
    (tmp_path / "seven.json").write_text(json.dumps(team))
    with serve(teams_dir=str(tmp_path)) as client:
        # max_turns not given: 5 would end the turn before a6 speaks, so the run gets 7
        answered = client.post("/chat", json={"message": "hi", "agent": "seven"})
        assert answered.status_code == 200, answered.text
        assert answered.json()["messages"][-1]["name"] == "a6" and answered.json()["response"]
        # given explicitly, a value too small is refused with the minimum
        refused = client.post("/chat", json={"message": "hi", "agent": "seven", "max_turns": 5})
        assert refused.status_code == 422 and "at least 7" in refused.json()["detail"][0]["msg"]
