"""The frames of ``POST /chat/stream`` (Server-Sent Events)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agent_api.models.chat import ChatMessage, Usage

FrameType = Literal[
    "session",
    "token",
    "message",
    "tool_call",
    "tool_result",
    "input_request",
    "input_response",
    "usage",
    "error",
    "done",
]


class StreamFrameData(BaseModel):
    """The JSON ``data`` of every frame.

    ``session_id``, ``chunk`` and ``done`` are always present, so a client written for the plain
    StreamChunk contract (append ``chunk`` until ``done``) works unchanged; the other fields
    appear on the frames they belong to.
    """

    session_id: str
    chunk: str = Field(default="", description="Text of the final answer carried by this frame.")
    done: bool = False
    run_id: str | None = Field(default=None, description="session: the run this stream belongs to.")
    agent: str | None = Field(default=None, description="The agent this frame is about.")
    text: str | None = Field(default=None, description="token: the text the agent produced (any agent).")
    message: ChatMessage | None = Field(default=None, description="message: an agent's complete message.")
    tool_call: dict[str, Any] | None = None
    tool_result: dict[str, Any] | None = None
    input_request: dict[str, Any] | None = Field(
        default=None,
        description="input_request: the run waits for a person ({request_id, kind, prompt, agent, tool_call?}); "
        "answer with POST /runs/{run_id}/input.",
    )
    input_response: dict[str, Any] | None = Field(
        default=None,
        description="input_response: the request was answered ({request_id, kind, approved?}); the run goes on.",
    )
    response: str | None = Field(default=None, description="done: the final answer.")
    turns_used: int | None = None
    finished: bool | None = None
    usage: Usage | None = None
    cached: bool | None = Field(default=None, description="done: true when the answer came from the response cache.")
    detail: str | None = Field(default=None, description="error: what failed, for people.")
    status: int | None = Field(default=None, description="error: the HTTP status /chat would have answered.")
    error_type: str | None = None
    run_status: str | None = Field(
        default=None, description="done: how the run ended (succeeded, failed, cancelled, interrupted)."
    )


class StreamFrame(BaseModel):
    """One Server-Sent Event: its type and its data."""

    event: FrameType
    data: StreamFrameData
