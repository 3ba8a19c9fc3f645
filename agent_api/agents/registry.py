"""The registry of named teams a request can select with ``agent``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from agent_api.agents.teams import Team
from agent_api.errors import UnknownTeam

DEFAULT_TEAM = "research"


class TeamRegistry:
    """Teams by name, in the order they were loaded."""

    def __init__(self, teams: Iterable[Team]) -> None:
        self._teams = {team.name: team for team in teams}

    def get(self, name: str) -> Team:
        try:
            return self._teams[name]
        except KeyError:
            raise UnknownTeam(name, sorted(self._teams)) from None

    def __iter__(self) -> Iterator[Team]:
        return iter(self._teams.values())
