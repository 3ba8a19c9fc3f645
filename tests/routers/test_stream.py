"""POST /chat/stream through real HTTP: tokens as they happen, isolation, disconnects, errors."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import pytest

from agent_api.offline_llm import OfflineServer
from tests.utils.sse import Frame, answer, read_frames
from tests.utils.waiting import abandoned

Serve = Callable[..., AbstractContextManager[httpx.Client]]
LEAKS = ("Traceback", "Error(", "openai", "httpx", ".py", "InternalServerError", "RemoteProtocolError")


def tokens(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.event == "token"]


def test_every_frame_follows_the_contract(client: httpx.Client) -> None:
    response, frames = read_frames(client, {"message": "Explain tides."})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    ids = [tuple(map(int, f.id.split("-"))) for f in frames]  # the run's log ids: increasing, no repeats
    assert ids == sorted(set(ids)) and response.headers["x-run-id"] == frames[0].data["run_id"]
    sid = frames[0].data["session_id"]
    for f in frames:
        assert f.data["session_id"] == sid and isinstance(f.data["chunk"], str) and isinstance(f.data["done"], bool)
    events = [f.event for f in frames]
    assert events[0] == "session" and events[-2:] == ["usage", "done"]
    assert {"token", "message"} <= set(events)
    assert [f.data["done"] for f in frames].count(True) == 1 and frames[-1].data["done"]
    done = frames[-1].data
    assert (
        answer(frames)
        == done["response"]
        == 'Offline answer: you asked "Explain tides.". I can see 0 earlier messages.'
    )
    assert all(f.data["agent"] == "research_assistant" for f in tokens(frames))
    assert done["turns_used"] == 1 and done["finished"] is True and done["usage"]["completion_tokens"] > 0

    # saved exactly as /chat saves it, and the session continues
    history = client.get(f"/session/{sid}").json()["messages"]
    assert [(m["role"], m["content"]) for m in history] == [("user", "Explain tides."), ("assistant", done["response"])]
    _, again = read_frames(client, {"message": "More?", "session_id": sid})
    assert "I can see 2 earlier messages" in again[-1].data["response"]


def test_chat_with_stream_true_answers_the_same_stream(client: httpx.Client) -> None:
    response, frames = read_frames(client, {"message": "hi", "stream": True}, path="/chat")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert frames[0].event == "session" and frames[-1].event == "done"
    assert answer(frames) == frames[-1].data["response"]


def test_first_token_arrives_long_before_the_last(client: httpx.Client) -> None:
    _, frames = read_frames(client, {"message": "slow [[latency:0:0.3]] [[tokens:8]]"})
    token_frames = tokens(frames)
    # One frame per token, but for tokens that reached the run's writer together (a worker
    # stalled for 0.3 s on a loaded machine): they are joined into one frame.
    assert 5 <= len(token_frames) <= 8
    assert "".join(f.data["text"] for f in token_frames) == 'Offline answer: you asked "slow". I can see'
    times = [f.at for f in token_frames]
    assert times == sorted(times)
    spread = times[-1] - times[0]  # the model spends 7 x 0.3 s between its first and last token
    assert spread > 1.5
    assert times[0] < spread  # the first token came before most of the generation happened
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert sorted(gaps)[len(gaps) // 2] > 0.15  # tokens were not bunched up and replayed
    assert frames[-1].at - times[-1] < spread


def test_multi_reply_answer_is_the_concatenated_chunks(client: httpx.Client, offline: OfflineServer) -> None:
    offline.model.configure(stop_word=False)
    _, frames = read_frames(client, {"message": "think twice", "max_turns": 2})
    done = frames[-1].data
    assert done["turns_used"] == 2 and done["finished"] is False
    assert answer(frames) == done["response"] and "\n\n" in done["response"]


def test_concurrent_streams_never_mix(client: httpx.Client) -> None:
    results: dict[str, list[Frame]] = {}

    def stream(word: str) -> None:
        results[word] = read_frames(client, {"message": f"{word} [[latency:0.05:0.05]] [[tokens:12]]"})[1]

    threads = [threading.Thread(target=stream, args=(w,)) for w in ("apple", "zebra", "mango", "quartz")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 4
    session_ids = {frames[0].data["session_id"] for frames in results.values()}
    assert len(session_ids) == 4
    for word, frames in results.items():
        sid = frames[0].data["session_id"]
        assert all(f.data["session_id"] == sid for f in frames)
        text = answer(frames)
        assert word in text and text == frames[-1].data["response"]
        assert not any(other in text for other in results if other != word)


def test_disconnect_cancels_the_run(
    client: httpx.Client, offline: OfflineServer, caplog: pytest.LogCaptureFixture
) -> None:
    offline.model.configure(stop_word=False)  # without a disconnect the run would call the model 3 times
    caplog.set_level(logging.INFO)
    _, frames = read_frames(
        client, {"message": "marker-disconnect [[latency:0:0.3]] [[tokens:10]]", "max_turns": 3}, stop_after="token"
    )
    sid = frames[0].data["session_id"]
    assert frames[-1].event == "token"
    time.sleep(4)  # time for the rest of the run, had it gone on
    calls = [r for r in offline.model.requests if "marker-disconnect" in str(r["messages"])]
    assert len(calls) == 1
    session = client.get(f"/session/{sid}").json()
    assert session["messages"] == [] and session["turns"] == 0
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]
    assert "Traceback" not in caplog.text
    # the session is usable again
    offline.model.configure(stop_word=True)
    _, after = read_frames(client, {"message": "back again", "session_id": sid})
    assert after[-1].data["finished"] is True


@pytest.mark.parametrize("directive", ["[[cut:3]]", "[[fail:500]]"])
def test_model_error_mid_run_ends_with_error_then_done(client: httpx.Client, directive: str) -> None:
    first = client.post("/chat", json={"message": "keep this"}).json()
    response, frames = read_frames(client, {"message": f"break {directive}", "session_id": first["session_id"]})
    assert response.status_code == 200
    assert [f.event for f in frames][-2:] == ["error", "done"]
    error = frames[-2].data
    assert error["status"] == 502 and "model" in error["detail"]
    assert frames[-1].data["done"] is True
    raw = " ".join(str(f.data) for f in frames)
    assert not any(leak in raw for leak in LEAKS), raw
    history = client.get(f"/session/{first['session_id']}").json()["messages"]
    assert [m["content"] for m in history] == ["keep this", first["response"]]


def test_keep_alive_comments_while_the_model_is_silent(serve: Serve) -> None:
    with serve(sse_ping_seconds=0.3) as client:
        with client.stream("POST", "/chat/stream", json={"message": "wait [[latency:1.5:0]]"}) as response:
            lines = list(response.iter_lines())
    first_data = next(i for i, line in enumerate(lines) if line.startswith("event: token"))
    assert any(line.startswith(":") for line in lines[:first_data])


def test_errors_before_the_stream_are_plain_json(client: httpx.Client) -> None:
    response, frames = read_frames(client, {"message": "hi", "session_id": "unknown"})
    assert response.status_code == 404 and frames == []
    assert "not found" in response.json()["detail"].lower()
    response, _ = read_frames(client, {"message": ""})
    assert response.status_code == 422


def test_disconnects_leak_no_model_connections(serve: Serve, offline: OfflineServer) -> None:
    # One run thread, whose pool holds two connections: a stream dropped by its client must give
    # its connection back, or the third run waits for one until the model time-out.
    with serve(thread_pool_size=1, llm_timeout=3) as client:
        for i in range(4):
            _, frames = read_frames(
                client, {"message": f"drop {i} [[latency:0:0.2]] [[tokens:30]]"}, stop_after="token"
            )
            assert frames[-1].event == "token"
        response = client.post("/chat", json={"message": "still served?"})
        assert response.status_code == 200, response.text  # a 504 if no connection came free
    assert abandoned(offline, "drop ") == [True] * 4  # the model's streams were dropped, not read to their end
