"""The pure parts of human input: the answer body, a run's wait in its thread, the approval guard."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import ValidationError

from agent_api.agents.ag2 import approval_required, refusal
from agent_api.agents.events import InputReply, InputRequest
from agent_api.agents.run import TeamRun
from agent_api.errors import RunCancelled
from agent_api.models.runs import InputAnswer


def _run(answer: InputReply | None, on_ask: threading.Event | None = None) -> tuple[TeamRun, list[InputRequest]]:
    """A run whose requests are recorded and, if ``answer`` is given, answered at once."""
    asked: list[InputRequest] = []
    run = TeamRun(message="m", history=[], max_turns=3, llm_config={})

    def emit(event: Any) -> None:
        if isinstance(event, InputRequest):
            asked.append(event)
            if answer is not None:
                event.reply.set_result(answer)
            if on_ask is not None:
                on_ask.set()

    run.emit = emit
    return run, asked


def test_an_answer_is_either_a_message_or_an_approval() -> None:
    assert InputAnswer.model_validate({"request_id": "req_a", "content": ""}).kind == "message"
    approval = InputAnswer.model_validate({"request_id": "req_a", "approved": False, "reason": "no"})
    assert approval.kind == "approval" and approval.reason == "no"
    for body in (
        {"request_id": "req_a"},
        {"request_id": "req_a", "content": "x", "approved": True},
        {"request_id": "req_a", "content": "x", "reason": "r"},
        {"request_id": "req_a", "approved": 1},
        {"request_id": "run_a", "approved": True},
    ):
        with pytest.raises(ValidationError):
            InputAnswer.model_validate(body)


def test_a_guarded_tool_runs_only_when_approved() -> None:
    calls: list[int] = []

    def add(a: int, b: int) -> int:
        calls.append(a + b)
        return a + b

    run, asked = _run(InputReply(approved=True))
    run.pending_calls.append({"id": "call_1", "name": "add", "arguments": '{"a": 1, "b": 2}'})
    assert approval_required(run, "adder", "add", add)(a=1, b=2) == 3
    assert asked[0].kind == "approval" and asked[0].agent == "adder"
    assert asked[0].tool_call == {"id": "call_1", "name": "add", "arguments": '{"a": 1, "b": 2}'}
    assert asked[0].describe()["tool_call"]["id"] == "call_1" and not run.pending_calls

    run, asked = _run(InputReply(approved=False, reason="too big"))
    assert approval_required(run, "adder", "add", add)(a=5, b=5) == refusal("add", "too big")
    assert calls == [3]  # the denied call never ran
    assert asked[0].tool_call == {"id": "", "name": "add", "arguments": '{"a": 5, "b": 5}'}


def test_a_cancel_wakes_a_run_waiting_for_a_person() -> None:
    on_ask = threading.Event()
    run, asked = _run(None, on_ask)
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            run.ask("message", "Which one?", "helper")
        except RunCancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    assert on_ask.wait(5) and asked[0].prompt == "Which one?"
    run.cancelled.set()
    run.stop_waiting()
    thread.join(5)
    assert not thread.is_alive() and len(outcome) == 1


def test_a_cancelled_run_does_not_ask() -> None:
    run, asked = _run(InputReply(content="late"))
    run.cancelled.set()
    with pytest.raises(RunCancelled):
        run.ask("message", "?", "helper")
    assert asked == []
