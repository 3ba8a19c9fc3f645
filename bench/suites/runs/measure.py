"""The measurements of the runs benchmark: a burst of ``/chat`` on worker processes, one ``/chat`` at a
time through the run path (and through the design before runs), event delivery to followers."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
from harness.load import burst_session, chat_once_burst, sharded_clients
from harness.measure import median_index, percentile
from harness.services import api_server, bench_api_env, offline_model, redis_server, service_at, worker

BEFORE_RUNS = "06fe40e"  # the last commit where a turn ran inside its request
SPLIT = "2 API + 2 workers"
IN_PROCESS = "1 API, in-process worker"


@contextlib.contextmanager
def old_service(env: Mapping[str, str | None]) -> Iterator[str]:
    """The service as it was before runs, from a temporary git worktree; yields its URL."""
    with service_at(BEFORE_RUNS) as tree, api_server({**env, "PYTHONPATH": str(tree)}) as api:
        yield api.url


# -- 1. concurrency -------------------------------------------------------------------------------
def _kind(kind: str, sample: str | None) -> str:
    """An error's kind as runs.json counts them: an HTTP status with the start of its body, or an exception."""
    return f"{kind}: {(sample or '')[:120]}" if kind.startswith("HTTP ") else kind


async def burst(url: str, n: int) -> dict[str, Any]:
    """``n`` concurrent ``POST /chat`` after 5 warm-up turns: wall time, errors, p50/p95 latency.

    The load generator is aiohttp's client (:func:`harness.load.burst_session`), which spends a fifth
    of httpx's CPU per request on the cores the burst measures."""
    async with burst_session(url, 60) as session:
        for i in range(5):  # warm-up
            await chat_once_burst(session, f"benchmark question {i}")
        started = time.perf_counter()
        results = await asyncio.gather(*(chat_once_burst(session, f"benchmark question {i}") for i in range(n)))
        wall = time.perf_counter() - started
    latencies = [ms for ms, kind, _ in results if kind is None]
    kinds = Counter(_kind(kind, sample) for _, kind, sample in results if kind)
    return {
        "n": n,
        "wall_s": round(wall, 3),
        "errors": sum(kinds.values()),
        "error_kinds": dict(kinds),
        "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
    }


def concurrency(n: int = 1000, repeats: int = 3) -> dict[str, Any]:
    """The burst on 2 API processes + 2 workers, and on one process with its in-process worker."""
    results: dict[str, Any] = {}
    with offline_model(first_token_delay=0.5) as model:
        for layout in (SPLIT, IN_PROCESS):
            runs = []
            for _ in range(repeats):
                with redis_server() as redis_url:
                    if layout == SPLIT:
                        env = bench_api_env(
                            redis_url, model, WORKERS_IN_PROCESS="0", THREAD_POOL_SIZE="500", REDIS_MAX_FOLLOWERS="1200"
                        )
                        with worker(env), worker(env), api_server(env, workers=2) as api:
                            runs.append(asyncio.run(burst(api.url, n)))
                    else:
                        env = bench_api_env(redis_url, model, THREAD_POOL_SIZE="1000", REDIS_MAX_FOLLOWERS="1200")
                        with api_server(env) as api:
                            runs.append(asyncio.run(burst(api.url, n)))
                print(f"  {layout}: {runs[-1]}", flush=True)
            walls = [r["wall_s"] for r in runs]
            results[layout] = {"median": runs[median_index(walls)], "runs": runs}
    return results


# -- 2. the run path's own cost ------------------------------------------------------------------
async def sequential(url: str, n: int = 100) -> float:
    """The median latency (ms) of ``n`` ``POST /chat`` one after another, after 5 warm-up turns."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for i in range(5):
            (await client.post("/chat", json={"message": f"warm {i}"})).raise_for_status()
        times = []
        for i in range(n):
            started = time.perf_counter()
            (await client.post("/chat", json={"message": f"one at a time {i}"})).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def latency(n: int = 100) -> dict[str, Any]:
    """One ``/chat`` at a time through the run path (in-process worker, worker process) and before runs."""
    results: dict[str, Any] = {}
    with offline_model() as model, redis_server() as redis_url:
        env = bench_api_env(redis_url, model)
        with api_server(env) as api:
            results["runs: agent-api serve (in-process worker)"] = asyncio.run(sequential(api.url, n))
        split = bench_api_env(redis_url, model, WORKERS_IN_PROCESS="0")
        with worker(split), api_server(split) as api:
            results["runs: 1 API + 1 worker process"] = asyncio.run(sequential(api.url, n))
        old_env = {k: v for k, v in env.items() if k != "WORKERS_IN_PROCESS"}
        with old_service(old_env) as url:
            results[f"before runs ({BEFORE_RUNS}): turn inside the request"] = asyncio.run(sequential(url, n))
    for name, p50 in results.items():
        print(f"  {name}: p50 {p50} ms", flush=True)
    return results


# -- 3. event delivery ---------------------------------------------------------------------------
async def stream_latencies(url: str, streams: int) -> dict[str, Any]:
    """``streams`` concurrent streams: the delay from an event's Redis Stream id (ms) to its arrival."""
    delays: list[float] = []
    frames_per_stream: list[int] = []
    errors = 0
    clients = sharded_clients(url, streams, 60)

    async def one(i: int) -> None:
        nonlocal errors
        count = 0
        client = clients[i % len(clients)]
        try:
            async with client.stream("POST", "/chat/stream", json={"message": f"stream {i}"}) as response:
                frame_id = None
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        frame_id = line[4:]
                    elif line.startswith("event: token") and frame_id:
                        delays.append(time.time() * 1000 - int(frame_id.split("-")[0]))
                        count += 1
                    elif line.startswith("event: done"):
                        break
        except httpx.HTTPError:
            errors += 1
        frames_per_stream.append(count)

    try:
        await one(0)  # warm-up
        delays.clear()
        frames_per_stream.clear()
        await asyncio.gather(*(one(i) for i in range(streams)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {
        "streams": streams,
        "errors": errors,
        "p50_ms": round(percentile(delays, 50), 2) if delays else None,
        "p95_ms": round(percentile(delays, 95), 2) if delays else None,
        "token_frames_per_stream": round(statistics.median(frames_per_stream), 1) if frames_per_stream else None,
    }


def events(streams: int = 200) -> dict[str, Any]:
    """Event delivery at 1 stream and at ``streams`` concurrent streams (1 API + 1 worker process)."""
    results: dict[str, Any] = {}
    with offline_model(first_token_delay=0.2, token_delay=0.02, reply_tokens=40) as model, redis_server() as redis:
        env = bench_api_env(redis, model, WORKERS_IN_PROCESS="0")
        with worker(env), api_server(env) as api:
            for count in sorted({1, streams}):
                results[str(count)] = asyncio.run(stream_latencies(api.url, count))
                print(f"  {count} stream(s): {results[str(count)]}", flush=True)
    return results
