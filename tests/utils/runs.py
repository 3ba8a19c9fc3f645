"""Helpers for runs: a run record to store, and for the run routes: start a run, follow its events,
wait for its end."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis
from httpx_sse import EventSource

from agent_api.runs.model import Run, RunStatus, utcnow
from agent_api.runs.store import RunStore
from tests.utils.sse import Frame


@contextlib.asynccontextmanager
async def redis_run_store(port: int) -> AsyncIterator[RunStore]:
    """A RunStore on the redis-server at ``port``, with its client for blocking reads, as an API process has."""
    client = aioredis.Redis(port=port, decode_responses=True)
    follow = aioredis.Redis(port=port, decode_responses=True)
    try:
        yield RunStore(client, follow_client=follow, run_ttl=60)
    finally:
        await follow.aclose()
        await client.aclose()


def queued_run(run_id: str) -> Run:
    """A new one-turn run of key ``key`` on session ``s1``, to store."""
    return Run(
        id=run_id,
        owner="key",
        session_id="s1",
        team="assistant",
        status=RunStatus.QUEUED,
        created_at=utcnow(),
        message="hi",
        max_turns=2,
    )


def start_run(client: httpx.Client, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = client.post("/runs", json=body, **kwargs)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/runs/{response.json()['run_id']}"
    run: dict[str, Any] = response.json()
    return run


def follow(
    client: httpx.Client,
    run_id: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    stop_at_event: str | None = None,
    headers: dict[str, str] | None = None,
) -> list[Frame]:
    """Read ``GET /runs/{id}/events`` to its end (or the first ``stop_after`` frames / ``stop_at_event``)."""
    sent = dict(headers or {})
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    frames: list[Frame] = []
    start = time.monotonic()
    with client.stream("GET", f"/runs/{run_id}/events", headers=sent) as response:
        assert response.status_code == 200, response.read()
        for sse in EventSource(response).iter_sse():
            frames.append(Frame(sse.id, sse.event, json.loads(sse.data), time.monotonic() - start))
            if stop_after is not None and len(frames) >= stop_after:
                break
            if stop_at_event is not None and sse.event == stop_at_event:
                break
    return frames


def wait_for_end(client: httpx.Client, run_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Follow the run's events to ``done``, then read the run."""
    frames = follow(client, run_id, headers=headers)
    assert frames and frames[-1].event == "done", [f.event for f in frames]
    run: dict[str, Any] = client.get(f"/runs/{run_id}", headers=headers).json()
    return run


def ended_status(client: httpx.Client, run_id: str, timeout: float = 20.0) -> str:
    """The run's status once it is no longer queued or running (or its status after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = str(client.get(f"/runs/{run_id}").json()["status"])
        if status not in ("queued", "running"):
            break
        time.sleep(0.1)
    return status
