"""Teams: how a named group of AutoGen agents is built and run for one request.

A :class:`Team` is a description. :meth:`Team.run` builds fresh agents from it for each request
(sharing one LLM configuration and HTTP pool), restores the session's history into them, and
runs them synchronously; the runner calls it in a worker thread.

Two patterns come built in: :class:`PairTeam` (an assistant and a user proxy, the classic
AutoGen pair) and :class:`GroupTeam` (several assistants in a ``GroupChat`` run by a
``GroupChatManager``). Subclass :class:`Team` for anything else.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import autogen

from agent_api.agents.autogen_compat import (
    AUTO_SELECTION,
    HumanInputMode,
    SpeakerSelector,
    group_chat,
    group_messages_since,
    messages_since,
    register_tools,
    restore_history,
    start_chat,
    user_proxy_agent,
)
from agent_api.agents.events import RunOutcome
from agent_api.agents.messages import is_termination, to_autogen
from agent_api.agents.run import USER, TeamRun, collect_outcome, instrument, run_io
from agent_api.agents.tools import get_tool
from agent_api.models.chat import ChatMessage
from agent_api.telemetry import instrument_agents

CONTINUE = "Please continue. When your answer is complete, put TERMINATE at the end of it."

HumanInput = Literal["never", "always", "on_terminate"]
# AutoGen's human input modes, by the names team files use.
HUMAN_INPUT_MODES: dict[str, HumanInputMode] = {
    "never": "NEVER",
    "always": "ALWAYS",
    "on_terminate": "TERMINATE",
}


def refusal(name: str, reason: str) -> str:
    """What the agent reads instead of a tool's result when a person denies the call."""
    because = f" Their reason: {reason}" if reason else ""
    return f"The user denied this call of {name}; the tool was not run.{because}"


