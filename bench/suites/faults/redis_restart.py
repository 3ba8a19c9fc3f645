"""``redis-restart``: Redis stopped under load and started again on the same port and data."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack, ExitStack

import httpx
from harness.measure import percentile
from harness.services import RedisProcess, api_log_lines, api_server, bench_api_env, offline_model, persistent_redis
from harness.tables import fmt_counts

from suites.faults.attempts import Attempt, chat_attempt, compact, counts
from suites.faults.history import check_histories, history_summary
from suites.faults.outcome import Outcome
from suites.faults.probes import log_summary, max_or_zero


async def _redis_restart_load(url: str, redis: RedisProcess, args: argparse.Namespace, outcome: Outcome) -> None:
    t0 = time.monotonic()
    end_at = max(args.duration, args.outage_at + args.outage + args.lease_ttl + 5)
    marks: dict[str, float] = {}
    attempts: list[Attempt] = []
    sessions: dict[int, str] = {}
    health: list[tuple[float, int | None]] = []
    bursts: dict[str, dict[str, int]] = {}

    async def client_loop(i: int, client: httpx.AsyncClient) -> None:
        turn = 0
        while time.monotonic() - t0 < end_at:
            turn += 1
            attempt = await chat_attempt(
                client, t0, i, f"client {i} turn {turn}: what changed since then?", sessions.get(i)
            )
            attempts.append(attempt)
            if i not in sessions and attempt.session_id:
                sessions[i] = attempt.session_id
            # 409 (the session's previous run still holds it) and 503 (store down) mean "retry later".
            await asyncio.sleep(args.think if attempt.ok else args.retry_delay)

    async def burst(name: str, client: httpx.AsyncClient) -> None:
        """``--burst`` concurrent GET /session: peak traffic, which makes the API's Redis pool grow."""
        ids = list(sessions.values())
        if not ids:
            return

        async def read(sid: str) -> str:
            try:
                return str((await client.get(f"/session/{sid}")).status_code)
            except httpx.HTTPError as exc:
                return f"exception {type(exc).__name__}"

        marks[f"burst_{name}"] = time.monotonic() - t0
        bursts[name] = dict(Counter(await asyncio.gather(*(read(ids[i % len(ids)]) for i in range(args.burst)))))

    async def outage(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(max(0.0, args.outage_at - 2))
        await burst("before", client)
        await asyncio.sleep(max(0.0, t0 + args.outage_at - time.monotonic()))
        marks["stop_sent"] = time.monotonic() - t0
        marks["stop_took"] = await asyncio.to_thread(redis.stop, signal.SIGTERM)
        marks["stopped"] = time.monotonic() - t0
        await asyncio.sleep(args.outage)
        marks["start_sent"] = time.monotonic() - t0
        await asyncio.to_thread(redis.start)
        marks["ready"] = time.monotonic() - t0
        await asyncio.sleep(args.recovery_bound)
        await burst("after", client)

    async def health_probe(client: httpx.AsyncClient) -> None:
        while time.monotonic() - t0 < end_at:
            try:
                status: int | None = (await client.get("/health")).status_code
            except httpx.HTTPError:
                status = None
            health.append((round(time.monotonic() - t0, 2), status))
            await asyncio.sleep(0.5)

    timeout = httpx.Timeout(args.request_timeout)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout))
            for _ in range(args.clients)
        ]
        probe = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout))
        reader = await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=args.burst))
        )
        await asyncio.gather(outage(reader), health_probe(probe), *(client_loop(i, c) for i, c in enumerate(clients)))

    stop, stopped, ready = marks["stop_sent"], marks["stopped"], marks["ready"]
    # The outage: from Redis's exit to the launch of the new server (which may serve before its first PING).
    during = [a for a in attempts if stopped <= a.start < marks["start_sent"]]
    restarting = [a for a in attempts if marks["start_sent"] <= a.start < ready]
    straddling = [a for a in attempts if a.start < stopped and a.end >= stop]
    after = [a for a in attempts if a.start >= ready]
    bad = [a for a in attempts if a.status not in (200, 409, 503)]
    outcome.check(
        "no 500, other unexpected status, exception or time-out",
        fmt_counts(counts(bad)) if bad else f"0 of {len(attempts)} requests",
        not bad,
    )
    slow = [a for a in during + straddling if a.latency > args.fail_fast_bound]
    during_max = max_or_zero([a.latency for a in during])
    # A request may outlive the outage by retrying (Redis is started again while it waits): then a 200 is right.
    bridged = [a for a in during if a.status == 200 and a.end >= marks["start_sent"]]
    outcome.check(
        f"during the outage: every request answered 503 within {args.fail_fast_bound:g} s (or 200 if it "
        "ended after Redis was started again)",
        f"{len(during)} requests: {fmt_counts(counts(during))} ({len(bridged)} x 200 after the restart); "
        f"max {during_max:.2f} s, p50 {percentile([a.latency for a in during], 50):.3f} s; "
        f"{len(straddling)} in flight at the stop: {fmt_counts(counts(straddling))}, "
        f"max {max_or_zero([a.latency for a in straddling]):.2f} s",
        bool(during) and all(a.status == 503 or a in bridged for a in during) and not slow,
    )
    first_ok = min((a.end for a in after if a.ok), default=None)
    recovery = None if first_ok is None else first_ok - ready
    outcome.check(
        f"after Redis is back: a 200 within {args.recovery_bound:g} s",
        "no 200 after the restart" if recovery is None else f"first 200 {recovery:.2f} s after ready",
        recovery is not None and recovery <= args.recovery_bound,
    )
    per_client = {}
    for i in range(args.clients):
        mine = [a.end for a in after if a.client == i and a.ok]
        per_client[i] = (min(mine) - ready) if mine else None
    bound = args.lease_ttl + args.recovery_bound
    missing = [i for i, t in per_client.items() if t is None]
    worst = max((t for t in per_client.values() if t is not None), default=None)
    outcome.check(
        f"every session answers 200 again within LEASE_TTL + {args.recovery_bound:g} s = {bound:g} s",
        f"{args.clients - len(missing)} of {args.clients} sessions; slowest "
        f"{'-' if worst is None else f'{worst:.2f} s'}",
        not missing and worst is not None and worst <= bound,
    )

    by_session: dict[str, list[Attempt]] = {}
    for i, sid in sessions.items():
        by_session[sid] = [a for a in attempts if a.client == i]
    read_at = time.monotonic() - t0
    histories = await check_histories(url, by_session)
    summary = history_summary(histories)
    settled = ready + args.recovery_bound
    late = [a for a in attempts if a.start >= settled and a.status == 503]
    late_text = ", ".join(f"{a.start - ready:.1f} s" for a in late[:8]) or "none"
    after_burst = bursts.get("after", {})
    outcome.check(
        f"recovered: no 503 from {args.recovery_bound:g} s after Redis is back on (the clients' requests, "
        f"a burst of {args.burst} concurrent GET /session then, the history reads at the end)",
        f"clients: {len(late)} x 503 in {sum(a.start >= settled for a in attempts)} requests (at "
        f"{late_text} after Redis was back); burst: {fmt_counts(after_burst)} (before the outage: "
        f"{fmt_counts(bursts.get('before', {}))}); history reads {read_at - ready:.0f} s after: "
        f"{summary['sessions_read_503']} of {len(histories)} sessions answered 503 at first",
        not late and summary["read_503s"] == 0 and bool(after_burst) and set(after_burst) == {"200"},
    )
    outcome.check(
        "no turn answered 200 is lost (every 200's message and answer stored, in order, once)",
        f"{summary['ok_turns']} turns answered 200 in {len(sessions)} sessions: {summary['lost']} lost, "
        f"{summary['duplicated']} duplicated, {summary['unknown']} unknown, {summary['malformed']} "
        f"malformed, {summary['load_errors']} sessions unreadable",
        len(sessions) == args.clients
        and summary["lost"] == summary["duplicated"] == 0
        and summary["unknown"] == summary["malformed"] == summary["load_errors"] == 0,
    )
    outcome.check(
        "a stored turn the client did not see as 200 only from a failed request (reported)",
        f"{summary['stored_after_failure']} stored turns whose request did not answer 200",
        summary["unknown"] == 0,
    )
    health_during = Counter(s for t, s in health if stopped <= t < ready)
    outcome.key_numbers = (
        f"Redis down {ready - stop:.1f} s; {len(during)} requests meanwhile: "
        f"{fmt_counts(counts(during))}, max {during_max:.2f} s; first 200 "
        f"{'-' if recovery is None else f'{recovery:.2f} s'} after restart, every session by "
        f"{'-' if worst is None else f'{worst:.1f} s'}; 503s from {args.recovery_bound:g} s after the restart on: "
        f"{len(late)} client requests, {after_burst.get('503', 0)}/{args.burst} burst reads, "
        f"{summary['sessions_read_503']}/{len(histories)} history reads; "
        f"{summary['ok_turns']} turns answered 200, "
        f"{summary['lost']} lost, {summary['stored_after_failure']} stored from failed requests"
    )
    outcome.details.update(
        marks={k: round(v, 3) for k, v in marks.items()},
        run_seconds=end_at,
        requests=len(attempts),
        outcomes=counts(attempts),
        during=counts(during),
        straddling=counts(straddling),
        restarting=counts(restarting),
        after=counts(after),
        recovery_s=recovery,
        per_client_recovery_s=per_client,
        histories=summary,
        health_during_outage={str(k): v for k, v in health_during.items()},
        bursts=bursts,
        health=health,
        attempts=[compact(a) for a in attempts],
    )


def run(args: argparse.Namespace, outcome: Outcome) -> None:
    """Run the scenario: start what it needs, load it, judge the result into ``outcome``."""
    outcome.details["settings"] = {
        "clients": args.clients,
        "duration_s": args.duration,
        "outage_at_s": args.outage_at,
        "outage_s": args.outage,
        "think_s": args.think,
        "lease_ttl": args.lease_ttl,
        "model_latency_s": args.model_latency,
        "redis": "--appendonly yes --appendfsync always",
    }
    with ExitStack() as stack:
        redis = stack.enter_context(persistent_redis())
        model = stack.enter_context(offline_model(first_token_delay=args.model_latency))
        api = stack.enter_context(api_server(bench_api_env(redis.url, model, LEASE_TTL=str(args.lease_ttl))))
        try:
            asyncio.run(_redis_restart_load(api.url, redis, args, outcome))
        finally:
            outcome.details["api_log"] = log_summary(api_log_lines(api))
            outcome.details["redis_log_tail"] = redis.log_tail(12).splitlines()
