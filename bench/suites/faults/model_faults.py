"""``model-faults``: the model fails or hangs on a share of its requests."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from contextlib import AsyncExitStack, ExitStack

import httpx
from harness.load import offline_requests, offline_reset
from harness.services import api_log_lines, api_server, bench_api_env, offline_model, redis_server
from harness.tables import fmt_counts

from suites.faults.attempts import Attempt, chat_attempt, compact, counts, stream_attempt
from suites.faults.history import check_histories, history_summary
from suites.faults.outcome import Outcome
from suites.faults.probes import log_summary, max_or_zero, question


async def _model_faults_load(url: str, model_url: str, args: argparse.Namespace, outcome: Outcome) -> None:
    await offline_reset(model_url, fail_rate=0.1, fail_status=500, timeout_rate=0.1, timeout_seconds=args.model_hang)
    t0 = time.monotonic()
    attempts: list[Attempt] = []
    sessions: dict[int, str] = {}
    streamers = args.clients // 2

    async def client_loop(i: int, client: httpx.AsyncClient) -> None:
        send = stream_attempt if i < streamers else chat_attempt
        turn = 0
        while time.monotonic() - t0 < args.duration:
            turn += 1
            attempt = await send(client, t0, i, f"client {i} turn {turn}: and then?", sessions.get(i))
            attempts.append(attempt)
            if i not in sessions and attempt.session_id:
                sessions[i] = attempt.session_id
            await asyncio.sleep(args.think)

    timeout = httpx.Timeout(args.request_timeout)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout))
            for _ in range(args.clients)
        ]
        await asyncio.gather(*(client_loop(i, c) for i, c in enumerate(clients)))
    wall = time.monotonic() - t0
    model_requests = await offline_requests(model_url)
    await offline_reset(model_url, fail_rate=0.0, timeout_rate=0.0)

    chats = [a for a in attempts if a.kind == "chat"]
    streams = [a for a in attempts if a.kind == "stream"]
    allowed = {200, 502, 503, 504}
    bad_chats = [a for a in chats if a.status not in allowed]
    bad_streams = [a for a in streams if a.status != 200]
    outcome.check(
        "POST /chat failures are 502/504 (503 for a provider 429), never 500",
        f"{len(chats)} requests: {fmt_counts(counts(chats))}",
        bool(chats) and not bad_chats,
    )
    malformed: list[str] = []
    for a in streams:
        if a.status != 200:
            continue
        if not a.frames or a.frames[-1] != "done" or a.frames.count("done") != 1:
            malformed.append(f"{a.message}: frames end {a.frames[-3:]}")
        elif "error" in a.frames:
            position = a.frames.index("error")
            if a.frames[position + 1 :] != ["done"] or a.stream_error_status not in (502, 503, 504):
                malformed.append(f"{a.message}: error status {a.stream_error_status}, then {a.frames[position + 1 :]}")
        elif not a.response:
            malformed.append(f"{a.message}: done without a response")
    outcome.check(
        "streams answer 200; a failed one ends with an error frame (502/503/504) then done",
        f"{len(streams)} streams: {fmt_counts(counts(streams))}; {len(malformed)} malformed",
        bool(streams) and not bad_streams and not malformed,
    )
    failures = [a for a in attempts if not a.ok]
    by_status = Counter(a.stream_error_status if a.kind == "stream" else a.status for a in failures)
    outcome.check(
        "the injected faults surface (at least one failed turn)",
        f"{len(failures)} failed turns: "
        + fmt_counts({str(k): v for k, v in sorted(by_status.items(), key=lambda kv: str(kv[0]))}),
        bool(failures),
    )

    sent = {a.message for a in attempts}
    per_turn = Counter(q for q in (question(r) for r in model_requests) if q in sent)
    foreign = sum(1 for r in model_requests if question(r) not in sent)
    limit = len(attempts) * (1 + args.llm_max_retries)
    worst_turn = max(per_turn.values(), default=0)
    outcome.check(
        f"retries bounded: model requests <= API requests x (1 + {args.llm_max_retries}), also per turn",
        f"{len(model_requests)} model requests for {len(attempts)} API requests (limit {limit}); "
        f"at most {worst_turn} per turn; {foreign} not matching a turn",
        len(model_requests) <= limit and worst_turn <= 1 + args.llm_max_retries,
    )

    by_session = {sid: [a for a in attempts if a.client == i] for i, sid in sessions.items()}
    histories = await check_histories(url, by_session)
    summary = history_summary(histories)
    outcome.check(
        "histories well-formed: user/assistant alternating, each successful reply once, in order, "
        "nothing from a failed turn",
        f"{summary['intact']} of {len(histories)} sessions intact; {summary['ok_turns']} successful turns, "
        f"{summary['stored_turns']} stored; {summary['lost']} lost, {summary['duplicated']} duplicated, "
        f"{summary['stored_after_failure']} from failed turns, {summary['malformed']} malformed",
        len(sessions) == args.clients and summary["intact"] == len(histories) and summary["stored_after_failure"] == 0,
    )
    latencies = [a.latency for a in failures]
    outcome.key_numbers = (
        f"{len(attempts)} turns ({len(chats)} chat, {len(streams)} stream): {len(attempts) - len(failures)} ok, "
        f"failed: "
        + fmt_counts({str(k): v for k, v in sorted(by_status.items(), key=lambda kv: str(kv[0]))})
        + f", {len(bad_chats) + len(bad_streams) + len(malformed)} bad statuses or streams; model requests "
        f"{len(model_requests)} <= {limit}; {summary['intact']}/{len(histories)} histories intact"
    )
    outcome.details.update(
        wall_s=wall,
        requests=len(attempts),
        outcomes=counts(attempts),
        failures_by_status=dict((str(k), v) for k, v in by_status.items()),
        failed_turn_latency_max_s=max_or_zero(latencies),
        model_requests=len(model_requests),
        model_requests_per_turn=dict(Counter(per_turn.values())),
        malformed_streams=malformed[:20],
        histories=summary,
        attempts=[compact(a) for a in attempts],
    )


def run(args: argparse.Namespace, outcome: Outcome) -> None:
    """Run the scenario: start what it needs, load it, judge the result into ``outcome``."""
    outcome.details["settings"] = {
        "clients": args.clients,
        "duration_s": args.duration,
        "think_s": args.think,
        "model": {
            "fail_rate": 0.1,
            "fail_status": 500,
            "timeout_rate": 0.1,
            "timeout_seconds": args.model_hang,
            "first_token_delay": args.model_latency,
            "token_delay": 0.01,
        },
        "api": {"LLM_TIMEOUT": args.llm_timeout, "LLM_MAX_RETRIES": args.llm_max_retries},
    }
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model = stack.enter_context(offline_model(first_token_delay=args.model_latency, token_delay=0.01))
        env = bench_api_env(
            redis_url, model, LLM_TIMEOUT=str(args.llm_timeout), LLM_MAX_RETRIES=str(args.llm_max_retries)
        )
        api = stack.enter_context(api_server(env))
        try:
            asyncio.run(_model_faults_load(api.url, model, args, outcome))
        finally:
            outcome.details["api_log"] = log_summary(api_log_lines(api))
