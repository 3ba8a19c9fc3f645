"""The long-lived parts of the app, handed to routes as small typed dependencies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_api.agents.registry import TeamRegistry
from agent_api.config import Settings
from agent_api.errors import RateLimited, Unauthorized
from agent_api.observability import count_error
from agent_api.runs.service import RunService
from agent_api.security import ANONYMOUS, KeyRing, Principal
from agent_api.services.ratelimit import RequestRateLimiter
from agent_api.services.readiness import ModelProbe
from agent_api.services.sessions import SessionManager
from agent_api.services.usage import UsageStore
from agent_api.shutdown import Shutdown


@dataclass
class AppState:
    """Built once in the lifespan; one per worker process."""

    settings: Settings
    sessions: SessionManager
    teams: TeamRegistry
    model: str
    model_backend: str
    runs: RunService
    keys: KeyRing
    rate_limiter: RequestRateLimiter | None
    shutdown: Shutdown
    started_at: datetime
    model_probe: ModelProbe
    usage: UsageStore


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.agent_api
    return state


# The dependencies are coroutines although they do not wait: FastAPI runs a plain function
# dependency in its thread pool, a thread hand-off per request for a dictionary lookup.
async def get_state(request: Request) -> AppState:
    return app_state(request)


StateDep = Annotated[AppState, Depends(get_state)]

# Declared as security schemes so that /docs offers an "Authorize" button and clients see them.
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from API_KEYS.")
_bearer = HTTPBearer(auto_error=False, description="The same API key, as `Authorization: Bearer <key>`.")


async def authenticate(
    state: StateDep,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller, from ``X-API-Key`` or ``Authorization: Bearer``; 401 without a valid key."""
    return await check_key(state, api_key if api_key is not None else (bearer.credentials if bearer else None))


async def authenticate_headers(state: AppState, headers: Mapping[str, str]) -> Principal:
    """:func:`authenticate` for routes outside FastAPI's dependencies (the MCP and A2A servers)."""
    presented = headers.get("x-api-key")
    if presented is None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        presented = credentials.strip() if scheme.lower() == "bearer" else None
    return await check_key(state, presented)


async def check_key(state: AppState, presented: str | None) -> Principal:
    """The caller presenting ``presented`` (rate-limited); 401 without a valid key."""
    if not state.keys.enabled:
        return Principal(ANONYMOUS)
    if not presented:
        raise Unauthorized("Missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'.")
    principal = state.keys.verify(presented)
    if principal is None:
        raise Unauthorized("Invalid API key.")
    if state.rate_limiter is not None:
        await state.rate_limiter.check(principal.key_id)
    return principal


async def get_runs(request: Request) -> RunService:
    return app_state(request).runs


async def get_sessions(request: Request) -> SessionManager:
    return app_state(request).sessions


PrincipalDep = Annotated[Principal, Depends(authenticate)]

# Every route behind authenticate() can answer these.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key (see `WWW-Authenticate`)."},
    429: {"description": "The API key's rate limit or concurrent-run limit; see `Retry-After`."},
    503: {"description": "The session store is unavailable."},
}
RunsDep = Annotated[RunService, Depends(get_runs)]
SessionsDep = Annotated[SessionManager, Depends(get_sessions)]


PRINCIPAL_STATE = "agent_api_principal"


class KeyGate:
    """ASGI: the API keys and rate limit of :func:`authenticate`, in front of an app that is not a
    FastAPI route (the MCP and A2A servers). The caller is left in the request's state."""

    def __init__(self, app: FastAPI, inner: ASGIApp) -> None:
        self.app = app
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: AppState = self.app.state.agent_api
        try:
            principal = await authenticate_headers(state, Headers(scope=scope))
        except (Unauthorized, RateLimited) as exc:
            count_error(exc.error_type)
            await JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        await self.inner(scope, receive, send)


def gated_principal(request: Any) -> Principal | None:
    """The caller a :class:`KeyGate` let through, from a request (or anything with its ``state``)."""
    principal = getattr(getattr(request, "state", None), PRINCIPAL_STATE, None)
    return principal if isinstance(principal, Principal) else None
