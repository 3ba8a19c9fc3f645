"""The streams of the first-token benchmark: one ``POST /chat/stream`` read frame by frame, a scenario run."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
from harness.load import error_kinds, offline_requests, offline_reset, sharded_clients
from harness.measure import Usage, measured, percentile
from httpx_sse import EventSource, aconnect_sse

MAX_FRAMES = 10_000  # a stream sending more frames than this is cut off and counted as an error


@dataclass
class Stream:
    """One ``POST /chat/stream`` as the client saw it; times in ms from sending the request."""

    i: int
    error: str | None = None  # the error kind, None for a good stream
    detail: str | None = None  # a sample of what went wrong
    status: int | None = None
    ttft_ms: float | None = None  # arrival of the first `token` frame with a non-empty `chunk`
    overhead_ms: float | None = None  # ttft_ms minus the model's first-token delay
    done_ms: float | None = None  # arrival of the `done` frame (the last one)
    to_model_ms: float | None = None  # the offline model received the stream's first model request
    token_frames: int = 0
    frames: int = 0
    first_token_text: str | None = None
    first_token_agent: str | None = None
    empty_tokens_before: int = 0  # `token` frames with an empty `chunk` before the first token of the answer
    chunks_match_response: bool | None = None  # the appended `chunk`s equal the `done` frame's `response`


@dataclass
class Run:
    """One scenario run against a fresh API process."""

    scenario: str  # "sequential" or "concurrent"
    n: int
    repeat: int
    wall_s: float
    ok: int
    errors: int
    errors_by_kind: dict[str, int]
    error_samples: list[str]
    p50_ms: float  # TTFT overhead of the good streams
    p95_ms: float
    max_ms: float
    min_ms: float
    total_p50_s: float  # whole stream, request to `done`
    token_span_p50_ms: float  # first token to `done`
    to_model_p50_ms: float  # request to the model receiving its request
    chunk_mismatches: int
    streams_with_empty_tokens_first: int  # `token` frames with an empty `chunk` came before the answer's first
    negative_overheads: int  # the first token arrived sooner than the model could have written it
    model_calls: int | None
    api_cpu_s: float
    client_cpu_s: float
    api_peak_rss_mib: float
    streams: list[Stream] = field(repr=False)


async def _read(source: EventSource, result: Stream, sent: float, chunks: list[str]) -> str | None:
    """Read the frames of a 200 stream into ``result``; return the ``done`` frame's ``response``."""
    async for event in source.aiter_sse():
        now = (time.perf_counter() - sent) * 1000
        result.frames += 1
        if result.frames > MAX_FRAMES:
            result.error = f"more than {MAX_FRAMES} frames"
            break
        if event.event == "token":
            data = json.loads(event.data)
            if not isinstance(data.get("chunk"), str) or not isinstance(data.get("text"), str):
                result.error, result.detail = "token frame without chunk/text", event.data[:300]
                break
            result.token_frames += 1
            chunks.append(data["chunk"])
            if result.ttft_ms is None and data["chunk"]:
                result.ttft_ms = now
                result.first_token_text = data["chunk"]
                result.first_token_agent = str(data.get("agent"))
            elif result.ttft_ms is None:
                result.empty_tokens_before += 1  # another agent's token (`chunk` ""): not the answer
        elif event.event == "error":
            data = json.loads(event.data)
            result.error = f"error frame: {data.get('error_type', '?')}"
            result.detail = event.data[:300]
        elif event.event == "done":
            result.done_ms = now
            response: str | None = json.loads(event.data).get("response")
            return response  # `done` is always the last frame
        # session, message, usage and tool frames are only counted
    return None


async def stream_once(
    client: httpx.AsyncClient, i: int, message: str, *, first_token_delay: float, timeout: float
) -> tuple[Stream, float]:
    """Stream one turn, frame by frame; return its numbers and the wall-clock time it was sent."""
    result = Stream(i=i)
    sent_wall = time.time()
    sent = time.perf_counter()
    chunks: list[str] = []
    response_text: str | None = None
    try:
        async with asyncio.timeout(timeout):  # the whole stream, on top of httpx's per-read time-out
            async with aconnect_sse(client, "POST", "/chat/stream", json={"message": message}) as source:
                result.status = source.response.status_code
                if result.status != 200:
                    body = await source.response.aread()
                    result.error, result.detail = f"HTTP {result.status}", body.decode(errors="replace")[:300]
                    return result, sent_wall
                response_text = await _read(source, result, sent, chunks)
    except Exception as exc:  # every failure of a stream counts as an error, by its type
        result.error, result.detail = type(exc).__name__, repr(exc)[:300]
        return result, sent_wall
    if result.error is None:
        if result.done_ms is None:
            result.error = "no done frame"
        elif result.ttft_ms is None:
            result.error = "no token of the answer"
    if result.ttft_ms is not None:
        result.overhead_ms = result.ttft_ms - first_token_delay * 1000
    if response_text is not None:
        result.chunks_match_response = "".join(chunks) == response_text
    return result, sent_wall


