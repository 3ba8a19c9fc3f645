"""Bodies of the session routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from agent_api.models.chat import ChatMessage


class SessionResponse(BaseModel):
    """A session and its stored history."""

    session_id: str
    agent: str = Field(description="The team the session belongs to.")
    created_at: datetime
    updated_at: datetime
    turns: int = Field(description="Runs completed in this session.")
    expires_in: int = Field(description="Seconds until the session expires unless another turn refreshes it.")
    messages: list[ChatMessage]
