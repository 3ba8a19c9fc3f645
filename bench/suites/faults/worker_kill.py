"""``worker-kill``: the API process running a turn (its in-process worker) is killed; the other
API process's queue sweep finds the run's heartbeat gone, fails the run ``worker_lost`` and frees
the session, which then takes the next turn."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections import Counter
from contextlib import ExitStack
from typing import Any

import httpx
import redis.asyncio as aioredis
from harness.load import sse_frames
from harness.services import ApiServer, api_log_lines, api_server, bench_api_env, offline_model, redis_server
from harness.tables import fmt_counts

from suites.faults.attempts import Attempt, chat_attempt
from suites.faults.outcome import Outcome
from suites.faults.probes import log_summary

SWEEP_SECONDS = 5  # how often the API processes sweep the job queue for dead workers' runs


async def _worker_kill(
    first: ApiServer, second: ApiServer, redis_url: str, args: argparse.Namespace, outcome: Outcome
) -> None:
    ttl = args.kill_heartbeat + SWEEP_SECONDS
    events: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=30) as a_client,
        httpx.AsyncClient(base_url=second.url, timeout=30) as b_client,
    ):
        first_turn = await chat_attempt(a_client, 0, 0, "first turn, before the crash", None)
        if not first_turn.ok or not first_turn.session_id:
            raise RuntimeError(f"the first turn failed: {first_turn.outcome} {first_turn.detail}")
        sid = first_turn.session_id
        killed_message = "[[latency:0:0.5]] [[tokens:40]] the turn that is killed"
        tokens = 0
        held_by: str | None = None
        kill_at = 0.0
        store = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            async with a_client.stream(
                "POST", "/chat/stream", json={"message": killed_message, "session_id": sid}
            ) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"the long run answered {response.status_code}")
                async for event, _ in sse_frames(response):
                    if event == "token":
                        tokens += 1
                        if tokens >= 3:
                            held_by = await store.get(f"agent-api:session:{sid}:active")
                            os.kill(first.pid, signal.SIGKILL)
                            kill_at = time.monotonic()
                            break
        except httpx.HTTPError:
            pass  # the connection breaks when the worker dies
        finally:
            await store.aclose()
        if not kill_at:
            raise RuntimeError("the long run ended before it could be killed")

        first_ok: float | None = None
        attempt_no = 0
        deadline = kill_at + ttl + args.kill_bound + 5
        after_turn: Attempt | None = None
        while time.monotonic() < deadline:
            attempt_no += 1
            attempt = await chat_attempt(b_client, kill_at, 1, f"after the crash, attempt {attempt_no}", sid)
            events.append(
                {"t": round(attempt.start, 3), "latency_s": round(attempt.latency, 3), "status": attempt.outcome}
            )
            if attempt.ok:
                first_ok, after_turn = attempt.end, attempt
                break
            await asyncio.sleep(0.25)
        history = (await b_client.get(f"/session/{sid}")).json().get("messages", [])

    statuses = [e["status"] for e in events]
    before_ok = statuses[:-1] if first_ok is not None else statuses
    outcome.check(
        "the killed process's run held the session when it was killed",
        f"the session's active run: {held_by}",
        bool(held_by) and str(held_by).startswith("run_"),
    )
    outcome.check(
        "the other API process answers 409 while the run holds the session (and nothing else before its 200)",
        f"{statuses.count('409')} x 409 before the 200; others: "
        f"{fmt_counts(dict(Counter(s for s in before_ok if s != '409')))}",
        statuses.count("409") > 0 and all(s == "409" for s in before_ok),
    )
    bound = ttl + args.kill_bound
    outcome.check(
        f"the session answers 200 within RUN_HEARTBEAT + sweep + {args.kill_bound:g} s = {bound:g} s of the kill",
        "no 200" if first_ok is None else f"200 after {first_ok:.2f} s",
        first_ok is not None and first_ok <= bound,
    )
    contents = [str(m.get("content")) for m in history]
    roles = [m.get("role") for m in history]
    expected_roles = ["user", "assistant", "user", "assistant"]
    intact = (
        roles == expected_roles
        and contents[0] == first_turn.message
        and contents[1] == first_turn.response
        and after_turn is not None
        and contents[2] == after_turn.message
        and contents[3] == after_turn.response
        and not any("killed" in c for c in contents)
        and "I can see 2 earlier messages" in contents[3]
    )
    outcome.check(
        "history intact: the first turn and the new one, the killed turn not saved",
        f"{len(history)} messages, roles {roles}; killed turn stored: {any('killed' in c for c in contents)}",
        intact,
    )
    outcome.key_numbers = (
        f"killed after {tokens} tokens (the session held by its run); other process: "
        f"{statuses.count('409')} x 409, then 200 after {'-' if first_ok is None else f'{first_ok:.2f} s'} "
        f"(bound {bound:g} s); history {len(history)} messages, killed turn {'absent' if intact else 'see checks'}"
    )
    outcome.details.update(
        session_id=sid,
        tokens_before_kill=tokens,
        session_held_by=held_by,
        second_worker_attempts=events,
        first_200_after_kill_s=first_ok,
        history=[{"role": m.get("role"), "content": m.get("content")} for m in history],
    )


def run(args: argparse.Namespace, outcome: Outcome) -> None:
    """Run the scenario: start what it needs, load it, judge the result into ``outcome``."""
    outcome.details["settings"] = {
        "run_heartbeat": args.kill_heartbeat,
        "workers": "2 API processes, one Redis",
        "message": "[[latency:0:0.5]] [[tokens:40]] the turn that is killed",
    }
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model = stack.enter_context(offline_model())
        env = bench_api_env(redis_url, model, RUN_HEARTBEAT=str(args.kill_heartbeat))
        first = stack.enter_context(api_server(env))
        second = stack.enter_context(api_server(env))
        try:
            asyncio.run(_worker_kill(first, second, redis_url, args, outcome))
        finally:
            outcome.details["api_log_first"] = log_summary(api_log_lines(first))
            outcome.details["api_log_second"] = log_summary(api_log_lines(second))
