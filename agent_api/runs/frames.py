"""The run's event log format: the frames of ``/chat/stream``, as (event type, JSON data) pairs.

A run's events are encoded once, when they are written, and served as they are to every
follower (``/chat/stream``, ``/runs/{id}/events``). Token frames, the hot path, are built as
plain dicts and serialized with orjson; the rarer ones go through :class:`StreamFrameData` so
their shape is the documented one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from agent_api.agents.events import MessageEvent, RunEvent, RunOutcome, TokenEvent, ToolCallEvent, ToolResultEvent
from agent_api.errors import AgentAPIError
from agent_api.models.stream import StreamFrameData

Frame = tuple[str, str]


def frame(event: str, session_id: str, **fields: Any) -> Frame:
    data = StreamFrameData(session_id=session_id, **fields)
    return event, data.model_dump_json(exclude_none=True)


def token(session_id: str, agent: str, text: str, chunk: str) -> Frame:
    return "token", orjson.dumps(
        {"session_id": session_id, "chunk": chunk, "done": False, "agent": agent, "text": text}
    ).decode()


def encode(session_id: str, event: RunEvent) -> Frame:
    """The frame of one event of a running team."""
    if isinstance(event, TokenEvent):
        return token(session_id, event.agent, event.text, event.chunk)
    if isinstance(event, MessageEvent):
        return frame("message", session_id, agent=event.message.name, message=event.message)
    if isinstance(event, ToolCallEvent):
        call = {"id": event.call_id, "name": event.name, "arguments": event.arguments}
        return frame("tool_call", session_id, agent=event.agent, tool_call=call)
    if isinstance(event, ToolResultEvent):
        result = {"id": event.call_id, "content": event.content}
        return frame("tool_result", session_id, agent=event.agent, tool_result=result)
    raise TypeError(f"not a run event: {type(event).__name__}")  # pragma: no cover


def encode_all(session_id: str, events: Sequence[RunEvent]) -> list[Frame]:
    """The frames of a run's events, in order, consecutive tokens of one agent joined into one frame.

    Each frame is encoded once: a token that joins others never gets a frame of its own.
    """
    out: list[Frame] = []
    pending: list[TokenEvent] = []

    def flush() -> None:
        if pending:
            text = "".join(t.text for t in pending)
            out.append(token(session_id, pending[0].agent, text, "".join(t.chunk for t in pending)))
            pending.clear()

    for event in events:
        if isinstance(event, TokenEvent):
            if pending and pending[0].agent != event.agent:
                flush()
            pending.append(event)
        else:
            flush()
            out.append(encode(session_id, event))
    flush()
    return out


def input_request_frame(session_id: str, run_id: str, request: dict[str, Any]) -> str:
    return frame("input_request", session_id, run_id=run_id, agent=request.get("agent"), input_request=request)[1]


def input_response_frame(session_id: str, run_id: str, response: dict[str, Any]) -> str:
    return frame("input_response", session_id, run_id=run_id, input_response=response)[1]


def session_frame(session_id: str, team: str, run_id: str) -> str:
    return frame("session", session_id, agent=team, run_id=run_id)[1]


def success_frames(session_id: str, outcome: RunOutcome, run_status: str) -> list[Frame]:
    return [
        frame("usage", session_id, usage=outcome.usage),
        frame(
            "done",
            session_id,
            done=True,
            response=outcome.response,
            turns_used=outcome.turns_used,
            finished=outcome.finished,
            usage=outcome.usage,
            cached=outcome.cached,
            run_status=run_status,
        ),
    ]


def failure_frames(session_id: str, error: AgentAPIError, run_status: str) -> list[Frame]:
    return [
        frame("error", session_id, detail=error.detail, status=error.status_code, error_type=error.error_type),
        frame("done", session_id, done=True, turns_used=0, finished=False, run_status=run_status),
    ]
