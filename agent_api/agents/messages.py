"""Conversion between stored :class:`ChatMessage` s and AutoGen's message dicts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agent_api.agents.autogen_compat import MISSING_GROUP_CONTENT, usage_by_model
from agent_api.models.chat import ChatMessage, Role, Usage

TERMINATE = "TERMINATE"
_TRAILING_TERMINATE = re.compile(r"\s*\bTERMINATE\b[\s.!]*$")


def is_termination(message: dict[str, Any]) -> bool:
    """The agents' stop word: a message whose text ends with TERMINATE."""
    content = message.get("content")
    return isinstance(content, str) and bool(_TRAILING_TERMINATE.search(content))


def strip_termination(text: str) -> str:
    return _TRAILING_TERMINATE.sub("", text).strip()


def content_text(message: dict[str, Any] | str) -> str:
    if isinstance(message, str):
        return message
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def trim_history(history: Sequence[ChatMessage], limit: int) -> list[ChatMessage]:
    """The newest ``limit`` messages, never starting with an orphaned tool result."""
    kept = list(history[-limit:]) if limit > 0 else []
    while kept and kept[0].role == "tool":
        kept.pop(0)
    return kept


def to_autogen(message: ChatMessage, *, flip: bool = False) -> dict[str, Any]:
    """A stored message as AutoGen keeps it; ``flip`` swaps user/assistant (the other side's view)."""
    role = message.role
    if flip and role in ("user", "assistant"):
        role = "assistant" if role == "user" else "user"
    if message.role == "tool":
        response = {"tool_call_id": message.tool_call_id, "role": "tool", "content": message.content}
        return {"role": "tool", "content": message.content, "tool_responses": [response]}
    out: dict[str, Any] = {"role": role, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
        if not message.content:
            out["content"] = None
    return out


def from_autogen(message: dict[str, Any], *, name: str | None, timestamp: datetime) -> list[ChatMessage]:
    """An AutoGen message (from the replying agent's side) as stored messages.

    A message of tool responses becomes one ``tool`` message per call; the stop word is removed
    from text, since callers read it as an answer.
    """
    if message.get("tool_responses"):
        return [
            ChatMessage(
                role="tool",
                content=str(r.get("content", "")),
                tool_call_id=r.get("tool_call_id"),
                name=name,
                timestamp=timestamp,
            )
            for r in message["tool_responses"]
        ]
    role: Role = message.get("role", "assistant")
    if role not in ("user", "assistant", "system", "tool"):
        role = "assistant"
    text = content_text(message)
    if message.get("tool_calls") and text == MISSING_GROUP_CONTENT:
        text = ""
    return [
        ChatMessage(
            role=role,
            content=strip_termination(text),
            name=message.get("name") or name,
            timestamp=timestamp,
            tool_calls=message.get("tool_calls") or None,
        )
    ]


def usage_of(agents: Sequence[Any]) -> Usage:
    """Tokens the agents' model clients reported, summed over models."""
    usage = Usage()
    for counts in usage_by_model(agents).values():
        usage = usage + Usage(
            prompt_tokens=counts.get("prompt_tokens", 0),
            completion_tokens=counts.get("completion_tokens", 0),
            total_tokens=counts.get("total_tokens", 0),
        )
    return usage
