"""``GET /health``: what is running and whether it can serve."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from agent_api import __version__
from agent_api.models.health import HealthResponse, ReadinessResponse
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


@router.get(
    "/health/ready",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "Not ready: `problems` says why."}},
)
async def ready(state: StateDep) -> JSONResponse:
    """Readiness: Redis answers and the model server is reachable (probed at most every 5 s).

    `/health` is the liveness check; this one is for load balancers and orchestrators deciding
    whether to send traffic here.
    """
    problems = []
    if state.shutdown.draining.is_set():
        problems.append("the service is shutting down")
    if not await state.sessions.ping():
        problems.append("Redis is unreachable")
    model = await state.model_probe.problem()
    if model is not None:
        problems.append(model)
    body = ReadinessResponse(ready=not problems, problems=problems)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
