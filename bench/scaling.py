"""Scaling: every core, the cost of a conversation, on the service as it was (*before*) and as it is (*now*).

In one run, two services side by side, so that every figure stands beside the previous design's:
*before* is the service at git revision ``--before`` (default dabf61c), run from a temporary git
worktree; *now* is this checkout. Each is started the way production starts it, one command
(``python -m agent_api.cli serve``) with REDIS_URL (a real redis-server) and the model's URL and key
(the offline model in its own process), every other setting dropped: no process counts are given, so
each runs with the processes its defaults start. The service's CPU time and memory are summed over
its whole process tree (the process started and all its descendants, from /proc), never
redis-server's, the model's or the load generator's. Before anything is measured the service must
answer ``/health/ready`` with 200 and serve 10 warm-up conversations.

Five scenarios, each run on *before* then on *now*, each on a fresh redis-server and a fresh service
(per repeat too), the offline model fresh for each scenario:

1. ``cpu``: one-turn ``POST /chat`` conversations (a new one each), the model answering after 100 ms:
   100 one after another, then 1000 by 200 concurrent client loops (closed loop); the service's CPU
   per conversation at 1 and at 200, and their ratio.
2. ``burst``: 1000 concurrent ``POST /chat``, a 500 ms model: wall time, errors, p50/p95 latency, the
   CPU of the service and of the load generator (this process, on the same cores).
3. ``streams``: 200 concurrent ``POST /chat/stream``, the model's first token after 200 ms (then 20
   tokens 20 ms apart): the first token's arrival at the client minus the moment the model sent it
   (the model's record of the stream's request, matched by the question's unique text, plus 200 ms),
   p50/p99; the TTFT overhead (arrival minus request sent minus 200 ms) for reference.
4. ``tokens``: the stream path's CPU per token: 40 streams (10 at a time) with 400-token answers minus
   40 with 10-token answers (a 0 ms model), divided by 40 x 390 tokens; frames per stream, and
   whether each stream's chunks add up to its answer.
5. ``memory``: 5000 one-turn conversations by 50 concurrent loops (a 0 ms model); the growth of the
   tree's summed RSS from after the first 500 (warm) to after all of them, and the final process count.

``cpu``, ``burst``, ``streams`` and ``tokens`` are repeated ``--repeat`` times (default 3); the median
run is reported (by CPU per conversation at 200, by wall time, by p50, by CPU per token), with the range.

Usage: python bench/scaling.py [--only cpu,burst,streams,tokens,memory] [--before REV] [--quick]

``--quick`` is a smoke run (20 conversations at 1 and 100 at 50, a burst of 100, 20 streams, 10
streams of each length 2 at a time, 300 conversations for memory, once); its results and doc
section go to a scratch directory. ``--report-only`` rewrites the doc section from the last results.
The measurements are ``suites/scaling/measure.py``, the report ``suites/scaling/report.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from harness import ROOT
from harness.cli import add_output_flags, output, parse_args, start
from harness.results import run_metadata
from harness.services import service_at
from suites.scaling.measure import burst, cpu, memory, streams, tokens
from suites.scaling.report import report

NAME = "scaling"
PARTS = ("cpu", "burst", "streams", "tokens", "memory")  # in the order they run
BEFORE = "dabf61c"
QUICK = {
    "one": 20,
    "concurrent": 50,
    "conversations": 100,
    "burst": 100,
    "streams": 20,
    "token_streams": 10,
    "token_batch": 2,
    "memory": 300,
    "repeat": 1,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--only", default=",".join(PARTS), help=f"scenarios to run, comma-separated (default: {','.join(PARTS)})")
    add("--before", default=BEFORE, help=f"the git revision to compare with (default: {BEFORE})")
    add("--report-only", action="store_true", help="rewrite the doc section from the last results")
    add("--repeat", type=int, default=3, help="runs of cpu, burst, streams, tokens; the median is reported (3)")
    add("--one", type=int, default=100, help="cpu: conversations one after another (default: 100)")
    add("--concurrent", type=int, default=200, help="cpu: concurrent client loops (default: 200)")
    add("--conversations", type=int, default=1000, help="cpu: conversations by those loops (default: 1000)")
    add("--burst", type=int, default=1000, help="burst: /chat requests at once (default: 1000)")
    add("--streams", type=int, default=200, help="streams: streams at once (default: 200)")
    add("--token-streams", type=int, default=40, help="tokens: streams of each answer length (default: 40)")
    add("--token-batch", type=int, default=10, help="tokens: streams at a time (default: 10)")
    add("--memory", type=int, default=5000, help="memory: conversations (default: 5000; warm after a tenth)")
    add("--memory-concurrency", type=int, default=50, help="memory: concurrent client loops (default: 50)")
    add_output_flags(parser)
    return parser


def short_revision(revision: str) -> str:
    """``revision`` as an abbreviated commit hash (as given when git does not know it)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", f"{revision}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return revision


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_args(parser, argv, QUICK)
    sizes = [args.repeat, args.one, args.concurrent, args.conversations, args.burst, args.streams]
    sizes += [args.token_streams, args.token_batch, args.memory, args.memory_concurrency]
    if min(sizes) < 1:
        parser.error("--repeat and every size must be positive")
    parts = [p for p in args.only.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))} (choose from {', '.join(PARTS)})")
    out = output(args)
    last: dict[str, Any] = out.load(NAME) or {}
    if args.report_only:
        doc = out.update_doc(NAME, report(last, last.get("previous") or {}))
        if doc is not None:
            print(doc)
        return 0
    begun = start("scaling.py", argv, connections=max(args.burst, args.streams))
    meta = run_metadata(NAME, begun.command, begun.revision, begun.load)
    meta["revisions"] = {"before": short_revision(args.before), "now": begun.revision}
    data: dict[str, Any] = {"meta": meta}
    run_sizes = {
        "repeat": args.repeat,
        "one": args.one,
        "concurrent": args.concurrent,
        "conversations": args.conversations,
        "burst": args.burst,
        "streams": args.streams,
        "token_streams": args.token_streams,
        "token_batch": args.token_batch,
        "memory": args.memory,
        "memory_concurrency": args.memory_concurrency,
    }
    with service_at(args.before) as before_tree:
        trees = {"before": before_tree, "now": None}
        for name in PARTS:
            if name not in parts:
                continue
            print(f"{name}:", flush=True)
            if name == "cpu":
                data[name] = cpu(trees, args.one, args.concurrent, args.conversations, args.repeat)
            elif name == "burst":
                data[name] = burst(trees, args.burst, args.repeat)
            elif name == "streams":
                data[name] = streams(trees, args.streams, args.repeat)
            elif name == "tokens":
                data[name] = tokens(trees, args.token_streams, args.token_batch, args.repeat)
            else:
                data[name] = memory(trees, args.memory, args.memory_concurrency)
    # A partial run (--only) keeps the other scenarios' last figures (with the sizes and revisions
    # they were measured with); the last results are kept as *previous*.
    previous = {k: v for k, v in last.items() if k != "previous"}
    last_run = {
        "revision": last.get("meta", {}).get("revisions", {}).get("now"),
        "date": last.get("meta", {}).get("date"),
    }
    for name in PARTS:
        data.setdefault("sizes", {})[name] = run_sizes if name in data else last.get("sizes", {}).get(name)
        measured = {"revision": begun.revision, "date": meta["date"]} if name in data else None
        if name not in data and name in last:
            data[name] = last[name]
            measured = last.get("measured", {}).get(name) or last_run
        if measured is not None:
            data.setdefault("measured", {})[name] = measured
    data["sizes"] = {k: v for k, v in data["sizes"].items() if v is not None}
    data["previous"] = previous
    out.save(NAME, data)
    doc = out.update_doc(NAME, report(data, previous))
    if doc is not None:
        print(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
