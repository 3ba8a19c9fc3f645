"""What a running team reports, in the order it happens."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_api.models.chat import ChatMessage, Usage


@dataclass(frozen=True)
class TokenEvent:
    """A piece of text the model produced, as it produced it.

    ``chunk`` is the part that belongs to the run's final answer: the same text for the
    answering agents, empty for the others (whose words are still in ``text``).
    """

    agent: str
    text: str
    chunk: str


@dataclass(frozen=True)
class MessageEvent:
    """An agent's complete message."""

    message: ChatMessage


@dataclass(frozen=True)
class ToolCallEvent:
    agent: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResultEvent:
    agent: str
    call_id: str
    content: str


@dataclass(frozen=True)
class InputReply:
    """A person's answer: ``content`` for a message request, ``approved`` (and ``reason``) for an approval."""

    content: str = ""
    approved: bool = False
    reason: str = ""


@dataclass(frozen=True)
class InputRequest:
    """The team waits for a person: a message to write, or a tool call to approve.

    The thread running the team blocks on ``reply`` until whoever consumes the run's events
    sets its result (or cancels it: the run is then cancelled).
    """

    request_id: str
    kind: Literal["message", "approval"]
    prompt: str
    agent: str
    tool_call: dict[str, Any] | None = None
    reply: Future[InputReply] = field(default_factory=Future, compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """The request as callers see it (the ``input_request`` frame, the run record)."""
        described: dict[str, Any] = {
            "request_id": self.request_id,
            "kind": self.kind,
            "prompt": self.prompt,
            "agent": self.agent,
        }
        if self.tool_call is not None:
            described["tool_call"] = self.tool_call
        return described


@dataclass
class RunOutcome:
    """The result of one run: the new messages and the final answer."""

    messages: list[ChatMessage]
    response: str
    turns_used: int
    finished: bool
    usage: Usage = field(default_factory=Usage)
    cached: bool = False  # some reply came from the response cache


RunEvent = TokenEvent | MessageEvent | ToolCallEvent | ToolResultEvent
