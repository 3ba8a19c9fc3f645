"""The AG-UI encoder: a run's frames to AG-UI events, checked against the protocol's models."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ag_ui.core import Event, EventType, RunAgentInput
from pydantic import TypeAdapter

from agent_api.protocols import agui

EVENT = TypeAdapter(Event)


def frame(event: str, **data: Any) -> tuple[str, str]:
    return event, json.dumps({"session_id": "s", "chunk": "", "done": False, **data})


def decode(lines: list[str]) -> list[Any]:
    assert all(line.startswith("data: ") and line.endswith("\n\n") for line in lines)
    return [EVENT.validate_json(line[6:]) for line in lines]


def encode(frames: list[tuple[str, str]]) -> list[Any]:
    encoder = agui.AgUiEncoder("thread", "run")
    lines = encoder.start()
    for event, data in frames:
        lines += encoder.feed(event, data)
    return decode(lines)


def message(agent: str, content: str, role: str = "assistant") -> dict[str, Any]:
    return {"role": role, "content": content, "name": agent, "timestamp": "2026-12-01T00:00:00Z"}


def test_a_message_without_tokens_is_sent_whole() -> None:
    events = encode(
        [
            frame("session", run_id="run"),
            frame("message", agent="writer", message=message("writer", "cached answer")),
            frame("done", done=True, run_status="succeeded", response="cached answer"),
        ]
    )
    assert [e.type for e in events] == [
        EventType.RUN_STARTED,
        EventType.STEP_STARTED,
        EventType.TEXT_MESSAGE_START,
        EventType.TEXT_MESSAGE_CONTENT,
        EventType.TEXT_MESSAGE_END,
        EventType.STEP_FINISHED,
        EventType.RUN_FINISHED,
    ]
    assert events[3].delta == "cached answer" and events[-1].result == "cached answer"


def test_speakers_change_steps_and_tool_calls_belong_to_their_message() -> None:
    events = encode(
        [
            frame("token", agent="researcher", text="Let me ", chunk=""),
            frame("tool_call", agent="researcher", tool_call={"id": "c1", "name": "calculator", "arguments": "{}"}),
            frame("message", agent="researcher", message=message("researcher", "Let me")),
            frame("tool_result", agent="user", tool_result={"id": "c1", "content": "42"}),
            frame("message", agent="user", message=message("user", "42", role="tool")),
            frame("token", agent="writer", text="It is 42.", chunk="It is 42."),
            frame("message", agent="writer", message=message("writer", "It is 42.")),
            frame("done", done=True, run_status="succeeded", response="It is 42."),
        ]
    )
    kinds = [e.type.value for e in events]
    assert kinds == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_RESULT",
        "STEP_FINISHED",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    assert events[4].parent_message_id == events[2].message_id
    assert [e.step_name for e in events if e.type == EventType.STEP_STARTED] == ["researcher", "writer"]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (
            [
                frame("error", detail="The model failed.", status=502, error_type="upstream_error"),
                frame("done", done=True, run_status="failed"),
            ],
            "upstream_error",
        ),
        ([frame("done", done=True, run_status="cancelled")], "cancelled"),
    ],
)
def test_a_run_that_does_not_succeed_ends_with_run_error(frames: list[tuple[str, str]], code: str) -> None:
    events = encode([frame("token", agent="writer", text="half", chunk="half"), *frames])
    assert [e.type for e in events][-3:] == [EventType.TEXT_MESSAGE_END, EventType.STEP_FINISHED, EventType.RUN_ERROR]
    assert events[-1].code == code


def test_the_new_message_is_the_last_users() -> None:
    def make(*messages: dict[str, Any]) -> RunAgentInput:
        return RunAgentInput.model_validate({"threadId": "t", "runId": "r", "messages": list(messages)})

    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert agui.user_message(make({"id": "1", "role": "user", "content": parts})) == "ab"
    for bad in (
        make(),
        make({"id": "1", "role": "user", "content": "q"}, {"id": "2", "role": "assistant", "content": "a"}),
        make({"id": "1", "role": "user", "content": "  "}),
    ):
        with pytest.raises(agui.AgUiInputError):
            agui.user_message(bad)
