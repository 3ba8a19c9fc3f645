"""Streaming benchmark: the service's own delay before the first token of ``POST /chat/stream``.

Setup: one uvicorn worker of ``agent-api serve``, a real redis-server (REDIS_URL) and the offline
model in its own process, streaming every reply as ``--reply-tokens`` words (default 20, plus the
stop word the service never streams) with its first token after ``--first-token-delay`` (default
0.5 s) and ``--token-delay`` (default 0.05 s) between tokens. Every process is started here on a
loopback port and stopped at the end, also on error.

Each stream is read frame by frame as it arrives. Its TTFT overhead is the time from sending the
request to the arrival of the first token of the answer (the first ``token`` frame with a non-empty
``chunk``), minus the model's first-token delay: what the service (and the client) add before the
first token reaches the caller. A stream is an error when it answers another status than 200, sends
an ``error`` frame, has no token of the answer, does not end with a ``done`` frame, or fails
(exception, time-out).

Two scenarios, each against a fresh API process after a short warm-up:

1. ``--sequential`` streams (default 100) one after another over one connection (concurrency 1);
2. ``--concurrent`` streams (default 200) started at the same moment over that many fresh
   connections, repeated ``--repeat`` times (default 3); the median run by p50 overhead is reported.

The script prints a table, saves every stream's numbers to ``bench/results/first_token.json`` and
rewrites the ``first-token`` section of ``docs/benchmarks.md``.

Run from the repository root::

    .venv/bin/python bench/first_token.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from _common import (
    api_server,
    bench_api_env,
    markdown_table,
    median_index,
    offline_model,
    percentile,
    process_stats,
    raise_open_files_limit,
    redis_server,
    run_metadata,
    save_raw,
    service_revision,
    text_table,
    update_doc_section,
)
from httpx_sse import aconnect_sse

TARGETS_MS = {"sequential": 20.0, "concurrent": 100.0}  # from the spec: p50 overhead at 1 and at 200 streams
TARGET_CONCURRENCY = 200  # the spec's concurrent target is for 200 streams at once
CLIENT_CONNECTIONS = 20  # connections per load-generator client (see _clients)
MAX_FRAMES = 10_000  # a stream sending more frames than this is cut off and counted as an error
BUFFERING_RATIO = 0.5  # first token -> done faster than this share of the model's token time: buffering


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


async def _one(client: httpx.AsyncClient, i: int, message: str, *, first_token_delay: float,
               timeout: float) -> tuple[Stream, float]:
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
                        data = json.loads(event.data)
                        response_text = data.get("response")
                        break  # `done` is always the last frame
                    # session, message, usage and tool frames are only counted
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


def _clients(url: str, n: int, timeout: float) -> list[httpx.AsyncClient]:
    """Clients with N connections between them, at most CLIENT_CONNECTIONS each.

    One client with N connections would make the load generator the bottleneck: httpcore's pool
    scans all its connections and queued requests on every request and response (quadratic in N).
    """
    shards = -(-n // CLIENT_CONNECTIONS)
    sizes = [n // shards + (1 if i < n % shards else 0) for i in range(shards)]
    return [httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout),
                              limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))
            for size in sizes]


def _model_arrivals(requests: list[dict[str, Any]]) -> dict[str, float]:
    """The wall-clock time the offline model received the first request carrying each user message."""
    arrivals: dict[str, float] = {}
    for request in requests:
        for message in request.get("messages") or []:
            content = message.get("content")
            if message.get("role") == "user" and isinstance(content, str) and content.startswith("benchmark "):
                arrivals.setdefault(content, float(request["time"]))
    return arrivals


async def _scenario(url: str, pid: int, scenario: str, n: int, repeat: int, *, warmup: int, timeout: float,
                    first_token_delay: float, model_url: str) -> Run:
    offline_requests = f"{model_url.removesuffix('/v1')}/_offline/requests"
    delay = first_token_delay
    async with AsyncExitStack() as stack:
        control = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        if scenario == "sequential":
            # One caller: one client, one connection, kept alive over the warm-up and the streams.
            clients = [await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout),
                                  limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)))]
            warm_client = clients[0]
        else:
            # The warm-up has its own client, closed before the batch: the batch opens N fresh connections.
            warm_client = await stack.enter_async_context(httpx.AsyncClient(base_url=url,
                                                                             timeout=httpx.Timeout(timeout)))
        warm = [(await _one(warm_client, -1, f"warm-up stream {i}", first_token_delay=delay, timeout=timeout))[0]
                for i in range(warmup)]
        if warm and all(s.error for s in warm):
            kinds = dict(Counter(s.error for s in warm))
            raise RuntimeError(f"every warm-up stream failed ({kinds}); the API is not serving: {warm[0].detail}")
        if scenario == "concurrent":
            await warm_client.aclose()
            clients = [await stack.enter_async_context(c) for c in _clients(url, n, timeout)]
        await control.delete(offline_requests)

        messages = [f"benchmark {scenario} run {repeat} stream {i}" for i in range(n)]
        before = process_stats(pid)
        client_before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        if scenario == "sequential":
            results = [await _one(clients[0], i, messages[i], first_token_delay=delay, timeout=timeout)
                       for i in range(n)]
        else:
            results = await asyncio.gather(*(_one(clients[i % len(clients)], i, messages[i],
                                                  first_token_delay=delay, timeout=timeout) for i in range(n)))
        wall = time.perf_counter() - start
        client_after = resource.getrusage(resource.RUSAGE_SELF)
        after = process_stats(pid)

        model_calls: int | None
        try:
            recorded = (await control.get(offline_requests)).json()
            model_calls = len(recorded)
            arrivals = _model_arrivals(recorded)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            model_calls, arrivals = None, {}

    streams = []
    for (stream, sent_wall), message in zip(results, messages, strict=True):
        if message in arrivals:
            stream.to_model_ms = round((arrivals[message] - sent_wall) * 1000, 2)
        streams.append(stream)
    good = [s for s in streams if s.error is None]
    overheads = [s.overhead_ms for s in good if s.overhead_ms is not None]
    kinds = Counter(s.error for s in streams if s.error)
    samples: dict[str, str] = {}
    for s in streams:
        if s.error and s.error not in samples:
            samples[s.error] = s.detail or ""
    for s in streams:  # rounded for the raw file, after the statistics above used full precision
        for name in ("ttft_ms", "overhead_ms", "done_ms"):
            value = getattr(s, name)
            if value is not None:
                setattr(s, name, round(value, 2))
    return Run(
        scenario=scenario, n=n, repeat=repeat, wall_s=wall, ok=len(good), errors=sum(kinds.values()),
        errors_by_kind=dict(kinds), error_samples=[f"{k}: {v}" for k, v in samples.items()],
        p50_ms=percentile(overheads, 50), p95_ms=percentile(overheads, 95),
        max_ms=max(overheads, default=float("nan")), min_ms=min(overheads, default=float("nan")),
        total_p50_s=percentile([s.done_ms for s in good if s.done_ms is not None], 50) / 1000,
        token_span_p50_ms=percentile([s.done_ms - s.ttft_ms for s in good
                                      if s.done_ms is not None and s.ttft_ms is not None], 50),
        to_model_p50_ms=percentile([s.to_model_ms for s in good if s.to_model_ms is not None], 50),
        chunk_mismatches=sum(1 for s in good if s.chunks_match_response is False),
        streams_with_empty_tokens_first=sum(1 for s in streams if s.empty_tokens_before),
        negative_overheads=sum(1 for v in overheads if v < 0),
        model_calls=model_calls,
        api_cpu_s=after.cpu_seconds - before.cpu_seconds,
        client_cpu_s=(client_after.ru_utime + client_after.ru_stime)
        - (client_before.ru_utime + client_before.ru_stime),
        api_peak_rss_mib=after.peak_rss_mib, streams=streams,
    )


def _fmt(value: float | None, digits: int = 0) -> str:
    return f"{value:.{digits}f}" if value is not None and value == value else "-"  # NaN prints as "-"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _summaries(runs: list[Run]) -> list[dict[str, Any]]:
    summaries = []
    for scenario in ("sequential", "concurrent"):
        of_s = [r for r in runs if r.scenario == scenario]
        if not of_s:
            continue
        median = of_s[median_index([r.p50_ms if r.p50_ms == r.p50_ms else float("inf") for r in of_s])]
        summaries.append({
            "scenario": scenario, "median": median, "runs": len(of_s),
            "p50_min": min(r.p50_ms for r in of_s), "p50_max": max(r.p50_ms for r in of_s),
            "errors_all_runs": sum(r.errors for r in of_s),
            "errors_by_kind_all_runs": dict(sum((Counter(r.errors_by_kind) for r in of_s), Counter())),
        })
    return summaries


HEADER = ["streams", "at once", "runs", "overhead p50 (ms)", "overhead p95 (ms)", "overhead max (ms)",
          "overhead p50, all runs (ms)", "errors", "wall (s)", "request to model, p50 (ms)",
          "first token to done, p50 (ms)"]


def _rows(summaries: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in summaries:
        r: Run = s["median"]
        errors = str(r.errors)
        if s["errors_all_runs"] != r.errors:
            errors += f" ({s['errors_all_runs']} in all runs)"
        at_once = "1 (one after another)" if r.scenario == "sequential" else str(r.n)
        low, high = _fmt(s["p50_min"], 1), _fmt(s["p50_max"], 1)
        rows.append([str(r.n), at_once, str(s["runs"]), _fmt(r.p50_ms, 1), _fmt(r.p95_ms, 1), _fmt(r.max_ms, 1),
                     low if low == high else f"{low} to {high}", errors, f"{r.wall_s:.2f}",
                     _fmt(r.to_model_p50_ms, 1), _fmt(r.token_span_p50_ms)])
    return rows


def _targets(summaries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    by = {s["scenario"]: s for s in summaries}
    rows: list[tuple[str, str, str]] = []
    limit = TARGETS_MS["sequential"]
    name = f"p50 TTFT overhead <= {limit:g} ms at 1 stream"
    if "sequential" in by:
        p50 = by["sequential"]["median"].p50_ms
        rows.append((name, f"{_fmt(p50, 1)} ms", _yes(p50 <= limit)))  # NaN (no good stream) is not met
    else:
        rows.append((name, "not measured", "-"))
    limit = TARGETS_MS["concurrent"]
    name = f"p50 TTFT overhead <= {limit:g} ms at {TARGET_CONCURRENCY} concurrent streams"
    run: Run | None = by["concurrent"]["median"] if "concurrent" in by else None
    if run is not None and run.n == TARGET_CONCURRENCY:
        rows.append((name, f"{_fmt(run.p50_ms, 1)} ms (median of {by['concurrent']['runs']} runs)",
                     _yes(run.p50_ms <= limit)))
    else:
        measured = "not measured" if run is None else f"not measured (ran {run.n} streams)"
        rows.append((name, measured, "-"))
    return rows


def _notes(runs: list[Run], args: argparse.Namespace) -> list[str]:
    """What looks wrong in the runs: buffering, impossible timings, chunks that differ from the answer."""
    expected_ms = args.reply_tokens * args.token_delay * 1000
    notes = []
    for r in runs:
        label = f"{r.scenario} run {r.repeat}"
        if expected_ms > 0 and r.token_span_p50_ms == r.token_span_p50_ms \
                and r.token_span_p50_ms < BUFFERING_RATIO * expected_ms:
            # Tokens arrived much faster than the model wrote them: the service held them back.
            notes.append(f"{label}: first token to done took {r.token_span_p50_ms:.0f} ms (p50) while the model "
                         f"spends about {expected_ms:.0f} ms writing the tokens after the first: the service "
                         "seems to buffer the stream")
        if r.negative_overheads:
            notes.append(f"{label}: {r.negative_overheads} stream(s) got their first token sooner than the "
                         "model's first-token delay after sending the request")
        if r.streams_with_empty_tokens_first:
            notes.append(f"{label}: {r.streams_with_empty_tokens_first} stream(s) sent `token` frames with an "
                         "empty `chunk` before the first token of the answer (not counted as the first token)")
        if r.chunk_mismatches:
            notes.append(f"{label}: {r.chunk_mismatches} good stream(s) whose appended `chunk`s differ from the "
                         "`done` frame's `response`")
    return notes


def _doc(summaries: list[dict[str, Any]], runs: list[Run], args: argparse.Namespace, command: str,
         revision: str, load: float) -> str:
    reply_ms = (args.first_token_delay + args.reply_tokens * args.token_delay) * 1000
    lines = [
        "## First token: the service's delay before streaming",
        "",
        "`POST /chat/stream` requests (`{\"message\": \"benchmark ... stream <i>\"}`, the default `research` "
        "team: one model call per conversation) are read frame by frame as they arrive (`httpx.AsyncClient` and "
        "`httpx-sse`). The TTFT overhead of a stream is the time from sending the request to the arrival of the "
        "answer's first token (the first `token` frame with a non-empty `chunk`), minus the model's "
        f"first-token delay ({args.first_token_delay * 1000:.0f} ms): "
        "what the service adds before the first token reaches the caller (the client's own share included). "
        f"The model is the offline model in its own process, streaming {args.reply_tokens} words "
        f"(`--first-token-delay {args.first_token_delay:g} --token-delay {args.token_delay:g} "
        f"--reply-tokens {args.reply_tokens}`, so about {reply_ms:.0f} ms per reply). The API runs as "
        "`agent-api serve` with one uvicorn worker and the default settings, sessions in a real `redis-server`; "
        "each scenario starts a fresh API process and warms it up with "
        f"{args.warmup} stream(s). Scenario 1: {args.sequential} streams one after another over one kept-alive "
        f"connection. Scenario 2: {args.concurrent} streams started at the same moment over as many fresh "
        f"connections (`httpx.AsyncClient`s of at most {CLIENT_CONNECTIONS} connections each), run "
        f"{args.repeat} times; the table shows the median run by p50 (the range of p50 over all runs is in its "
        "own column). The load generator, Redis and the model share the machine with the API: a "
        f"{os.cpu_count()}-core shared machine, so the numbers are noisy; quote the medians.",
        "",
        "- p50/p95/max: TTFT overhead of the good streams (linear interpolation). Errors: another status than "
        "200, an `error` frame, no token of the answer, no final `done` frame, or an exception/time-out "
        f"({args.timeout:g} s per stream). Wall: from sending the first request to the last `done`. Request to "
        "model: from sending the request to the offline model receiving the stream's model request (wall "
        "clocks of the same machine). First token to done: the model writes the tokens after the first one "
        f"in about {args.reply_tokens * args.token_delay * 1000:.0f} ms; much less would mean the service "
        "buffers the stream.",
        f"- Date: {datetime.date.today().isoformat()}; service at commit {revision}; "
        f"Python {platform.python_version()} on {platform.system()}; 1-minute load average at the start {load:.2f}.",
        f"- Reproduce: `{command}` (every stream's numbers: `bench/results/first_token.json`).",
        "",
        markdown_table(HEADER, _rows(summaries)),
        "",
        "Targets from the spec:",
        "",
        markdown_table(["Target", "Measured", "Met"], _targets(summaries)),
    ]
    notes = _notes(runs, args)
    for s in summaries:
        if s["errors_all_runs"]:
            notes.append(f"{s['scenario']} errors in all runs by kind: {s['errors_by_kind_all_runs']}")
    if notes:
        lines += ["", "Observed:", ""] + [f"- {note}." for note in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=100,
                        help="streams one after another in scenario 1 (default: 100)")
    parser.add_argument("--concurrent", type=int, default=200,
                        help="streams at once in scenario 2 (default: 200)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of scenario 2; the median run is reported (default: 3)")
    parser.add_argument("--first-token-delay", type=float, default=0.5,
                        help="the model's delay before its first token, s (default: 0.5)")
    parser.add_argument("--token-delay", type=float, default=0.05,
                        help="the model's delay between tokens, s (default: 0.05)")
    parser.add_argument("--reply-tokens", type=int, default=20, help="words per model reply (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up streams before each scenario (default: 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="client time-out per stream, s (default: 60)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.sequential < 0 or args.concurrent < 0 or args.sequential + args.concurrent == 0:
        parser.error("--sequential and --concurrent must not be negative, and not both 0")
    if args.repeat < 1 or args.warmup < 0 or args.reply_tokens < 1 or args.timeout <= 0:
        parser.error("--repeat and --reply-tokens must be positive, --warmup not negative, --timeout positive")
    if args.first_token_delay < 0 or args.token_delay < 0:
        parser.error("--first-token-delay and --token-delay must not be negative")

    nofile = raise_open_files_limit()
    if nofile < 2 * args.concurrent + 200:
        print(f"warning: the open-files limit is {nofile}; {args.concurrent} connections may run out of it",
              file=sys.stderr)
    command = " ".join([".venv/bin/python bench/first_token.py", *(argv if argv is not None else sys.argv[1:])])

    revision = service_revision()  # before the runs: what the API processes will import
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the machine is busy (1-minute load average {load:.2f}); the numbers will be noisier",
              file=sys.stderr)
    plan = ([("sequential", args.sequential, 1)] if args.sequential else []) + \
        ([("concurrent", args.concurrent, k) for k in range(1, args.repeat + 1)] if args.concurrent else [])
    runs: list[Run] = []
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model_url = stack.enter_context(offline_model(first_token_delay=args.first_token_delay,
                                                      token_delay=args.token_delay, reply_tokens=args.reply_tokens))
        env = bench_api_env(redis_url, model_url)
        for scenario, n, repeat in plan:
            with api_server(env) as api:
                run = asyncio.run(_scenario(api.url, api.pid, scenario, n, repeat, warmup=args.warmup,
                                            timeout=args.timeout, first_token_delay=args.first_token_delay,
                                            model_url=model_url))
                if run.errors:
                    run.error_samples.append(f"API stderr tail:\n{api.stderr_tail(20)}")
            runs.append(run)
            calls = "?" if run.model_calls is None else run.model_calls
            label = f"{scenario} N={n}" + (f" run {repeat}/{args.repeat}" if scenario == "concurrent" else "")
            print(f"{label}: TTFT overhead p50 {_fmt(run.p50_ms, 1)} ms, p95 {_fmt(run.p95_ms, 1)} ms, "
                  f"max {_fmt(run.max_ms, 1)} ms, min {_fmt(run.min_ms, 1)} ms; errors {run.errors} "
                  f"{run.errors_by_kind or ''}; wall {run.wall_s:.2f} s; stream p50 {_fmt(run.total_p50_s, 3)} s; "
                  f"request to model p50 {_fmt(run.to_model_p50_ms, 1)} ms; first token to done p50 "
                  f"{_fmt(run.token_span_p50_ms)} ms; model calls {calls}; API CPU {run.api_cpu_s:.2f} s; "
                  f"load-generator CPU {run.client_cpu_s:.2f} s", flush=True)

    summaries = _summaries(runs)
    print()
    print(f"TTFT overhead (time to the first token minus the model's {args.first_token_delay * 1000:.0f} ms), "
          f"median of {args.repeat} run(s) for the concurrent streams:")
    print(text_table(HEADER, _rows(summaries)))
    print()
    print(text_table(["Target", "Measured", "Met"], [[a, b, c.strip("*")] for a, b, c in _targets(summaries)]))
    for note in _notes(runs, args):
        print(f"warning: {note}")
    for s in summaries:
        if s["errors_all_runs"]:
            print(f"{s['scenario']}: errors in all runs by kind: {s['errors_by_kind_all_runs']}")
    for r in runs:
        for sample in r.error_samples:
            print(f"  {r.scenario} run {r.repeat}: {sample}")

    raw = {
        **run_metadata("first_token", command, revision, load),
        "settings": {"first_token_delay_s": args.first_token_delay, "token_delay_s": args.token_delay,
                     "reply_tokens": args.reply_tokens, "warmup": args.warmup, "timeout_s": args.timeout,
                     "workers": 1, "client_connections": CLIENT_CONNECTIONS},
        "targets_ms": TARGETS_MS,
        "summary": [{"scenario": s["scenario"], "median_repeat": s["median"].repeat, "runs": s["runs"],
                     "p50_min_ms": s["p50_min"], "p50_max_ms": s["p50_max"], "errors_all_runs": s["errors_all_runs"],
                     "errors_by_kind_all_runs": s["errors_by_kind_all_runs"]} for s in summaries],
        "runs": [asdict(r) for r in runs],
    }
    path = save_raw("first_token", raw)
    print(f"\nraw numbers: bench/results/{path.name}")
    if not args.no_doc:
        update_doc_section("first-token", _doc(summaries, runs, args, command, revision, load))
        print("updated: docs/benchmarks.md (section 'first-token')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
