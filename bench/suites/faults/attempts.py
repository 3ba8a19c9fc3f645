"""One ``POST /chat`` or ``POST /chat/stream`` request as a client of a scenario saw it."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from harness.load import sse_frames


@dataclass
class Attempt:
    """One ``POST /chat`` or ``POST /chat/stream`` request as the client saw it (times relative to the scenario)."""

    client: int
    kind: str  # "chat" or "stream"
    message: str
    session_id: str | None
    start: float
    end: float = 0.0
    status: int | None = None  # the HTTP status; None when the request raised
    error: str | None = None  # the exception, for a request that raised
    detail: str | None = None  # the error body, or the stream's error frame's detail
    response: str | None = None  # the answer of a successful turn
    frames: list[str] = field(default_factory=list)  # the stream's event types, in order
    stream_error_status: int | None = None  # the `status` of the stream's error frame

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        """A successful turn: 200 with an answer (and, for a stream, no error frame and a final done frame)."""
        if self.status != 200 or not self.response:
            return False
        return self.kind == "chat" or (bool(self.frames) and self.frames[-1] == "done" and "error" not in self.frames)

    @property
    def outcome(self) -> str:
        """A short label: "200", "503", "stream error 504", "exception ReadTimeout", ..."""
        if self.status is None:
            return f"exception {(self.error or '?').split(':')[0]}"
        if self.kind == "stream" and self.status == 200 and self.stream_error_status is not None:
            return f"stream error {self.stream_error_status}"
        if self.kind == "stream" and self.status == 200 and not self.ok:
            return "stream incomplete"
        return str(self.status)


def _turn_body(message: str, session_id: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"message": message, **extra, **({"session_id": session_id} if session_id else {})}


async def chat_attempt(
    client: httpx.AsyncClient, t0: float, client_id: int, message: str, session_id: str | None, **extra: Any
) -> Attempt:
    """Send one ``POST /chat``; never raises."""
    body = _turn_body(message, session_id, extra)
    attempt = Attempt(client_id, "chat", message, session_id, time.monotonic() - t0)
    try:
        response = await client.post("/chat", json=body)
        attempt.status = response.status_code
        if response.status_code == 200:
            data = response.json()
            attempt.response = data.get("response")
            attempt.session_id = data.get("session_id") or session_id
        else:
            attempt.detail = response.text[:200]
            attempt.session_id = session_id or response.headers.get("x-session-id")
    except Exception as exc:  # every failure is recorded, by its type
        attempt.error = f"{type(exc).__name__}: {exc}"[:200]
    attempt.end = time.monotonic() - t0
    return attempt


async def stream_attempt(
    client: httpx.AsyncClient, t0: float, client_id: int, message: str, session_id: str | None, **extra: Any
) -> Attempt:
    """Send one ``POST /chat/stream`` and read it to the end; never raises."""
    body = _turn_body(message, session_id, extra)
    attempt = Attempt(client_id, "stream", message, session_id, time.monotonic() - t0)
    try:
        async with client.stream("POST", "/chat/stream", json=body) as response:
            attempt.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                attempt.detail = response.text[:200]
                attempt.session_id = session_id or response.headers.get("x-session-id")
            else:
                async for event, data in sse_frames(response):
                    attempt.frames.append(event)
                    if event == "session":
                        attempt.session_id = data.get("session_id") or session_id
                    elif event == "error":
                        attempt.stream_error_status = data.get("status")
                        attempt.detail = str(data.get("detail"))[:200]
                    elif event == "done":
                        attempt.response = data.get("response")
    except Exception as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"[:200]
    attempt.end = time.monotonic() - t0
    return attempt


def compact(attempt: Attempt) -> dict[str, Any]:
    """An attempt for the raw results, without the long texts."""
    data = asdict(attempt)
    data["start"], data["end"] = round(attempt.start, 3), round(attempt.end, 3)
    data["outcome"] = attempt.outcome
    data.pop("response")
    if attempt.kind == "chat":
        data.pop("frames")
    return data


def counts(attempts: list[Attempt]) -> dict[str, int]:
    """The attempts by outcome ("200", "503", "stream error 504", ...)."""
    return dict(sorted(Counter(a.outcome for a in attempts).items()))
