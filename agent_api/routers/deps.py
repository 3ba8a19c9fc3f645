"""The long-lived parts of the app, handed to routes as small typed dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from agent_api.agents.llm import LLMProvider
from agent_api.agents.registry import TeamRegistry
from agent_api.config import Settings
from agent_api.services.chat import ChatService
from agent_api.services.sessions import SessionManager


@dataclass
class AppState:
    """Built once in the lifespan; one per worker process."""

    settings: Settings
    sessions: SessionManager
    teams: TeamRegistry
    llm: LLMProvider
    chat: ChatService


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.agent_api
    return state


def get_chat(request: Request) -> ChatService:
    return get_state(request).chat


def get_sessions(request: Request) -> SessionManager:
    return get_state(request).sessions


StateDep = Annotated[AppState, Depends(get_state)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
SessionsDep = Annotated[SessionManager, Depends(get_sessions)]
