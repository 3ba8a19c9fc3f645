"""Body of ``GET /health``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class HealthResponse(BaseModel):
    """What is running and whether it can serve."""

    status: Literal["ok", "degraded", "draining"]
    version: str
    store: Literal["redis", "embedded"] = Field(description="Where sessions live.")
    redis_reachable: bool
    model: str = Field(description="The model the teams use.")
    model_backend: Literal["openai-compatible", "offline"]
    auth: bool = Field(description="Whether API keys are required.")
    worker: int = Field(description="Process id of the worker that answered.")


class ReadinessResponse(BaseModel):
    """Whether this process can serve turns now."""

    ready: bool
    problems: list[str] = Field(description="Why not: Redis, the model server, or a shutdown in progress.")
