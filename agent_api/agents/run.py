"""One run of a team: its inputs, and the channel from AutoGen's thread back to the caller.

AutoGen runs synchronously in a worker thread. Everything it does reaches the caller through a
:class:`TeamRun`: tokens through a per-run ``IOStream``, whole messages and tool traffic
through agent hooks. The same hooks stop a cancelled run.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import autogen
import httpx

from agent_api.agents.autogen_compat import AutoGenIO, install_io, register_hooks
from agent_api.agents.cache import RunCache
from agent_api.agents.events import (
    InputReply,
    InputRequest,
    MessageEvent,
    RunEvent,
    RunOutcome,
    TokenEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from agent_api.agents.messages import from_autogen, is_termination, strip_termination, usage_of
from agent_api.agents.teams import USER
from agent_api.agents.tokens import REPLY_SEPARATOR, ReplyShaper
from agent_api.errors import RunCancelled
from agent_api.models.chat import ChatMessage
from agent_api.telemetry import note_first_token

log = logging.getLogger(__name__)


@dataclass
class TeamRun:
    """One request's run of a team: its inputs and the channel back to the caller."""

    message: str
    history: list[ChatMessage]
    max_turns: int
    llm_config: dict[str, Any]
    # For agents that must not stream (a group chat's speaker selection): their words are not the answer.
    quiet_llm_config: dict[str, Any] = field(default_factory=dict)
    emit: Callable[[RunEvent | InputRequest], None] = lambda event: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    answerers: set[str] = field(default_factory=set)
    cache: RunCache | None = None
    speaker: str = ""
    sent: list[tuple[str, datetime]] = field(default_factory=list)
    # What a person asked for input answers: the last agent message, and the tool calls not yet run.
    last_message: tuple[str, str] = ("", "")
    pending_calls: list[dict[str, str]] = field(default_factory=list)
    # For an engine that runs in the event loop (agentchat): the shared async HTTP client.
    async_http_client: httpx.AsyncClient | None = None
    _waiting: Future[InputReply] | None = None
    _on_cancel: list[Callable[[], None]] = field(default_factory=list)
    _shapers: dict[bool, ReplyShaper] = field(default_factory=lambda: {True: ReplyShaper(), False: ReplyShaper()})

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the run is cancelled (at once if it is already)."""
        self._on_cancel.append(callback)
        if self.cancelled.is_set():
            callback()

    def cancel(self) -> None:
        """Cancel the run: set ``cancelled``, wake a wait for a person, call the ``on_cancel`` callbacks."""
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        self.stop_waiting()
        for callback in self._on_cancel:
            callback()

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise RunCancelled()

    def ask(
        self, kind: Literal["message", "approval"], prompt: str, agent: str, tool_call: dict[str, str] | None = None
    ) -> InputReply:
        """Wait (in the team's thread) for a person's answer; a cancel stops the wait with RunCancelled."""
        self.check_cancelled()
        request = InputRequest("req_" + secrets.token_urlsafe(12), kind, prompt, agent, tool_call)
        self._waiting = request.reply
        try:
            self.check_cancelled()  # a cancel that came before _waiting was set has not cancelled it
            self.emit(request)
            return request.reply.result()
        except CancelledError:
            raise RunCancelled() from None
        finally:
            self._waiting = None

    def stop_waiting(self) -> None:
        """Wake a thread waiting for a person's answer (the run was cancelled)."""
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()

    def take_call(self, name: str, arguments: dict[str, Any]) -> dict[str, str]:
        """The model's call of tool ``name`` about to run (the first not yet run), as the stream showed it."""
        for i, call in enumerate(self.pending_calls):
            if call["name"] == name:
                return self.pending_calls.pop(i)
        return {"id": "", "name": name, "arguments": json.dumps(arguments)}

    def on_token(self, token: str) -> None:
        answering = self.speaker in self.answerers
        self._emit_text(self.speaker, self._shapers[answering].feed(token), answering)

    def end_reply(self, agent: str, full_text: str = "") -> None:
        answering = agent in self.answerers
        self._emit_text(agent, self._shapers[answering].end_reply(full_text), answering)
        if not answering:
            # Other agents' replies are separate messages, not parts of one answer: no separator.
            self._shapers[False] = ReplyShaper()

    def _emit_text(self, agent: str, text: str, answering: bool) -> None:
        if text:
            self.emit(TokenEvent(agent=agent, text=text, chunk=text if answering else ""))


class RunIOStream(AutoGenIO):
    """AutoGen's output for one run: tokens go to the caller, console prints go nowhere.

    Installed as AutoGen's default ``IOStream`` (a ContextVar) in the worker thread, so
    concurrent runs never see each other's tokens and the server's stdout stays for its own logs.
    """

    def __init__(self, run: TeamRun) -> None:
        self.run = run

    def on_print(self, text: str) -> None:
        log.debug("autogen: %s", text)

    def on_stream(self, text: str) -> None:
        # Stopping here aborts the model's stream: the caller is gone, stop paying for tokens.
        self.run.check_cancelled()
        if text:
            note_first_token()
            self.run.on_token(text)

    def on_input(self, prompt: str) -> str:
        """AutoGen asks a person (a human input mode): the run waits for an answer from the API.

        AutoGen's own prompt is written for a console; the person is shown the message they are
        answering instead. Their words go back as AutoGen expects: empty to let the team go on
        by itself (or end, after a final answer), ``exit`` to end the conversation.
        """
        agent, text = self.run.last_message
        return self.run.ask("message", text, agent).content


@contextmanager
def run_io(run: TeamRun) -> Iterator[None]:
    with install_io(RunIOStream(run)):
        yield


def role_of(message: dict[str, Any]) -> str:
    """A message's role in the stored conversation, whoever's view AutoGen kept it in."""
    if message.get("tool_responses") or message.get("role") == "tool":
        return "tool"
    return "user" if message.get("name") == USER else "assistant"


def _report_message(run: TeamRun, sender: str, message: dict[str, Any] | str, when: datetime) -> None:
    oai: dict[str, Any] = {"content": message} if isinstance(message, str) else dict(message)
    oai.setdefault("name", sender)
    oai["role"] = role_of(oai)
    for call in oai.get("tool_calls") or []:
        function = call.get("function") or {}
        event = ToolCallEvent(
            sender, str(call.get("id", "")), str(function.get("name", "")), str(function.get("arguments", ""))
        )
        run.pending_calls.append({"id": event.call_id, "name": event.name, "arguments": event.arguments})
        run.emit(event)
    text = oai.get("content")
    if sender != USER and isinstance(text, str) and text and oai["role"] == "assistant":
        run.last_message = (sender, strip_termination(text))
    for response in oai.get("tool_responses") or []:
        run.emit(ToolResultEvent(sender, str(response.get("tool_call_id", "")), str(response.get("content", ""))))
    for chat_message in from_autogen(oai, name=sender, timestamp=when):
        run.emit(MessageEvent(chat_message))


def instrument(run: TeamRun, agents: list[autogen.ConversableAgent]) -> None:
    """Hooks that track the speaker, report each message and stop a cancelled run between turns."""
    for agent in agents:

        def before_reply(agent: autogen.ConversableAgent = agent) -> None:
            run.check_cancelled()
            run.speaker = agent.name

        def before_send(sender: autogen.ConversableAgent, message: dict[str, Any] | str) -> None:
            now = datetime.now(UTC)
            if sender.name != USER and not (isinstance(message, dict) and message.get("tool_responses")):
                # A model's reply: finish its streamed text (or show it whole if nothing streamed).
                text = message if isinstance(message, str) else message.get("content")
                run.end_reply(sender.name, text if isinstance(text, str) else "")
            run.sent.append((sender.name, now))
            if len(run.sent) > 1:  # the first message is the caller's own
                _report_message(run, sender.name, message, now)

        register_hooks(agent, before_reply=before_reply, before_send=before_send)


def collect_outcome(run: TeamRun, new: list[dict[str, Any]], agents: list[Any]) -> RunOutcome:
    """Turn the run's new messages (AutoGen's dicts, oldest first) into a :class:`RunOutcome`."""
    stamps = iter(run.sent)
    messages: list[ChatMessage] = []
    answers: list[tuple[dict[str, Any], ChatMessage]] = []
    for raw in new:
        sender, when = next(stamps, (raw.get("name") or "", datetime.now(UTC)))
        raw = {**raw, "name": raw.get("name") or sender}
        raw["role"] = role_of(raw)
        converted = from_autogen(raw, name=raw["name"], timestamp=when)
        messages.extend(converted)
        answers.extend((raw, m) for m in converted if m.role == "assistant" and m.name in run.answerers)
    # The answer is every reply of the answering agents in this run ("Please continue" goes on
    # with the same answer); the streamed chunks add up to exactly this text.
    response = REPLY_SEPARATOR.join(m.content for _, m in answers if m.content)
    return RunOutcome(
        messages=messages,
        response=response,
        turns_used=sum(1 for m in messages if m.role == "assistant"),
        finished=bool(answers) and is_termination(answers[-1][0]),
        usage=usage_of(agents),
        cached=run.cache is not None and run.cache.hits > 0,
    )
