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

Usage: python bench/runs.py [--only concurrency,latency,events] [--quick]

``--quick`` is a smoke run (20 concurrent /chat once, 10 one at a time, 10 streams); its results
and doc section go to a scratch directory. The measurements are ``suites/runs/measure.py``, the
report ``suites/runs/report.py``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.cli import add_output_flags, output, parse_args, start
from harness.results import run_metadata
from suites.runs.measure import concurrency, events, latency
from suites.runs.report import report

PARTS = ("latency", "events", "concurrency")  # in the order they run
QUICK = {"n": 20, "repeat": 1, "requests": 10, "streams": 10}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--only", default="concurrency,latency,events", help="parts to run, comma-separated (default: all three)")
    add("--report-only", action="store_true", help="rewrite the doc section from the last results")
    add("--n", type=int, default=1000, help="concurrency: /chat requests at once (default: 1000)")
    add("--repeat", type=int, default=3, help="concurrency: runs per layout, the median is reported (default: 3)")
    add("--requests", type=int, default=100, help="latency: /chat requests one after another (default: 100)")
    add("--streams", type=int, default=200, help="events: concurrent streams, besides 1 (default: 200)")
    add_output_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_args(parser, argv, QUICK)
    if min(args.n, args.repeat, args.requests, args.streams) < 1:
        parser.error("--n, --repeat, --requests and --streams must be positive")
    out = output(args)
    last: dict[str, Any] = out.load("runs") or {}
    if args.report_only:
        doc = out.update_doc("runs", report(last, last.get("previous") or {}))
        if doc is not None:
            print(doc)
        return 0
    parts = args.only.split(",")
    begun = start("runs.py", argv)
    data: dict[str, Any] = {"meta": run_metadata("runs", begun.command, begun.revision, begun.load)}
    sizes: dict[str, Any] = dict(last.get("sizes", {}))
    for name in PARTS:
        if name in parts:
            print(f"{name}:", flush=True)
            if name == "latency":
                data[name] = latency(args.requests)
                sizes["latency_requests"] = args.requests
            elif name == "events":
                data[name] = events(args.streams)
            else:
                data[name] = concurrency(args.n, args.repeat)
    # A partial run (--only) keeps the other sections' last figures; every figure is shown beside
    # the one it replaces.
    previous = {k: v for k, v in last.items() if k != "previous"}
    for name in PARTS:
        if name not in data and name in last:
            data[name] = last[name]
    if sizes:
        data["sizes"] = sizes
    data["previous"] = previous
    out.save("runs", data)
    doc = out.update_doc("runs", report(data, previous))
    if doc is not None:
        print(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
