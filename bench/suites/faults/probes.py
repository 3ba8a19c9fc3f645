"""What the scenarios read besides the answers: the lock keys, runs in flight, the API's log, model requests."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import redis.asyncio as aioredis

LOCK_PATTERN = "agent-api:lock:*"


def log_summary(lines: list[str], limit: int = 12) -> list[str]:
    """Distinct log messages (JSON ``message`` or the raw line) with their counts, most frequent first."""
    counter: Counter[str] = Counter()
    for line in lines:
        try:
            data = json.loads(line)
            text = f"{data.get('level')} {data.get('logger')}: {data.get('message')}"
            if data.get("exc_info"):
                text += " | " + str(data["exc_info"]).strip().splitlines()[-1][:200]
        except (ValueError, AttributeError):
            text = line.strip()[:240]
        if text:
            counter[text] += 1
    return [f"{n} x {text}" for text, n in counter.most_common(limit)]


async def lock_keys(redis_url: str) -> list[str]:
    """The session lock keys in Redis right now (a lock left after its run ended has leaked)."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [key async for key in client.scan_iter(match=LOCK_PATTERN, count=1000)]
    finally:
        await client.aclose()


def question(request: dict[str, Any]) -> str:
    """The caller's message of a model request (as the offline model finds it: the last one named "user")."""
    messages = request.get("messages") or []
    named = [m for m in messages if m.get("role") == "user" and m.get("name") == "user"]
    users = named or [m for m in messages if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    return content if isinstance(content, str) else json.dumps(content)


async def runs_in_flight(url: str) -> float | None:
    """The sum of ``agent_api_runs_in_flight`` from ``/metrics`` (None when it cannot be read)."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("agent_api_runs_in_flight{")
    ]
    return sum(values) if values else 0.0


def max_or_zero(values: list[float]) -> float:
    """The largest value, 0 for none."""
    return max(values) if values else 0.0
