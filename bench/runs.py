"""Runs on worker processes: 1000 concurrent /chat, the run path's own cost, event delivery latency.

Three measurements, each on real processes on loopback (redis-server, the offline model,
`agent-api serve`, `agent-api worker`):

1. 1000 concurrent `POST /chat` with a 500 ms model on 2 API processes (WORKERS_IN_PROCESS=0)
   and 2 `agent-api worker` processes; for reference, the same on one `agent-api serve` with its
   in-process worker. 3 runs each; the median run by wall time is reported.
2. One `/chat` at a time (100 in a row, a 0 ms model): p50 latency through the run path (the
   default `agent-api serve`; 1 API + 1 worker process) and through the previous design (the
   service at commit 06fe40e, before runs, where the turn ran inside the request).
3. How soon an event reaches a follower: a frame's id is the Redis Stream id of the event, whose
   first part is Redis's clock (ms) when the event was written; the latency is the frame's
   arrival at the client minus that, for 1 stream and for 200 concurrent streams.

Usage: python bench/runs.py [--only concurrency,latency,events]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from _common import (
    ROOT,
    _spawn,
    _wait_until,
    api_server,
    bench_api_env,
    markdown_table,
    median_index,
    offline_model,
    percentile,
    raise_open_files_limit,
    redis_server,
    run_metadata,
    save_raw,
    service_revision,
    update_doc_section,
)

BEFORE_RUNS = "06fe40e"  # the last commit where a turn ran inside its request
PREVIOUS = {  # figures of the previous design, from docs/benchmarks.md (concurrency, first-token sections)
    "1000 wall (s)": 10.98,
    "first token overhead p50 (ms)": 13.7,
}


@contextlib.contextmanager
def worker(env: Mapping[str, str | None], timeout: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """`agent-api worker` in a subprocess, once it says it is ready."""
    with _spawn([sys.executable, "-m", "agent_api.cli", "worker"], name="worker", env={**env, "LOG_LEVEL": "info"}) as (
        process,
        workdir,
    ):
        stderr = workdir / "stderr.log"
        _wait_until(lambda: "ready" in stderr.read_text(errors="replace"), process, "agent-api worker", stderr, timeout)
        yield process


@contextlib.contextmanager
def old_service(env: Mapping[str, str | None]) -> Iterator[str]:
    """The service as it was before runs, from a temporary git worktree; yields its URL."""
    tree = Path(tempfile.mkdtemp(prefix="agent-api-before-runs-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), BEFORE_RUNS], check=True,
                   capture_output=True)
    try:
        with api_server({**env, "PYTHONPATH": str(tree)}) as api:
            yield api.url
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)


# -- 1. concurrency -------------------------------------------------------------------------------
async def burst(url: str, n: int) -> dict[str, Any]:
    clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=20))
               for _ in range((n + 19) // 20)]
    latencies: list[float] = []
    errors = 0
    kinds: dict[str, int] = {}

    async def one(i: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            response = await clients[i // 20].post("/chat", json={"message": f"benchmark question {i}"})
            if response.status_code != 200:
                errors += 1
                kind = f"HTTP {response.status_code}: {response.text[:120]}"
                kinds[kind] = kinds.get(kind, 0) + 1
                return
        except httpx.HTTPError as exc:
            errors += 1
            kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
            return
        latencies.append(time.perf_counter() - started)

    try:
        for i in range(5):  # warm-up
            await one(i)
        latencies.clear()
        errors = 0
        kinds.clear()
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {
        "n": n,
        "wall_s": round(wall, 3),
        "errors": errors,
        "error_kinds": kinds,
        "p50_ms": round(percentile([x * 1000 for x in latencies], 50), 1) if latencies else None,
        "p95_ms": round(percentile([x * 1000 for x in latencies], 95), 1) if latencies else None,
    }


def concurrency(n: int = 1000, repeats: int = 3) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with offline_model(first_token_delay=0.5) as model:
        for layout in ("2 API + 2 workers", "1 API, in-process worker"):
            runs = []
            for _ in range(repeats):
                with redis_server() as redis_url:
                    if layout.startswith("2"):
                        env = bench_api_env(redis_url, model, WORKERS_IN_PROCESS="0", THREAD_POOL_SIZE="500",
                                            REDIS_MAX_FOLLOWERS="1200")
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
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for i in range(5):
            (await client.post("/chat", json={"message": f"warm {i}"})).raise_for_status()
        times = []
        for i in range(n):
            started = time.perf_counter()
            (await client.post("/chat", json={"message": f"one at a time {i}"})).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def latency() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with offline_model() as model, redis_server() as redis_url:
        env = bench_api_env(redis_url, model)
        with api_server(env) as api:
            results["runs: agent-api serve (in-process worker)"] = asyncio.run(sequential(api.url))
        split = bench_api_env(redis_url, model, WORKERS_IN_PROCESS="0")
        with worker(split), api_server(split) as api:
            results["runs: 1 API + 1 worker process"] = asyncio.run(sequential(api.url))
        old_env = {k: v for k, v in env.items() if k != "WORKERS_IN_PROCESS"}
        with old_service(old_env) as url:
            results[f"before runs ({BEFORE_RUNS}): turn inside the request"] = asyncio.run(sequential(url))
    for name, p50 in results.items():
        print(f"  {name}: p50 {p50} ms", flush=True)
    return results


# -- 3. event delivery ---------------------------------------------------------------------------
async def stream_latencies(url: str, streams: int) -> dict[str, Any]:
    delays: list[float] = []
    frames_per_stream: list[int] = []
    errors = 0
    clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=20))
               for _ in range((streams + 19) // 20)]

    async def one(i: int) -> None:
        nonlocal errors
        count = 0
        try:
            async with clients[i // 20].stream("POST", "/chat/stream", json={"message": f"stream {i}"}) as response:
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


def events() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with offline_model(first_token_delay=0.2, token_delay=0.02, reply_tokens=40) as model, redis_server() as redis:
        env = bench_api_env(redis, model, WORKERS_IN_PROCESS="0")
        with worker(env), api_server(env) as api:
            for streams in (1, 200):
                results[str(streams)] = asyncio.run(stream_latencies(api.url, streams))
                print(f"  {streams} stream(s): {results[str(streams)]}", flush=True)
    return results


# -- report ---------------------------------------------------------------------------------------
def report(data: dict[str, Any], previous: dict[str, Any]) -> str:
    meta = data["meta"]
    before = previous.get("meta", {})
    lines = [
        "## Runs: worker processes, the run path's cost, event delivery",
        "",
        "Turns are runs executed by run workers (see the README). Every process is real and on loopback: "
        "redis-server, the offline model, `agent-api serve`, `agent-api worker`; the load generator shares "
        "the 2-core machine with them, so figures are noisy: medians are quoted.",
        "",
        f"- Date: {meta['date']}; service at commit {meta['service_revision']}; Python {meta['machine']['python']}; "
        f"1-minute load average at the start {round(meta['machine']['load_average_at_start'] or 0, 2)}.",
        "- Reproduce: `.venv/bin/python bench/runs.py` (raw numbers: `bench/results/runs.json`).",
        f"- *previous*: the same figure in the run before, {before.get('date', '-')} at commit "
        f"{before.get('service_revision', '-')}. The machine's speed varies from day to day: compare the rows of "
        "one run (the baseline row of the one-at-a-time table measures the machine itself).",
        "",
    ]
    targets = []
    if "concurrency" in data:
        lines += ["### 1000 concurrent `/chat`, 500 ms model (3 runs, median by wall)", ""]
        rows = []
        for layout, result in data["concurrency"].items():
            m = result["median"]
            walls = [r["wall_s"] for r in result["runs"]]
            was = previous.get("concurrency", {}).get(layout, {}).get("median", {}).get("wall_s", "-")
            rows.append([layout, m["wall_s"], was, f"{min(walls)}-{max(walls)}", m["p50_ms"], m["p95_ms"],
                         sum(r["errors"] for r in result["runs"])])
        header = ["layout", "wall (s)", "previous", "wall, all runs (s)", "p50 (ms)", "p95 (ms)", "errors, all runs"]
        lines += [markdown_table(header, rows), ""]
        split = data["concurrency"]["2 API + 2 workers"]["median"]
        errors = sum(r["errors"] for r in data["concurrency"]["2 API + 2 workers"]["runs"])
        targets.append(["1000 concurrent /chat on 2 API + 2 workers: 0 errors", f"{errors} errors", errors == 0])
        targets.append(["... wall ≤ 3 s (previous design, 1 process: "
                        f"{PREVIOUS['1000 wall (s)']} s)", f"{split['wall_s']} s", split["wall_s"] <= 3])
    if "latency" in data:
        lines += ["### One `/chat` at a time (0 ms model, 100 requests)", ""]
        rows = [[name, p50, previous.get("latency", {}).get(name, "-")] for name, p50 in data["latency"].items()]
        lines += [markdown_table(["path", "p50 (ms)", "previous"], rows), ""]
        values = list(data["latency"].values())
        added = round(values[0] - values[2], 2)
        added_split = round(values[1] - values[2], 2)
        targets.append(["run path adds ≤ 5 ms p50 to /chat (in-process worker)", f"{added} ms", added <= 5])
        targets.append(["... with a separate worker process", f"{added_split} ms", added_split <= 5])
    if "events" in data:
        lines += ["### Event delivery: written to the log → at the follower (1 API + 1 worker)", ""]
        rows = [[r["streams"], r["p50_ms"], previous.get("events", {}).get(k, {}).get("p50_ms", "-"), r["p95_ms"],
                 r["token_frames_per_stream"], r["errors"]]
                for k, r in data["events"].items()]
        header = ["streams", "p50 (ms)", "previous", "p95 (ms)", "token frames / stream (40 tokens)", "errors"]
        lines += [markdown_table(header, rows), ""]
        one, many = data["events"]["1"], data["events"]["200"]
        targets.append(["event to follower ≤ 10 ms p50, 1 stream", f"{one['p50_ms']} ms", (one["p50_ms"] or 1e9) <= 10])
        targets.append(["... ≤ 50 ms p50, 200 streams", f"{many['p50_ms']} ms", (many["p50_ms"] or 1e9) <= 50])
    if targets:
        lines += ["Targets from the issue:", "",
                  markdown_table(["target", "measured", "met"],
                                 [[t, m, "yes" if ok else "**no**"] for t, m, ok in targets]), ""]
    lines += ANALYSIS
    return "\n".join(lines)


ANALYSIS = [
    "What the numbers say (read with a py-spy profile of the 1000-run burst on one process):",
    "",
    "- Splitting the work over 2 API + 2 worker processes uses both cores: 1000 concurrent `/chat` take about "
    "half the time of one process. The wall time is CPU: every conversation costs the API process(es) the "
    "HTTP request, a run record, a queue round trip and the event log, and the worker AutoGen's own work. In the "
    "profile, AutoGen's agent construction spends about 9% of the samples in `require_optional_import` (it "
    "resolves installed packages' metadata for every agent built), the OpenAI client about 7% in `uuid4` "
    "(an idempotency key per request), and redis-py's connection set-up (`get_lib_version` reads package "
    "metadata for every new connection) shows up while the pools grow under the burst. These are the next "
    "cuts (issue \"Use every core\").",
    "- The run path's cost at rest is the difference between the runs rows and the baseline row of the "
    "one-at-a-time table (Redis round trips: the run record, the job, the event log, the result): about 2 ms "
    "on 2026-11-24, when the baseline took 5.3 ms; on a slower day (baseline 3-4 times slower) it grows with "
    "the machine, and the noise between rows is of the same size.",
    "- An event reaches its followers within a few ms of being written, at 1 and at 200 streams. At 200 "
    "streams the worker process is saturated: tokens reach the log in bursts, which the 20 ms coalescing "
    "joins into few frames (about 2 per 40-token answer), so the log-to-follower delay stays small while "
    "the model-to-log delay grows with the worker's load. More worker processes (or machines) are the remedy.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="concurrency,latency,events")
    parser.add_argument("--report-only", action="store_true", help="rewrite the doc section from the last results")
    args = parser.parse_args()
    results = ROOT / "bench/results/runs.json"
    last: dict[str, Any] = json.loads(results.read_text()) if results.exists() else {}
    if args.report_only:
        print(update_doc_section("runs", report(last, last.get("previous") or {})))
        return
    parts = args.only.split(",")
    raise_open_files_limit()
    import os

    data: dict[str, Any] = {"meta": run_metadata("runs", " ".join(sys.argv), service_revision(), os.getloadavg()[0])}
    for name, measure in (("latency", latency), ("events", events), ("concurrency", concurrency)):
        if name in parts:
            print(f"{name}:", flush=True)
            data[name] = measure()
    # A partial run (--only) keeps the other sections' last figures; every figure is shown beside
    # the one it replaces.
    previous = {k: v for k, v in last.items() if k != "previous"}
    for name in ("latency", "events", "concurrency"):
        if name not in data and name in last:
            data[name] = last[name]
    data["previous"] = previous
    save_raw("runs", data)
    print(update_doc_section("runs", report(data, previous)))


if __name__ == "__main__":
    main()
