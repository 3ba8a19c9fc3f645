"""OpenAI Chat Completions, as a team speaks it: the request, the answer, the stream's chunks.

Pure functions and models, no HTTP: the router (``routers/openai.py``) creates the run and
follows it; this module turns an OpenAI request into what a run needs, and a run's result or
its event frames into OpenAI's objects. The answer types are the ``openai`` package's own
(``ChatCompletion``, ``ChatCompletionChunk``, ``Model``), so their shape is the SDKs'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agent_api.errors import AgentAPIError
from agent_api.models.chat import ChatMessage, Usage, message_problem

USER = "user"  # the name stored user messages carry (AutoGen's user proxy)


class ChatCompletionRequestError(Exception):
    """A request the service cannot honour; ``param`` is the field at fault, as OpenAI names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


_NO_TOOLS = "Client-side tools are not supported: the team's agents call the tools of its team file."

# The parameters a team cannot honour: the values that are accepted (they change nothing), and why
# the others are refused.
REFUSALS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v in (None, 1), "Only n=1 is supported: a team gives one answer per run."),
    "tools": (lambda v: not v, _NO_TOOLS),
    "functions": (lambda v: not v, _NO_TOOLS),
    "tool_choice": (lambda v: v in (None, "none"), _NO_TOOLS),
    "function_call": (lambda v: v in (None, "none"), _NO_TOOLS),
    "logprobs": (lambda v: not v, "Log probabilities are not available from a team."),
    "top_logprobs": (lambda v: not v, "Log probabilities are not available from a team."),
    "modalities": (lambda v: not v or set(v) <= {"text"}, "Only text output is supported."),
    "response_format": (
        lambda v: v is None or v.get("type") == "text",
        "Only response_format {'type': 'text'} is supported.",
    ),
    "audio": (lambda v: v is None, "Only text output is supported."),
    "prediction": (lambda v: v is None, "Predicted outputs are not supported."),
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: str


class InputMessage(BaseModel):
    """One message of ``messages``: text from the system, the user or the assistant.

    Tool messages and tool calls are refused: a team's agents call the tools of its team file.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: Any = Field(
        default=None,
        json_schema_extra={
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": TextPart.model_json_schema()},
                {"type": "null"},
            ]
        },
        description="A string, or a list of text parts.",
    )
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[Any] | None = Field(default=None, max_length=0, description="Not supported: tools are the team's.")

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> str | list[TextPart] | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
            return [TextPart.model_validate(p) for p in value]
        raise ValueError("Content must be a string or a list of text parts; other parts are not supported.")


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Parameters this service does not use (``top_p``, ``seed``, ...)
    are accepted and ignored, as OpenAI-compatible servers do; the ones it cannot honour are refused
    with a 400 that names them."""

    model_config = ConfigDict(
        extra="ignore",
        strict=True,
        json_schema_extra={"examples": [{"model": "research", "messages": [{"role": "user", "content": "Hello"}]}]},
    )

    model: str = Field(min_length=1, max_length=64, description="The team to run (see GET /v1/models).")
    messages: list[InputMessage] = Field(
        min_length=1, description="The conversation; the last message is the user's new one."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Per model call of the team.")
    max_tokens: int | None = Field(default=None, ge=1, description="Deprecated name of max_completion_tokens.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    user: str | None = Field(default=None, max_length=256, description="Your end user's id, kept with the run.")
    metadata: dict[str, str] | None = Field(default=None, max_length=16, description="Kept with the run.")
    max_turns: int | None = Field(
        default=None, ge=1, le=20, description="Not OpenAI's: upper bound on agent replies in this run (default 5)."
    )
    # What a team cannot honour: only the values that change nothing are accepted (see _refuse).
    n: int | None = Field(default=None, json_schema_extra={"minimum": 1, "maximum": 1}, description="Only 1.")
    tools: list[Any] | None = Field(default=None, json_schema_extra={"maxItems": 0}, description="Not supported.")
    functions: list[Any] | None = Field(default=None, json_schema_extra={"maxItems": 0}, description="Not supported.")
    tool_choice: Any = Field(default=None, json_schema_extra={"enum": ["none", None]}, description="Only 'none'.")
    function_call: Any = Field(default=None, json_schema_extra={"enum": ["none", None]}, description="Only 'none'.")
    logprobs: bool | None = Field(default=None, json_schema_extra={"enum": [False, None]}, description="Only false.")
    top_logprobs: int | None = Field(default=None, json_schema_extra={"maximum": 0}, description="Only 0.")
    modalities: list[str] | None = Field(
        default=None, json_schema_extra={"items": {"enum": ["text"]}}, description="Only text."
    )
    response_format: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"properties": {"type": {"enum": ["text"]}}, "required": ["type"]},
        description="Only {'type': 'text'}.",
    )
    audio: Any = Field(default=None, json_schema_extra={"type": "null"}, description="Not supported.")
    prediction: Any = Field(default=None, json_schema_extra={"type": "null"}, description="Not supported.")

    @field_validator(*REFUSALS, mode="after")
    @classmethod
    def _refuse(cls, value: Any, info: ValidationInfo) -> Any:
        accepted, reason = REFUSALS[str(info.field_name)]
        if not accepted(value):
            raise ValueError(reason)
        return value


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


