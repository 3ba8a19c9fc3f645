"""A run record as callers see it (``GET /runs/{id}``, webhooks)."""

from __future__ import annotations

from typing import Any

from agent_api.models.runs import InputRequestInfo, RunError, RunResponse, RunResult
from agent_api.runs.model import Run, RunStatus


def run_response(run: Run) -> RunResponse:
    error = None
    if run.error:
        error = RunError(type=str(run.error.get("type", "internal")), detail=str(run.error.get("detail", "")))
    return RunResponse(
        run_id=run.id,
        session_id=run.session_id,
        team=run.team,
        status=run.status.value,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        metadata=run.metadata,
        webhook=run.webhook,
        stateless=True if run.stateless else None,
        input_request=(
            InputRequestInfo.model_validate(run.input_request)
            if run.input_request and run.status is RunStatus.REQUIRES_INPUT
            else None
        ),
        result=RunResult.model_validate(run.result) if run.result else None,
        error=error,
    )


def run_json(run: Run) -> dict[str, Any]:
    return run_response(run).model_dump(mode="json", exclude_none=True)
