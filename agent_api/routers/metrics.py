"""``GET /metrics``: Prometheus metrics of this service."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent_api.metrics import registry

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics() -> Response:
    """Prometheus metrics of this service (all API processes)."""
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
