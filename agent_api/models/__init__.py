"""Pydantic schemas: the API contract."""

from agent_api.models.chat import AgentRequest, AgentResponse, ChatMessage, Usage
from agent_api.models.health import HealthResponse
from agent_api.models.session import SessionResponse

__all__ = ["AgentRequest", "AgentResponse", "ChatMessage", "HealthResponse", "SessionResponse", "Usage"]
