"""``GET`` and ``DELETE /session/{session_id}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from agent_api.models.chat import SESSION_ID_PATTERN
from agent_api.models.session import SessionResponse
from agent_api.routers.deps import AUTH_RESPONSES, PrincipalDep, SessionsDep

router = APIRouter(tags=["sessions"], responses=AUTH_RESPONSES)

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The id returned by /chat.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown or expired session, or another key's."}}


@router.get(
    "/session/{session_id}", response_model=SessionResponse, response_model_exclude_none=True, responses=NOT_FOUND
)
async def get_session(session_id: SessionId, sessions: SessionsDep, principal: PrincipalDep) -> SessionResponse:
    """Return a session's stored history, oldest message first."""
    session = await sessions.load(session_id, principal.key_id)
    return SessionResponse(
        session_id=session.id,
        agent=session.agent,
        created_at=session.created_at,
        updated_at=session.updated_at,
        turns=session.turns,
        expires_in=session.expires_in,
        messages=session.messages,
    )


@router.delete("/session/{session_id}", responses=NOT_FOUND)
async def delete_session(session_id: SessionId, sessions: SessionsDep, principal: PrincipalDep) -> dict[str, Any]:
    """Delete a session and its history."""
    await sessions.delete(session_id, principal.key_id)
    return {"session_id": session_id, "deleted": True}