@dataclass(frozen=True)
class Conversation:
    """``messages`` split into what the team has seen (``history``) and the new user message."""

    history: list[ChatMessage]
    message: str


def conversation(messages: list[InputMessage], *, answerer: str, now: datetime | None = None) -> Conversation:
    """The team's view of ``messages``: the last is the user's new message, the rest its history.

    System and developer messages stay system messages; assistant messages are attributed to the
    team's answering agent (``answerer``), since a client's history shows only the answers.
    """
    when = now or datetime.now(UTC)
    history: list[ChatMessage] = []
    for message in messages:
        text = _text(message.content)
        if message.role in ("system", "developer"):
            history.append(ChatMessage(role="system", content=text, timestamp=when))
        elif message.role == "user":
            history.append(ChatMessage(role="user", content=text, name=USER, timestamp=when))
        else:
            history.append(ChatMessage(role="assistant", content=text, name=answerer, timestamp=when))
    last = history.pop()
    where = f"messages[{len(messages) - 1}]"
    if last.role != "user":
        raise ChatCompletionRequestError(where, "The last message must be the user's (role 'user').")
    problem = message_problem(last.content)
    if problem is not None:
        raise ChatCompletionRequestError(f"{where}.content", problem)
    return Conversation(history=history, message=last.content)


def llm_params(request: ChatCompletionRequest) -> dict[str, Any]:
    """The model parameters every agent reply of the run is made with."""
    params: dict[str, Any] = {}
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if request.temperature is not None:
        params["temperature"] = request.temperature
    return params


def run_metadata(request: ChatCompletionRequest) -> dict[str, Any]:
    """What the run keeps of the request for its owner (GET /runs/{id})."""
    metadata: dict[str, Any] = dict(request.metadata or {})
    if request.user is not None:
        metadata["user"] = request.user
    return metadata


def usage(value: dict[str, Any] | Usage) -> CompletionUsage:
    u = value if isinstance(value, Usage) else Usage.model_validate(value)
    return CompletionUsage(
        prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, total_tokens=u.total_tokens
    )


def finish_reason(finished: bool) -> Literal["stop", "length"]:
    """``stop`` when the team ended the conversation itself, ``length`` when it ran out of turns."""
    return "stop" if finished else "length"


def completion(completion_id: str, created: int, model: str, result: dict[str, Any]) -> ChatCompletion:
    """The answer of a succeeded run (``result`` as the run record keeps it)."""
    return ChatCompletion.model_validate(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result["response"]},
                    "finish_reason": finish_reason(bool(result["finished"])),
                    "logprobs": None,
                }
            ],
            "usage": usage(result["usage"]),
        }
    )


def model_card(team: str, created: int) -> Model:
    return Model(id=team, object="model", created=created, owned_by="agent-api")


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object, as the SDKs read it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def param_of(loc: list[str | int] | tuple[str | int, ...]) -> str | None:
    """A validation error's location as OpenAI names parameters: ``messages[0].content``."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "path", "query", "header") else loc)
    out = ""
    for part in parts:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


class ChunkEncoder:
    """The ``chat.completion.chunk`` frames of one streamed completion, from the run's event frames.

    Feed it the run's frames (event type, JSON data) in order: it answers with the ``data:`` lines
    to send, if any. The answer is the ``chunk`` text of the frames (the answering agent's
    tokens); other agents' words are not part of it.
    """

    def __init__(self, completion_id: str, created: int, model: str, *, include_usage: bool) -> None:
        self.id = completion_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self.finished = False

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return orjson.dumps(chunk).decode()

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> str:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])

    def start(self) -> list[str]:
        """The first chunk: the assistant's role, no text yet."""
        return [self._delta({"role": "assistant", "content": ""})]

    def feed(self, event: str, data: str, event_id: str = "") -> list[str]:
        if self.finished:
            return []
        if event == "token":
            text = orjson.loads(data).get("chunk") or ""
            return [self._delta({"content": text})] if text else []
        if event == "error":
            fields = orjson.loads(data)
            return self._error(
                str(fields.get("detail") or "The run failed."),
                int(fields.get("status") or 500),
                str(fields.get("error_type") or "internal"),
            )
        if event == "done":
            fields = orjson.loads(data)
            if fields.get("run_status") != "succeeded":
                # A stop ends without an error frame (cancelled or interrupted): say so.
                status = str(fields.get("run_status") or "failed")
                return self._error(f"The run ended as {status}; nothing of it was saved.", 409, status)
            self.finished = True
            out = [self._delta({}, finish_reason(bool(fields.get("finished"))))]
            if self.include_usage:
                out.append(self._chunk([], usage=usage(fields.get("usage") or {}).model_dump(exclude_none=True)))
            return out
        return []

    def fail(self, error: AgentAPIError) -> list[str]:
        """The end of a stream whose run could not be followed any more."""
        return self._error(error.detail, error.status_code, error.error_type)

    def _error(self, message: str, status: int, code: str) -> list[str]:
        """The last chunk of a stream that failed after it started: it carries the error."""
        self.finished = True
        return [self._chunk([], error=error_body(message, type=error_type(status), code=code)["error"])]


def timestamp(when: datetime) -> int:
    return int(when.timestamp())
