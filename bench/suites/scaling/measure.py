"""The measurements of the scaling benchmark, each made on two services in turn: *before* (the service at
an earlier revision, from a temporary git worktree) and *now* (this checkout).

Both are started the way production starts them, one command (``python -m agent_api.cli serve``) with
a redis-server and the model, every other setting at its default: no process counts. The service's
CPU time and memory are those of its whole process tree (the process started and every descendant),
never redis-server's, the model's or the load generator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from harness.load import (
    ChatResult,
    chat_once,
    error_kinds,
    offline_requests,
    offline_reset,
    sharded_clients,
    sse_frames,
)
from harness.measure import (
    TreeStats,
    client_cpu_seconds,
    command_label,
    descendants,
    median_index,
    percentile,
    start_time,
    tree_stats,
)
from harness.services import api_server, bench_api_env, offline_model, redis_server

from suites.runs.measure import burst as chat_burst

SERVICES = ("before", "now")  # the order they run in, scenario by scenario
TIMEOUT = 60.0  # s, per request or stream (the whole stream)
WARMUP = 10  # conversations, all at once, after the service is ready and before anything is measured
SETTLE = 0.5  # s after a measured stretch before the service's CPU is read: its work after the last answer counts

CPU_MODEL_DELAY = 0.1  # s before the model's answer, in the CPU-per-conversation scenario
BURST_MODEL_DELAY = 0.5
STREAM_FIRST_TOKEN = 0.2  # s before the model's first token in the streams scenario...
STREAM_TOKEN_DELAY = 0.02  # ...then one token every 20 ms...
STREAM_TOKENS = 20  # ...20 of them
FEW_TOKENS, MANY_TOKENS = 10, 400  # the answers' lengths in the CPU-per-token scenario

Trees = Mapping[str, Path | None]  # each service's source tree, by name; None: this checkout


# -- the services -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Service:
    """A running service, ready and warm: its name, URL, the pid it was started as and its processes then."""

    name: str
    url: str
    pid: int
    layout: TreeStats


def wait_ready(url: str, timeout: float = 60.0) -> None:
    """Poll ``GET /health/ready`` (``/health`` when the service has no readiness route) until it answers 200."""
    deadline = time.monotonic() + timeout
    path, last = "/health/ready", "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url + path, timeout=5)
            if response.status_code == 200:
                return
            if response.status_code == 404 and path != "/health":
                path = "/health"
                continue
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"the service did not answer {path} with 200 within {timeout:.0f} s: {last}")


async def warm_up(url: str, streams: bool) -> None:
    """``WARMUP`` conversations at once (over as many connections, so that every API process gets some)."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(TIMEOUT)) as client:
        if streams:
            outcomes = await asyncio.gather(*(stream_once(client, f"warm-up stream {i}") for i in range(WARMUP)))
            failures = [(s.error, s.detail) for s in outcomes if s.error]
        else:
            chats = await asyncio.gather(*(chat_once(client, f"warm-up question {i}") for i in range(WARMUP)))
            failures = [(kind, sample) for _, kind, sample in chats if kind]
    if len(failures) == WARMUP:
        raise RuntimeError(f"every warm-up conversation failed, the service is not serving: {failures[0]}")


def _reap(seen: Iterable[tuple[int, int | None]], grace: float = 5.0) -> None:
    """SIGKILL any process of the service's tree still running ``grace`` s after the service (same pid
    and start time). Some stop a moment after it (multiprocessing's resource tracker, once the
    process that started it is gone)."""
    seen = list(seen)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if all(started is None or start_time(pid) != started for pid, started in seen):
            return
        time.sleep(0.1)
    for pid, started in seen:
        if started is not None and start_time(pid) == started:
            command = command_label(pid)
            print(
                f"  warning: process {pid} ({command}) of the service outlived it; killed", file=sys.stderr, flush=True
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def service(
    name: str, tree: Path | None, model_url: str, *, streams: bool = False, settings: Mapping[str, str] | None = None
) -> Iterator[Service]:
    """A fresh redis-server and the service on it, started as in production with default process counts.

    Yields once the service answers its readiness check and has served ``WARMUP`` conversations
    (streams when ``streams``). ``tree``: the source to run (None: this checkout). ``settings``:
    environment variables beside those the benchmark gives (none: production's defaults).
    """
    with redis_server() as redis_url:
        env = bench_api_env(redis_url, model_url)
        env.update(settings or {})
        env["WORKER_PROCESSES"] = None  # every setting dropped: no process counts either (the defaults)
        if tree is not None:
            env["PYTHONPATH"] = str(tree)  # the tree's agent_api, not this checkout's
        seen: list[tuple[int, int | None]] = []
        try:
            with api_server(env, workers=None) as api:
                try:
                    wait_ready(api.url)
                    asyncio.run(warm_up(api.url, streams))
                    yield Service(name, api.url, api.pid, tree_stats(api.pid))
                finally:
                    seen = [(pid, start_time(pid)) for pid in descendants(api.pid) if pid != api.pid]
        finally:
            _reap(seen)


def _median(runs: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], float | None]) -> dict[str, Any]:
    """The median run by ``key`` (a missing or NaN value sorts last) and all runs."""
    values = [key(r) for r in runs]
    return {"median": runs[median_index([v if v is not None and v == v else math.inf for v in values])], "runs": runs}


