"""POST /chat through real HTTP, against the offline model and a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, cast

import httpx
import pytest
import redis

from agent_api.offline_llm import OfflineServer
from tests.utils.runs import ended_status
from tests.utils.waiting import abandoned

Serve = Callable[..., AbstractContextManager[httpx.Client]]
LEAKS = ("Traceback", "Error(", "openai", "httpx", "redis://", ".py", "InternalServerError", "APIStatusError")


def conversation(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of a model request other than the system prompt."""
    return [m for m in request["messages"] if m["role"] != "system"]


def test_second_turn_sends_the_first_to_the_model(client: httpx.Client, offline: OfflineServer) -> None:
    first = client.post("/chat", json={"message": "What is a coral polyp?"})
    assert first.status_code == 200, first.text
    body = first.json()
    sid = body["session_id"]
    assert body["response"].startswith('Offline answer: you asked "What is a coral polyp?"')
    assert "TERMINATE" not in body["response"]
    assert body["finished"] is True and body["turns_used"] == 1 and body["agent"] == "research"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0

    second = client.post("/chat", json={"message": "How does it feed?", "session_id": sid})
    assert second.status_code == 200, second.text
    sent = conversation(offline.model.requests[-1])
    assert [m["content"] for m in sent[:2]] == ["What is a coral polyp?", body["response"]]
    assert sent[-1]["content"] == "How does it feed?"
    assert "I can see 2 earlier messages" in second.json()["response"]

    history = client.get(f"/session/{sid}").json()
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "What is a coral polyp?"),
        ("assistant", body["response"]),
        ("user", "How does it feed?"),
        ("assistant", second.json()["response"]),
    ]
    stamps = [m["timestamp"] for m in history["messages"]]
    assert stamps == sorted(stamps)
    assert history["turns"] == 2 and history["agent"] == "research"


def test_conversation_survives_an_app_restart(serve: Serve, offline: OfflineServer) -> None:
    with serve() as client:
        sid = client.post("/chat", json={"message": "first"}).json()["session_id"]
        client.post("/chat", json={"message": "second", "session_id": sid}).raise_for_status()
    with serve() as client:  # a new app instance on the same Redis
        third = client.post("/chat", json={"message": "third", "session_id": sid})
        assert third.status_code == 200, third.text
        assert "I can see 4 earlier messages" in third.json()["response"]
        sent = [m["content"] for m in conversation(offline.model.requests[-1])]
        assert sent[0] == "first" and sent[2] == "second" and sent[-1] == "third"
        assert len(client.get(f"/session/{sid}").json()["messages"]) == 6


def test_unknown_session_is_404(client: httpx.Client) -> None:
    for response in (
        client.post("/chat", json={"message": "hi", "session_id": "nope"}),
        client.get("/session/nope"),
        client.delete("/session/nope"),
    ):
        assert response.status_code == 404
        assert "not found" in response.json()["detail"].lower()


def test_expired_session_is_404(serve: Serve) -> None:
    with serve(session_ttl=1) as client:
        sid = client.post("/chat", json={"message": "hi"}).json()["session_id"]
        assert client.get(f"/session/{sid}").status_code == 200
        time.sleep(2.2)
        assert client.get(f"/session/{sid}").status_code == 404
        response = client.post("/chat", json={"message": "still there?", "session_id": sid})
        assert response.status_code == 404
        assert "expired" in response.json()["detail"]


