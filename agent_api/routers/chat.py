"""``POST /chat``: one user turn, answered when the team has finished."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from agent_api.models.chat import AgentRequest, AgentResponse
from agent_api.routers.deps import ChatDep

router = APIRouter(tags=["chat"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown or expired session."},
    409: {"description": "The session belongs to another team."},
    422: {"description": "Invalid request; `detail` names the field."},
    502: {"description": "The model provider failed; the session was not changed."},
    503: {"description": "The session store or the model provider is unavailable."},
    504: {"description": "The model did not answer in time; the session was not changed."},
}


@router.post("/chat", response_model=AgentResponse, responses=ERRORS)
async def chat(request: AgentRequest, service: ChatDep) -> AgentResponse:
    """Send a message to a team and get its answer when it has finished."""
    return await service.chat(request)
