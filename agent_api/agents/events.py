"""What a running team reports, in the order it happens."""

from __future__ import annotations

from dataclasses import dataclass, field

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
