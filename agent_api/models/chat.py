"""Request and response bodies of ``POST /chat``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_MESSAGE_CHARS = 4000
NOT_BLANK = r"\S"  # at least one character that is not whitespace
Role = Literal["user", "assistant", "tool", "system"]


def message_problem(text: str) -> str | None:
    """Why ``text`` cannot be a user's message (the rules of ``AgentRequest.message``), or None.

    For the protocols, which take the message out of their own request shapes and must refuse it
    in their own words before an ``AgentRequest`` is built.
    """
    if not text.strip():
        return "The user's message is empty."
    if len(text) > MAX_MESSAGE_CHARS:
        return f"The user's message is longer than {MAX_MESSAGE_CHARS} characters."
    return None


def _integral(value: object) -> object:
    # JSON has one number type: 5.0 is the integer 5 to JSON Schema (and to this API's OpenAPI
    # schema), so it is accepted as 5. 5.5, "5" and true are not integers and stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JSONInteger = Annotated[int, BeforeValidator(_integral)]


class Usage(BaseModel):
    """Model tokens spent on one run, as the model reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class ChatMessage(BaseModel):
    """One message of a conversation, as stored in the session and returned to callers."""

    role: Role
    content: str
    timestamp: datetime
    name: str | None = Field(default=None, description="The agent (or user) that wrote the message.")
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class AgentRequest(BaseModel):
    """One user turn sent to a team of agents."""

    # Strict: a wrong type is a 422, never coerced ("5" or true for max_turns, "yes" for stream).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"message": "What are the main causes of coral bleaching?"},
                {"message": "And what can be done about it?", "session_id": "4Jk0y6mXQ2m1xS9vT3Zr8w", "max_turns": 3},
            ]
        },
    )

    message: str = Field(
        min_length=1,
        max_length=MAX_MESSAGE_CHARS,
        pattern=NOT_BLANK,
        description="The user's message (not only whitespace).",
    )
    session_id: str | None = Field(
        default=None,
        pattern=SESSION_ID_PATTERN,
        description="Continue this session; omit to start a new one.",
    )
    max_turns: JSONInteger = Field(default=5, ge=1, le=20, description="Upper bound on agent replies in this run.")
    stream: bool = Field(default=False, description="Answer with a Server-Sent-Events stream instead of JSON.")
    agent: str = Field(default="research", min_length=1, max_length=64, description="The team to run.")
    if_busy: Literal["reject", "enqueue", "interrupt", "rollback"] = Field(
        default="reject",
        description="If the session is running another turn: answer 409 (reject), wait for it (enqueue), "
        "stop it and discard its partial turn (interrupt), or stop and delete it (rollback).",
    )
    on_disconnect: Literal["cancel", "continue"] = Field(
        default="cancel",
        description="If the client goes away before the answer: stop the run (cancel), or let it finish and "
        "save its turn (continue); re-attach with GET /runs/{run_id}/events.",
    )


class AgentResponse(BaseModel):
    """The outcome of one run: the final answer and every message the run added."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "session_id": "4Jk0y6mXQ2m1xS9vT3Zr8w",
                    "response": "Coral bleaching is mainly caused by marine heatwaves ...",
                    "turns_used": 1,
                    "messages": [
                        {
                            "role": "user",
                            "content": "What are the main causes of coral bleaching?",
                            "timestamp": "2026-11-23T10:00:00Z",
                            "name": "user",
                        },
                        {
                            "role": "assistant",
                            "content": "Coral bleaching is mainly caused by marine heatwaves ...",
                            "timestamp": "2026-11-23T10:00:02Z",
                            "name": "research_assistant",
                        },
                    ],
                    "finished": True,
                    "agent": "research",
                    "usage": {"prompt_tokens": 152, "completion_tokens": 87, "total_tokens": 239},
                }
            ]
        }
    )

    session_id: str
    response: str = Field(description="The team's final answer.")
    turns_used: int = Field(description="Agent replies produced in this run.")
    messages: list[ChatMessage] = Field(description="The messages this run added to the session, in order.")
    finished: bool = Field(
        description="True when the team ended the conversation itself, false when max_turns ran out."
    )
    agent: str
    usage: Usage
    cached: bool = Field(default=False, description="True when the answer came from the response cache.")
    run_id: str | None = Field(default=None, description="The run that produced this answer (see /runs).")
