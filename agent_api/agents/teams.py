"""Teams: how a named group of AutoGen agents is built and run for one request.

A :class:`Team` is a description; :meth:`Team.run` builds fresh agents from it for each request,
restores the session's history into them and runs them synchronously (the runner calls it in
a worker thread). Everything the agents do is reported through the :class:`TeamRun`.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import autogen
from autogen.events.client_events import StreamEvent
from autogen.io.base import IOStream

from agent_api.agents.events import MessageEvent, RunEvent, RunOutcome, TokenEvent
from agent_api.agents.messages import (
    from_autogen,
    is_termination,
    to_autogen,
    usage_of,
)
from agent_api.agents.tokens import REPLY_SEPARATOR, ReplyShaper
from agent_api.errors import RunCancelled
from agent_api.models.chat import ChatMessage

log = logging.getLogger(__name__)

USER = "user"
CONTINUE = "Please continue. When your answer is complete, put TERMINATE at the end of it."


@dataclass
class TeamRun:
    """One request's run of a team: its inputs and the channel back to the caller."""

    message: str
    history: list[ChatMessage]
    max_turns: int
    llm_config: dict[str, Any]
    emit: Callable[[RunEvent], None] = lambda event: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    answerers: set[str] = field(default_factory=set)
    speaker: str = ""
    sent: list[tuple[str, datetime]] = field(default_factory=list)
    _shapers: dict[bool, ReplyShaper] = field(default_factory=lambda: {True: ReplyShaper(), False: ReplyShaper()})

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise RunCancelled()

    def on_token(self, token: str) -> None:
        answering = self.speaker in self.answerers
        self._emit_text(self.speaker, self._shapers[answering].feed(token), answering)

    def end_reply(self, agent: str) -> None:
        answering = agent in self.answerers
        self._emit_text(agent, self._shapers[answering].end_reply(), answering)

    def _emit_text(self, agent: str, text: str, answering: bool) -> None:
        if text:
            self.emit(TokenEvent(agent=agent, text=text, chunk=text if answering else ""))


class RunIOStream:
    """AutoGen's output for one run: tokens go to the caller, console prints go nowhere.

    Installed with ``IOStream.set_default`` (a ContextVar) in the worker thread, so concurrent
    runs never see each other's tokens and the server's stdout stays for its own logs.
    """

    def __init__(self, run: TeamRun) -> None:
        self.run = run

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        log.debug("autogen: %s", sep.join(map(str, objects)))

    def send(self, message: Any) -> None:
        if isinstance(message, StreamEvent):
            # Stopping here aborts the model's stream: the caller is gone, stop paying for tokens.
            self.run.check_cancelled()
            # AutoGen wraps each event: the wrapper's ``content`` is the StreamEvent itself.
            text = getattr(message.content, "content", message.content)
            if isinstance(text, str) and text:
                self.run.on_token(text)

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


@contextmanager
def run_io(run: TeamRun) -> Iterator[None]:
    with IOStream.set_default(RunIOStream(run)):
        yield


def instrument(run: TeamRun, agents: list[autogen.ConversableAgent]) -> None:
    """Hooks that track the speaker, stamp each message and stop a cancelled run between turns."""
    for agent in agents:

        def before_reply(
            messages: list[dict[str, Any]], agent: autogen.ConversableAgent = agent
        ) -> list[dict[str, Any]]:
            run.check_cancelled()
            run.speaker = agent.name
            return messages

        def before_send(
            sender: autogen.ConversableAgent, message: dict[str, Any] | str, recipient: autogen.Agent, silent: bool
        ) -> dict[str, Any] | str:
            now = datetime.now(UTC)
            run.end_reply(sender.name)
            run.sent.append((sender.name, now))
            if sender.name != USER or len(run.sent) > 1:
                oai = {"content": message} if isinstance(message, str) else message
                role = "user" if sender.name == USER else "assistant"
                for chat_message in from_autogen({"role": role, **oai}, name=sender.name, timestamp=now):
                    run.emit(MessageEvent(chat_message))
            return message

        agent.register_hook("process_all_messages_before_reply", before_reply)
        agent.register_hook("process_message_before_send", before_send)


class Team(ABC):
    """A named team of agents that can run one user turn."""

    pattern: str = ""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description

    @property
    @abstractmethod
    def agent_names(self) -> list[str]: ...

    @abstractmethod
    def run(self, run: TeamRun) -> RunOutcome:
        """Run one turn synchronously (in a worker thread) and return what it added."""


@dataclass(frozen=True)
class AgentSpec:
    """One assistant: its name, its system message and optional model settings."""

    name: str
    system_message: str
    llm_overrides: dict[str, Any] = field(default_factory=dict)

    def build(self, llm_config: dict[str, Any]) -> autogen.AssistantAgent:
        config = {**llm_config, **self.llm_overrides} if self.llm_overrides else llm_config
        return autogen.AssistantAgent(
            name=self.name,
            system_message=self.system_message,
            llm_config=config,
        )


def user_proxy(max_turns: int) -> autogen.UserProxyAgent:
    """Stands in for the caller: never asks a human, never runs code, nudges on when asked."""
    return autogen.UserProxyAgent(
        name=USER,
        human_input_mode="NEVER",
        code_execution_config=False,
        llm_config=False,
        is_termination_msg=is_termination,
        default_auto_reply=CONTINUE,
        max_consecutive_auto_reply=max_turns,
    )


class PairTeam(Team):
    """An assistant and a user proxy: the assistant answers until it says TERMINATE."""

    pattern = "pair"

    def __init__(self, name: str, description: str, assistant: AgentSpec) -> None:
        super().__init__(name, description)
        self.assistant = assistant

    @property
    def agent_names(self) -> list[str]:
        return [self.assistant.name, USER]

    def run(self, run: TeamRun) -> RunOutcome:
        run.answerers = {self.assistant.name}
        assistant = self.assistant.build(run.llm_config)
        proxy = user_proxy(run.max_turns)
        instrument(run, [assistant, proxy])
        for message in run.history:
            assistant.chat_messages[proxy].append(to_autogen(message))
            proxy.chat_messages[assistant].append(to_autogen(message, flip=True))
        restored = len(assistant.chat_messages[proxy])
        with run_io(run):
            # clear_history=False: the default would wipe the history restored above.
            proxy.initiate_chat(
                assistant,
                message=run.message,
                clear_history=False,
                max_turns=run.max_turns,
                silent=True,
                summary_method=None,
            )
        return collect_outcome(run, assistant.chat_messages[proxy][restored:], [assistant, proxy])


def collect_outcome(run: TeamRun, new: list[dict[str, Any]], agents: list[Any]) -> RunOutcome:
    """Turn the agents' new messages (seen from the answering side) into a :class:`RunOutcome`."""
    stamps = iter(run.sent)
    messages: list[ChatMessage] = []
    answers: list[tuple[dict[str, Any], ChatMessage]] = []
    for raw in new:
        sender, when = next(stamps, (raw.get("name") or "", datetime.now(UTC)))
        converted = from_autogen(raw, name=raw.get("name") or sender, timestamp=when)
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
    )
