"""Soak benchmark: mixed traffic at a steady rate for minutes, watching the API's memory and threads.

Setup: one uvicorn worker of ``agent-api serve`` (no API keys), a real redis-server (REDIS_URL) and
the offline model in its own process answering after ``--model-latency`` (50 ms). Every process is
started here on a loopback port and stopped at the end, also on error.

For ``--minutes`` (default 10) the load generator starts ``--rate`` requests per second (default 10)
on a fixed schedule, whatever the answers take: new conversations (``POST /chat``), continued ones,
streams (``POST /chat/stream``, new or continued), ``GET /session/{id}``, ``GET /agents``,
``DELETE /session/{id}`` and, deliberately, ``GET`` of a deleted session (which must answer 404). A
session has at most one request in flight, so a 409 is an error too. Every ``--sample`` seconds
(default 5) the API process's RSS and thread count are read from /proc.

Verdict: PASS when the traffic had 0 errors (any other status than the expected 2xx or the
deliberate 404, an exception, a stream without its final ``done`` frame or with an ``error`` frame,
a request not sent on time because too many were in flight) and memory stayed flat: the median RSS
of the last minute is within +10% and +20 MiB of the median of the second minute. (For runs shorter
than 3 minutes the two windows are the second and the last fifth of the run.)

The script prints a table, saves every sample and the per-operation numbers to
``bench/results/soak.json``, rewrites the ``soak`` section of ``docs/benchmarks.md`` and, when
matplotlib is installed (``pip install -e '.[bench]'``), draws ``docs/soak-memory.png``. The exit
status is 0 only on PASS.

Run from the repository root::

    .venv/bin/python bench/soak.py               # 10 minutes
    .venv/bin/python bench/soak.py --minutes 1   # a quick check
    .venv/bin/python bench/soak.py --quick       # 30 s at 5 requests/s: a smoke run, published nothing

The traffic is ``suites/soak/traffic.py``, the verdict and report ``suites/soak/report.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from harness.cli import add_output_flags, output, parse_args, start
from harness.results import Output, run_metadata, shown
from harness.services import api_log_lines, api_server, bench_api_env, offline_model, redis_server
from harness.tables import text_table, unbold
from suites.soak import report
from suites.soak.traffic import MIX, soak

QUICK = {"minutes": 0.5, "rate": 5.0, "sample": 2.0}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--minutes", type=float, default=10.0, help="length of the traffic (default: 10)")
    add("--rate", type=float, default=10.0, help="requests per second (default: 10)")
    add("--sample", type=float, default=5.0, help="seconds between RSS samples (default: 5)")
    add("--model-latency", type=float, default=0.05, help="the model's first-token delay, s (0.05)")
    add("--timeout", type=float, default=30.0, help="client time-out per request, s (default: 30)")
    add(
        "--max-in-flight",
        type=int,
        default=100,
        help="requests in flight at most; a request due beyond it is an error (default: 100)",
    )
    add("--seed", type=int, default=8, help="seed of the operation mix (default: 8)")
    add_output_flags(parser)
    add("--no-plot", action="store_true", help="do not draw docs/soak-memory.png")
    return parser


def _plot(raw: dict[str, Any], out: Output) -> None:
    """Draw the RSS over the soak (``soak-memory.png`` beside the document), when matplotlib is installed."""
    try:
        import plots
    except ImportError as exc:
        print(f"no plot ({exc}); install the bench extra: .venv/bin/pip install -e '.[bench]'")
    else:
        print(f"plot: {shown(plots.plot_soak(raw, out.images_dir / plots.SOAK_PNG.name))}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_args(parser, argv, QUICK)
    if not 0 < args.minutes <= 120 or not 0 < args.rate <= 200 or args.sample <= 0:
        parser.error("--minutes must be in (0, 120], --rate in (0, 200], --sample positive")
    out = output(args)
    begun = start("soak.py", argv)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model_url = stack.enter_context(offline_model(first_token_delay=args.model_latency))
        api = stack.enter_context(api_server(bench_api_env(redis_url, model_url)))
        print(f"soak: {args.minutes:g} min at {args.rate:g} requests/s", flush=True)
        results, samples, extra = asyncio.run(soak(api.url, api.pid, args))
        api_log = api_log_lines(api)

    analysis = report.analyse(results, samples, args.minutes * 60)
    print()
    print(text_table(["check", "measured", "holds"], unbold(report.checks(analysis))))
    print()
    print(text_table(report.OPS_HEADER, report.op_rows(analysis)))
    for sample in analysis["error_samples"][:10]:
        print(f"  error: {sample}")
    if analysis["errors"]:
        print("API log (warnings and errors):")
        print("\n".join(api_log[-20:]))
    print(f"\nsoak: {'PASS' if analysis['passed'] else 'FAIL'}")

    settings = {"minutes": args.minutes, "rate": args.rate, "sample_s": args.sample}
    raw = {
        **run_metadata("soak", begun.command, begun.revision, begun.load),
        "settings": {**settings, "model_latency_s": args.model_latency, "mix": MIX, "workers": 1},
        "traffic": extra,
        "verdict": "PASS" if analysis["passed"] else "FAIL",
        "analysis": analysis,
        "samples": [asdict(s) for s in samples],
        "api_log": api_log[-50:],
    }
    print(f"raw numbers: {shown(out.save('soak', raw))}")
    out.report("soak", report.doc(analysis, args, begun.command, begun.revision))
    if not args.no_plot:
        _plot(raw, out)
    return 0 if analysis["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
