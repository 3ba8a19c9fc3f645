"""The report of the first-token benchmark: the median runs, the spec's targets, what looks wrong, the doc."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from typing import Any

from harness.load import CLIENT_CONNECTIONS
from harness.measure import median_run
from harness.tables import errors_cell, fmt, markdown_table, yes

from suites.first_token.streams import Run

TARGETS_MS = {"sequential": 20.0, "concurrent": 100.0}  # from the spec: p50 overhead at 1 and at 200 streams
TARGET_CONCURRENCY = 200  # the spec's concurrent target is for 200 streams at once
BUFFERING_RATIO = 0.5  # first token -> done faster than this share of the model's token time: buffering
HEADER = [
    "streams",
    "at once",
    "runs",
    "overhead p50 (ms)",
    "overhead p95 (ms)",
    "overhead max (ms)",
    "overhead p50, all runs (ms)",
    "errors",
    "wall (s)",
    "request to model, p50 (ms)",
    "first token to done, p50 (ms)",
]


def summaries(runs: list[Run]) -> list[dict[str, Any]]:
    """Per scenario: the median run by p50 overhead, the range of p50 and the errors over all runs."""
    found = []
    for scenario in ("sequential", "concurrent"):
        of_s = [r for r in runs if r.scenario == scenario]
        if of_s:
            found.append({"scenario": scenario, **median_run(of_s, lambda r: r.p50_ms)})
    return found


def rows(summaries: list[dict[str, Any]]) -> list[list[str]]:
    table = []
    for s in summaries:
        r: Run = s["median"]
        at_once = "1 (one after another)" if r.scenario == "sequential" else str(r.n)
        low, high = fmt(s["min"], 1), fmt(s["max"], 1)
        table.append(
            [
                str(r.n),
                at_once,
                str(s["runs"]),
                fmt(r.p50_ms, 1),
                fmt(r.p95_ms, 1),
                fmt(r.max_ms, 1),
                low if low == high else f"{low} to {high}",
                errors_cell(r.errors, s["errors_all_runs"]),
                f"{r.wall_s:.2f}",
                fmt(r.to_model_p50_ms, 1),
                fmt(r.token_span_p50_ms, 0),
            ]
        )
    return table


def targets(summaries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    by = {s["scenario"]: s for s in summaries}
    found: list[tuple[str, str, str]] = []
    limit = TARGETS_MS["sequential"]
    name = f"p50 TTFT overhead <= {limit:g} ms at 1 stream"
    if "sequential" in by:
        p50 = by["sequential"]["median"].p50_ms
        found.append((name, f"{fmt(p50, 1)} ms", yes(p50 <= limit)))  # NaN (no good stream) is not met
    else:
        found.append((name, "not measured", "-"))
    limit = TARGETS_MS["concurrent"]
    name = f"p50 TTFT overhead <= {limit:g} ms at {TARGET_CONCURRENCY} concurrent streams"
    run: Run | None = by["concurrent"]["median"] if "concurrent" in by else None
    if run is not None and run.n == TARGET_CONCURRENCY:
        measured = f"{fmt(run.p50_ms, 1)} ms (median of {by['concurrent']['runs']} runs)"
        found.append((name, measured, yes(run.p50_ms <= limit)))
    else:
        measured = "not measured" if run is None else f"not measured (ran {run.n} streams)"
        found.append((name, measured, "-"))
    return found


def notes(runs: list[Run], args: argparse.Namespace) -> list[str]:
    """What looks wrong in the runs: buffering, impossible timings, chunks that differ from the answer."""
    expected_ms = args.reply_tokens * args.token_delay * 1000
    found = []
    for r in runs:
        label = f"{r.scenario} run {r.repeat}"
        span = r.token_span_p50_ms
        if expected_ms > 0 and span == span and span < BUFFERING_RATIO * expected_ms:
            # Tokens arrived much faster than the model wrote them: the service held them back.
            found.append(
                f"{label}: first token to done took {span:.0f} ms (p50) while the model "
                f"spends about {expected_ms:.0f} ms writing the tokens after the first: the service "
                "seems to buffer the stream"
            )
        if r.negative_overheads:
            found.append(
                f"{label}: {r.negative_overheads} stream(s) got their first token sooner than the "
                "model's first-token delay after sending the request"
            )
        if r.streams_with_empty_tokens_first:
            found.append(
                f"{label}: {r.streams_with_empty_tokens_first} stream(s) sent `token` frames with an "
                "empty `chunk` before the first token of the answer (not counted as the first token)"
            )
        if r.chunk_mismatches:
            found.append(
                f"{label}: {r.chunk_mismatches} good stream(s) whose appended `chunk`s differ from the "
                "`done` frame's `response`"
            )
    return found


def doc(
    summaries: list[dict[str, Any]], runs: list[Run], args: argparse.Namespace, command: str, revision: str, load: float
) -> str:
    """The ``first-token`` section of docs/benchmarks.md."""
    reply_ms = (args.first_token_delay + args.reply_tokens * args.token_delay) * 1000
    lines = [
        "## First token: the service's delay before streaming",
        "",
        '`POST /chat/stream` requests (`{"message": "benchmark ... stream <i>"}`, the default `research` '
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
        markdown_table(HEADER, rows(summaries)),
        "",
        "Targets from the spec:",
        "",
        markdown_table(["Target", "Measured", "Met"], targets(summaries)),
    ]
    found = notes(runs, args)
    for s in summaries:
        if s["errors_all_runs"]:
            found.append(f"{s['scenario']} errors in all runs by kind: {s['errors_by_kind_all_runs']}")
    if found:
        lines += ["", "Observed:", ""] + [f"- {note}." for note in found]
    return "\n".join(lines)
