"""/runs through real HTTP, a real redis-server and the offline model: the run lifecycle in one API process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest

from agent_api.offline_llm import OfflineServer
from tests.utils.runs import follow, start_run, wait_for_end
from tests.utils.sse import answer, read_frames

Serve = Callable[..., AbstractContextManager[httpx.Client]]
SLOW = "[[latency:0:0.2]] [[tokens:40]]"  # about 8 s of tokens: long enough to act on mid-run


def test_background_run_is_polled_to_succeeded(client: httpx.Client) -> None:
    run = start_run(client, {"message": "Explain tides.", "metadata": {"ticket": 42}})
    assert run["status"] == "queued" and run["run_id"].startswith("run_") and run["metadata"] == {"ticket": 42}
    ended = wait_for_end(client, run["run_id"])
    assert ended["status"] == "succeeded"
    assert ended["created_at"] <= ended["started_at"] <= ended["ended_at"]
    result = ended["result"]
    assert result["response"] == 'Offline answer: you asked "Explain tides.". I can see 0 earlier messages.'
    assert result["turns_used"] == 1 and result["finished"] is True and result["usage"]["total_tokens"] > 0
    assert [m["role"] for m in result["messages"]] == ["user", "assistant"]
    # the turn is in the session, and the session lists the run
    session = client.get(f"/session/{run['session_id']}").json()
    assert [m["content"] for m in session["messages"]] == ["Explain tides.", result["response"]]
    listed = client.get(f"/session/{run['session_id']}/runs").json()
    assert [r["run_id"] for r in listed["runs"]] == [run["run_id"]]


def test_events_replay_and_resume_after_last_event_id(client: httpx.Client) -> None:
    run = start_run(client, {"message": "count [[tokens:12]]"})
    full = follow(client, run["run_id"])
    events = [f.event for f in full]
    assert events[0] == "session" and events[-2:] == ["usage", "done"] and "token" in events
    assert full[0].data["run_id"] == run["run_id"]
    assert answer(full) == full[-1].data["response"] and full[-1].data["run_status"] == "succeeded"
    ids = [f.id for f in full]
    assert len(set(ids)) == len(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    # a finished run replays identically, and resumes strictly after any event
    assert [(f.id, f.event, f.data) for f in follow(client, run["run_id"])] == [(f.id, f.event, f.data) for f in full]
    for k in (0, 3, len(full) - 2):
        rest = follow(client, run["run_id"], last_event_id=full[k].id)
        assert [f.id for f in rest] == ids[k + 1 :]
    via_query = client.get(f"/runs/{run['run_id']}/events", params={"after": full[1].id})
    assert via_query.status_code == 200 and f"id: {full[2].id}" in via_query.text


def test_bad_event_cursor_is_422(client: httpx.Client) -> None:
    run = start_run(client, {"message": "hi"})
    response = client.get(f"/runs/{run['run_id']}/events", headers={"Last-Event-ID": "not-an-id"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "header"


def test_chat_stream_is_a_run_with_log_ids(client: httpx.Client) -> None:
    response, frames = read_frames(client, {"message": "hello"})
    run_id = response.headers["x-run-id"]
    assert frames[0].event == "session" and frames[0].data["run_id"] == run_id
    assert [f.id for f in frames] == [f.id for f in follow(client, run_id)]
    assert client.get(f"/runs/{run_id}").json()["status"] == "succeeded"


def test_chat_answers_with_its_run(client: httpx.Client) -> None:
    body = client.post("/chat", json={"message": "hi"}).json()
    run = client.get(f"/runs/{body['run_id']}").json()
    assert run["status"] == "succeeded" and run["result"]["response"] == body["response"]
    # cancelling a run that has ended changes nothing: the answer is the run as it ended
    cancelled = client.post(f"/runs/{body['run_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json() == run


def test_cancel_stops_the_run_and_saves_nothing(client: httpx.Client, offline: OfflineServer) -> None:
    first = client.post("/chat", json={"message": "keep"}).json()
    run = start_run(client, {"message": f"cancel me {SLOW}", "session_id": first["session_id"]})
    follow(client, run["run_id"], stop_at_event="token")  # it is running
    cancelled = client.post(f"/runs/{run['run_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"]["type"] == "cancelled"
    frames = follow(client, run["run_id"])
    assert [f.event for f in frames][-2:] == ["error", "done"] and frames[-1].data["run_status"] == "cancelled"
    # nothing saved, and the session is free at once
    history = client.get(f"/session/{first['session_id']}").json()["messages"]
    assert [m["content"] for m in history] == ["keep", first["response"]]
    again = client.post("/chat", json={"message": "next", "session_id": first["session_id"]})
    assert again.status_code == 200 and "2 earlier messages" in again.json()["response"]
    # cancelling an ended run changes nothing
    assert client.post(f"/runs/{run['run_id']}/cancel").json()["status"] == "cancelled"


def test_cancel_of_a_waiting_run(client: httpx.Client) -> None:
    first = start_run(client, {"message": f"long {SLOW}"})
    waiting = start_run(client, {"message": "later", "session_id": first["session_id"], "if_busy": "enqueue"})
    assert client.post(f"/runs/{waiting['run_id']}/cancel").json()["status"] == "cancelled"
    client.post(f"/runs/{first['run_id']}/cancel")
    assert client.post("/chat", json={"message": "free?", "session_id": first["session_id"]}).status_code == 200


def test_busy_session_reject_is_409(client: httpx.Client) -> None:
    run = start_run(client, {"message": f"long {SLOW}"})
    response = client.post("/runs", json={"message": "again", "session_id": run["session_id"]})
    assert response.status_code == 409
    chat = client.post("/chat", json={"message": "again", "session_id": run["session_id"]})
    assert chat.status_code == 409
    client.post(f"/runs/{run['run_id']}/cancel")


def test_busy_session_enqueue_keeps_the_order(client: httpx.Client) -> None:
    first = start_run(client, {"message": "one [[latency:0:0.05]] [[tokens:10]]"})
    sid = first["session_id"]
    second = start_run(client, {"message": "two", "session_id": sid, "if_busy": "enqueue"})
    third = start_run(client, {"message": "three", "session_id": sid, "if_busy": "enqueue"})
    assert second["status"] == "queued"
    ends = [wait_for_end(client, r["run_id"]) for r in (first, second, third)]
    assert [e["status"] for e in ends] == ["succeeded"] * 3
    assert ends[0]["ended_at"] <= ends[1]["started_at"] and ends[1]["ended_at"] <= ends[2]["started_at"]
    assert "4 earlier messages" in ends[2]["result"]["response"]
    history = client.get(f"/session/{sid}").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "one [[latency:0:0.05]] [[tokens:10]]",
        "two",
        "three",
    ]
    runs = client.get(f"/session/{sid}/runs").json()["runs"]
    assert [r["run_id"] for r in runs] == [third["run_id"], second["run_id"], first["run_id"]]


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
def test_busy_session_interrupt_and_rollback(client: httpx.Client, strategy: str) -> None:
    first = start_run(client, {"message": f"long {SLOW}"})
    follow(client, first["run_id"], stop_at_event="token")
    second = start_run(client, {"message": "instead", "session_id": first["session_id"], "if_busy": strategy})
    ended = wait_for_end(client, second["run_id"])
    assert ended["status"] == "succeeded" and "0 earlier messages" in ended["result"]["response"]
    old = client.get(f"/runs/{first['run_id']}")
    if strategy == "interrupt":
        assert old.json()["status"] == "interrupted" and old.json()["error"]["type"] == "interrupted"
    else:
        assert old.status_code == 404
        runs = client.get(f"/session/{first['session_id']}/runs").json()["runs"]
        assert [r["run_id"] for r in runs] == [second["run_id"]]
    history = client.get(f"/session/{first['session_id']}").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["instead"]


def test_on_disconnect_continue_saves_the_turn(client: httpx.Client) -> None:
    body = {"message": "stay [[latency:0:0.05]] [[tokens:20]]", "on_disconnect": "continue"}
    response, frames = read_frames(client, body, stop_after="token")
    run_id = response.headers["x-run-id"]
    rest = follow(client, run_id, last_event_id=frames[-1].id)  # re-attach where it broke off
    assert rest[-1].event == "done" and rest[-1].data["run_status"] == "succeeded"
    assert answer(frames) + answer(rest) == rest[-1].data["response"]
    history = client.get(f"/session/{frames[0].data['session_id']}").json()["messages"]
    assert len(history) == 2


def test_disconnect_by_default_cancels(client: httpx.Client) -> None:
    response, _ = read_frames(client, {"message": f"leave {SLOW}"}, stop_after="token")
    run = wait_for_end(client, response.headers["x-run-id"])
    assert run["status"] == "cancelled"


def test_failed_run_reports_its_error_without_internals(client: httpx.Client) -> None:
    run = start_run(client, {"message": "break [[fail:500]]"})
    ended = wait_for_end(client, run["run_id"])
    assert ended["status"] == "failed" and ended["error"]["type"] == "upstream_error"
    assert "Traceback" not in str(ended) and "openai" not in str(ended).lower()


def test_webhook_to_a_private_address_is_refused(client: httpx.Client, redis_client: Any) -> None:
    for url in ("http://127.0.0.1:9/hook", "http://10.0.0.8/x", "http://169.254.169.254/latest", "http://[::1]/x"):
        response = client.post("/runs", json={"message": "hi", "webhook": url})
        assert response.status_code == 422, url
        assert response.json()["detail"][0]["loc"] == ["body", "webhook"]
    assert not redis_client.keys("agent-api:run:*")


def test_metadata_over_4kb_is_422(client: httpx.Client) -> None:
    response = client.post("/runs", json={"message": "hi", "metadata": {"x": "a" * 5000}})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][:2] == ["body", "metadata"]


def test_runs_are_invisible_to_other_keys(serve: Serve) -> None:
    alice, bob = {"X-API-Key": "alice-key"}, {"X-API-Key": "bob-key"}
    with serve(api_keys="alice-key,bob-key") as client:
        run = start_run(client, {"message": "mine"}, headers=alice)
        wait_for_end(client, run["run_id"], headers=alice)
        rid = run["run_id"]
        assert client.get(f"/runs/{rid}", headers=bob).status_code == 404
        assert client.get(f"/runs/{rid}/events", headers=bob).status_code == 404
        assert client.post(f"/runs/{rid}/cancel", headers=bob).status_code == 404
        assert client.get(f"/session/{run['session_id']}/runs", headers=bob).status_code == 404
        assert client.get(f"/runs/{rid}", headers=alice).status_code == 200
        # GET /runs lists the caller's runs only, newest first
        second = start_run(client, {"message": "mine too"}, headers=alice)
        wait_for_end(client, second["run_id"], headers=alice)
        listed = client.get("/runs", headers=alice).json()["runs"]
        assert [r["run_id"] for r in listed] == [second["run_id"], rid]
        assert client.get("/runs", params={"status": "failed"}, headers=alice).json()["runs"] == []
        assert client.get("/runs", headers=bob).json()["runs"] == []


def test_concurrent_runs_never_mix(client: httpx.Client) -> None:
    results: dict[str, dict[str, Any]] = {}

    def one(word: str) -> None:
        run = start_run(client, {"message": f"{word} [[latency:0.05:0.02]] [[tokens:8]]"})
        results[word] = wait_for_end(client, run["run_id"])

    threads = [threading.Thread(target=one, args=(w,)) for w in ("apple", "zebra", "mango", "quartz")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == ["apple", "mango", "quartz", "zebra"]
    for word, run in results.items():
        assert run["status"] == "succeeded" and word in run["result"]["response"]
