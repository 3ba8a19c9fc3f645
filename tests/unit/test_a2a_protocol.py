"""The A2A mapping: runs as tasks, run frames as task updates (the a2a-sdk's own types)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from a2a.types.a2a_pb2 import Message, Part, TaskState

from agent_api.protocols import a2a
from agent_api.runs.model import Run, RunStatus


def run(status: RunStatus, **fields: Any) -> Run:
    return Run(
        id="run_1",
        owner="k",
        session_id="s1",
        team="research",
        status=status,
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        message="What is a tide?",
        max_turns=5,
        **fields,
    )


@pytest.mark.parametrize("status", list(RunStatus))
def test_every_run_status_is_a_task_state(status: RunStatus) -> None:
    task = a2a.task(run(status))
    assert task.id == "run_1" and task.context_id == "s1" and task.status.state == a2a.STATES[status]
    assert task.history[0].parts[0].text == "What is a tide?"


def test_a_succeeded_run_carries_its_answer_and_a_failed_one_its_error() -> None:
    done = a2a.task(run(RunStatus.SUCCEEDED, result={"response": "Tides are ...", "finished": True}))
    assert done.artifacts[0].parts[0].text == "Tides are ..." and done.status.message.parts[0].text == "Tides are ..."
    assert [m.parts[0].text for m in done.history] == ["What is a tide?", "Tides are ..."]
    assert [
        m.parts[0].text for m in a2a.task(run(RunStatus.SUCCEEDED, result={"response": "x"}), history_length=1).history
    ] == ["x"]
    failed = a2a.task(run(RunStatus.FAILED, error={"type": "upstream_error", "detail": "The model failed."}))
    assert failed.status.message.parts[0].text == "The model failed. (upstream_error)" and not failed.artifacts


def frame(event: str, **data: Any) -> tuple[str, str]:
    return event, json.dumps({"session_id": "s1", "chunk": "", "done": False, **data})


def test_stream_events() -> None:
    encoder = a2a.StreamEncoder(run(RunStatus.RUNNING))
    events = [
        e
        for event, data in [
            frame("session"),
            frame("token", agent="researcher", text="notes", chunk=""),
            frame("token", agent="writer", text="Tides", chunk="Tides"),
            frame("token", agent="writer", text=" rise.", chunk=" rise."),
            frame("done", done=True, run_status="succeeded", response="Tides rise."),
        ]
        for e in encoder.feed(event, data)
    ]
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "TaskStatusUpdateEvent",  # researcher is working
        "TaskStatusUpdateEvent",  # writer is working
        "TaskArtifactUpdateEvent",
        "TaskArtifactUpdateEvent",
        "TaskArtifactUpdateEvent",  # the last chunk
        "TaskStatusUpdateEvent",  # completed
    ]
    chunks = [e for e in events if type(e).__name__ == "TaskArtifactUpdateEvent"]
    assert "".join(c.artifact.parts[0].text for c in chunks) == "Tides rise."  # type: ignore[union-attr]
    assert [c.append for c in chunks] == [False, True, True] and chunks[-1].last_chunk  # type: ignore[union-attr]
    assert events[-1].status.state == TaskState.TASK_STATE_COMPLETED  # type: ignore[union-attr]


def test_a_cancelled_run_ends_the_stream_canceled() -> None:
    encoder = a2a.StreamEncoder(run(RunStatus.RUNNING))
    (last,) = encoder.feed(*frame("done", done=True, run_status="cancelled"))
    assert last.status.state == TaskState.TASK_STATE_CANCELED  # type: ignore[union-attr]
    assert encoder.feed(*frame("token", agent="w", chunk="late")) == []


def test_only_text_messages() -> None:
    with pytest.raises(a2a.A2AInputError):
        a2a.message_text(Message(parts=[Part(url="https://example.com/x.png")]))
    with pytest.raises(a2a.A2AInputError):
        a2a.message_text(Message(parts=[Part(text="  ")]))
    assert a2a.message_text(Message(parts=[Part(text="a"), Part(text="b")])) == "ab"
