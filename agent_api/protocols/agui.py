"""AG-UI, as a team speaks it: the user's message (or the answer to an interrupt) out of
``RunAgentInput``, and a run's event frames as AG-UI events (the ``ag-ui-protocol`` package's own
types and encoder).

A group chat becomes a sequence of steps, one per agent's turn, each with the agent's text
messages (labelled with its ``name``, their words as they come) and its tool calls. A run that
asks a person (``input_request``) ends the AG-UI run with an interrupt; the AG-UI run that
resumes it carries the answer (``resume``) and continues the same run of the service. Pure: no
HTTP; the router (``routers/agui.py``) creates or answers the run and feeds this the run's frames.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from ag_ui.core import (
    PROTOCOL_VERSION,
    BaseEvent,
    Interrupt,
    ResumeEntry,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
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
from pydantic import ValidationError

from agent_api.errors import AgentAPIError
from agent_api.models.chat import MAX_MESSAGE_CHARS, message_problem
from agent_api.models.runs import InputAnswer

# The blank line the native stream puts before an answering agent's second and later replies of a
# run (agents/tokens.py's REPLY_SEPARATOR): in AG-UI each reply is a message of its own.
REPLY_SEPARATOR = "\n\n"

# What an interrupt's answer (a resume entry's payload) looks like, per kind of request.
MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_MESSAGE_CHARS,
    "description": "Your reply, which the agent reads as the user's next message. Empty lets the team go on "
    "by itself (or accepts its final answer); 'exit' ends the conversation.",
}
APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "description": "true runs the tool call; false refuses it."},
        "reason": {"type": "string", "maxLength": 1000, "description": "Why, for the agent to read with a refusal."},
    },
    "required": ["approved"],
    "additionalProperties": False,
}
_APPROVAL_KEYS = frozenset(APPROVAL_SCHEMA["properties"])


class AgUiInputError(Exception):
    """Input the team cannot take; ``loc`` is where the offending field is, as AG-UI spells it."""

    def __init__(self, loc: str | list[str | int], message: str) -> None:
        super().__init__(message)
        self.loc: list[str | int] = [loc] if isinstance(loc, str) else list(loc)
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


def resume_entry(run_input: RunAgentInput) -> ResumeEntry | None:
    """The interrupt this input answers, or None when it brings a new user message (no ``resume``).

    A run of a team waits on one request at a time, so an AG-UI run ends with one interrupt, and
    a resume answers it with one entry.
    """
    if not run_input.resume:
        return None
    if len(run_input.resume) > 1:
        raise AgUiInputError(
            "resume", "resume answers one interrupt: a run of this service ends with one interrupt at a time."
        )
    return run_input.resume[0]


def input_answer(entry: ResumeEntry, request: dict[str, Any]) -> InputAnswer:
    """The answer a resolved resume entry gives the request the run waits on (its ``input_request``).

    A message request takes the text (a string, or ``{"content": text}``); an approval takes
    ``true``/``false`` or ``{"approved": boolean, "reason"?: string}``. Anything else is refused
    rather than guessed at: a misspelt approval must not pass for a refusal, nor for an approval.
    """
    loc: list[str | int] = ["resume", 0, "payload"]
    payload = entry.payload
    fields: dict[str, Any]
    if request.get("kind") == "approval":
        if isinstance(payload, bool):
            payload = {"approved": payload}
        if isinstance(payload, dict) and isinstance(payload.get("approved"), bool) and set(payload) <= _APPROVAL_KEYS:
            fields = dict(payload)
        else:
            raise AgUiInputError(
                loc,
                'This interrupt asks to approve a tool call: the payload is true, false or {"approved": boolean, '
                '"reason"?: string}.',
            )
    elif isinstance(payload, str):
        fields = {"content": payload}
    elif isinstance(payload, dict) and set(payload) == {"content"} and isinstance(payload["content"], str):
        fields = dict(payload)
    else:
        raise AgUiInputError(
            loc, 'This interrupt asks for a message: the payload is its text (a string, or {"content": text}).'
        )
    try:
        return InputAnswer.model_validate({"request_id": str(request.get("request_id", "")), **fields})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise AgUiInputError(loc, f"The payload is refused: {problems}.") from None


# How a run ends when it was stopped rather than failed (run statuses, and the error types of their frames).
STOPPED = frozenset({"cancelled", "interrupted"})


class AgUiEncoder:
    """A run's frames, in order, as AG-UI events encoded for the wire (Server-Sent Events).

    Keeps which step (agent's turn), text message and tool call are open, so that each is opened
    before its content and closed before the next, and all are closed before the run ends.

    ``run_id`` is the AG-UI run's id; ``service_run_id`` the run of the service it follows (they
    differ for a run that resumes an interrupt). ``input_timeout`` dates an interrupt's expiry.
    A run stopped before it completed (cancelled, or interrupted by a newer run on the thread)
    did not fail: it ends with ``RUN_FINISHED``'s cancelled outcome, as the protocol requires;
    ``RUN_ERROR`` is for failures.
    """

    def __init__(
        self,
        thread_id: str,
        run_id: str,
        *,
        service_run_id: str | None = None,
        input_timeout: float | None = None,
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.service_run_id = service_run_id or run_id
        self.input_timeout = input_timeout
        self.ended = False  # RUN_FINISHED or RUN_ERROR went out: nothing more comes from this AG-UI run
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
        return self._encode(
            [RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id, protocol_version=PROTOCOL_VERSION)]
        )

    def feed(self, event: str, data: str, event_id: str = "") -> list[str]:
        """The AG-UI events for one frame of the run's log."""
        if self.ended or event in ("session", "usage"):
            return []
        fields = orjson.loads(data)
        out: list[BaseEvent] = []
        if event == "token":
            agent, text = str(fields.get("agent") or ""), str(fields.get("text") or "")
            if self._message is None or self._message[1] != agent:
                text = text.removeprefix(REPLY_SEPARATOR)
                if text:
                    self._open_message(agent, out)
                    self._streamed = True
            if text:
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
        elif event == "input_request":
            # The run waits for a person: this AG-UI run ends with the interrupt; the run of the
            # service goes on waiting, and the AG-UI run that resumes the interrupt answers it.
            out += self._close_all()
            interrupt = self._interrupt(fields.get("input_request") or {}, event_id)
            outcome = RunFinishedInterruptOutcome(interrupts=[interrupt])
            out.append(RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, outcome=outcome))
            self.ended = True
        elif event == "error":
            out += self._close_all()
            if fields.get("error_type") in STOPPED:
                out.append(self._cancelled())
            else:
                detail = str(fields.get("detail") or "The run failed.")
                out.append(RunErrorEvent(message=detail, code=fields.get("error_type")))
            self.ended = True
        elif event == "done":
            out += self._close_all()
            status = fields.get("run_status")
            if status == "succeeded":
                answer = fields.get("response")
                out.append(RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, result=answer))
            elif status in STOPPED:
                out.append(self._cancelled())
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

    # -- interrupts ----------------------------------------------------------------------------
    def _interrupt(self, request: dict[str, Any], event_id: str) -> Interrupt:
        """The request a run waits on, as an AG-UI interrupt: a tool call to approve (``tool_call``,
        its id the one ``TOOL_CALL_START`` named) or the user's next message (``input_required``)."""
        call = request.get("tool_call") or {}
        approval = request.get("kind") == "approval"
        call_id = str(call["id"]) if approval and call.get("id") else None
        return Interrupt(
            id=str(request.get("request_id", "")),
            reason=("tool_call" if call_id else "confirmation") if approval else "input_required",
            message=str(request.get("prompt") or "") or None,
            tool_call_id=call_id,
            response_schema=dict(APPROVAL_SCHEMA if approval else MESSAGE_SCHEMA),
            expires_at=self._expires_at(event_id),
            metadata={"agent": str(request.get("agent") or ""), "serviceRunId": self.service_run_id},
        )

    def _expires_at(self, event_id: str) -> str | None:
        """When the run stops waiting (INPUT_TIMEOUT after it asked; an event id is the time it
        was written, in milliseconds), as ISO 8601 in UTC, to the second it is sure of."""
        if self.input_timeout is None:
            return None
        millis, _, _ = event_id.partition("-")
        if not millis.isdigit() or millis == "0":
            return None
        expires = datetime.fromtimestamp(int(millis) / 1000 + self.input_timeout, UTC)
        return expires.isoformat(timespec="seconds").replace("+00:00", "Z")

    def _cancelled(self) -> RunFinishedEvent:
        return RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, outcome=RunFinishedCancelledOutcome())

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