def test_each_turn_refreshes_the_ttl(serve: Serve, redis_client: redis.Redis) -> None:
    with serve(session_ttl=600) as client:
        sid = client.post("/chat", json={"message": "hi"}).json()["session_id"]
        keys = [f"agent-api:session:{sid}", f"agent-api:session:{sid}:messages"]
        # the session itself, and the list of its runs (kept as long as runs are: RUN_TTL)
        stored = sorted(cast(list[str], redis_client.keys(f"agent-api:session:{sid}*")))
        assert stored == sorted([*keys, f"agent-api:session:{sid}:runs"])
        for key in keys:
            redis_client.expire(key, 30)
        client.post("/chat", json={"message": "again", "session_id": sid}).raise_for_status()
        for key in keys:
            assert cast(int, redis_client.ttl(key)) > 500
        assert client.get(f"/session/{sid}").json()["expires_in"] > 500


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": ""}, "message"),
        ({"message": "x" * 4001}, "message"),
        ({"message": "hi", "max_turns": 0}, "max_turns"),
        ({"message": "hi", "max_turns": 21}, "max_turns"),
        ({"message": 42}, "message"),
        ({"message": "hi", "max_turns": "many"}, "max_turns"),
        ({"message": "hi", "stream": "perhaps"}, "stream"),
        ({"message": "hi", "session_id": 5}, "session_id"),
        ({"message": "hi", "session_id": "../../etc"}, "session_id"),
        ({}, "message"),
        ({"message": "hi", "agent": "nobody"}, "agent"),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    client: httpx.Client, redis_client: redis.Redis, offline: OfflineServer, body: dict[str, Any], field: str
) -> None:
    response = client.post("/chat", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(field in error["loc"] for error in detail), detail
    assert not redis_client.keys("agent-api:*")
    assert offline.model.requests == []


@pytest.mark.parametrize("raw", [b"not json", b'{"message": "hi"', b"[1, 2]", b""])
def test_non_json_body_is_422(client: httpx.Client, redis_client: redis.Redis, raw: bytes) -> None:
    response = client.post("/chat", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"
    assert not redis_client.keys("agent-api:*")


def test_unknown_team_lists_the_valid_ones(client: httpx.Client) -> None:
    detail = client.post("/chat", json={"message": "hi", "agent": "nobody"}).json()["detail"]
    assert "research" in detail[0]["msg"]


def test_model_error_is_502_and_keeps_the_history(client: httpx.Client, offline: OfflineServer) -> None:
    first = client.post("/chat", json={"message": "remember me"}).json()
    failed = client.post("/chat", json={"message": "now fail [[fail:500]]", "session_id": first["session_id"]})
    assert failed.status_code == 502
    assert "model" in failed.json()["detail"]
    assert failed.headers["x-session-id"] == first["session_id"]
    assert not any(leak in failed.text for leak in LEAKS), failed.text
    history = client.get(f"/session/{first['session_id']}").json()["messages"]
    assert [m["content"] for m in history] == ["remember me", first["response"]]


def test_model_timeout_is_504(serve: Serve, offline: OfflineServer) -> None:
    with serve(llm_timeout=0.5) as client:
        first = client.post("/chat", json={"message": "hello"}).json()
        timed_out = client.post("/chat", json={"message": "slow [[sleep:3]]", "session_id": first["session_id"]})
        assert timed_out.status_code == 504
        assert "in time" in timed_out.json()["detail"]
        assert not any(leak in timed_out.text for leak in LEAKS), timed_out.text
        assert len(client.get(f"/session/{first['session_id']}").json()["messages"]) == 2


def test_provider_rate_limit_is_503_with_retry_after(client: httpx.Client) -> None:
    response = client.post("/chat", json={"message": "busy [[fail:429]]"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_history_cap_applies_to_storage_and_to_the_model(serve: Serve, offline: OfflineServer) -> None:
    with serve(max_history_messages=4) as client:
        sid = client.post("/chat", json={"message": "one"}).json()["session_id"]
        for text in ("two", "three"):
            client.post("/chat", json={"message": text, "session_id": sid}).raise_for_status()
        stored = client.get(f"/session/{sid}").json()["messages"]
        assert [m["content"] for m in stored if m["role"] == "user"] == ["two", "three"]
        assert len(stored) == 4
        sent = conversation(offline.model.requests[-1])
        assert len(sent) == 4  # three stored messages and the new one
        assert [m["content"] for m in sent if m["role"] == "user"] == ["two", "three"]


def test_max_turns_bounds_the_agent_replies(client: httpx.Client, offline: OfflineServer) -> None:
    offline.model.configure(stop_word=False)  # the model never ends the run itself
    response = client.post("/chat", json={"message": "keep going", "max_turns": 3})
    body = response.json()
    assert response.status_code == 200
    assert body["turns_used"] == 3 and body["finished"] is False
    assert len(offline.model.requests) == 3


def test_delete_removes_the_session(client: httpx.Client, redis_client: redis.Redis) -> None:
    sid = client.post("/chat", json={"message": "hi"}).json()["session_id"]
    response = client.delete(f"/session/{sid}")
    assert response.status_code == 200 and response.json() == {"session_id": sid, "deleted": True}
    assert client.get(f"/session/{sid}").status_code == 404
    assert redis_client.keys(f"*{sid}*") == []


def test_no_autogen_output_on_stdout(
    client: httpx.Client, offline: OfflineServer, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    sid = client.post("/chat", json={"message": "hello"}).json()["session_id"]
    offline.model.configure(stop_word=False)
    client.post("/chat", json={"message": "two turns", "session_id": sid, "max_turns": 2}).raise_for_status()
    out = capfd.readouterr().out
    assert out == "", out


def test_a_client_that_leaves_chat_cancels_its_run(client: httpx.Client, offline: OfflineServer) -> None:
    # The client gives up after a second (its time-out closes the connection); the model would answer in 30.
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat", json={"message": "left waiting [[latency:30:0]]"}, timeout=1)
    (run,) = client.get("/runs").json()["runs"]
    assert ended_status(client, run["run_id"]) == "cancelled"
    assert abandoned(offline, "left waiting") == [True]  # and the model was left at once
    assert client.get(f"/session/{run['session_id']}").json()["messages"] == []


def test_on_disconnect_continue_lets_chat_s_run_finish(client: httpx.Client) -> None:
    body = {"message": "finish anyway [[latency:2:0]]", "on_disconnect": "continue"}
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat", json=body, timeout=0.5)
    (run,) = client.get("/runs").json()["runs"]
    assert ended_status(client, run["run_id"]) == "succeeded"
    assert len(client.get(f"/session/{run['session_id']}").json()["messages"]) == 2
