"""AgentChat teams: AutoGen AgentChat (``autogen-agentchat``) as the service's second engine.

An :class:`AgentChatTeam` is a description, like the AG2 teams: one assistant (``single``) or a
group of them, speaking in turn or as a model picks. How it runs is
:mod:`agent_api.agents.agentchat.engine`, imported by the processes that run agents; this module,
which the API processes load with the team files, imports no engine.

A person in the loop (``human_input``, ``approve_tools``) is not mapped: such a team file is
refused when it is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from agent_api.agents.teams import AgentSpec, OneAnswerTeam

if TYPE_CHECKING:
    from agent_api.agents.events import RunOutcome
    from agent_api.agents.run import TeamRun

Selection = Literal["single", "round_robin", "selector"]


class AgentChatTeam(OneAnswerTeam):
    """A team run by AutoGen AgentChat: one assistant (``single``) or a group of them."""

    engine = "agentchat"
    native_async = True

    def __init__(
        self,
        name: str,
        description: str,
        agents: Sequence[AgentSpec],
        *,
        selection: Selection = "round_robin",
        max_rounds: int | None = None,
        answer_from: str | None = None,
        termination: dict[str, Any] | None = None,
        allow_repeated_speaker: bool = False,
    ) -> None:
        super().__init__(name, description)
        if not agents:
            raise ValueError("a team needs at least one agent")
        if selection == "single" and len(agents) != 1:
            raise ValueError("a single-agent team has exactly one agent")
        self._agents = list(agents)
        self.selection: Selection = selection
        self.pattern = "pair" if selection == "single" else "group"
        self.max_rounds = max_rounds or (None if selection == "single" else len(agents))
        self.answer_from = answer_from or agents[-1].name
        self.termination = termination  # a termination component (from a component file), checked already
        self.allow_repeated_speaker = allow_repeated_speaker
        self.model_clients: dict[tuple[Any, ...], Any] = {}  # the engine's, shared by the team's runs

    @property
    def speaks_in_order(self) -> bool:
        return self.selection == "round_robin"

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {}
        if self.selection != "single":
            described["speaker_selection"] = self.selection
            described["max_rounds"] = self.max_rounds
        return described

    def warm_up(self, llm_config: dict[str, Any]) -> None:
        from agent_api.agents.agentchat import engine  # imported where agents run (see the module's docstring)

        engine.warm_up(self)

    async def run_async(self, run: TeamRun) -> RunOutcome:
        from agent_api.agents.agentchat import engine  # imported where agents run (see the module's docstring)

        return await engine.run_turn(self, run)
