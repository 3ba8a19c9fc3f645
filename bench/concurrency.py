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
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
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

MODEL_LATENCY_S = 0.5
DEFAULT_N = [50, 200, 1000]
WALL_TARGETS_S = {200: 2.0, 1000: 10.0}  # from the spec: N=200 in under 2 s, N=1000 in under 10 s
CPU_TARGET_MS = 8.0  # from the spec: CPU time per conversation <= 8 ms
CLIENT_CONNECTIONS = 20  # connections per load-generator client (see _clients)
NAIVE_REFERENCE = "N=50 took 4.7 s; N=200 failed 38% of its requests"


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


async def _one(client: httpx.AsyncClient, message: str) -> tuple[float, str | None, str | None]:
    """Send one turn; return (latency ms, error kind or None, error sample or None)."""
    start = time.perf_counter()
    kind: str | None = None
    sample: str | None = None
    try:
        response = await client.post("/chat", json={"message": message})
        if response.status_code != 200:
            kind, sample = f"HTTP {response.status_code}", response.text[:300]
        else:
            body = response.json()
            if not (isinstance(body, dict) and isinstance(body.get("response"), str) and body["response"]):
                kind, sample = "HTTP 200 without a response", response.text[:300]
    except Exception as exc:  # every failure of a request counts as an error, by its type
        kind, sample = type(exc).__name__, repr(exc)[:300]
    return (time.perf_counter() - start) * 1000, kind, sample


def _clients(url: str, n: int, timeout: float) -> list[httpx.AsyncClient]:
    """Clients with N connections between them, at most CLIENT_CONNECTIONS each.

    One client with N connections would make the load generator the bottleneck: httpcore's pool
    scans all its connections and queued requests on every request and response (quadratic in
    N), which cost about 20 s of CPU for N=1000 on the benchmark machine.
    """
    shards = -(-n // CLIENT_CONNECTIONS)
    sizes = [n // shards + (1 if i < n % shards else 0) for i in range(shards)]
    return [httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout),
                              limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))
            for size in sizes]


async def _batch(url: str, pid: int, n: int, repeat: int, *, warmup: int, timeout: float,
                 model_url: str) -> Run:
    offline_requests = f"{model_url.removesuffix('/v1')}/_offline/requests"
    async with AsyncExitStack() as stack:
        control = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        # The warm-up has its own client, closed before the batch: the batch opens N fresh
        # connections, like N new callers, and no idle keep-alive connection is reused.
        if warmup:
            async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout)) as client:
                warm = await asyncio.gather(*(_one(client, f"warm-up question {i}") for i in range(warmup)))
            failed = [kind for _, kind, _ in warm if kind]
            if len(failed) == warmup:
                raise RuntimeError(f"every warm-up request failed ({dict(Counter(failed))}); the API is not serving")
        await control.delete(offline_requests)
        clients = [await stack.enter_async_context(c) for c in _clients(url, n, timeout)]

        before = process_stats(pid)
        client_before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        results = await asyncio.gather(*(_one(clients[i % len(clients)], f"benchmark question {i}")
                                         for i in range(n)))
        wall = time.perf_counter() - start
        client_after = resource.getrusage(resource.RUSAGE_SELF)
        after = process_stats(pid)

        model_calls: int | None
        try:
            model_calls = len((await control.get(offline_requests)).json())
        except (httpx.HTTPError, ValueError):
            model_calls = None

    ok = [latency for latency, kind, _ in results if kind is None]
    kinds = Counter(kind for _, kind, _ in results if kind)
    samples: dict[str, str] = {}
    for _, kind, sample in results:
        if kind and kind not in samples:
            samples[kind] = sample or ""
    api_cpu = after.cpu_seconds - before.cpu_seconds
    client_cpu = (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
    return Run(
        n=n, repeat=repeat, wall_s=wall, p50_ms=percentile(ok, 50), p95_ms=percentile(ok, 95),
        errors=sum(kinds.values()), errors_by_kind=dict(kinds),
        error_samples=[f"{k}: {v}" for k, v in samples.items()],
        peak_rss_mib=after.peak_rss_mib, rss_after_mib=after.rss_mib, api_cpu_s=api_cpu,
        cpu_ms_per_conversation=api_cpu / n * 1000, api_threads_after=after.threads,
        client_cpu_s=client_cpu, model_calls=model_calls,
        latencies_ms=[round(latency, 1) for latency, _, _ in results],
    )


def _api_env(redis_url: str, model_url: str, args: argparse.Namespace) -> dict[str, str | None]:
    env = bench_api_env(redis_url, model_url)
    if args.threads is not None:
        env["THREAD_POOL_SIZE"] = str(args.threads)
    if args.redis_connections is not None:
        env["REDIS_MAX_CONNECTIONS"] = str(args.redis_connections)
    return env


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:.{digits}f}" if value == value else "-"  # NaN (no successful request) prints as "-"


