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
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter, deque
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from _common import (
    api_log_lines,
    api_server,
    bench_api_env,
    markdown_table,
    offline_model,
    percentile,
    process_stats,
    raise_open_files_limit,
    redis_server,
    run_metadata,
    save_raw,
    service_revision,
    sse_frames,
    text_table,
    update_doc_section,
)

# The mix of operations, by weight. An operation that needs a session falls back to another one
# when none is free (see Traffic.pick).
MIX = {
    "new_chat": 15,
    "continue_chat": 25,
    "stream": 20,
    "get_session": 15,
    "get_agents": 10,
    "delete_session": 10,
    "get_deleted": 5,
}
MIN_SESSIONS = 5  # below this many free sessions, a delete starts a new conversation instead
MAX_SESSIONS = 40  # at this many sessions, a new conversation is replaced by the deletion of one
RSS_GROWTH_PCT = 10.0
RSS_GROWTH_MIB = 20.0


@dataclass
class Result:
    """One request of the soak."""

    op: str
    t: float  # scheduled start, seconds since the start of the traffic
    latency_s: float
    status: int | None
    ok: bool
    detail: str = ""


@dataclass
class Sample:
    t: float
    rss_mib: float
    threads: int
    cpu_s: float


class Traffic:
    """Sends the mix of requests and keeps the pool of sessions (one request in flight per session)."""

    def __init__(self, client: httpx.AsyncClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.free: list[str] = []  # sessions with no request in flight
        self.busy: set[str] = set()
        self.deleted: deque[str] = deque(maxlen=200)
        self.results: list[Result] = []
        self.turns = 0

    def pick(self) -> tuple[str, str | None]:
        """Choose the next operation and take the session it works on (None: a new one or none)."""
        op = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        total = len(self.free) + len(self.busy)
        if op == "new_chat" and total >= MAX_SESSIONS:
            # Keep the pool bounded: retire a session instead (the next new one will replace it).
            op = "delete_session" if len(self.free) > MIN_SESSIONS else "continue_chat"
        if op == "delete_session" and len(self.free) <= MIN_SESSIONS:
            op = "new_chat"
        if op == "get_deleted":
            return (op, self.rng.choice(self.deleted)) if self.deleted else ("get_agents", None)
        if op in ("continue_chat", "get_session", "delete_session") or (op == "stream" and self.rng.random() < 0.5):
            if not self.free:
                return ("new_chat" if op != "get_session" else "get_agents"), None
            session = self.free.pop(self.rng.randrange(len(self.free)))
            self.busy.add(session)
            return op, session
        return op, None

    def give_back(self, session: str | None, keep: bool) -> None:
        if session is None:
            return
        self.busy.discard(session)
        if keep:
            self.free.append(session)

    async def run(self, op: str, session: str | None, t: float) -> None:
        start = time.monotonic()
        status: int | None = None
        ok = False
        detail = ""
        new_session: str | None = None
        keep = True
        pooled = None if op == "get_deleted" else session  # a deleted session is not in the pool
        try:
            if op in ("new_chat", "continue_chat"):
                self.turns += 1
                body: dict[str, Any] = {"message": f"soak question {self.turns}: what else?"}
                if session:
                    body["session_id"] = session
                response = await self.client.post("/chat", json=body)
                status = response.status_code
                data = response.json() if status == 200 else {}
                ok = status == 200 and bool(data.get("response"))
                new_session = data.get("session_id") if session is None else None
                detail = "" if ok else response.text[:200]
            elif op == "stream":
                self.turns += 1
                body = {"message": f"soak stream {self.turns}: go on"}
                if session:
                    body["session_id"] = session
                frames: list[str] = []
                answer = None
                async with self.client.stream("POST", "/chat/stream", json=body) as response:
                    status = response.status_code
                    if status != 200:
                        await response.aread()
                        detail = response.text[:200]
                    else:
                        async for event, data in sse_frames(response):
                            frames.append(event)
                            if event == "session" and session is None:
                                new_session = data.get("session_id")
                            elif event == "done":
                                answer = data.get("response")
                            elif event == "error":
                                detail = f"error frame: {data}"[:200]
                ok = status == 200 and bool(frames) and frames[-1] == "done" and "error" not in frames and bool(answer)
                if status == 200 and not ok and not detail:
                    detail = f"frames {frames[-4:]}, answer {answer!r}"[:200]
            elif op == "get_session":
                response = await self.client.get(f"/session/{session}")
                status = response.status_code
                ok = status == 200 and isinstance(response.json().get("messages"), list)
                detail = "" if ok else response.text[:200]
            elif op == "get_agents":
                response = await self.client.get("/agents")
                status = response.status_code
                ok = status == 200 and bool(response.json().get("teams"))
                detail = "" if ok else response.text[:200]
            elif op == "delete_session":
                response = await self.client.delete(f"/session/{session}")
                status = response.status_code
                ok = status == 200
                detail = "" if ok else response.text[:200]
                keep = not ok
                if ok and session:
                    self.deleted.append(session)
            elif op == "get_deleted":
                response = await self.client.get(f"/session/{session}")
                status = response.status_code
                ok = status == 404  # deliberate: the session was deleted
                detail = "" if ok else response.text[:200]
        except Exception as exc:  # every failure counts, by its type
            detail = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self.give_back(pooled, keep)
            if new_session and new_session not in self.busy:
                self.free.append(new_session)
        self.results.append(Result(op, round(t, 3), time.monotonic() - start, status, ok, detail))


async def _soak(url: str, pid: int, args: argparse.Namespace) -> tuple[list[Result], list[Sample], dict[str, Any]]:
    duration = args.minutes * 60
    limits = httpx.Limits(max_connections=args.max_in_flight, max_keepalive_connections=args.max_in_flight)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(args.timeout), limits=limits) as client:
        traffic = Traffic(client, args.seed)
        samples: list[Sample] = []
        t0 = time.monotonic()
        done = asyncio.Event()

        async def sampler() -> None:
            while True:  # a sample every args.sample seconds, and a last one when the traffic is over
                stat = process_stats(pid)
                samples.append(Sample(round(time.monotonic() - t0, 2), round(stat.rss_mib, 2), stat.threads,
                                      stat.cpu_seconds))
                if done.is_set():
                    return
                try:
                    await asyncio.wait_for(done.wait(), args.sample)
                except TimeoutError:
                    pass

        sampling = asyncio.create_task(sampler())
        in_flight: set[asyncio.Task[None]] = set()
        late = 0
        total = int(duration * args.rate)
        for i in range(total):
            t = i / args.rate
            delay = t0 + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= args.max_in_flight:
                late += 1
                traffic.results.append(Result("skipped", round(t, 3), 0.0, None, False,
                                              f"{len(in_flight)} requests in flight"))
                continue
            op, session = traffic.pick()
            task = asyncio.create_task(traffic.run(op, session, t))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if i and i % int(60 * args.rate) == 0:
                errors = sum(not r.ok for r in traffic.results)
                stat = samples[-1] if samples else None
                print(f"  {t / 60:.0f} min: {len(traffic.results)} requests, {errors} errors, RSS "
                      f"{stat.rss_mib if stat else 0:.1f} MiB, threads {stat.threads if stat else 0}", flush=True)
        sent_for = time.monotonic() - t0
        if in_flight:
            await asyncio.wait(in_flight, timeout=args.timeout + 5)
        for task in in_flight:
            task.cancel()
        done.set()
        await sampling
        extra = {"late": late, "sent_for_s": sent_for, "unfinished": len(in_flight),
                 "sessions_at_end": len(traffic.free) + len(traffic.busy)}
        return traffic.results, samples, extra


