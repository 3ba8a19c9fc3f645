"""HTTP load generation: clients for N connections, Server-Sent Events, the offline model's controls."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any

import aiohttp  # type: ignore[import-not-found,unused-ignore]  # the `bench` extra
import httpx

CLIENT_CONNECTIONS = 20  # connections per load-generator client (see sharded_clients)


def sharded_clients(url: str, n: int, timeout: float) -> list[httpx.AsyncClient]:
    """Clients with N connections between them, at most CLIENT_CONNECTIONS each.

    One client with N connections would make the load generator the bottleneck: httpcore's pool
    scans all its connections and queued requests on every request and response (quadratic in
    N), which cost about 20 s of CPU for N=1000 on the benchmark machine. Send request ``i`` with
    ``clients[i % len(clients)]``.
    """
    shards = -(-n // CLIENT_CONNECTIONS)
    sizes = [n // shards + (1 if i < n % shards else 0) for i in range(shards)]
    return [
        httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        )
        for size in sizes
    ]


ChatResult = tuple[float, str | None, str | None]  # latency ms, error kind or None, error sample or None


def _chat_error(status: int, text: str) -> tuple[str | None, str | None]:
    """The error kind and sample of a ``POST /chat`` answer: another status than 200, or no ``response``."""
    if status != 200:
        return f"HTTP {status}", text[:300]
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("response"), str) and body["response"]):
        return "HTTP 200 without a response", text[:300]
    return None, None


async def _timed_chat(answer: Awaitable[tuple[int, str]]) -> ChatResult:
    """Await a ``POST /chat``'s (status, body); return (latency ms, error kind or None, error sample or None).

    An error is another status than 200, a 200 without a ``response``, or any exception (by its type).
    """
    start = time.perf_counter()
    try:
        status, text = await answer
        kind, sample = _chat_error(status, text)
    except Exception as exc:  # every failure of a request counts as an error, by its type
        kind, sample = type(exc).__name__, repr(exc)[:300]
    return (time.perf_counter() - start) * 1000, kind, sample


async def chat_once(client: httpx.AsyncClient, message: str) -> ChatResult:
    """Send one ``POST /chat`` turn through httpx (see :func:`_timed_chat`)."""

    async def answer() -> tuple[int, str]:
        response = await client.post("/chat", json={"message": message})
        return response.status_code, response.text

    return await _timed_chat(answer())


@contextlib.asynccontextmanager
async def burst_session(url: str, timeout: float) -> AsyncIterator[aiohttp.ClientSession]:
    """A load generator for a burst: one aiohttp session, a connection for each request in flight.

    A burst's load generator runs on the cores it measures. httpx spends about 2 ms of CPU per
    ``POST /chat`` (its connection pool, its HTTP/1.1 parser in Python): 2 s of the two cores
    for a burst of 1000, as much as half the service's own. aiohttp's client, its parser in C,
    spends about 0.4 ms.
    """
    connector = aiohttp.TCPConnector(limit=0)  # no cap: every request of the burst at once
    async with aiohttp.ClientSession(
        base_url=url, connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        yield session


async def chat_once_burst(session: aiohttp.ClientSession, message: str) -> ChatResult:
    """:func:`chat_once` through a :func:`burst_session`."""

    async def answer() -> tuple[int, str]:
        async with session.post("/chat", json={"message": message}) as response:
            return response.status, await response.text()

    return await _timed_chat(answer())


async def sse_frames(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield ``(event, data)`` for each Server-Sent Event of ``response`` as it arrives (``data`` parsed as JSON).

    Comment lines (``: ping``) are skipped; a frame whose data is not JSON yields ``{"raw": text}``.
    """
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = {"raw": text}
                yield event, parsed
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def error_kinds(failures: Iterable[tuple[str | None, str | None]]) -> tuple[dict[str, int], list[str]]:
    """Count ``(kind, sample)`` pairs by kind (None: no error) and keep the first sample of each kind."""
    kinds: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for kind, sample in failures:
        if kind:
            kinds[kind] += 1
            samples.setdefault(kind, sample or "")
    return dict(kinds), [f"{k}: {v}" for k, v in samples.items()]


# -- the offline model's control routes -----------------------------------------------------------
def offline_control(model_url: str) -> str:
    """The base URL of the offline model's control routes (``/_offline/...``) for its ``.../v1`` URL."""
    return model_url.removesuffix("/v1")


async def offline_requests(model_url: str) -> list[dict[str, Any]]:
    """The requests the offline model received since its log was last cleared."""
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{offline_control(model_url)}/_offline/requests")
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()
        return data


async def offline_reset(model_url: str, **config: Any) -> None:
    """Clear the offline model's request log and, with ``config``, change its behaviour (faults, stop word)."""
    async with httpx.AsyncClient(timeout=30) as client:
        (await client.delete(f"{offline_control(model_url)}/_offline/requests")).raise_for_status()
        if config:
            (await client.put(f"{offline_control(model_url)}/_offline/config", json=config)).raise_for_status()