def _summaries(runs: list[Run], ns: list[int]) -> list[dict[str, Any]]:
    summaries = []
    for n in ns:
        of_n = [r for r in runs if r.n == n]
        median = of_n[median_index([r.wall_s for r in of_n])]
        summaries.append({
            "n": n, "median": median, "runs": len(of_n),
            "wall_min": min(r.wall_s for r in of_n), "wall_max": max(r.wall_s for r in of_n),
            "errors_all_runs": sum(r.errors for r in of_n),
            "errors_by_kind_all_runs": dict(sum((Counter(r.errors_by_kind) for r in of_n), Counter())),
        })
    return summaries


def _targets(summaries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    total_runs = sum(s["runs"] for s in summaries)
    errors = sum(s["errors_all_runs"] for s in summaries)
    per_n = ", ".join(f"N={s['n']}: {s['errors_all_runs']}" for s in summaries)
    rows.append(("0 errors at every N", f"{errors} errors in {total_runs} runs ({per_n})", _yes(errors == 0)))
    by_n = {s["n"]: s for s in summaries}
    for n, limit in WALL_TARGETS_S.items():
        if n in by_n:
            wall = by_n[n]["median"].wall_s
            rows.append((f"N={n} in under {limit:g} s", f"{wall:.2f} s", _yes(wall < limit)))
        else:
            rows.append((f"N={n} in under {limit:g} s", "not measured", "-"))
    worst = max(summaries, key=lambda s: s["median"].cpu_ms_per_conversation)
    cpu = worst["median"].cpu_ms_per_conversation
    rows.append((f"CPU time per conversation <= {CPU_TARGET_MS:g} ms",
                 f"at most {cpu:.1f} ms (N={worst['n']})", _yes(cpu <= CPU_TARGET_MS)))
    return rows


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


HEADER = ["N", "wall (s)", "wall, all runs (s)", "p50 (ms)", "p95 (ms)", "errors", "peak RSS (MiB)",
          "CPU / conversation (ms)"]


def _rows(summaries: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in summaries:
        r: Run = s["median"]
        errors = str(r.errors)
        if s["errors_all_runs"] != r.errors:
            errors += f" ({s['errors_all_runs']} in all runs)"
        rows.append([str(s["n"]), f"{r.wall_s:.2f}", f"{s['wall_min']:.2f}-{s['wall_max']:.2f}",
                     _fmt(r.p50_ms), _fmt(r.p95_ms), errors, f"{r.peak_rss_mib:.0f}",
                     f"{r.cpu_ms_per_conversation:.1f}"])
    return rows


def _doc(summaries: list[dict[str, Any]], args: argparse.Namespace, command: str, revision: str) -> str:
    threads = f"THREAD_POOL_SIZE={args.threads}" if args.threads is not None else "THREAD_POOL_SIZE=200 (default)"
    pool = (f"REDIS_MAX_CONNECTIONS={args.redis_connections}" if args.redis_connections is not None
            else "REDIS_MAX_CONNECTIONS=200 (default)")
    lines = [
        "## Concurrency: N conversations at once",
        "",
        f"N single-turn `POST /chat` requests (`{{\"message\": \"benchmark question <i>\"}}`, the default "
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=DEFAULT_N, help="batch sizes (default: 50 200 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per N; the median run is reported (default: 3)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up requests before each batch (default: 5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="client time-out per request, s (default: 60)")
    parser.add_argument("--threads", type=int, help="THREAD_POOL_SIZE of the API (default: the service's, 200)")
    parser.add_argument("--redis-connections", type=int,
                        help="REDIS_MAX_CONNECTIONS of the API (default: the service's, 200)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.n) or args.repeat < 1 or args.warmup < 0:
        parser.error("--n and --repeat must be positive, --warmup not negative")

    nofile = raise_open_files_limit()
    if nofile < 2 * max(args.n) + 200:
        print(f"warning: the open-files limit is {nofile}; {max(args.n)} connections may run out of it",
              file=sys.stderr)
    command = " ".join([".venv/bin/python bench/concurrency.py", *(argv if argv is not None else sys.argv[1:])])

    revision = service_revision()  # before the runs: what the API processes will import
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the machine is busy (1-minute load average {load:.2f}); the numbers will be noisier",
              file=sys.stderr)
    runs: list[Run] = []
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model_url = stack.enter_context(offline_model(first_token_delay=MODEL_LATENCY_S, token_delay=0.0))
        env = _api_env(redis_url, model_url, args)
        for repeat in range(1, args.repeat + 1):
            for n in args.n:
                with api_server(env) as api:
                    run = asyncio.run(_batch(api.url, api.pid, n, repeat, warmup=args.warmup,
                                             timeout=args.timeout, model_url=model_url))
                    tail = api.stderr_tail(20) if run.errors else "(no output)"
                    if tail != "(no output)":
                        run.error_samples.append(f"API stderr tail:\n{tail}")
                runs.append(run)
                calls = "?" if run.model_calls is None else run.model_calls
                print(f"run {repeat}/{args.repeat} N={n}: wall {run.wall_s:.2f} s, p50 {_fmt(run.p50_ms)} ms, "
                      f"p95 {_fmt(run.p95_ms)} ms, errors {run.errors} {run.errors_by_kind or ''}, "
                      f"peak RSS {run.peak_rss_mib:.0f} MiB, CPU {run.cpu_ms_per_conversation:.1f} ms/conv, "
                      f"model calls {calls}, load-generator CPU {run.client_cpu_s:.2f} s", flush=True)

    summaries = _summaries(runs, args.n)
    print()
    print(f"median of {args.repeat} run(s) per N, by wall time:")
    print(text_table(HEADER, _rows(summaries)))
    print()
    print(text_table(["Target", "Measured", "Met"], [[a, b, c.strip("*")] for a, b, c in _targets(summaries)]))
    for s in summaries:
        if s["errors_all_runs"]:
            print(f"N={s['n']}: errors in all runs by kind: {s['errors_by_kind_all_runs']}")
    for run in runs:
        for sample in run.error_samples:
            print(f"  N={run.n} run {run.repeat}: {sample}")

    raw = {
        **run_metadata("concurrency", command, revision, load),
        "settings": {"model_latency_s": MODEL_LATENCY_S, "threads": args.threads,
                     "redis_connections": args.redis_connections, "warmup": args.warmup, "timeout_s": args.timeout,
                     "workers": 1},
        "summary": [{"n": s["n"], "median_repeat": s["median"].repeat, "wall_min_s": s["wall_min"],
                     "wall_max_s": s["wall_max"], "errors_all_runs": s["errors_all_runs"],
                     "errors_by_kind_all_runs": s["errors_by_kind_all_runs"]} for s in summaries],
        "runs": [asdict(r) for r in runs],
    }
    path = save_raw("concurrency", raw)
    print(f"\nraw numbers: bench/results/{path.name}")
    if not args.no_doc:
        update_doc_section("concurrency", _doc(summaries, args, command, revision))
        print("updated: docs/benchmarks.md (section 'concurrency')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