OneRun = Callable[[str, Path | None, int], tuple[dict[str, Any], str]]  # (name, tree, repeat) -> run, summary


def _alternating(
    trees: Trees, repeats: int, one_run: OneRun, key: Callable[[dict[str, Any]], float | None]
) -> dict[str, Any]:
    """``repeats`` rounds of ``one_run`` on each service in turn; each service's median run by ``key``.

    ``one_run`` measures one service once and gives its run's results and a line for the log.
    """
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for r in range(repeats):
        for name, tree in trees.items():
            run, summary = one_run(name, tree, r)
            runs[name].append(run)
            print(f"  {name} run {r + 1}: {summary}", flush=True)
    return {name: _median(rs, key) for name, rs in runs.items()}


def _ms(value: float) -> float | None:
    """A duration in ms for the results file, rounded; None for NaN (nothing measured)."""
    return round(value, 2) if value == value else None


def _errors(failures: Iterable[tuple[str | None, str | None]]) -> dict[str, Any]:
    kinds, samples = error_kinds(failures)
    return {"errors": sum(kinds.values()), "errors_by_kind": kinds, "error_samples": samples}


# -- one-turn conversations ---------------------------------------------------------------------------
async def closed_loop(
    clients: Sequence[httpx.AsyncClient], concurrency: int, indices: Iterable[int], tag: str
) -> list[ChatResult]:
    """``concurrency`` client loops, each sending its next one-turn ``POST /chat`` when its last is answered.

    Conversation ``i`` of ``indices`` asks a question of its own and has no session_id: a new conversation.
    """
    pending = iter(indices)  # shared: each loop takes the next index
    results: list[ChatResult] = []

    async def loop(k: int) -> None:
        client = clients[k % len(clients)]
        for i in pending:
            results.append(await chat_once(client, f"scaling {tag} question {i:06d}"))

    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    return results


async def conversations(svc: Service, concurrency: int, total: int, tag: str) -> dict[str, Any]:
    """``total`` one-turn conversations by ``concurrency`` client loops: the service's CPU per conversation."""
    clients = sharded_clients(svc.url, concurrency, TIMEOUT)
    try:
        before = tree_stats(svc.pid)
        started = time.perf_counter()
        results = await closed_loop(clients, concurrency, range(total), tag)
        wall = time.perf_counter() - started
        await asyncio.sleep(SETTLE)
        after = tree_stats(svc.pid)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    cpu = after.cpu_seconds - before.cpu_seconds
    latencies = [ms for ms, kind, _ in results if kind is None]
    return {
        "concurrency": concurrency,
        "conversations": total,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_conversation": round(cpu / total * 1000, 3),
        "per_s": round(total / wall, 1),
        "p50_ms": _ms(percentile(latencies, 50)),
        "processes": after.processes,
        **_errors((kind, sample) for _, kind, sample in results),
    }


def cpu(trees: Trees, one: int, concurrent: int, total: int, repeats: int) -> dict[str, Any]:
    """Service CPU per conversation: ``one`` conversations one after another, then ``total`` by ``concurrent``."""
    with offline_model(first_token_delay=CPU_MODEL_DELAY) as model:

        def one_run(name: str, tree: Path | None, r: int) -> tuple[dict[str, Any], str]:
            with service(name, tree, model) as svc:
                at_1 = asyncio.run(conversations(svc, 1, one, f"{name} run {r} one"))
                at_n = asyncio.run(conversations(svc, concurrent, total, f"{name} run {r} many"))
            base = at_1["cpu_ms_per_conversation"]
            ratio = round(at_n["cpu_ms_per_conversation"] / base, 3) if base > 0 else None
            run = {"at_1": at_1, "at_n": at_n, "ratio": ratio, **_layout(svc)}
            return run, (
                f"{at_1['cpu_ms_per_conversation']} ms/conversation at 1, "
                f"{at_n['cpu_ms_per_conversation']} at {concurrent} (x{ratio}); "
                f"errors {at_1['errors']} + {at_n['errors']}; {svc.layout.processes} process(es)"
            )

        return _alternating(trees, repeats, one_run, lambda r: r["at_n"]["cpu_ms_per_conversation"])


