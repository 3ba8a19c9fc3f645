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
    .venv/bin/python bench/first_token.py --quick   # 5 + 10 short streams: a smoke run, published nothing

The streams are read by ``suites/first_token/streams.py``, the report is ``suites/first_token/report.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import ExitStack
from dataclasses import asdict

from harness.cli import add_output_flags, output, parse_args, start
from harness.load import CLIENT_CONNECTIONS
from harness.results import run_metadata, shown
from harness.services import api_server, bench_api_env, offline_model, redis_server
from harness.tables import fmt, text_table, unbold
from suites.first_token import report
from suites.first_token.streams import Run, run_scenario

QUICK = {"sequential": 5, "concurrent": 10, "repeat": 1, "warmup": 1, "reply_tokens": 5}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--sequential", type=int, default=100, help="streams one after another in scenario 1 (default: 100)")
    add("--concurrent", type=int, default=200, help="streams at once in scenario 2 (default: 200)")
    add("--repeat", type=int, default=3, help="runs of scenario 2; the median run is reported (default: 3)")
    add(
        "--first-token-delay",
        type=float,
        default=0.5,
        help="the model's delay before its first token, s (default: 0.5)",
    )
    add("--token-delay", type=float, default=0.05, help="the model's delay between tokens, s (default: 0.05)")
    add("--reply-tokens", type=int, default=20, help="words per model reply (default: 20)")
    add("--warmup", type=int, default=3, help="warm-up streams before each scenario (default: 3)")
    add("--timeout", type=float, default=60.0, help="client time-out per stream, s (default: 60)")
    add_output_flags(parser)
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.sequential < 0 or args.concurrent < 0 or args.sequential + args.concurrent == 0:
        parser.error("--sequential and --concurrent must not be negative, and not both 0")
    if args.repeat < 1 or args.warmup < 0 or args.reply_tokens < 1 or args.timeout <= 0:
        parser.error("--repeat and --reply-tokens must be positive, --warmup not negative, --timeout positive")
    if args.first_token_delay < 0 or args.token_delay < 0:
        parser.error("--first-token-delay and --token-delay must not be negative")


def _measure(args: argparse.Namespace) -> list[Run]:
    """Every scenario run, each against a fresh API process."""
    plan = [("sequential", args.sequential, 1)] if args.sequential else []
    plan += [("concurrent", args.concurrent, k) for k in range(1, args.repeat + 1)] if args.concurrent else []
    runs: list[Run] = []
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model = offline_model(
            first_token_delay=args.first_token_delay, token_delay=args.token_delay, reply_tokens=args.reply_tokens
        )
        model_url = stack.enter_context(model)
        env = bench_api_env(redis_url, model_url)
        for scenario, n, repeat in plan:
            with api_server(env) as api:
                scenario_run = run_scenario(
                    api.url,
                    api.pid,
                    scenario,
                    n,
                    repeat,
                    warmup=args.warmup,
                    timeout=args.timeout,
                    first_token_delay=args.first_token_delay,
                    model_url=model_url,
                )
                run = asyncio.run(scenario_run)
                if run.errors:
                    run.error_samples.append(f"API stderr tail:\n{api.stderr_tail(20)}")
            runs.append(run)
            calls = "?" if run.model_calls is None else run.model_calls
            label = f"{scenario} N={n}" + (f" run {repeat}/{args.repeat}" if scenario == "concurrent" else "")
            print(
                f"{label}: TTFT overhead p50 {fmt(run.p50_ms, 1)} ms, p95 {fmt(run.p95_ms, 1)} ms, "
                f"max {fmt(run.max_ms, 1)} ms, min {fmt(run.min_ms, 1)} ms; errors {run.errors} "
                f"{run.errors_by_kind or ''}; wall {run.wall_s:.2f} s; stream p50 {fmt(run.total_p50_s, 3)} s; "
                f"request to model p50 {fmt(run.to_model_p50_ms, 1)} ms; first token to done p50 "
                f"{fmt(run.token_span_p50_ms, 0)} ms; model calls {calls}; API CPU {run.api_cpu_s:.2f} s; "
                f"load-generator CPU {run.client_cpu_s:.2f} s",
                flush=True,
            )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_args(parser, argv, QUICK)
    _check(parser, args)
    out = output(args)
    begun = start("first_token.py", argv, connections=args.concurrent)
    runs = _measure(args)

    summaries = report.summaries(runs)
    print()
    print(
        f"TTFT overhead (time to the first token minus the model's {args.first_token_delay * 1000:.0f} ms), "
        f"median of {args.repeat} run(s) for the concurrent streams:"
    )
    print(text_table(report.HEADER, report.rows(summaries)))
    print()
    print(text_table(["Target", "Measured", "Met"], unbold(report.targets(summaries))))
    for note in report.notes(runs, args):
        print(f"warning: {note}")
    for s in summaries:
        if s["errors_all_runs"]:
            print(f"{s['scenario']}: errors in all runs by kind: {s['errors_by_kind_all_runs']}")
    for r in runs:
        for sample in r.error_samples:
            print(f"  {r.scenario} run {r.repeat}: {sample}")

    settings = {
        "first_token_delay_s": args.first_token_delay,
        "token_delay_s": args.token_delay,
        "reply_tokens": args.reply_tokens,
        "warmup": args.warmup,
        "timeout_s": args.timeout,
        "workers": 1,
        "client_connections": CLIENT_CONNECTIONS,
    }
    summary = [
        {
            "scenario": s["scenario"],
            "median_repeat": s["median"].repeat,
            "runs": s["runs"],
            "p50_min_ms": s["min"],
            "p50_max_ms": s["max"],
            "errors_all_runs": s["errors_all_runs"],
            "errors_by_kind_all_runs": s["errors_by_kind_all_runs"],
        }
        for s in summaries
    ]
    raw = {
        **run_metadata("first_token", begun.command, begun.revision, begun.load),
        "settings": settings,
        "targets_ms": report.TARGETS_MS,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    print(f"\nraw numbers: {shown(out.save('first_token', raw))}")
    out.report("first-token", report.doc(summaries, runs, args, begun.command, begun.revision, begun.load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
