"""Reading a /chat/stream response frame by frame, with arrival times."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource


@dataclass
class Frame:
    id: str
    event: str
    data: dict[str, Any]
    at: float  # seconds since the request was sent


def read_frames(
    client: httpx.Client, body: dict[str, Any], path: str = "/chat/stream", stop_after: str | None = None
) -> tuple[httpx.Response, list[Frame]]:
    """POST ``body`` and parse the whole stream (or stop after the first ``stop_after`` frame)."""
    frames: list[Frame] = []
    start = time.monotonic()
    with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            response.read()
            return response, frames
        for sse in EventSource(response).iter_sse():
            frames.append(Frame(sse.id, sse.event, json.loads(sse.data), time.monotonic() - start))
            if stop_after is not None and sse.event == stop_after:
                break
    return response, frames


def answer(frames: list[Frame]) -> str:
    return "".join(f.data["chunk"] for f in frames)
