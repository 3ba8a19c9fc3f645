"""Concurrency benchmark: N single-turn ``POST /chat`` requests sent at once.

Setup: one uvicorn worker of ``agent-api serve``, a real redis-server (REDIS_URL) and the offline
model in its own process answering every model request after 500 ms (``--first-token-delay 0.5``,
no delay between tokens). Every process is started here on a loopback port and stopped at the end,
also on error. Each run gets a fresh API process, so its peak RSS is that run's own.

For each N (``--n``, default 50 200 1000), repeated ``--repeat`` times (default 3), the script
reports the median run by wall time: wall time, p50/p95 latency of the successful requests, errors,
the API process's peak RSS (VmHWM) and its CPU time per conversation (CPU-seconds spent during the
batch / N). It prints a table, saves every run to ``bench/results/concurrency.json`` and rewrites
the ``concurrency`` section of ``docs/benchmarks.md``.

Run from the repository root::

    .venv/bin/python bench/concurrency.py
    .venv/bin/python bench/concurrency.py --quick   # N = 5 and 20, once: a smoke run, published nothing
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
from collections import Counter
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from harness.cli import add_output_flags, output, parse_args, start
from harness.load import CLIENT_CONNECTIONS, chat_once, error_kinds, offline_requests, offline_reset, sharded_clients
from harness.measure import measured, median_run, percentile
from harness.results import run_metadata, shown
from harness.services import api_server, bench_api_env, offline_model, redis_server
from harness.tables import errors_cell, fmt, markdown_table, text_table, unbold, yes

MODEL_LATENCY_S = 0.5
DEFAULT_N = [50, 200, 1000]
QUICK = {"n": [5, 20], "repeat": 1, "warmup": 2}
WALL_TARGETS_S = {200: 2.0, 1000: 10.0}  # from the spec: N=200 in under 2 s, N=1000 in under 10 s
CPU_TARGET_MS = 8.0  # from the spec: CPU time per conversation <= 8 ms
NAIVE_REFERENCE = "N=50 took 4.7 s; N=200 failed 38% of its requests"
HEADER = [
    "N",
    "wall (s)",
    "wall, all runs (s)",
    "p50 (ms)",
    "p95 (ms)",
    "errors",
    "peak RSS (MiB)",
    "CPU / conversation (ms)",
]


@dataclass
class Run:
    """One batch of N simultaneous conversations against a fresh API process."""

    n: int
    repeat: int
    wall_s: float
    p50_ms: float
    p95_ms: float
    errors: int
    errors_by_kind: dict[str, int]
    error_samples: list[str]
    peak_rss_mib: float
    rss_after_mib: float
    api_cpu_s: float
    cpu_ms_per_conversation: float
    api_threads_after: int
    client_cpu_s: float
    model_calls: int | None
    latencies_ms: list[float] = field(repr=False)


async def _batch(url: str, pid: int, n: int, repeat: int, *, warmup: int, timeout: float, model_url: str) -> Run:
    async with AsyncExitStack() as stack:
        # The warm-up has its own client, closed before the batch: the batch opens N fresh
        # connections, like N new callers, and no idle keep-alive connection is reused.
        if warmup:
            async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout)) as client:
                warm = await asyncio.gather(*(chat_once(client, f"warm-up question {i}") for i in range(warmup)))
            failed = [kind for _, kind, _ in warm if kind]
            if len(failed) == warmup:
                raise RuntimeError(f"every warm-up request failed ({dict(Counter(failed))}); the API is not serving")
        await offline_reset(model_url)
        clients = [await stack.enter_async_context(c) for c in sharded_clients(url, n, timeout)]
        with measured(pid) as usage:
            results = await asyncio.gather(
                *(chat_once(clients[i % len(clients)], f"benchmark question {i}") for i in range(n))
            )
    model_calls: int | None
    try:
        model_calls = len(await offline_requests(model_url))
    except (httpx.HTTPError, ValueError):
        model_calls = None

    ok = [latency for latency, kind, _ in results if kind is None]
    kinds, samples = error_kinds((kind, sample) for _, kind, sample in results)
    return Run(
        n=n,
        repeat=repeat,
        wall_s=usage.wall_s,
        p50_ms=percentile(ok, 50),
        p95_ms=percentile(ok, 95),
        errors=sum(kinds.values()),
        errors_by_kind=kinds,
        error_samples=samples,
        peak_rss_mib=usage.after.peak_rss_mib,
        rss_after_mib=usage.after.rss_mib,
        api_cpu_s=usage.api_cpu_s,
        cpu_ms_per_conversation=usage.api_cpu_s / n * 1000,
        api_threads_after=usage.after.threads,
        client_cpu_s=usage.client_cpu_s,
        model_calls=model_calls,
        latencies_ms=[round(latency, 1) for latency, _, _ in results],
    )


def _api_env(redis_url: str, model_url: str, args: argparse.Namespace) -> dict[str, str | None]:
    env = bench_api_env(redis_url, model_url)
    if args.threads is not None:
        env["THREAD_POOL_SIZE"] = str(args.threads)
    if args.redis_connections is not None:
        env["REDIS_MAX_CONNECTIONS"] = str(args.redis_connections)
    return env


def _summaries(runs: list[Run], ns: list[int]) -> list[dict[str, Any]]:
    return [{"n": n, **median_run([r for r in runs if r.n == n], lambda r: r.wall_s)} for n in ns]


def _targets(summaries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    total_runs = sum(s["runs"] for s in summaries)
    errors = sum(s["errors_all_runs"] for s in summaries)
    per_n = ", ".join(f"N={s['n']}: {s['errors_all_runs']}" for s in summaries)
    rows = [("0 errors at every N", f"{errors} errors in {total_runs} runs ({per_n})", yes(errors == 0))]
    by_n = {s["n"]: s for s in summaries}
    for n, limit in WALL_TARGETS_S.items():
        if n in by_n:
            wall = by_n[n]["median"].wall_s
            rows.append((f"N={n} in under {limit:g} s", f"{wall:.2f} s", yes(wall < limit)))
        else:
            rows.append((f"N={n} in under {limit:g} s", "not measured", "-"))
    worst = max(summaries, key=lambda s: s["median"].cpu_ms_per_conversation)
    cpu = worst["median"].cpu_ms_per_conversation
    measured_cpu = f"at most {cpu:.1f} ms (N={worst['n']})"
    rows.append((f"CPU time per conversation <= {CPU_TARGET_MS:g} ms", measured_cpu, yes(cpu <= CPU_TARGET_MS)))
    return rows


def _rows(summaries: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in summaries:
        r: Run = s["median"]
        rows.append(
            [
                str(s["n"]),
                f"{r.wall_s:.2f}",
                f"{s['min']:.2f}-{s['max']:.2f}",
                fmt(r.p50_ms, 0),
                fmt(r.p95_ms, 0),
                errors_cell(r.errors, s["errors_all_runs"]),
                f"{r.peak_rss_mib:.0f}",
                f"{r.cpu_ms_per_conversation:.1f}",
            ]
        )
    return rows


def _doc(summaries: list[dict[str, Any]], args: argparse.Namespace, command: str, revision: str) -> str:
    threads = f"THREAD_POOL_SIZE={args.threads}" if args.threads is not None else "THREAD_POOL_SIZE=200 (default)"
    pool = (
        f"REDIS_MAX_CONNECTIONS={args.redis_connections}"
        if args.redis_connections is not None
        else "REDIS_MAX_CONNECTIONS=200 (default)"
    )
    lines = [
        "## Concurrency: N conversations at once",
        "",
        f'N single-turn `POST /chat` requests (`{{"message": "benchmark question <i>"}}`, the default '
        "`research` team: one model call per conversation) are sent at the same moment "
        f"over N fresh connections (`httpx.AsyncClient`s of at most {CLIENT_CONNECTIONS} connections each), "
        f"after a {args.warmup}-request warm-up. The API runs as "
        f"`agent-api serve` with one uvicorn worker, {threads}, {pool}, sessions in a real `redis-server`, and "
        f"the model is the offline model in its own process answering each request after "
        f"{MODEL_LATENCY_S * 1000:.0f} ms (`--first-token-delay {MODEL_LATENCY_S} --token-delay 0`). "
        "Each run starts a fresh API process. The load generator, Redis and the model share the machine "
        f"with the API: a {os.cpu_count()}-core shared machine, so the numbers are noisy; each N was run "
        f"{args.repeat} times and the table shows the median run by wall time (its range over all runs "
        "is in the third column).",
        "",
        "- Wall: from sending the first request to the last answer. p50/p95: latency of the successful "
        "requests (linear interpolation). Peak RSS: VmHWM of the API process. CPU / conversation: the API "
        "process's user+system CPU time during the batch, divided by N.",
        f"- Date: {datetime.date.today().isoformat()}; service at commit {revision}; "
        f"Python {platform.python_version()} on {platform.system()}.",
        f"- Reproduce: `{command}` (every run's numbers: `bench/results/concurrency.json`).",
        "",
        markdown_table(HEADER, _rows(summaries)),
        "",
        "Targets from the spec:",
        "",
        markdown_table(["Target", "Measured", "Met"], _targets(summaries)),
        "",
        f"For reference, the naive pattern measured in the spec: {NAIVE_REFERENCE}.",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--n", type=int, nargs="+", default=DEFAULT_N, help="batch sizes (default: 50 200 1000)")
    add("--repeat", type=int, default=3, help="runs per N; the median run is reported (default: 3)")
    add("--warmup", type=int, default=5, help="warm-up requests before each batch (default: 5)")
    add("--timeout", type=float, default=60.0, help="client time-out per request, s (default: 60)")
    add("--threads", type=int, help="THREAD_POOL_SIZE of the API (default: the service's, 200)")
    add("--redis-connections", type=int, help="REDIS_MAX_CONNECTIONS of the API (default: the service's, 200)")
    add_output_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_args(parser, argv, QUICK)
    if any(n < 1 for n in args.n) or args.repeat < 1 or args.warmup < 0:
        parser.error("--n and --repeat must be positive, --warmup not negative")
    out = output(args)
    run = start("concurrency.py", argv, connections=max(args.n))

    runs: list[Run] = []
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model_url = stack.enter_context(offline_model(first_token_delay=MODEL_LATENCY_S, token_delay=0.0))
        env = _api_env(redis_url, model_url, args)
        for repeat in range(1, args.repeat + 1):
            for n in args.n:
                with api_server(env) as api:
                    batch = _batch(
                        api.url, api.pid, n, repeat, warmup=args.warmup, timeout=args.timeout, model_url=model_url
                    )
                    result = asyncio.run(batch)
                    tail = api.stderr_tail(20) if result.errors else "(no output)"
                    if tail != "(no output)":
                        result.error_samples.append(f"API stderr tail:\n{tail}")
                runs.append(result)
                calls = "?" if result.model_calls is None else result.model_calls
                print(
                    f"run {repeat}/{args.repeat} N={n}: wall {result.wall_s:.2f} s, p50 {fmt(result.p50_ms, 0)} ms, "
                    f"p95 {fmt(result.p95_ms, 0)} ms, errors {result.errors} {result.errors_by_kind or ''}, "
                    f"peak RSS {result.peak_rss_mib:.0f} MiB, CPU {result.cpu_ms_per_conversation:.1f} ms/conv, "
                    f"model calls {calls}, load-generator CPU {result.client_cpu_s:.2f} s",
                    flush=True,
                )

    summaries = _summaries(runs, args.n)
    print()
    print(f"median of {args.repeat} run(s) per N, by wall time:")
    print(text_table(HEADER, _rows(summaries)))
    print()
    print(text_table(["Target", "Measured", "Met"], unbold(_targets(summaries))))
    for s in summaries:
        if s["errors_all_runs"]:
            print(f"N={s['n']}: errors in all runs by kind: {s['errors_by_kind_all_runs']}")
    for r in runs:
        for sample in r.error_samples:
            print(f"  N={r.n} run {r.repeat}: {sample}")

    settings = {
        "model_latency_s": MODEL_LATENCY_S,
        "threads": args.threads,
        "redis_connections": args.redis_connections,
        "warmup": args.warmup,
        "timeout_s": args.timeout,
        "workers": 1,
    }
    summary = [
        {
            "n": s["n"],
            "median_repeat": s["median"].repeat,
            "wall_min_s": s["min"],
            "wall_max_s": s["max"],
            "errors_all_runs": s["errors_all_runs"],
            "errors_by_kind_all_runs": s["errors_by_kind_all_runs"],
        }
        for s in summaries
    ]
    raw = {
        **run_metadata("concurrency", run.command, run.revision, run.load),
        "settings": settings,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    print(f"\nraw numbers: {shown(out.save('concurrency', raw))}")
    out.report("concurrency", _doc(summaries, args, run.command, run.revision))
    return 0


if __name__ == "__main__":
    sys.exit(main())
