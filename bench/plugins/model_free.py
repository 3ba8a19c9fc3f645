"""A team that answers at once, without AutoGen or a model: what the service costs on its own.

Loaded by ``bench/cost_split.py`` into the service it starts (``TEAM_PLUGINS=model_free`` with
this directory on ``PYTHONPATH``). Its run goes the way every run goes (the API process, the queue,
a worker's run thread, the run's events and its end, the session's turn saved); only the team's
own work, AutoGen's chat and its model call, is left out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent_api.agents.events import MessageEvent, RunOutcome
from agent_api.agents.run import TeamRun
from agent_api.agents.teams import AgentSpec, Team
from agent_api.models.chat import ChatMessage

NAME = "model_free"


class ModelFreeTeam(Team):
    """One agent that echoes the message back, as its answer, in the run's thread."""

    pattern = "pair"

    def __init__(self) -> None:
        super().__init__(NAME, "Answers at once with the message itself (no model).")
        self._agents = [AgentSpec("echo", "Repeat the message.")]

    @property
    def agents(self) -> list[AgentSpec]:
        return self._agents

    def warm_up(self, llm_config: dict[str, Any]) -> None:
        pass  # nothing to build

    def run(self, run: TeamRun) -> RunOutcome:
        now = datetime.now(UTC)
        asked = ChatMessage(role="user", content=run.message, name="user", timestamp=now)
        answer = ChatMessage(role="assistant", content=f"You said: {run.message}", name="echo", timestamp=now)
        run.emit(MessageEvent(answer))
        return RunOutcome(messages=[asked, answer], response=answer.content, turns_used=1, finished=True)


def teams() -> list[Team]:
    return [ModelFreeTeam()]
