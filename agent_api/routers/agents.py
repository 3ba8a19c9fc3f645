"""``GET /agents``: the teams a request can select."""

from __future__ import annotations

from fastapi import APIRouter

from agent_api.agents.registry import DEFAULT_TEAM
from agent_api.models.agents import AgentInfo, TeamInfo, TeamsResponse
from agent_api.routers.deps import AUTH_RESPONSES, PrincipalDep, StateDep

router = APIRouter(tags=["agents"], responses=AUTH_RESPONSES)


@router.get(
    "/agents",
    response_model=TeamsResponse,
    response_model_exclude_none=True,
)
async def list_agents(state: StateDep, principal: PrincipalDep) -> TeamsResponse:
    """List the teams, their agents and how they converse."""
    return TeamsResponse(
        teams=[
            TeamInfo(
                name=team.name,
                description=team.description,
                engine=team.engine,
                pattern=team.pattern,
                agents=[AgentInfo(name=a.name, description=a.description, tools=list(a.tools)) for a in team.agents],
                answer_from=team.answering_agents,
                min_turns=team.min_turns,
                default=team.name == DEFAULT_TEAM,
                **team.describe(),
            )
            for team in state.teams
        ]
    )