def _layout(svc: Service) -> dict[str, Any]:
    """The service's processes after its warm-up, for the results file."""
    return {"processes": svc.layout.processes, "layout": svc.layout.commands}


# -- a burst of /chat ---------------------------------------------------------------------------------
def burst(trees: Trees, n: int, repeats: int) -> dict[str, Any]:
    """``n`` concurrent ``POST /chat`` with a 500 ms model: wall time, errors, latency, the service's CPU."""
    with offline_model(first_token_delay=BURST_MODEL_DELAY) as model:

        def one_run(name: str, tree: Path | None, r: int) -> tuple[dict[str, Any], str]:
            with service(name, tree, model) as svc:
                before, client_before = tree_stats(svc.pid), client_cpu_seconds()
                result = asyncio.run(chat_burst(svc.url, n))
                result["client_cpu_s"] = round(client_cpu_seconds() - client_before, 3)  # on the same cores
                time.sleep(SETTLE)
                after = tree_stats(svc.pid)
            result["cpu_s"] = round(after.cpu_seconds - before.cpu_seconds, 3)
            result["processes_after"] = after.processes
            result.update(_layout(svc))
            return result, (
                f"wall {result['wall_s']} s, errors {result['errors']}, "
                f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms"
            )

        return _alternating(trees, repeats, one_run, lambda r: r["wall_s"])


# -- streams ------------------------------------------------------------------------------------------
STREAM_ID = re.compile(r"scaling stream (\S+-\d{5}):")  # the unique part of a stream's question


@dataclass
class StreamResult:
    """One ``POST /chat/stream`` as the client saw it; times are wall-clock (time.time())."""

    message: str
    sent: float
    error: str | None = None
    detail: str | None = None
    first_token: float | None = None  # the first `token` frame with a non-empty `chunk` arrived
    frames: int = 0
    token_frames: int = 0
    chunk_chars: int = 0  # of the appended chunks
    response_words: int = 0  # of the `done` frame's response
    complete: bool = False  # the appended chunks are the `done` frame's response, which is not empty


async def stream_once(client: httpx.AsyncClient, message: str) -> StreamResult:
    """Stream one turn, frame by frame (the whole stream within ``TIMEOUT``).

    An error is another status than 200, an ``error`` frame, no token of the answer, no ``done``
    frame, or any exception (by its type).
    """
    result = StreamResult(message=message, sent=time.time())
    chunks: list[str] = []
    response_text: str | None = None
    done = False
    try:
        async with asyncio.timeout(TIMEOUT):
            async with client.stream("POST", "/chat/stream", json={"message": message}) as response:
                if response.status_code != 200:
                    body = await response.aread()
                    result.error = f"HTTP {response.status_code}"
                    result.detail = body.decode(errors="replace")[:300]
                    return result
                async for event, data in sse_frames(response):
                    result.frames += 1
                    if event == "token":
                        chunk = data.get("chunk")
                        if not isinstance(chunk, str):
                            result.error, result.detail = "token frame without chunk", str(data)[:300]
                            break
                        if chunk and result.first_token is None:
                            result.first_token = time.time()
                        result.token_frames += 1
                        chunks.append(chunk)
                    elif event == "error" and result.error is None:
                        result.error = f"error frame: {data.get('error_type', '?')}"
                        result.detail = str(data)[:300]
                    elif event == "done":
                        done = True
                        text = data.get("response")
                        response_text = text if isinstance(text, str) else None
                        break  # `done` is always the last frame
    except Exception as exc:  # every failure of a stream counts as an error, by its type
        result.error, result.detail = type(exc).__name__, repr(exc)[:300]
        return result
    if result.error is None and not done:
        result.error = "no done frame"
    elif result.error is None and result.first_token is None:
        result.error = "no token of the answer"
    text = "".join(chunks)
    result.chunk_chars = len(text)
    result.response_words = len((response_text or "").split())
    result.complete = bool(response_text) and text == response_text
    return result


