"""A team plugin used by the tests: a Python-defined team and tool."""

from __future__ import annotations

from agent_api.agents.teams import AgentSpec, PairTeam, Team
from agent_api.agents.tools import register_tool


@register_tool("shout", "Upper-case a text.")
def shout(text: str) -> str:
    return text.upper()


def teams() -> list[Team]:
    return [
        PairTeam("plugin_pair", "A team made in Python.", AgentSpec("plugin_assistant", "Reply TERMINATE.")),
        launch_team(),
    ]


LAUNCHES: list[str] = []  # every call of launch_rocket that ran (the app runs in the test's process)


@register_tool("launch_rocket", "Launch the rocket with a payload (a side effect a person must approve).")
def launch_rocket(payload: str) -> str:
    LAUNCHES.append(payload)
    return f"Launched with {payload}."


def launch_team() -> Team:
    """A pair whose launch_rocket calls wait for a person's approval."""
    launcher = AgentSpec("launcher", "You launch rockets. End your answer with TERMINATE.", tools=("launch_rocket",))
    return PairTeam(
        "plugin_launch", "Launches rockets, once a person approves.", launcher, approve_tools=["launch_rocket"]
    )
