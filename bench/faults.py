"""Fault benchmark: the service under load while its dependencies fail (issue 8).

Four scenarios, each starting what it needs on loopback (redis-server, the offline model, one or
two ``agent-api serve`` processes), running a bounded load, stopping everything it started (also on
error) and judging the result PASS or FAIL from explicit checks:

``redis-restart``
    A redis-server with append-only persistence (``--appendonly yes --appendfsync always``) and
    ``--clients`` (20) clients, each continuing its own session with ``POST /chat`` in a loop for
    ``--duration`` seconds (at least 30; 409 and 503 mean "retry later"). Redis is stopped
    (SIGTERM) after ``--outage-at`` seconds for ``--outage`` seconds, then started again on the same
    port and data directory. PASS when every request during the outage fails fast (503 within
    ``--fail-fast-bound`` s; any 500, other status or hang fails), the service answers 200 again
    within ``--recovery-bound`` s of Redis being back (and every session within LEASE_TTL + that
    bound), and no turn a client got a 200 for is missing from (or out of order in) its stored
    history. A stored turn whose request did not answer 200 is reported (acceptable only when that
    request failed).
``model-faults``
    The offline model fails 10% of its requests with 500 and makes another 10% hang past the API's
    LLM_TIMEOUT (2 s; LLM_MAX_RETRIES=1). ``--clients`` clients for ``--duration`` s, half continuing
    sessions with ``POST /chat``, half with ``POST /chat/stream``. PASS when failures surface as
    502/504 (or 503 for a provider 429), never 500; every failed stream ends with an ``error`` frame
    then a ``done`` frame; model requests <= API requests x (1 + LLM_MAX_RETRIES), also per turn (from
    the offline model's request log); and every history is well-formed (user and assistant
    alternating, each successful reply stored exactly once, in order, nothing of a failed turn).
``disconnects``
    ``--disconnect-clients`` (500) streams in waves of ``--wave`` (100), each asking for 30 slow
    tokens with ``max_turns`` 3 and the model's stop word off (so a run that is not cancelled calls
    the model 3 times), each disconnecting right after its first ``token`` frame. A warm-up storm of
    the same size runs first. PASS when each stream's unique marker reaches the model in exactly one
    request (observed for longer than an uncancelled reply would take), no ``agent-api:lock:*`` key
    is left a few seconds after the storm, no disconnected turn was saved, and the API process's RSS
    and thread count after the measured storm are within +10% and +5 of their values after the
    warm-up storm.
``worker-kill``
    Two API processes on one Redis, both with LEASE_TTL=3. A session is started on the first; a
    long stream on it (40 tokens, 0.5 s apart) is cut by SIGKILLing that process mid-run. The second
    process must answer 409 while the dead worker's lock lives and 200 within LEASE_TTL + 5 s, and
    the session's history must be intact (the killed turn not saved).

The script prints a table per scenario, saves everything to ``bench/results/faults.json`` (the
results of scenarios not run this time are kept) and rewrites the ``faults`` section of
``docs/benchmarks.md``. The exit status is 0 only when every scenario run passed.

Run from the repository root::

    .venv/bin/python bench/faults.py                      # all scenarios
    .venv/bin/python bench/faults.py --scenario worker-kill
    .venv/bin/python bench/faults.py --quick              # small sizes: a smoke run, published nothing

Each scenario family is a module of ``suites/faults/`` (``redis_restart.py``, ``model_faults.py``,
``disconnects.py``, ``worker_kill.py``), beside the checks they share and the report.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import asdict
from typing import Any

from harness.cli import add_output_flags, output, parse_args, start
from harness.results import shown
from harness.tables import text_table
from suites.faults import SCENARIOS, disconnects, model_faults, redis_restart, report, worker_kill
from suites.faults.outcome import Outcome, Runner, run_scenario

RUNNERS: dict[str, Runner] = {
    "redis-restart": redis_restart.run,
    "model-faults": model_faults.run,
    "disconnects": disconnects.run,
    "worker-kill": worker_kill.run,
}
QUICK = {
    "clients": 10,
    "duration": 15.0,
    "outage_at": 5.0,
    "outage": 2.0,
    "lease_ttl": 5.0,
    "burst": 10,
    "disconnect_clients": 20,
    "wave": 10,
    "observe": 6.0,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario", choices=[*SCENARIOS, "all"], action="append", help="scenario to run (repeatable; default: all)"
    )
    parser.add_argument("--clients", type=int, default=20, help="clients of redis-restart and model-faults (20)")
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds of load in redis-restart (at least; see --outage) and model-faults (30)",
    )
    parser.add_argument("--think", type=float, default=1.0, help="pause of a client after a successful turn, s (1)")
    parser.add_argument("--retry-delay", type=float, default=0.5, help="pause after a 409/503, s (0.5)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="client time-out per request, s (60)")
    parser.add_argument("--model-latency", type=float, default=0.05, help="the model's first-token delay, s (0.05)")
    parser.add_argument("--outage-at", type=float, default=10.0, help="redis-restart: stop Redis after, s (10)")
    parser.add_argument("--outage", type=float, default=5.0, help="redis-restart: Redis down for, s (5)")
    parser.add_argument("--lease-ttl", type=float, default=10.0, help="redis-restart: the API's LEASE_TTL (10)")
    parser.add_argument(
        "--burst",
        type=int,
        default=60,
        help="redis-restart: concurrent GET /session 2 s before the outage and --recovery-bound s after it (60)",
    )
    parser.add_argument(
        "--fail-fast-bound",
        type=float,
        default=10.0,
        help="redis-restart: longest answer allowed during the outage, s (10)",
    )
    parser.add_argument(
        "--recovery-bound", type=float, default=10.0, help="redis-restart: first 200 after the restart within, s (10)"
    )
    parser.add_argument("--llm-timeout", type=float, default=2.0, help="model-faults: the API's LLM_TIMEOUT (2)")
    parser.add_argument("--llm-max-retries", type=int, default=1, help="model-faults: LLM_MAX_RETRIES (1)")
    parser.add_argument(
        "--model-hang", type=float, default=5.0, help="model-faults: how long a hanging model request sleeps, s (5)"
    )
    parser.add_argument("--disconnect-clients", type=int, default=500, help="disconnects: streams per storm (500)")
    parser.add_argument("--wave", type=int, default=100, help="disconnects: streams started at once (100)")
    parser.add_argument(
        "--token-timeout",
        type=float,
        default=30.0,
        help="disconnects: a stream without a token frame after this many s fails (30)",
    )
    parser.add_argument(
        "--observe",
        type=float,
        default=10.0,
        help="disconnects: watch the model and the locks after a storm for, s (10)",
    )
    parser.add_argument("--lock-bound", type=float, default=5.0, help="disconnects: no lock key left after, s (5)")
    parser.add_argument("--rss-tolerance", type=float, default=10.0, help="disconnects: allowed RSS growth, %% (10)")
    parser.add_argument("--thread-tolerance", type=int, default=5, help="disconnects: allowed new threads (5)")
    parser.add_argument(
        "--kill-heartbeat", type=int, default=3, help="worker-kill: RUN_HEARTBEAT of both API processes (3 s)"
    )
    parser.add_argument(
        "--kill-bound",
        type=float,
        default=5.0,
        help="worker-kill: a 200 within RUN_HEARTBEAT + the 5 s sweep + this many s (5)",
    )
    add_output_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_args(parser, argv, QUICK)
    chosen = args.scenario or ["all"]
    names = SCENARIOS if "all" in chosen else [s for s in SCENARIOS if s in chosen]
    if args.clients < 2 or args.duration <= 0 or args.wave < 1 or args.disconnect_clients < 1:
        parser.error("--clients must be at least 2; --duration, --wave and --disconnect-clients positive")
    if args.outage_at + args.outage >= args.duration:
        parser.error("the outage must end before --duration")

    out = output(args)
    begun = start("faults.py", argv)
    results: dict[str, dict[str, Any]] = (out.load("faults") or {}).get("scenarios", {})
    outcomes: list[Outcome] = []
    path = out.results_path("faults")
    for name in names:
        print(f"== {name}", flush=True)
        outcome = run_scenario(name, RUNNERS[name], args, begun.command, begun.revision)
        outcomes.append(outcome)
        results[name] = asdict(outcome)
        rows = [[c.name, c.measured, "yes" if c.ok else "NO"] for c in outcome.checks]
        print(text_table(["check", "measured", "holds"], rows))
        if outcome.error:
            print(f"error: {outcome.error}")
            print("\n".join(outcome.details.get("traceback", [])))
        verdict = "PASS" if outcome.passed else "FAIL"
        print(f"{name}: {verdict} ({outcome.duration_s:.0f} s) - {outcome.key_numbers}\n", flush=True)
        machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
        scenarios = {n: results[n] for n in SCENARIOS if n in results}
        path = out.save("faults", {"benchmark": "faults", "machine": machine, "scenarios": scenarios})

    rows = [[o.scenario, "PASS" if o.passed else "FAIL", o.key_numbers] for o in outcomes]
    print(text_table(["scenario", "verdict", "key numbers"], rows))
    print(f"\nraw results: {shown(path)}")
    out.report("faults", report.doc(results))
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
