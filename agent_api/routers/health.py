"""``GET /health``: what is running and whether it can serve."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from agent_api import __version__
from agent_api.models.health import HealthResponse
from agent_api.routers.deps import StateDep

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Redis is unreachable, or the worker is shutting down."}},
)
async def health(state: StateDep) -> JSONResponse:
    """Report the service's version, session store and model, and whether Redis answers."""
    reachable = await state.sessions.ping()
    draining = state.shutdown.draining.is_set()
    body = HealthResponse(
        status="draining" if draining else "ok" if reachable else "degraded",
        version=__version__,
        store="embedded" if state.settings.redis_url is None else "redis",
        redis_reachable=reachable,
        model=state.model,
        model_backend="offline" if state.model_backend == "offline" else "openai-compatible",
        auth=state.keys.enabled,
        worker=os.getpid(),
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
