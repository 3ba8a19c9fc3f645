"""The registry of named teams a request can select with ``agent``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from agent_api.agents.teams import AgentSpec, PairTeam, Team
from agent_api.errors import UnknownTeam

RESEARCH_ASSISTANT = (
    "You are a careful research assistant. Answer the user's question accurately and concisely, "
    "say what you are unsure of, and build on the earlier turns of the conversation. "
    "When your answer is complete, end your message with the word TERMINATE."
)


def builtin_teams() -> list[Team]:
    return [
        PairTeam(
            "research",
            "A research assistant answering with a user proxy (one assistant, no tools, no code execution).",
            AgentSpec("research_assistant", RESEARCH_ASSISTANT),
        )
    ]


class TeamRegistry:
    """Teams by name."""

    def __init__(self, teams: Iterable[Team]) -> None:
        self._teams = {team.name: team for team in teams}

    def get(self, name: str) -> Team:
        try:
            return self._teams[name]
        except KeyError:
            raise UnknownTeam(name, sorted(self._teams)) from None

    def __iter__(self) -> Iterator[Team]:
        return iter(self._teams.values())

    def __contains__(self, name: object) -> bool:
        return name in self._teams