def approval_required(run: TeamRun, agent: str, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, run only once a person approves the call; a denial answers with :func:`refusal`."""

    @functools.wraps(function)
    def guarded(**arguments: Any) -> Any:
        call = run.take_call(name, arguments)
        prompt = f"{agent} wants to run {name} with {call['arguments'] or json.dumps(arguments)}."
        reply = run.ask("approval", prompt, agent, tool_call=call)
        if not reply.approved:
            return refusal(name, reply.reason)
        return function(**arguments)

    return guarded


@dataclass(frozen=True)
class AgentSpec:
    """One assistant: its name, system message, tools and optional model settings."""

    name: str
    system_message: str
    description: str = ""
    tools: tuple[str, ...] = ()
    model_settings: dict[str, Any] = field(default_factory=dict)

    def llm_config(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` with this agent's tools and model settings (``model`` per entry, the rest top-level)."""
        if not self.model_settings and not self.tools:
            return base
        settings = dict(self.model_settings)
        config = dict(base)
        if "model" in settings:
            model = settings.pop("model")
            config["config_list"] = [{**entry, "model": model} for entry in base["config_list"]]
        config.update(settings)
        if self.tools:
            # The schemas go in before the agent is built: registering them afterwards makes
            # AutoGen rebuild the agent's model client once per tool, on every request.
            config["tools"] = [get_tool(name).schema for name in self.tools]
        return config

    def build(self, base_llm_config: dict[str, Any]) -> autogen.AssistantAgent:
        return autogen.AssistantAgent(
            name=self.name,
            system_message=self.system_message,
            description=self.description or None,
            llm_config=self.llm_config(base_llm_config),
        )

    def attach_tools(self, executor: autogen.ConversableAgent, run: TeamRun, approve: Collection[str] = ()) -> None:
        """Let ``executor`` run this agent's tool calls (the model learns of them from llm_config);
        calls of the tools named in ``approve`` wait for a person's approval first."""
        functions: dict[str, Callable[..., Any]] = {}
        for name in self.tools:
            function = get_tool(name).function
            functions[name] = approval_required(run, self.name, name, function) if name in approve else function
        if functions:
            register_tools(executor, functions)


def user_proxy(max_turns: int, human_input: HumanInput = "never") -> autogen.UserProxyAgent:
    """Stands in for the caller: asks a person as the team says (through the run), never runs
    code, nudges the assistant on when it stops before its answer is complete."""
    return user_proxy_agent(
        USER,
        human_input_mode=HUMAN_INPUT_MODES[human_input],
        is_termination_msg=is_termination,
        default_auto_reply=CONTINUE,
        max_consecutive_auto_reply=max_turns,
    )


class Team(ABC):
    """A named team of agents that can run one user turn: the engine interface.

    An engine is a way of running a team: ``ag2`` (the classic AutoGen API, the teams of this
    module: :meth:`run` runs synchronously in a run thread) or ``agentchat`` (AutoGen AgentChat,
    ``agents.agentchat``: :meth:`run_async` runs natively in the service's event loop, as
    ``native_async`` says). Either way the turn restores ``run.history``, reports what happens
    through ``run.emit`` (the service's run events), stops when ``run.cancelled`` is set, and
    returns a :class:`RunOutcome` with the model's usage. ``TeamRunner`` is the only caller;
    nothing above it knows which engine runs a team.
    """

    pattern: str = ""
    engine: str = "ag2"
    native_async: bool = False  # True: run_async in the event loop; False: run in a run thread

    def __init__(
        self, name: str, description: str, *, human_input: HumanInput = "never", approve_tools: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.description = description
        self.human_input: HumanInput = human_input  # where a person is asked (AutoGen's human input mode)
        self.approve_tools = frozenset(approve_tools)  # tools whose calls wait for a person's approval

    @property
    @abstractmethod
    def agents(self) -> Sequence[AgentSpec]: ...

    @property
    def answering_agents(self) -> list[str]:
        """The agents whose replies make up the answer."""
        return [self.agents[-1].name]

    @property
    def min_turns(self) -> int:
        """The fewest agent replies in which the answering agent can speak (a smaller max_turns is refused)."""
        return 1

    def describe(self) -> dict[str, Any]:
        """Pattern-specific facts for ``GET /agents``."""
        described: dict[str, Any] = {}
        if self.human_input != "never":
            described["human_input"] = self.human_input
        if self.approve_tools:
            described["approve_tools"] = sorted(self.approve_tools)
        return described

    def run(self, run: TeamRun) -> RunOutcome:
        """Run one turn synchronously (in a worker thread) and return what it added."""
        raise NotImplementedError

    async def run_async(self, run: TeamRun) -> RunOutcome:
        """Run one turn in the event loop (a ``native_async`` team) and return what it added."""
        raise NotImplementedError

    def warm_up(self, llm_config: dict[str, Any]) -> None:
        """Build what the first run would otherwise pay for (called once, in a run thread, at startup)."""
        for spec in self.agents:
            spec.build(llm_config).client  # noqa: B018  (building the model client is the point)


class OneAnswerTeam(Team):
    """Several agents, of which one (``answer_from``) gives the answer: the group teams of both engines."""

    _agents: list[AgentSpec]
    answer_from: str

    @property
    def agents(self) -> Sequence[AgentSpec]:
        return self._agents

    @property
    def answering_agents(self) -> list[str]:
        return [self.answer_from]

    @property
    @abstractmethod
    def speaks_in_order(self) -> bool:
        """Whether the agents speak in the order they are listed (round robin)."""

    @property
    def min_turns(self) -> int:
        """The answering agent's place when the agents speak in order, else 1 (a model picks the
        speakers, and may pick it first)."""
        return 1 + [spec.name for spec in self._agents].index(self.answer_from) if self.speaks_in_order else 1


class PairTeam(Team):
    """An assistant and a user proxy: the assistant answers until it says TERMINATE.

    The proxy executes the assistant's tool calls; it never executes code.
    """

    pattern = "pair"

    def __init__(
        self,
        name: str,
        description: str,
        assistant: AgentSpec,
        *,
        human_input: HumanInput = "never",
        approve_tools: Sequence[str] = (),
    ) -> None:
        super().__init__(name, description, human_input=human_input, approve_tools=approve_tools)
        self.assistant = assistant

    @property
    def agents(self) -> Sequence[AgentSpec]:
        return [self.assistant]

    def run(self, run: TeamRun) -> RunOutcome:
        run.answerers = set(self.answering_agents)
        assistant = self.assistant.build(run.llm_config)
        proxy = user_proxy(run.max_turns, self.human_input)
        self.assistant.attach_tools(proxy, run, self.approve_tools)
        instrument(run, [assistant, proxy])
        instrument_agents([assistant, proxy])
        restored = restore_history(assistant, proxy, [to_autogen(m) for m in run.history])
        restore_history(proxy, assistant, [to_autogen(m, flip=True) for m in run.history])
        with run_io(run):
            start_chat(proxy, assistant, run.message, max_turns=run.max_turns, cache=run.cache)
        return collect_outcome(run, messages_since(assistant, proxy, restored), [assistant, proxy])


SpeakerSelection = Literal["round_robin", "auto"]


class GroupTeam(OneAnswerTeam):
    """Several assistants in a GroupChat run by a GroupChatManager.

    The caller's message opens each turn; the assistants then speak in order (``round_robin``)
    or as the model picks (``auto``) until an answering agent ends its message with TERMINATE
    or the rounds run out. An agent that calls a tool executes it itself and speaks again with
    the result. The session's history is restored into the group chat and every agent, so a
    turn continues the same conversation.
    """

    pattern = "group"

    def __init__(
        self,
        name: str,
        description: str,
        agents: Sequence[AgentSpec],
        *,
        speaker_selection: SpeakerSelection = "round_robin",
        max_rounds: int | None = None,
        answer_from: str | None = None,
        human_input: HumanInput = "never",
        approve_tools: Sequence[str] = (),
    ) -> None:
        super().__init__(name, description, human_input=human_input, approve_tools=approve_tools)
        if len(agents) < 2:
            raise ValueError("a group needs at least two agents")
        self._agents = list(agents)
        self.speaker_selection = speaker_selection
        self.max_rounds = max_rounds or len(agents)
        self.answer_from = answer_from or agents[-1].name

    @property
    def speaks_in_order(self) -> bool:
        return self.speaker_selection == "round_robin"

    def describe(self) -> dict[str, Any]:
        return {"speaker_selection": self.speaker_selection, "max_rounds": self.max_rounds, **super().describe()}

    def run(self, run: TeamRun) -> RunOutcome:
        run.answerers = set(self.answering_agents)
        assistants: list[autogen.ConversableAgent] = [spec.build(run.llm_config) for spec in self._agents]
        for spec, agent in zip(self._agents, assistants, strict=True):
            spec.attach_tools(agent, run, self.approve_tools)
        proxy = user_proxy(1, self.human_input)
        # With a person in the loop the user's seat is in the group (after the answering agent),
        # and the person's turns do not count against the agents' rounds.
        asks = self.human_input != "never"
        members: list[autogen.Agent] = [*assistants, proxy] if asks else list(assistants)
        rounds = min(self.max_rounds, run.max_turns)
        history = [to_group_message(m) for m in run.history]
        answerers = set(self.answering_agents)

        def answered(message: dict[str, Any]) -> bool:
            # The answering agent ends the turn; a TERMINATE from another agent (or the caller) does not.
            # With a person in the loop the person ends it (the user's seat then gives no reply).
            return not asks and message.get("name") in answerers and is_termination(message)

        groupchat, manager = group_chat(
            members,
            history,
            max_round=1 + (2 * rounds if asks else rounds),
            select_speaker=self._selector(assistants, proxy if asks else None),
            # The manager's own model calls (speaker selection) must not stream: their tokens are
            # not anybody's answer.
            selector_llm_config=run.quiet_llm_config,
            is_termination_msg=answered,
        )
        for agent in assistants:
            restore_history(agent, manager, [agent_view(m, agent.name) for m in run.history])
        instrument(run, [*assistants, proxy])
        instrument_agents([*assistants, proxy, manager])
        with run_io(run):
            start_chat(proxy, manager, run.message, max_turns=1, cache=run.cache)
        return collect_outcome(run, group_messages_since(groupchat, len(history)), [*assistants, manager])

    def _selector(self, assistants: list[autogen.ConversableAgent], person: autogen.Agent | None) -> SpeakerSelector:
        method = self.speaker_selection
        order = {agent.name: i for i, agent in enumerate(assistants)}
        human_input = self.human_input

        def select(last_speaker: autogen.Agent, groupchat: autogen.GroupChat) -> autogen.Agent | str:
            last = groupchat.messages[-1] if groupchat.messages else {}
            if last.get("tool_calls") or last.get("tool_responses") or last.get("role") == "tool":
                # The caller executes its own tool call, then speaks again with the result.
                return last_speaker if last_speaker in assistants else assistants[0]
            if person is not None and last_speaker.name == self.answer_from:
                if human_input == "always" or is_termination(last):
                    return person  # the user's seat: the person answers the answering agent
            if method == "auto":
                return AUTO_SELECTION
            if last_speaker.name not in order:  # the caller just spoke: start from the first
                return assistants[0]
            return assistants[(order[last_speaker.name] + 1) % len(assistants)]

        return select


def to_group_message(message: ChatMessage) -> dict[str, Any]:
    """A stored message as a GroupChat keeps it: named, text as role user."""
    out = to_autogen(message)
    if out.get("role") == "assistant" and not out.get("tool_calls"):
        out["role"] = "user"
    out["name"] = message.name or USER
    return out


def agent_view(message: ChatMessage, agent_name: str) -> dict[str, Any]:
    """A stored message as one group member sees it: its own text as assistant, the rest as user."""
    out = to_autogen(message)
    if message.role in ("user", "assistant") and not message.tool_calls:
        out["role"] = "assistant" if message.name == agent_name else "user"
    return out
