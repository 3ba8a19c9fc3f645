"""The AG-UI encoder: a run's frames to AG-UI events, checked against the protocol's models."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from ag_ui.core import Event, EventType, ResumeEntry, RunAgentInput
from pydantic import TypeAdapter

from agent_api.agents.tokens import REPLY_SEPARATOR
from agent_api.protocols import agui

EVENT: TypeAdapter[Any] = TypeAdapter(cast(Any, Event))  # Event is an annotated union, not a class


def frame(event: str, **data: Any) -> tuple[str, str]:
    return event, json.dumps({"session_id": "s", "chunk": "", "done": False, **data})


def decode(lines: list[str]) -> list[Any]:
    assert all(line.startswith("data: ") and line.endswith("\n\n") for line in lines)
    return [EVENT.validate_json(line[6:]) for line in lines]


def encode(frames: list[tuple[str, str]], encoder: agui.AgUiEncoder | None = None) -> list[Any]:
    encoder = encoder or agui.AgUiEncoder("thread", "run")
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
        ([frame("done", done=True, run_status="failed")], "failed"),
    ],
)
def test_a_run_that_fails_ends_with_run_error(frames: list[tuple[str, str]], code: str) -> None:
    events = encode([frame("token", agent="writer", text="half", chunk="half"), *frames])
    assert [e.type for e in events][-3:] == [EventType.TEXT_MESSAGE_END, EventType.STEP_FINISHED, EventType.RUN_ERROR]
    assert events[-1].code == code


def test_a_run_stopped_mid_message_closes_it_and_finishes_cancelled() -> None:
    events = encode([frame("token", agent="writer", text="half", chunk="half"), frame("done", run_status="cancelled")])
    assert [e.type for e in events][-3:] == [
        EventType.TEXT_MESSAGE_END,
        EventType.STEP_FINISHED,
        EventType.RUN_FINISHED,
    ]
    assert events[-1].outcome.type == "cancelled"


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


# -- interrupts ------------------------------------------------------------------------------
ASKED_AT = "1796182466307-0"  # the input_request event's id: written at 1796182466.307 s (UTC)


def input_request(kind: str = "message", **extra: Any) -> tuple[str, str]:
    request = {"request_id": "req_abc", "kind": kind, "prompt": "Is that all?", "agent": "concierge", **extra}
    return frame("input_request", run_id="run", agent=request["agent"], input_request=request)


def test_a_run_that_asks_a_person_ends_with_an_interrupt() -> None:
    encoder = agui.AgUiEncoder("thread", "run", input_timeout=3600)
    lines = encoder.start()
    for event, data in [
        frame("token", agent="concierge", text="Paris.", chunk="Paris."),
        frame("message", agent="concierge", message=message("concierge", "Paris.")),
    ]:
        lines += encoder.feed(event, data)
    lines += encoder.feed(*input_request(), ASKED_AT)
    assert encoder.ended
    assert encoder.feed(*frame("input_response", run_id="run", input_response={})) == []  # this AG-UI run is over
    events = decode(lines)
    assert [e.type.value for e in events][-3:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]
    finished = events[-1]
    assert finished.run_id == "run" and finished.result is None and finished.outcome.type == "interrupt"
    (interrupt,) = finished.outcome.interrupts
    assert interrupt.id == "req_abc" and interrupt.reason == "input_required" and interrupt.message == "Is that all?"
    assert interrupt.tool_call_id is None and interrupt.response_schema == agui.MESSAGE_SCHEMA
    assert interrupt.expires_at == "2026-12-02T04:34:26Z"  # an hour after it asked, to the second
    assert interrupt.metadata == {"agent": "concierge", "serviceRunId": "run"}
    wire = json.loads(lines[-1][6:])["outcome"]["interrupts"][0]  # camelCase, nothing null
    assert set(wire) == {"id", "reason", "message", "responseSchema", "expiresAt", "metadata"}


def test_an_approval_names_the_call_and_its_resumed_run_gives_the_result() -> None:
    call = {"id": "c1", "name": "calculator", "arguments": '{"expression": "6*7"}'}
    events = encode(
        [
            frame("tool_call", agent="calculator_agent", tool_call=call),
            frame("message", agent="calculator_agent", message=message("calculator_agent", "")),
            input_request("approval", prompt="calculator_agent wants to run calculator.", tool_call=call),
        ]
    )
    assert [e.type.value for e in events] == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    (interrupt,) = events[-1].outcome.interrupts
    assert interrupt.reason == "tool_call" and interrupt.tool_call_id == "c1" == events[2].tool_call_id
    assert interrupt.response_schema == agui.APPROVAL_SCHEMA and interrupt.expires_at is None  # no timeout given
    # the AG-UI run that resumes it: its own runId, the same run of the service behind it
    resumed = agui.AgUiEncoder("thread", "run-2", service_run_id="run")
    events = encode(
        [
            frame("input_response", run_id="run", input_response={"request_id": "req_abc", "approved": True}),
            frame("tool_result", agent="user", tool_result={"id": "c1", "content": "42"}),
            frame("message", agent="user", message=message("user", "42", role="tool")),
            frame("token", agent="calculator_agent", text="It is 42.", chunk="It is 42."),
            frame("done", done=True, run_status="succeeded", response="It is 42."),
        ],
        resumed,
    )
    assert [e.type.value for e in events][:2] == ["RUN_STARTED", "TOOL_CALL_RESULT"]
    assert events[0].run_id == events[-1].run_id == "run-2"
    assert events[1].tool_call_id == "c1" and events[-1].result == "It is 42." and events[-1].outcome is None


def test_a_reply_after_the_first_opens_its_own_message_without_the_separator() -> None:
    assert agui.REPLY_SEPARATOR == REPLY_SEPARATOR
    events = encode(
        [
            frame("token", agent="concierge", text="First.", chunk="First."),
            frame("message", agent="concierge", message=message("concierge", "First.")),
            frame("token", agent="concierge", text=REPLY_SEPARATOR + "Second", chunk=REPLY_SEPARATOR + "Second"),
            frame("token", agent="concierge", text=" reply.", chunk=" reply."),
        ]
    )
    starts = [e for e in events if e.type == EventType.TEXT_MESSAGE_START]
    assert len(starts) == 2
    second = [
        e.delta for e in events if e.type == EventType.TEXT_MESSAGE_CONTENT and e.message_id == starts[1].message_id
    ]
    assert second == ["Second", " reply."]


@pytest.mark.parametrize("status", ["cancelled", "interrupted"])
def test_a_stopped_run_finishes_cancelled_not_failed(status: str) -> None:
    stopped = [
        frame("error", detail=f"The run was {status}.", status=409, error_type=status),
        frame("done", done=True, run_status=status),
    ]
    events = encode(stopped, agui.AgUiEncoder("thread", "run-2"))
    assert [e.type for e in events] == [EventType.RUN_STARTED, EventType.RUN_FINISHED]
    assert events[-1].outcome.type == "cancelled" and events[-1].result is None
    # the error frame is the end already (done follows it); a failure stays RUN_ERROR
    alone = encode(stopped[:1], agui.AgUiEncoder("thread", "run-2"))
    assert alone[-1].type == EventType.RUN_FINISHED
    other = [frame("error", detail="The model failed.", status=502, error_type="upstream_error")]
    assert encode(other, agui.AgUiEncoder("t", "r"))[-1].type == EventType.RUN_ERROR


def test_run_started_declares_the_protocol_version() -> None:
    (started,) = encode([])
    assert started.protocol_version == "1.0"


def make_input(**fields: Any) -> RunAgentInput:
    return RunAgentInput.model_validate({"threadId": "t", "runId": "r", "messages": [], **fields})


def test_a_resume_answers_one_interrupt() -> None:
    assert agui.resume_entry(make_input()) is None
    assert agui.resume_entry(make_input(resume=[])) is None
    entry = {"interruptId": "req_abc", "status": "resolved", "payload": "yes"}
    assert agui.resume_entry(make_input(resume=[entry])) == ResumeEntry.model_validate(entry)
    with pytest.raises(agui.AgUiInputError) as refused:
        agui.resume_entry(make_input(resume=[entry, {**entry, "interruptId": "req_def"}]))
    assert refused.value.loc == ["resume"]


MESSAGE_REQUEST = {"request_id": "req_abc", "kind": "message"}
APPROVAL_REQUEST = {"request_id": "req_abc", "kind": "approval"}


@pytest.mark.parametrize(
    ("request_", "payload", "answer"),
    [
        (MESSAGE_REQUEST, "Paris", {"content": "Paris"}),
        (MESSAGE_REQUEST, "", {"content": ""}),
        (MESSAGE_REQUEST, {"content": "exit"}, {"content": "exit"}),
        (APPROVAL_REQUEST, True, {"approved": True}),
        (APPROVAL_REQUEST, {"approved": False}, {"approved": False}),
        (APPROVAL_REQUEST, {"approved": False, "reason": "Not now."}, {"approved": False, "reason": "Not now."}),
    ],
)
def test_a_payload_becomes_the_answer(request_: dict[str, Any], payload: Any, answer: dict[str, Any]) -> None:
    entry = ResumeEntry(interrupt_id="req_abc", status="resolved", payload=payload)
    assert agui.input_answer(entry, request_).model_dump(exclude_none=True) == {"request_id": "req_abc", **answer}


@pytest.mark.parametrize(
    ("request_", "payload"),
    [
        (MESSAGE_REQUEST, None),
        (MESSAGE_REQUEST, True),
        (MESSAGE_REQUEST, {"approved": True}),
        (MESSAGE_REQUEST, {"content": "x", "to": "y"}),
        (MESSAGE_REQUEST, "x" * 4001),
        (APPROVAL_REQUEST, None),
        (APPROVAL_REQUEST, "yes"),
        (APPROVAL_REQUEST, {"approve": True}),  # misspelt: neither an approval nor a refusal
        (APPROVAL_REQUEST, {"approved": "true"}),
        (APPROVAL_REQUEST, {"approved": False, "reason": "x" * 1001}),
    ],
)
def test_a_payload_of_another_shape_is_refused(request_: dict[str, Any], payload: Any) -> None:
    entry = ResumeEntry(interrupt_id="req_abc", status="resolved", payload=payload)
    with pytest.raises(agui.AgUiInputError) as refused:
        agui.input_answer(entry, request_)
    assert refused.value.loc == ["resume", 0, "payload"]