def _windows(duration: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The baseline window (the second minute) and the final one (the last minute), in seconds."""
    end = duration + 60  # the last sample is taken once the last requests have been answered
    if duration >= 180:
        return (60.0, 120.0), (duration - 60.0, end)
    return (duration / 5, 2 * duration / 5), (4 * duration / 5, end)


def _median_in(samples: list[Sample], window: tuple[float, float], attr: str) -> float:
    values = [getattr(s, attr) for s in samples if window[0] <= s.t < window[1]]
    return float(statistics.median(values)) if values else float("nan")


def _slope_mib_per_min(samples: list[Sample], since: float) -> float:
    """The least-squares slope of RSS over time (MiB per minute) of the samples from ``since`` s on."""
    points = [(s.t / 60, s.rss_mib) for s in samples if s.t >= since]
    if len(points) < 2:
        return float("nan")
    mean_t = statistics.fmean(t for t, _ in points)
    mean_r = statistics.fmean(r for _, r in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / var if var else float("nan")


def _analyse(results: list[Result], samples: list[Sample], duration: float) -> dict[str, Any]:
    baseline_w, final_w = _windows(duration)
    base = _median_in(samples, baseline_w, "rss_mib")
    final = _median_in(samples, final_w, "rss_mib")
    growth = final - base
    memory_ok = growth == growth and growth <= base * RSS_GROWTH_PCT / 100 and growth <= RSS_GROWTH_MIB
    errors = [r for r in results if not r.ok]
    ops: dict[str, dict[str, Any]] = {}
    for op in [*MIX, "skipped"]:
        mine = [r for r in results if r.op == op]
        if not mine:
            continue
        latencies = [r.latency_s * 1000 for r in mine if r.ok]
        ops[op] = {"requests": len(mine), "errors": sum(not r.ok for r in mine),
                   "statuses": dict(sorted(Counter(str(r.status) for r in mine).items())),
                   "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
                   "max_ms": max(latencies, default=float("nan"))}
    return {
        "baseline_window_s": baseline_w, "final_window_s": [final_w[0], duration],
        "rss_baseline_mib": base, "rss_final_mib": final, "rss_growth_mib": growth,
        "rss_growth_pct": growth / base * 100 if base else float("nan"),
        "rss_min_mib": min(s.rss_mib for s in samples), "rss_max_mib": max(s.rss_mib for s in samples),
        "threads_baseline": _median_in(samples, baseline_w, "threads"),
        "threads_final": _median_in(samples, final_w, "threads"),
        "threads_max": max(s.threads for s in samples),
        "rss_slope_mib_per_min": _slope_mib_per_min(samples, baseline_w[0]),
        "memory_ok": bool(memory_ok),
        "requests": len(results), "errors": len(errors), "errors_ok": not errors,
        "errors_by_kind": dict(Counter(f"{r.op} {r.status}" for r in errors)),
        "error_samples": [asdict(r) for r in errors[:20]],
        "deliberate_404": sum(1 for r in results if r.op == "get_deleted" and r.ok),
        "ops": ops,
        "passed": bool(memory_ok) and not errors,
    }


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value == value else "-"


OPS_HEADER = ["operation", "requests", "errors", "statuses", "p50 (ms)", "p95 (ms)", "max (ms)"]


def _op_rows(analysis: dict[str, Any]) -> list[list[str]]:
    return [[op, str(o["requests"]), str(o["errors"]), ", ".join(f"{k}: {v}" for k, v in o["statuses"].items()),
             _fmt(o["p50_ms"], 0), _fmt(o["p95_ms"], 0), _fmt(o["max_ms"], 0)] for op, o in analysis["ops"].items()]


def _checks(a: dict[str, Any], args: argparse.Namespace) -> list[list[str]]:
    base_w, final_w = a["baseline_window_s"], a["final_window_s"]
    return [
        [f"memory flat: median RSS of the last window within +{RSS_GROWTH_PCT:g}% and +{RSS_GROWTH_MIB:g} MiB of "
         "the baseline window's",
         f"{_fmt(a['rss_baseline_mib'])} MiB ({base_w[0]:.0f}-{base_w[1]:.0f} s) -> {_fmt(a['rss_final_mib'])} MiB "
         f"({final_w[0]:.0f}-{final_w[1]:.0f} s): {a['rss_growth_mib']:+.1f} MiB ({a['rss_growth_pct']:+.1f}%)",
         "yes" if a["memory_ok"] else "**no**"],
        ["0 errors (any non-2xx but the deliberate 404s, exceptions, stream errors, requests not sent on time)",
         f"{a['errors']} errors in {a['requests']} requests"
         + (f": {', '.join(f'{k}: {v}' for k, v in a['errors_by_kind'].items())}" if a["errors"] else "")
         + f"; {a['deliberate_404']} deliberate 404s",
         "yes" if a["errors_ok"] else "**no**"],
        ["RSS trend from the baseline window on (reported, not judged)",
         f"{_fmt(a.get('rss_slope_mib_per_min', float('nan')), 2)} MiB per minute (least squares)", "-"],
        ["threads (reported, not judged)",
         f"median {_fmt(a['threads_baseline'], 0)} -> {_fmt(a['threads_final'], 0)}, max {a['threads_max']}", "-"],
    ]


def _doc(a: dict[str, Any], args: argparse.Namespace, command: str, revision: str, extra: dict[str, Any]) -> str:
    mix = ", ".join(f"{op.replace('_', ' ')} {w}%" for op, w in MIX.items())
    lines = [
        "## Soak: steady mixed traffic, memory and threads",
        "",
        f"{args.minutes:g} minute(s) of traffic at {args.rate:g} requests/s on a fixed schedule ({a['requests']} "
        f"requests), against `agent-api serve` with one uvicorn worker and the default settings (no API keys), "
        f"sessions in a real `redis-server`, and the offline model in its own process answering after "
        f"{args.model_latency * 1000:.0f} ms. The intended mix: {mix}; half the streams start a conversation, half "
        f"continue one; at {MAX_SESSIONS} sessions a new conversation gives way to a deletion, so the pool stays "
        "bounded (the second table counts what was sent). A GET of a deleted session must answer 404; a session "
        "has at most one request in flight. Every "
        f"{args.sample:g} s the API process's RSS (VmRSS) and thread count are read from /proc.",
        "",
        f"**Verdict: {'PASS' if a['passed'] else 'FAIL'}.**",
        "",
        markdown_table(["Check", "Measured", "Holds"], _checks(a, args)),
        "",
        markdown_table(OPS_HEADER, _op_rows(a)),
        "",
        f"RSS over the run: {_fmt(a['rss_min_mib'])} to {_fmt(a['rss_max_mib'])} MiB "
        "(plot: [soak-memory.png](soak-memory.png), drawn by `bench/plots.py`).",
        "",
        f"- Date: {datetime.date.today().isoformat()}; service at commit {revision}; Python "
        f"{platform.python_version()} on {platform.system()}, a {os.cpu_count()}-core shared machine.",
        f"- Reproduce: `{command}` (every sample and request count: `bench/results/soak.json`).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the traffic (default: 10)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (default: 10)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples (default: 5)")
    parser.add_argument("--model-latency", type=float, default=0.05, help="the model's first-token delay, s (0.05)")
    parser.add_argument("--timeout", type=float, default=30.0, help="client time-out per request, s (default: 30)")
    parser.add_argument("--max-in-flight", type=int, default=100,
                        help="requests in flight at most; a request due beyond it is an error (default: 100)")
    parser.add_argument("--seed", type=int, default=8, help="seed of the operation mix (default: 8)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--no-plot", action="store_true", help="do not draw docs/soak-memory.png")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 120 or not 0 < args.rate <= 200 or args.sample <= 0:
        parser.error("--minutes must be in (0, 120], --rate in (0, 200], --sample positive")

    raise_open_files_limit()
    command = " ".join([".venv/bin/python bench/soak.py", *(argv if argv is not None else sys.argv[1:])])
    revision = service_revision()
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the machine is busy (1-minute load average {load:.2f})", file=sys.stderr)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model_url = stack.enter_context(offline_model(first_token_delay=args.model_latency))
        api = stack.enter_context(api_server(bench_api_env(redis_url, model_url)))
        print(f"soak: {args.minutes:g} min at {args.rate:g} requests/s", flush=True)
        results, samples, extra = asyncio.run(_soak(api.url, api.pid, args))
        api_log = api_log_lines(api)

    duration = args.minutes * 60
    analysis = _analyse(results, samples, duration)
    print()
    print(text_table(["check", "measured", "holds"], [[c, m, h.strip("*")] for c, m, h in _checks(analysis, args)]))
    print()
    print(text_table(OPS_HEADER, _op_rows(analysis)))
    for sample in analysis["error_samples"][:10]:
        print(f"  error: {sample}")
    if analysis["errors"]:
        print("API log (warnings and errors):")
        print("\n".join(api_log[-20:]))
    print(f"\nsoak: {'PASS' if analysis['passed'] else 'FAIL'}")

    raw = {
        **run_metadata("soak", command, revision, load),
        "settings": {"minutes": args.minutes, "rate": args.rate, "sample_s": args.sample,
                     "model_latency_s": args.model_latency, "mix": MIX, "workers": 1},
        "traffic": extra,
        "verdict": "PASS" if analysis["passed"] else "FAIL",
        "analysis": analysis,
        "samples": [asdict(s) for s in samples],
        "api_log": api_log[-50:],
    }
    path = save_raw("soak", raw)
    print(f"raw numbers: bench/results/{path.name}")
    if not args.no_doc:
        update_doc_section("soak", _doc(analysis, args, command, revision, extra))
        print("updated: docs/benchmarks.md (section 'soak')")
    if not args.no_plot:
        try:
            import plots
        except ImportError as exc:
            print(f"no plot ({exc}); install the bench extra: .venv/bin/pip install -e '.[bench]'")
        else:
            print(f"plot: {plots.plot_soak(raw).relative_to(plots.ROOT)}")
    return 0 if analysis["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