def model_send_times(requests: list[dict[str, Any]], first_token_delay: float) -> dict[str, float]:
    """When the offline model sent the first token for each stream (by its question's unique part).

    The model records each request with the wall-clock time it arrived and sends the first token
    ``first_token_delay`` later; a stream's request is the first whose messages contain its question.
    """
    sent: dict[str, float] = {}
    for request in requests:
        for message in request.get("messages") or []:
            content = message.get("content")
            for found in STREAM_ID.finditer(content if isinstance(content, str) else ""):
                sent[found.group(1)] = min(sent.get(found.group(1), math.inf), float(request["time"]))
    return {key: arrived + first_token_delay for key, arrived in sent.items()}


async def concurrent_streams(svc: Service, model_url: str, n: int, tag: str) -> dict[str, Any]:
    """``n`` streams at once: the first token's arrival at the client after the model sent it; TTFT overhead."""
    await offline_reset(model_url)
    clients = sharded_clients(svc.url, n, TIMEOUT)
    messages = [f"scaling stream {tag}-{i:05d}: how soon does the answer arrive?" for i in range(n)]
    try:
        before = tree_stats(svc.pid)
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_once(clients[i % len(clients)], m) for i, m in enumerate(messages)))
        wall = time.perf_counter() - started
        await asyncio.sleep(SETTLE)
        after = tree_stats(svc.pid)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    sent_by_model = model_send_times(await offline_requests(model_url), STREAM_FIRST_TOKEN)
    after_model: list[float] = []
    overheads: list[float] = []
    for s in results:
        if s.error is not None or s.first_token is None:
            continue
        overheads.append((s.first_token - s.sent - STREAM_FIRST_TOKEN) * 1000)
        found = STREAM_ID.search(s.message)
        if found and found.group(1) in sent_by_model:
            after_model.append((s.first_token - sent_by_model[found.group(1)]) * 1000)
    good = [s for s in results if s.error is None]
    return {
        "streams": n,
        "wall_s": round(wall, 3),
        **_errors((s.error, s.detail) for s in results),
        "matched_to_model": len(after_model),
        "after_model_p50_ms": _ms(percentile(after_model, 50)),
        "after_model_p99_ms": _ms(percentile(after_model, 99)),
        "after_model_max_ms": _ms(max(after_model, default=math.nan)),
        "ttft_overhead_p50_ms": _ms(percentile(overheads, 50)),
        "ttft_overhead_p95_ms": _ms(percentile(overheads, 95)),
        "token_frames_per_stream": statistics.median(s.token_frames for s in good) if good else None,
        "incomplete": sum(1 for s in good if not s.complete),
        "cpu_s": round(after.cpu_seconds - before.cpu_seconds, 3),
        "processes_after": after.processes,
    }


def streams(trees: Trees, n: int, repeats: int) -> dict[str, Any]:
    """``n`` concurrent streams, the model's first token after 200 ms: the delay the service adds to it."""
    delays = {"first_token_delay": STREAM_FIRST_TOKEN, "token_delay": STREAM_TOKEN_DELAY}
    with offline_model(**delays, reply_tokens=STREAM_TOKENS) as model:

        def one_run(name: str, tree: Path | None, r: int) -> tuple[dict[str, Any], str]:
            with service(name, tree, model, streams=True) as svc:
                result = asyncio.run(concurrent_streams(svc, model, n, f"{name}-run{r}"))
            result.update(_layout(svc))
            return result, (
                f"first token after the model p50 {result['after_model_p50_ms']} ms, "
                f"p99 {result['after_model_p99_ms']} ms; TTFT overhead p50 {result['ttft_overhead_p50_ms']} ms; "
                f"errors {result['errors']}; {result['token_frames_per_stream']} token frames per stream"
            )

        return _alternating(trees, repeats, one_run, lambda r: r["after_model_p50_ms"])


# -- the stream path's cost per token -----------------------------------------------------------------
async def token_phase(svc: Service, model_url: str, n: int, at_once: int, words: int, tag: str) -> dict[str, Any]:
    """``n`` streams, ``at_once`` at a time, whose answers have ``words`` tokens: the service's CPU for them."""
    await offline_reset(model_url, reply_tokens=words)
    clients = sharded_clients(svc.url, at_once, TIMEOUT)
    pending = iter(range(n))
    results: list[StreamResult] = []

    async def loop(k: int) -> None:
        for i in pending:
            message = f"scaling stream {tag}-{i:05d}: how do the tokens arrive?"
            results.append(await stream_once(clients[k % len(clients)], message))

    try:
        before = tree_stats(svc.pid)
        started = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(at_once)))
        wall = time.perf_counter() - started
        await asyncio.sleep(SETTLE)
        after = tree_stats(svc.pid)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    model_calls = len(await offline_requests(model_url))
    good = [s for s in results if s.error is None]
    return {
        "streams": n,
        "reply_tokens": words,
        "wall_s": round(wall, 3),
        "cpu_s": round(after.cpu_seconds - before.cpu_seconds, 3),
        **_errors((s.error, s.detail) for s in results),
        "model_calls": model_calls,
        "frames_per_stream": statistics.median(s.frames for s in good) if good else None,
        "token_frames_per_stream": statistics.median(s.token_frames for s in good) if good else None,
        "response_words": statistics.median(s.response_words for s in good) if good else None,
        "complete": sum(1 for s in good if s.complete and s.response_words >= words),
        "processes_after": after.processes,
    }


