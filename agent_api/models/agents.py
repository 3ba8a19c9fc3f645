"""Body of ``GET /agents``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class AgentInfo(BaseModel):
    name: str
    description: str
    tools: list[str]


class TeamInfo(BaseModel):
    """A team a request can select with ``agent``."""

    name: str
    description: str
    engine: str = Field(
        default="ag2",
        description="What runs the team: `ag2` (the classic AutoGen API) or `agentchat` (AutoGen AgentChat).",
    )
    pattern: str = Field(description="`pair` (assistant + user proxy), `group` (group chat), or a custom pattern.")
    agents: list[AgentInfo]
    answer_from: list[str] = Field(description="The agents whose replies make up the response.")
    speaker_selection: Literal["round_robin", "auto", "selector"] | None = Field(
        default=None, description="How a group picks its speakers (`selector`: AgentChat's SelectorGroupChat)."
    )
    max_rounds: int | None = None
    min_turns: int = Field(default=1, description="The smallest max_turns the team accepts (its answerer's turn).")
    human_input: Literal["always", "on_terminate"] | None = Field(
        default=None, description="When the team asks a person (absent: never); see POST /runs/{run_id}/input."
    )
    approve_tools: list[str] | None = Field(default=None, description="Tools whose calls wait for a person's approval.")
    default: bool = Field(description="True for the team used when a request names none.")


class TeamsResponse(BaseModel):
    teams: list[TeamInfo]
