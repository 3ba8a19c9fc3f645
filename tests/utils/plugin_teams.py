"""A team plugin used by the tests: a Python-defined team and tool."""

from __future__ import annotations

from agent_api.agents.teams import AgentSpec, PairTeam, Team
from agent_api.agents.tools import register_tool


@register_tool("shout", "Upper-case a text.")
def shout(text: str) -> str:
    return text.upper()


def teams() -> list[Team]:
    return [PairTeam("plugin_pair", "A team made in Python.", AgentSpec("plugin_assistant", "Reply TERMINATE."))]
