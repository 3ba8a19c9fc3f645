"""AG-UI, as a team speaks it: the user's message out of ``RunAgentInput``, and a run's event
frames as AG-UI events (the ``ag-ui-protocol`` package's own types and encoder).

A group chat becomes a sequence of steps, one per agent's turn, each with the agent's text
messages (labelled with its ``name``, their words as they come) and its tool calls. Pure: no
HTTP; the router (``routers/agui.py``) creates the run and feeds this the run's frames.
"""

from __future__ import annotations

from typing import Any

import orjson
from ag_ui.core import (
    BaseEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder

from agent_api.errors import AgentAPIError
from agent_api.models.chat import message_problem


class AgUiInputError(Exception):
    """Input the team cannot take; ``field`` is the offending field, as AG-UI spells it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # input content parts: text is taken, binary refused
        texts = []
        for part in content:
            if getattr(part, "type", None) != "text":
                raise AgUiInputError("messages", "Only text content is supported.")
            texts.append(str(getattr(part, "text", "")))
        return "".join(texts)
    return ""


def user_message(run_input: RunAgentInput) -> str:
    """The new user message: the last message of ``messages``, which must be the user's.

    The thread's history is the stored session, so the earlier messages (the client's copy of
    it) are not read.
    """
    if not run_input.messages:
        raise AgUiInputError("messages", "messages is empty: the last message must be the user's new one.")
    last = run_input.messages[-1]
    if last.role != "user":
        raise AgUiInputError("messages", "The last message must be the user's (role 'user').")
    text = _text(last.content)
    problem = message_problem(text)
    if problem is not None:
        raise AgUiInputError("messages", problem)
    return text


class AgUiEncoder:
    """A run's frames, in order, as AG-UI events encoded for the wire (Server-Sent Events).

    Keeps which step (agent's turn), text message and tool call are open, so that each is opened
    before its content and closed before the next, and all are closed before the run ends.
    """

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.ended = False
        self._wire = EventEncoder()
        self._step: str | None = None
        self._message: tuple[str, str] | None = None  # (message id, agent)
        self._streamed = False  # the open message got its text as tokens
        self._count = 0

    def _encode(self, events: list[BaseEvent]) -> list[str]:
        return [self._wire.encode(event) for event in events]

    def _new_id(self, kind: str) -> str:
        self._count += 1
        return f"{self.run_id}-{kind}{self._count}"

    def start(self) -> list[str]:
        return self._encode([RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id)])

    def feed(self, event: str, data: str, event_id: str = "") -> list[str]:
        """The AG-UI events for one frame of the run's log."""
        if self.ended or event in ("session", "usage"):
            return []
        fields = orjson.loads(data)
        out: list[BaseEvent] = []
        if event == "token":
            agent, text = str(fields.get("agent") or ""), str(fields.get("text") or "")
            if text:
                if self._message is None or self._message[1] != agent:
                    self._open_message(agent, out)
                    self._streamed = True
                assert self._message is not None
                out.append(TextMessageContentEvent(message_id=self._message[0], delta=text))
        elif event == "message":
            self._message_frame(str(fields.get("agent") or ""), fields.get("message") or {}, out)
        elif event == "tool_call":
            self._tool_call(str(fields.get("agent") or ""), fields.get("tool_call") or {}, out)
        elif event == "tool_result":
            result = fields.get("tool_result") or {}
            out.append(
                ToolCallResultEvent(
                    message_id=self._new_id("tool-result"),
                    tool_call_id=str(result.get("id", "")),
                    content=str(result.get("content", "")),
                    role="tool",
                )
            )
        elif event == "error":
            out += self._close_all()
            out.append(
                RunErrorEvent(message=str(fields.get("detail") or "The run failed."), code=fields.get("error_type"))
            )
            self.ended = True
        elif event == "done":
            out += self._close_all()
            status = fields.get("run_status")
            if status == "succeeded":
                answer = fields.get("response")
                out.append(RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, result=answer))
            else:
                message = f"The run ended as {status}; nothing of it was saved."
                out.append(RunErrorEvent(message=message, code=str(status or "failed")))
            self.ended = True
        return self._encode(out)

    def fail(self, error: AgentAPIError) -> list[str]:
        """The end of a stream whose run could not be followed any more."""
        if self.ended:
            return []
        self.ended = True
        return self._encode([*self._close_all(), RunErrorEvent(message=error.detail, code=error.error_type)])

    # -- steps, messages and tool calls ------------------------------------------------------
    def _enter_step(self, agent: str, out: list[BaseEvent]) -> None:
        if self._step == agent:
            return
        self._close_message(out)
        if self._step is not None:
            out.append(StepFinishedEvent(step_name=self._step))
        self._step = agent
        out.append(StepStartedEvent(step_name=agent))

    def _open_message(self, agent: str, out: list[BaseEvent]) -> None:
        self._enter_step(agent, out)
        self._close_message(out)
        message_id = self._new_id("msg")
        self._message = (message_id, agent)
        self._streamed = False
        out.append(TextMessageStartEvent(message_id=message_id, role="assistant", name=agent))

    def _close_message(self, out: list[BaseEvent]) -> None:
        if self._message is not None:
            out.append(TextMessageEndEvent(message_id=self._message[0]))
            self._message = None

    def _message_frame(self, agent: str, message: dict[str, Any], out: list[BaseEvent]) -> None:
        """An agent's complete message: it closes the message its tokens opened, or, when nothing
        was streamed (a cached answer, a message without tokens), carries the whole text."""
        if message.get("role") != "assistant":
            return  # the user's seat and tool results: not an agent speaking (tool results have their own event)
        if self._message is not None and self._message[1] == agent and self._streamed:
            self._close_message(out)
            return
        text = str(message.get("content") or "")
        if text:
            self._open_message(agent, out)
            assert self._message is not None
            out.append(TextMessageContentEvent(message_id=self._message[0], delta=text))
            self._close_message(out)

    def _tool_call(self, agent: str, call: dict[str, Any], out: list[BaseEvent]) -> None:
        self._enter_step(agent, out)
        parent = self._message[0] if self._message is not None else None
        call_id = str(call.get("id", ""))
        name = str(call.get("name", ""))
        out.append(ToolCallStartEvent(tool_call_id=call_id, tool_call_name=name, parent_message_id=parent))
        arguments = str(call.get("arguments", ""))
        if arguments:
            out.append(ToolCallArgsEvent(tool_call_id=call_id, delta=arguments))
        out.append(ToolCallEndEvent(tool_call_id=call_id))

    def _close_all(self) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        self._close_message(out)
        if self._step is not None:
            out.append(StepFinishedEvent(step_name=self._step))
            self._step = None
        return out