def tokens(trees: Trees, n: int, at_once: int, repeats: int) -> dict[str, Any]:
    """The service's CPU per streamed token: ``n`` streams of 400-token answers minus ``n`` of 10-token answers.

    The difference of two measurements, each as noisy as the machine: repeated ``repeats`` times, the
    services alternating, and the median run reported.
    """
    with offline_model(reply_tokens=FEW_TOKENS) as model:

        def one_run(name: str, tree: Path | None, r: int) -> tuple[dict[str, Any], str]:
            asyncio.run(offline_reset(model, reply_tokens=FEW_TOKENS))  # the warm-up's answers are short
            with service(name, tree, model, streams=True) as svc:
                few = asyncio.run(token_phase(svc, model, n, at_once, FEW_TOKENS, f"{name}-{r}-few"))
                many = asyncio.run(token_phase(svc, model, n, at_once, MANY_TOKENS, f"{name}-{r}-many"))
            per_token = (many["cpu_s"] - few["cpu_s"]) / (n * (MANY_TOKENS - FEW_TOKENS)) * 1e6
            run = {"cpu_us_per_token": round(per_token, 2), "few": few, "many": many, **_layout(svc)}
            return run, (
                f"{run['cpu_us_per_token']} µs per token "
                f"({few['cpu_s']} s for {n} x {FEW_TOKENS} tokens, {many['cpu_s']} s for {n} x {MANY_TOKENS}); "
                f"frames per stream {few['frames_per_stream']} / {many['frames_per_stream']}; "
                f"complete {few['complete']} / {many['complete']} of {n}; errors {few['errors']} + {many['errors']}"
            )

        return _alternating(trees, repeats, one_run, lambda r: r["cpu_us_per_token"])


# -- memory -------------------------------------------------------------------------------------------
async def memory_run(svc: Service, total: int, concurrency: int) -> dict[str, Any]:
    """``total`` conversations by ``concurrency`` loops; the tree's RSS after each tenth (the first: warm)."""
    step = max(1, total // 10)
    clients = sharded_clients(svc.url, concurrency, TIMEOUT)
    samples: list[dict[str, Any]] = []
    results: list[ChatResult] = []
    try:
        done = 0
        while done < total:
            upto = min(total, done + step)
            results += await closed_loop(clients, concurrency, range(done, upto), f"{svc.name} memory")
            done = upto
            await asyncio.sleep(SETTLE)
            stats = tree_stats(svc.pid)
            samples.append({"conversations": done, "rss_mib": round(stats.rss_mib, 2), "processes": stats.processes})
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {
        "conversations": total,
        "concurrency": concurrency,
        "warm_after": samples[0]["conversations"],
        "rss_warm_mib": samples[0]["rss_mib"],
        "rss_final_mib": samples[-1]["rss_mib"],
        "growth_mib": round(samples[-1]["rss_mib"] - samples[0]["rss_mib"], 2),
        "processes_final": samples[-1]["processes"],
        "samples": samples,
        **_errors((kind, sample) for _, kind, sample in results),
    }


def memory(trees: Trees, total: int, concurrency: int) -> dict[str, Any]:
    """The service's RSS growth over ``total`` one-turn conversations (a 0 ms model)."""
    results: dict[str, Any] = {}
    with offline_model() as model:
        for name, tree in trees.items():
            with service(name, tree, model) as svc:
                run = asyncio.run(memory_run(svc, total, concurrency))
            run.update(_layout(svc))
            results[name] = {"median": run, "runs": [run]}
            print(
                f"  {name}: RSS {run['rss_warm_mib']} MiB after {run['warm_after']} conversations, "
                f"{run['rss_final_mib']} MiB after {total} (+{run['growth_mib']}); errors {run['errors']}; "
                f"{run['processes_final']} process(es)",
                flush=True,
            )
    return results