def _model_arrivals(requests: list[dict[str, Any]]) -> dict[str, float]:
    """The wall-clock time the offline model received the first request carrying each user message."""
    arrivals: dict[str, float] = {}
    for request in requests:
        for message in request.get("messages") or []:
            content = message.get("content")
            if message.get("role") == "user" and isinstance(content, str) and content.startswith("benchmark "):
                arrivals.setdefault(content, float(request["time"]))
    return arrivals


async def run_scenario(
    url: str,
    pid: int,
    scenario: str,
    n: int,
    repeat: int,
    *,
    warmup: int,
    timeout: float,
    first_token_delay: float,
    model_url: str,
) -> Run:
    """``n`` streams one after another (``sequential``) or all at once (``concurrent``), after a warm-up."""
    delay = first_token_delay
    async with AsyncExitStack() as stack:
        if scenario == "sequential":
            # One caller: one client, one connection, kept alive over the warm-up and the streams.
            one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout), limits=one)
            clients = [await stack.enter_async_context(client)]
            warm_client = clients[0]
        else:
            # The warm-up has its own client, closed before the batch: the batch opens N fresh connections.
            client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout))
            warm_client = await stack.enter_async_context(client)
        warm = [
            (await stream_once(warm_client, -1, f"warm-up stream {i}", first_token_delay=delay, timeout=timeout))[0]
            for i in range(warmup)
        ]
        if warm and all(s.error for s in warm):
            kinds = dict(Counter(s.error for s in warm if s.error))
            raise RuntimeError(f"every warm-up stream failed ({kinds}); the API is not serving: {warm[0].detail}")
        if scenario == "concurrent":
            await warm_client.aclose()
            clients = [await stack.enter_async_context(c) for c in sharded_clients(url, n, timeout)]
        await offline_reset(model_url)

        messages = [f"benchmark {scenario} run {repeat} stream {i}" for i in range(n)]
        with measured(pid) as usage:
            if scenario == "sequential":
                results = [
                    await stream_once(clients[0], i, messages[i], first_token_delay=delay, timeout=timeout)
                    for i in range(n)
                ]
            else:
                results = await asyncio.gather(
                    *(
                        stream_once(clients[i % len(clients)], i, messages[i], first_token_delay=delay, timeout=timeout)
                        for i in range(n)
                    )
                )

    model_calls: int | None
    try:
        recorded = await offline_requests(model_url)
        model_calls = len(recorded)
        arrivals = _model_arrivals(recorded)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        model_calls, arrivals = None, {}
    return _run(scenario, n, repeat, results, messages, arrivals, model_calls, usage)


def _run(
    scenario: str,
    n: int,
    repeat: int,
    results: list[tuple[Stream, float]],
    messages: list[str],
    arrivals: dict[str, float],
    model_calls: int | None,
    usage: Usage,
) -> Run:
    streams = []
    for (stream, sent_wall), message in zip(results, messages, strict=True):
        if message in arrivals:
            stream.to_model_ms = round((arrivals[message] - sent_wall) * 1000, 2)
        streams.append(stream)
    good = [s for s in streams if s.error is None]
    overheads = [s.overhead_ms for s in good if s.overhead_ms is not None]
    kinds, samples = error_kinds((s.error, s.detail) for s in streams)
    for s in streams:  # rounded for the raw file, after the statistics above used full precision
        for name in ("ttft_ms", "overhead_ms", "done_ms"):
            value = getattr(s, name)
            if value is not None:
                setattr(s, name, round(value, 2))
    return Run(
        scenario=scenario,
        n=n,
        repeat=repeat,
        wall_s=usage.wall_s,
        ok=len(good),
        errors=sum(kinds.values()),
        errors_by_kind=kinds,
        error_samples=samples,
        p50_ms=percentile(overheads, 50),
        p95_ms=percentile(overheads, 95),
        max_ms=max(overheads, default=float("nan")),
        min_ms=min(overheads, default=float("nan")),
        total_p50_s=percentile([s.done_ms for s in good if s.done_ms is not None], 50) / 1000,
        token_span_p50_ms=percentile(
            [s.done_ms - s.ttft_ms for s in good if s.done_ms is not None and s.ttft_ms is not None], 50
        ),
        to_model_p50_ms=percentile([s.to_model_ms for s in good if s.to_model_ms is not None], 50),
        chunk_mismatches=sum(1 for s in good if s.chunks_match_response is False),
        streams_with_empty_tokens_first=sum(1 for s in streams if s.empty_tokens_before),
        negative_overheads=sum(1 for v in overheads if v < 0),
        model_calls=model_calls,
        api_cpu_s=usage.api_cpu_s,
        client_cpu_s=usage.client_cpu_s,
        api_peak_rss_mib=usage.after.peak_rss_mib,
        streams=streams,
    )
