"""Teams: the named groups of agents that team files describe, and the interface every engine runs.

A :class:`Team` is a description: its agents, their tools, where a person is asked. Each run
builds fresh agents from it (sharing one LLM configuration and HTTP pool), restores the
session's history into them and runs the turn. Building and running is the engine's:
:mod:`agent_api.agents.ag2` for the teams of this module, :mod:`agent_api.agents.agentchat.engine`
for AgentChat's. This module, which the API processes load with the team files, imports no
engine: AutoGen is loaded by the processes that run agents, when they first run (or warm up) a team.

Two patterns come built in: :class:`PairTeam` (an assistant and a user proxy, the classic
AutoGen pair) and :class:`GroupTeam` (several assistants in a ``GroupChat`` run by a
``GroupChatManager``). Subclass :class:`Team` for anything else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agent_api.agents.tools import get_tool

if TYPE_CHECKING:
    from agent_api.agents.events import RunOutcome
    from agent_api.agents.run import TeamRun

USER = "user"  # the user proxy's name: the caller's seat in every team (no agent may take it)

HumanInput = Literal["never", "always", "on_terminate"]  # where a person is asked, as team files say it


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
        """Run one turn synchronously (in a run thread) and return what it added."""
        raise NotImplementedError

    async def run_async(self, run: TeamRun) -> RunOutcome:
        """Run one turn in the event loop (a ``native_async`` team) and return what it added."""
        raise NotImplementedError

    def warm_up(self, llm_config: dict[str, Any]) -> None:
        """Build what the first run would otherwise pay for (called once, in a run thread, at startup)."""
        from agent_api.agents import ag2  # the engine: imported where agents run (see the module's docstring)

        for spec in self.agents:
            ag2.build_assistant(spec, llm_config).client  # noqa: B018  (building the model client is the point)


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
        from agent_api.agents import ag2  # the engine: imported where agents run (see the module's docstring)

        return ag2.run_pair(self, run)


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
        from agent_api.agents import ag2  # the engine: imported where agents run (see the module's docstring)

        return ag2.run_group(self, run)
