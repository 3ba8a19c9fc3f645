"""The run's state machine and the log's frames: pure code, no I/O."""

from __future__ import annotations

import json

import pytest

from agent_api.agents.events import MessageEvent, RunEvent, TokenEvent, ToolCallEvent
from agent_api.errors import InvalidField, ModelTimeout
from agent_api.models.chat import ChatMessage
from agent_api.runs import frames
from agent_api.runs.model import FINAL, TRANSITIONS, Run, RunStatus, can_move, sources_of, utcnow
from agent_api.runs.service import check_cursor

S = RunStatus
ALLOWED = {
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.FAILED),
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.INTERRUPTED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.INTERRUPTED),
    (S.RUNNING, S.REQUIRES_INPUT),
    (S.REQUIRES_INPUT, S.RUNNING),
    (S.REQUIRES_INPUT, S.FAILED),
    (S.REQUIRES_INPUT, S.CANCELLED),
    (S.REQUIRES_INPUT, S.INTERRUPTED),
}


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_each_transition(current: RunStatus, target: RunStatus) -> None:
    assert can_move(current, target) == ((current, target) in ALLOWED)


def test_final_statuses_go_nowhere_and_every_status_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(S)
    assert all(not TRANSITIONS[s] for s in FINAL)
    assert {s for s in S if s.final} == {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.INTERRUPTED}


def test_sources_feed_the_store_scripts() -> None:
    assert sources_of(S.SUCCEEDED) == ["running"]
    assert sources_of(S.CANCELLED) == ["queued", "requires_input", "running"]
    assert sources_of(S.QUEUED) == []


def test_run_record_round_trips() -> None:
    run = Run("run_x", "owner", "sid", "research", S.QUEUED, utcnow(), "hello", 3, webhook="https://e.x/h")
    run.metadata = {"a": 1}
    assert Run.from_fields(run.to_fields()) == run


def test_tokens_of_one_agent_are_merged_in_order() -> None:
    events: list[RunEvent] = [
        TokenEvent("a", "Hel", "Hel"),
        TokenEvent("a", "lo", "lo"),
        TokenEvent("b", " x", ""),
        ToolCallEvent("b", "c1", "search", "{}"),
        TokenEvent("b", "y", ""),
        TokenEvent("b", "z", ""),
    ]
    out = frames.encode_all("s", events)
    assert [e for e, _ in out] == ["token", "token", "tool_call", "token"]
    data = [json.loads(d) for _, d in out]
    assert (data[0]["text"], data[0]["chunk"], data[0]["agent"]) == ("Hello", "Hello", "a")
    assert (data[1]["text"], data[1]["chunk"]) == (" x", "")
    assert data[3]["text"] == "yz"
    assert all(d["session_id"] == "s" and d["done"] is False for d in data)
    # A lone token's frame is the one encode gives it; no events, no frames.
    assert frames.encode_all("s", events[:1]) == [frames.encode("s", events[0])]
    assert frames.encode_all("s", []) == []


def test_message_and_failure_frames_follow_the_stream_contract() -> None:
    message = ChatMessage(role="assistant", content="hi", timestamp=utcnow(), name="bot")
    event, data = frames.encode("s", MessageEvent(message))
    assert event == "message" and json.loads(data)["message"]["content"] == "hi"
    error, done = frames.failure_frames("s", ModelTimeout(), "failed")
    assert error[0] == "error" and json.loads(error[1])["status"] == 504
    assert json.loads(done[1]) == {
        "session_id": "s",
        "chunk": "",
        "done": True,
        "turns_used": 0,
        "finished": False,
        "run_status": "failed",
    }


@pytest.mark.parametrize("cursor", ["0", "1732000000000-0", "1-99"])
def test_event_ids_are_accepted(cursor: str) -> None:
    assert check_cursor(cursor, ["query", "after"]) == cursor


@pytest.mark.parametrize("cursor", ["", "-1", "abc", "1-", "$", "1-0 ", "1" * 30 + "-0"])
def test_anything_else_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidField):
        check_cursor(cursor, ["query", "after"])
