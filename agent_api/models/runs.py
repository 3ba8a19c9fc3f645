"""Request and response bodies of the run routes (``/runs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from agent_api.models.chat import MAX_MESSAGE_CHARS, AgentRequest, ChatMessage, Usage

RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RunStatusName = Literal["queued", "running", "requires_input", "succeeded", "failed", "cancelled", "interrupted"]
MAX_METADATA_BYTES = 4096
# A Redis Stream id: two 64-bit numbers. 19 digits each always fit; 20 may overflow (Redis refuses).
EVENT_ID_PATTERN = r"^(0|[0-9]{1,19}-[0-9]{1,19})$"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
WEBHOOK_URL_PATTERN = rf"^https?://[A-Za-z0-9.-]+(:{_PORT})?(/[^\s]*)?$"


class RunRequest(AgentRequest):
    """A run to start in the background: the ``/chat`` body plus a webhook and metadata."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"message": "Summarise the causes of coral bleaching.", "webhook": "https://example.com/hooks/runs"},
                {"message": "And the remedies?", "session_id": "4Jk0y6mXQ2m1xS9vT3Zr8w", "if_busy": "enqueue"},
            ]
        },
    )

    stream: bool = Field(default=True, description="Record the model's tokens in the run's events as they come.")
    webhook: str | None = Field(
        default=None,
        max_length=2048,
        pattern=WEBHOOK_URL_PATTERN,
        description="POST the final run here when it ends, signed per Standard Webhooks. URLs on loopback, "
        "private or link-local addresses are refused unless the operator allows them.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Your own data, kept with the run (≤ 4 KB).")

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        import json

        if len(json.dumps(value).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes once encoded as JSON")
        return value


INPUT_REQUEST_ID_PATTERN = r"^req_[A-Za-z0-9_-]{1,32}$"


class ToolCallInfo(BaseModel):
    """A tool call waiting for approval, as the model made it."""

    id: str
    name: str
    arguments: str = Field(description="The arguments as the model wrote them (JSON text).")


class InputRequestInfo(BaseModel):
    """What a run waiting for a person (``requires_input``) asks."""

    request_id: str = Field(description="Answer this request with POST /runs/{run_id}/input.")
    kind: Literal["message", "approval"] = Field(
        description="message: write the team's next user message; approval: allow or deny a tool call."
    )
    prompt: str = Field(description="The agent's message the person answers, or the tool call to approve.")
    agent: str = Field(description="The agent asking.")
    tool_call: ToolCallInfo | None = Field(default=None, description="approval: the call that waits.")


_REQUEST_ID = Field(pattern=INPUT_REQUEST_ID_PATTERN, description="The pending request's id.")
_CONTENT_DESCRIPTION = (
    "The person's words for the team. Empty lets the team go on by itself (or accepts a final answer); "
    "'exit' ends the conversation."
)


class MessageAnswer(BaseModel):
    """The answer to a ``message`` request."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        title="Message answer",
        json_schema_extra={"examples": [{"request_id": "req_4Jk0y6mXQ2m1xS9v", "content": "Paris, keep it short."}]},
    )

    request_id: str = _REQUEST_ID
    content: str = Field(max_length=MAX_MESSAGE_CHARS, description=_CONTENT_DESCRIPTION)


class ApprovalAnswer(BaseModel):
    """The answer to an ``approval`` request."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        title="Approval answer",
        json_schema_extra={
            "examples": [{"request_id": "req_4Jk0y6mXQ2m1xS9v", "approved": False, "reason": "Not on live data."}]
        },
    )

    request_id: str = _REQUEST_ID
    approved: bool = Field(description="true runs the tool call; false refuses it (it never runs).")
    reason: str | None = Field(default=None, max_length=1000, description="Why, for the agent to read with a refusal.")


def _answer_kind(value: Any) -> str:
    return "approval" if isinstance(value, dict) and "approved" in value else "message"


# The body of POST /runs/{run_id}/input: an approval when it has ``approved``, else a message (so
# a refused body is explained by the one shape it was meant to be).
AnswerBody = Annotated[
    Annotated[MessageAnswer, Tag("message")] | Annotated[ApprovalAnswer, Tag("approval")],
    Discriminator(_answer_kind),
]


class InputAnswer(BaseModel):
    """A person's answer to the request a run waits on: ``content`` for a message, ``approved`` for an approval.

    (The HTTP body is :class:`MessageAnswer` or :class:`ApprovalAnswer`; every way in turns its own
    shape into this.)
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"request_id": "req_4Jk0y6mXQ2m1xS9v", "content": "Paris, and keep it short."},
                {"request_id": "req_4Jk0y6mXQ2m1xS9v", "approved": False, "reason": "Not on the live system."},
            ]
        },
    )

    request_id: str = Field(pattern=INPUT_REQUEST_ID_PATTERN, description="The pending request's id.")
    content: str | None = Field(
        default=None,
        max_length=MAX_MESSAGE_CHARS,
        description="message: the person's words for the team. Empty lets the team go on by itself (or end, "
        "after a final answer); 'exit' ends the conversation.",
    )
    approved: bool | None = Field(default=None, description="approval: true runs the tool call, false refuses it.")
    reason: str | None = Field(
        default=None, max_length=1000, description="approval: why, for the agent to read with a refusal."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> InputAnswer:
        if (self.content is None) == (self.approved is None):
            raise ValueError("give either content (to answer a message request) or approved (for an approval)")
        if self.reason is not None and self.approved is None:
            raise ValueError("reason goes with approved")
        return self

    @property
    def kind(self) -> Literal["message", "approval"]:
        return "message" if self.content is not None else "approval"


class RunResult(BaseModel):
    """What a succeeded run produced."""

    response: str
    messages: list[ChatMessage]
    usage: Usage
    turns_used: int
    finished: bool
    cached: bool = False


class RunError(BaseModel):
    """Why a run did not succeed: a type and a sentence for people (never internals)."""

    type: str = Field(description="e.g. upstream_timeout, upstream_error, agent, worker_lost, cancelled.")
    detail: str


class RunResponse(BaseModel):
    """A run: one turn of one team on one session, and how it went."""

    run_id: str
    session_id: str
    team: str
    status: RunStatusName
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhook: str | None = None
    stateless: bool | None = Field(
        default=None,
        description="True for a stateless run (an OpenAI-style completion): it brought its own history and saved "
        "nothing; its session_id names no stored session.",
    )
    input_request: InputRequestInfo | None = Field(
        default=None, description="When requires_input: what the run waits on (answer with POST /runs/{run_id}/input)."
    )
    result: RunResult | None = Field(default=None, description="When succeeded.")
    error: RunError | None = Field(default=None, description="When failed, cancelled or interrupted.")


class KeyRunList(BaseModel):
    """The calling key's runs, newest first."""

    runs: list[RunResponse]


class RunList(BaseModel):
    """A session's runs, newest first."""

    session_id: str
    runs: list[RunResponse]
