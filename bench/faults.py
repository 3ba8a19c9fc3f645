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
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import secrets
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis
from _common import (
    RESULTS_DIR,
    api_log_lines,
    api_server,
    bench_api_env,
    markdown_table,
    offline_control,
    offline_model,
    percentile,
    persistent_redis,
    process_stats,
    raise_open_files_limit,
    redis_server,
    save_raw,
    service_revision,
    sse_frames,
    text_table,
    update_doc_section,
)

SCENARIOS = ["redis-restart", "model-faults", "disconnects", "worker-kill"]
LOCK_PATTERN = "agent-api:lock:*"
READ_TRIES = 3  # reads of a session's history after a run, when they answer 503
HISTORY_CAP = 100  # the service's default MAX_HISTORY_MESSAGES
STARTUP_NOTICE = "AUTHENTICATION IS OFF"  # the API's expected start-up warning without API_KEYS
SCENARIO_TIME_LIMIT_S = 600.0  # a scenario that runs longer than this is stopped and fails


# -- results ----------------------------------------------------------------------------------------
@dataclass
class Check:
    """One criterion of a verdict: what is required, what was measured, whether it holds."""

    name: str
    measured: str
    ok: bool


@dataclass
class Outcome:
    """The verdict of one scenario with its checks, headline numbers and raw details."""

    scenario: str
    passed: bool = False
    checks: list[Check] = field(default_factory=list)
    key_numbers: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    date: str = ""
    command: str = ""
    revision: str = ""

    def check(self, name: str, measured: str, ok: bool) -> bool:
        self.checks.append(Check(name, measured, ok))
        return ok


@dataclass
class Attempt:
    """One ``POST /chat`` or ``POST /chat/stream`` request as the client saw it (times relative to the scenario)."""

    client: int
    kind: str  # "chat" or "stream"
    message: str
    session_id: str | None
    start: float
    end: float = 0.0
    status: int | None = None  # the HTTP status; None when the request raised
    error: str | None = None  # the exception, for a request that raised
    detail: str | None = None  # the error body, or the stream's error frame's detail
    response: str | None = None  # the answer of a successful turn
    frames: list[str] = field(default_factory=list)  # the stream's event types, in order
    stream_error_status: int | None = None  # the `status` of the stream's error frame

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        """A successful turn: 200 with an answer (and, for a stream, no error frame and a final done frame)."""
        if self.status != 200 or not self.response:
            return False
        return self.kind == "chat" or (bool(self.frames) and self.frames[-1] == "done" and "error" not in self.frames)

    @property
    def outcome(self) -> str:
        """A short label: "200", "503", "stream error 504", "exception ReadTimeout", ..."""
        if self.status is None:
            return f"exception {(self.error or '?').split(':')[0]}"
        if self.kind == "stream" and self.status == 200 and self.stream_error_status is not None:
            return f"stream error {self.stream_error_status}"
        if self.kind == "stream" and self.status == 200 and not self.ok:
            return "stream incomplete"
        return str(self.status)


def _turn_body(message: str, session_id: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"message": message, **extra, **({"session_id": session_id} if session_id else {})}


async def chat_attempt(client: httpx.AsyncClient, t0: float, client_id: int, message: str,
                       session_id: str | None, **extra: Any) -> Attempt:
    """Send one ``POST /chat``; never raises."""
    body = _turn_body(message, session_id, extra)
    attempt = Attempt(client_id, "chat", message, session_id, time.monotonic() - t0)
    try:
        response = await client.post("/chat", json=body)
        attempt.status = response.status_code
        if response.status_code == 200:
            data = response.json()
            attempt.response = data.get("response")
            attempt.session_id = data.get("session_id") or session_id
        else:
            attempt.detail = response.text[:200]
            attempt.session_id = session_id or response.headers.get("x-session-id")
    except Exception as exc:  # every failure is recorded, by its type
        attempt.error = f"{type(exc).__name__}: {exc}"[:200]
    attempt.end = time.monotonic() - t0
    return attempt


async def stream_attempt(client: httpx.AsyncClient, t0: float, client_id: int, message: str,
                         session_id: str | None, **extra: Any) -> Attempt:
    """Send one ``POST /chat/stream`` and read it to the end; never raises."""
    body = _turn_body(message, session_id, extra)
    attempt = Attempt(client_id, "stream", message, session_id, time.monotonic() - t0)
    try:
        async with client.stream("POST", "/chat/stream", json=body) as response:
            attempt.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                attempt.detail = response.text[:200]
                attempt.session_id = session_id or response.headers.get("x-session-id")
            else:
                async for event, data in sse_frames(response):
                    attempt.frames.append(event)
                    if event == "session":
                        attempt.session_id = data.get("session_id") or session_id
                    elif event == "error":
                        attempt.stream_error_status = data.get("status")
                        attempt.detail = str(data.get("detail"))[:200]
                    elif event == "done":
                        attempt.response = data.get("response")
    except Exception as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"[:200]
    attempt.end = time.monotonic() - t0
    return attempt


def _compact(attempt: Attempt) -> dict[str, Any]:
    """An attempt for the raw results, without the long texts."""
    data = asdict(attempt)
    data["start"], data["end"] = round(attempt.start, 3), round(attempt.end, 3)
    data["outcome"] = attempt.outcome
    data.pop("response")
    if attempt.kind == "chat":
        data.pop("frames")
    return data


# -- history checks ---------------------------------------------------------------------------------
def stored_turns(messages: list[dict[str, Any]]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Split a stored history into turns (user message, the replies after it) and well-formedness problems."""
    turns: list[tuple[str, list[str]]] = []
    problems: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "user":
            turns.append((str(message.get("content")), []))
        elif not turns:
            problems.append(f"message {i} is '{role}' before any user message")
        else:
            turns[-1][1].append(str(message.get("content")))
    for question, replies in turns:
        if len(replies) != 1:
            problems.append(f"turn {question[:40]!r} has {len(replies)} replies (expected 1)")
    return turns, problems


@dataclass
class HistoryCheck:
    """How one session's stored history compares with what its client saw."""

    session_id: str
    stored_turns: int
    ok_turns: int
    lost: list[str] = field(default_factory=list)  # turns answered 200 but missing, out of order or altered
    duplicated: list[str] = field(default_factory=list)  # a turn stored more than once
    stored_after_failure: list[str] = field(default_factory=list)  # stored, but the request did not answer 200
    unknown: list[str] = field(default_factory=list)  # stored, but never sent by this client
    malformed: list[str] = field(default_factory=list)
    load_error: str | None = None
    read_503s: int = 0  # GET /session answered 503 (then read again, up to READ_TRIES times)

    @property
    def intact(self) -> bool:
        return not (self.lost or self.duplicated or self.unknown or self.malformed or self.load_error)


async def check_history(client: httpx.AsyncClient, session_id: str, attempts: list[Attempt]) -> HistoryCheck:
    """Compare ``GET /session/{id}`` with the turns of ``attempts`` (one client's requests on that session)."""
    ok = [a for a in attempts if a.ok]
    result = HistoryCheck(session_id, 0, len(ok))
    try:
        for _ in range(READ_TRIES):  # a 503 is counted (see read_503s), and the read tried again
            response = await client.get(f"/session/{session_id}")
            if response.status_code != 503:
                break
            result.read_503s += 1
            await asyncio.sleep(0.5)
    except Exception as exc:
        result.load_error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    if response.status_code != 200:
        result.load_error = f"GET /session answered {response.status_code}: {response.text[:200]}"
        # A session the client got answers for but that is gone has lost every one of them.
        result.lost = [a.message for a in ok]
        return result
    messages = response.json().get("messages", [])
    turns, result.malformed = stored_turns(messages)
    result.stored_turns = len(turns)
    # A full history has dropped its oldest turns (MAX_HISTORY_MESSAGES): answered turns older
    # than the first one stored are not lost.
    trimmed = len(messages) >= HISTORY_CAP
    position: dict[str, list[int]] = {}
    for i, (question, _) in enumerate(turns):
        position.setdefault(question, []).append(i)
    result.duplicated = [q for q, where in position.items() if len(where) > 1]
    last = -1
    for attempt in ok:
        where = position.get(attempt.message, [])
        if not where:
            if not (trimmed and last < 0):
                result.lost.append(attempt.message)
            continue
        i = where[0]
        if i < last or turns[i][1] != [attempt.response]:
            result.lost.append(attempt.message)  # out of order, or the stored answer is not the one received
        last = max(last, i)
    sent = {a.message for a in attempts}
    answered = {a.message for a in ok}
    for question, _ in turns:
        if question in answered:
            continue
        (result.stored_after_failure if question in sent else result.unknown).append(question)
    return result


async def check_histories(url: str, by_session: dict[str, list[Attempt]]) -> list[HistoryCheck]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        semaphore = asyncio.Semaphore(10)

        async def one(session_id: str, attempts: list[Attempt]) -> HistoryCheck:
            async with semaphore:
                return await check_history(client, session_id, attempts)

        return list(await asyncio.gather(*(one(s, a) for s, a in by_session.items())))


def _history_summary(checks: list[HistoryCheck]) -> dict[str, Any]:
    return {
        "sessions": len(checks),
        "intact": sum(c.intact for c in checks),
        "ok_turns": sum(c.ok_turns for c in checks),
        "stored_turns": sum(c.stored_turns for c in checks),
        "lost": sum(len(c.lost) for c in checks),
        "duplicated": sum(len(c.duplicated) for c in checks),
        "stored_after_failure": sum(len(c.stored_after_failure) for c in checks),
        "unknown": sum(len(c.unknown) for c in checks),
        "malformed": sum(len(c.malformed) for c in checks),
        "load_errors": sum(c.load_error is not None for c in checks),
        "read_503s": sum(c.read_503s for c in checks),
        "sessions_read_503": sum(c.read_503s > 0 for c in checks),
        "problems": [asdict(c) for c in checks if not c.intact or c.stored_after_failure][:20],
    }


# -- small helpers ----------------------------------------------------------------------------------
def _counts(attempts: list[Attempt]) -> dict[str, int]:
    return dict(sorted(Counter(a.outcome for a in attempts).items()))


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"


def _log_summary(lines: list[str], limit: int = 12) -> list[str]:
    """Distinct log messages (JSON ``message`` or the raw line) with their counts, most frequent first."""
    counter: Counter[str] = Counter()
    for line in lines:
        try:
            data = json.loads(line)
            text = f"{data.get('level')} {data.get('logger')}: {data.get('message')}"
            if data.get("exc_info"):
                text += " | " + str(data["exc_info"]).strip().splitlines()[-1][:200]
        except (ValueError, AttributeError):
            text = line.strip()[:240]
        if text:
            counter[text] += 1
    return [f"{n} x {text}" for text, n in counter.most_common(limit)]


async def _lock_keys(redis_url: str) -> list[str]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [key async for key in client.scan_iter(match=LOCK_PATTERN, count=1000)]
    finally:
        await client.aclose()


async def _offline_requests(model_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{offline_control(model_url)}/_offline/requests")
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()
        return data


async def _offline_reset(model_url: str, **config: Any) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        (await client.delete(f"{offline_control(model_url)}/_offline/requests")).raise_for_status()
        if config:
            (await client.put(f"{offline_control(model_url)}/_offline/config", json=config)).raise_for_status()


def _question(request: dict[str, Any]) -> str:
    """The caller's message of a model request (as the offline model finds it: the last one named "user")."""
    messages = request.get("messages") or []
    named = [m for m in messages if m.get("role") == "user" and m.get("name") == "user"]
    users = named or [m for m in messages if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    return content if isinstance(content, str) else json.dumps(content)


async def _runs_in_flight(url: str) -> float | None:
    """The sum of ``agent_api_runs_in_flight`` from ``/metrics`` (None when it cannot be read)."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("agent_api_runs_in_flight{")]
    return sum(values) if values else 0.0


def _max(values: list[float]) -> float:
    return max(values) if values else 0.0


# -- scenario: redis-restart ----------------------------------------------------------------------
async def _redis_restart_load(url: str, redis: Any, args: argparse.Namespace, outcome: Outcome) -> None:
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
            attempt = await chat_attempt(client, t0, i, f"client {i} turn {turn}: what changed since then?",
                                         sessions.get(i))
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
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout))
                   for _ in range(args.clients)]
        probe = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout))
        reader = await stack.enter_async_context(httpx.AsyncClient(
            base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=args.burst)))
        await asyncio.gather(outage(reader), health_probe(probe),
                             *(client_loop(i, c) for i, c in enumerate(clients)))

    stop, stopped, ready = marks["stop_sent"], marks["stopped"], marks["ready"]
    # The outage: from Redis's exit to the launch of the new server (which may serve before its first PING).
    during = [a for a in attempts if stopped <= a.start < marks["start_sent"]]
    restarting = [a for a in attempts if marks["start_sent"] <= a.start < ready]
    straddling = [a for a in attempts if a.start < stopped and a.end >= stop]
    after = [a for a in attempts if a.start >= ready]
    bad = [a for a in attempts if a.status not in (200, 409, 503)]
    outcome.check("no 500, other unexpected status, exception or time-out", _fmt_counts(_counts(bad)) if bad
                  else f"0 of {len(attempts)} requests", not bad)
    slow = [a for a in during + straddling if a.latency > args.fail_fast_bound]
    during_max = _max([a.latency for a in during])
    # A request may outlive the outage by retrying (Redis is started again while it waits): then a 200 is right.
    bridged = [a for a in during if a.status == 200 and a.end >= marks["start_sent"]]
    outcome.check(f"during the outage: every request answered 503 within {args.fail_fast_bound:g} s (or 200 if it "
                  "ended after Redis was started again)",
                  f"{len(during)} requests: {_fmt_counts(_counts(during))} ({len(bridged)} x 200 after the restart); "
                  f"max {during_max:.2f} s, p50 {percentile([a.latency for a in during], 50):.3f} s; "
                  f"{len(straddling)} in flight at the stop: {_fmt_counts(_counts(straddling))}, "
                  f"max {_max([a.latency for a in straddling]):.2f} s",
                  bool(during) and all(a.status == 503 or a in bridged for a in during) and not slow)
    first_ok = min((a.end for a in after if a.ok), default=None)
    recovery = None if first_ok is None else first_ok - ready
    outcome.check(f"after Redis is back: a 200 within {args.recovery_bound:g} s",
                  "no 200 after the restart" if recovery is None else f"first 200 {recovery:.2f} s after ready",
                  recovery is not None and recovery <= args.recovery_bound)
    per_client = {}
    for i in range(args.clients):
        mine = [a.end for a in after if a.client == i and a.ok]
        per_client[i] = (min(mine) - ready) if mine else None
    bound = args.lease_ttl + args.recovery_bound
    missing = [i for i, t in per_client.items() if t is None]
    worst = max((t for t in per_client.values() if t is not None), default=None)
    outcome.check(f"every session answers 200 again within LEASE_TTL + {args.recovery_bound:g} s = {bound:g} s",
                  f"{args.clients - len(missing)} of {args.clients} sessions; slowest "
                  f"{'-' if worst is None else f'{worst:.2f} s'}",
                  not missing and worst is not None and worst <= bound)

    by_session: dict[str, list[Attempt]] = {}
    for i, sid in sessions.items():
        by_session[sid] = [a for a in attempts if a.client == i]
    read_at = time.monotonic() - t0
    histories = await check_histories(url, by_session)
    summary = _history_summary(histories)
    settled = ready + args.recovery_bound
    late = [a for a in attempts if a.start >= settled and a.status == 503]
    late_text = ", ".join(f"{a.start - ready:.1f} s" for a in late[:8]) or "none"
    after_burst = bursts.get("after", {})
    outcome.check(f"recovered: no 503 from {args.recovery_bound:g} s after Redis is back on (the clients' requests, "
                  f"a burst of {args.burst} concurrent GET /session then, the history reads at the end)",
                  f"clients: {len(late)} x 503 in {sum(a.start >= settled for a in attempts)} requests (at "
                  f"{late_text} after Redis was back); burst: {_fmt_counts(after_burst)} (before the outage: "
                  f"{_fmt_counts(bursts.get('before', {}))}); history reads {read_at - ready:.0f} s after: "
                  f"{summary['sessions_read_503']} of {len(histories)} sessions answered 503 at first",
                  not late and summary["read_503s"] == 0 and bool(after_burst) and set(after_burst) == {"200"})
    outcome.check("no turn answered 200 is lost (every 200's message and answer stored, in order, once)",
                  f"{summary['ok_turns']} turns answered 200 in {len(sessions)} sessions: {summary['lost']} lost, "
                  f"{summary['duplicated']} duplicated, {summary['unknown']} unknown, {summary['malformed']} "
                  f"malformed, {summary['load_errors']} sessions unreadable",
                  len(sessions) == args.clients and summary["lost"] == summary["duplicated"] == 0
                  and summary["unknown"] == summary["malformed"] == summary["load_errors"] == 0)
    outcome.check("a stored turn the client did not see as 200 only from a failed request (reported)",
                  f"{summary['stored_after_failure']} stored turns whose request did not answer 200",
                  summary["unknown"] == 0)
    health_during = Counter(s for t, s in health if stopped <= t < ready)
    outcome.key_numbers = (
        f"Redis down {ready - stop:.1f} s; {len(during)} requests meanwhile: "
        f"{_fmt_counts(_counts(during))}, max {during_max:.2f} s; first 200 "
        f"{'-' if recovery is None else f'{recovery:.2f} s'} after restart, every session by "
        f"{'-' if worst is None else f'{worst:.1f} s'}; 503s from {args.recovery_bound:g} s after the restart on: "
        f"{len(late)} client requests, {after_burst.get('503', 0)}/{args.burst} burst reads, "
        f"{summary['sessions_read_503']}/{len(histories)} history reads; "
        f"{summary['ok_turns']} turns answered 200, "
        f"{summary['lost']} lost, {summary['stored_after_failure']} stored from failed requests"
    )
    outcome.details.update(
        marks={k: round(v, 3) for k, v in marks.items()}, run_seconds=end_at,
        requests=len(attempts), outcomes=_counts(attempts), during=_counts(during),
        straddling=_counts(straddling), restarting=_counts(restarting), after=_counts(after), recovery_s=recovery,
        per_client_recovery_s=per_client, histories=summary,
        health_during_outage={str(k): v for k, v in health_during.items()}, bursts=bursts,
        health=health, attempts=[_compact(a) for a in attempts],
    )


def scenario_redis_restart(args: argparse.Namespace, outcome: Outcome) -> None:
    outcome.details["settings"] = {
        "clients": args.clients, "duration_s": args.duration, "outage_at_s": args.outage_at,
        "outage_s": args.outage, "think_s": args.think, "lease_ttl": args.lease_ttl,
        "model_latency_s": args.model_latency, "redis": "--appendonly yes --appendfsync always",
    }
    with ExitStack() as stack:
        redis = stack.enter_context(persistent_redis())
        model = stack.enter_context(offline_model(first_token_delay=args.model_latency))
        api = stack.enter_context(api_server(bench_api_env(redis.url, model, LEASE_TTL=str(args.lease_ttl))))
        try:
            asyncio.run(_redis_restart_load(api.url, redis, args, outcome))
        finally:
            outcome.details["api_log"] = _log_summary(api_log_lines(api))
            outcome.details["redis_log_tail"] = redis.log_tail(12).splitlines()


# -- scenario: model-faults -------------------------------------------------------------------------
async def _model_faults_load(url: str, model_url: str, args: argparse.Namespace, outcome: Outcome) -> None:
    await _offline_reset(model_url, fail_rate=0.1, fail_status=500, timeout_rate=0.1,
                         timeout_seconds=args.model_hang)
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
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=timeout))
                   for _ in range(args.clients)]
        await asyncio.gather(*(client_loop(i, c) for i, c in enumerate(clients)))
    wall = time.monotonic() - t0
    model_requests = await _offline_requests(model_url)
    await _offline_reset(model_url, fail_rate=0.0, timeout_rate=0.0)

    chats = [a for a in attempts if a.kind == "chat"]
    streams = [a for a in attempts if a.kind == "stream"]
    allowed = {200, 502, 503, 504}
    bad_chats = [a for a in chats if a.status not in allowed]
    bad_streams = [a for a in streams if a.status != 200]
    outcome.check("POST /chat failures are 502/504 (503 for a provider 429), never 500",
                  f"{len(chats)} requests: {_fmt_counts(_counts(chats))}", bool(chats) and not bad_chats)
    malformed: list[str] = []
    for a in streams:
        if a.status != 200:
            continue
        if not a.frames or a.frames[-1] != "done" or a.frames.count("done") != 1:
            malformed.append(f"{a.message}: frames end {a.frames[-3:]}")
        elif "error" in a.frames:
            position = a.frames.index("error")
            if a.frames[position + 1:] != ["done"] or a.stream_error_status not in (502, 503, 504):
                malformed.append(f"{a.message}: error status {a.stream_error_status}, then {a.frames[position + 1:]}")
        elif not a.response:
            malformed.append(f"{a.message}: done without a response")
    outcome.check("streams answer 200; a failed one ends with an error frame (502/503/504) then done",
                  f"{len(streams)} streams: {_fmt_counts(_counts(streams))}; {len(malformed)} malformed",
                  bool(streams) and not bad_streams and not malformed)
    failures = [a for a in attempts if not a.ok]
    by_status = Counter(a.stream_error_status if a.kind == "stream" else a.status for a in failures)
    outcome.check("the injected faults surface (at least one failed turn)",
                  f"{len(failures)} failed turns: " + _fmt_counts({str(k): v for k, v in sorted(
                      by_status.items(), key=lambda kv: str(kv[0]))}), bool(failures))

    sent = {a.message for a in attempts}
    per_turn = Counter(q for q in (_question(r) for r in model_requests) if q in sent)
    foreign = sum(1 for r in model_requests if _question(r) not in sent)
    limit = len(attempts) * (1 + args.llm_max_retries)
    worst_turn = max(per_turn.values(), default=0)
    outcome.check(f"retries bounded: model requests <= API requests x (1 + {args.llm_max_retries}), also per turn",
                  f"{len(model_requests)} model requests for {len(attempts)} API requests (limit {limit}); "
                  f"at most {worst_turn} per turn; {foreign} not matching a turn",
                  len(model_requests) <= limit and worst_turn <= 1 + args.llm_max_retries)

    by_session = {sid: [a for a in attempts if a.client == i] for i, sid in sessions.items()}
    histories = await check_histories(url, by_session)
    summary = _history_summary(histories)
    outcome.check("histories well-formed: user/assistant alternating, each successful reply once, in order, "
                  "nothing from a failed turn",
                  f"{summary['intact']} of {len(histories)} sessions intact; {summary['ok_turns']} successful turns, "
                  f"{summary['stored_turns']} stored; {summary['lost']} lost, {summary['duplicated']} duplicated, "
                  f"{summary['stored_after_failure']} from failed turns, {summary['malformed']} malformed",
                  len(sessions) == args.clients and summary["intact"] == len(histories)
                  and summary["stored_after_failure"] == 0)
    latencies = [a.latency for a in failures]
    outcome.key_numbers = (
        f"{len(attempts)} turns ({len(chats)} chat, {len(streams)} stream): {len(attempts) - len(failures)} ok, "
        f"failed: " + _fmt_counts({str(k): v for k, v in sorted(by_status.items(), key=lambda kv: str(kv[0]))})
        + f", {len(bad_chats) + len(bad_streams) + len(malformed)} bad statuses or streams; model requests "
        f"{len(model_requests)} <= {limit}; {summary['intact']}/{len(histories)} histories intact"
    )
    outcome.details.update(
        wall_s=wall, requests=len(attempts), outcomes=_counts(attempts), failures_by_status=dict(
            (str(k), v) for k, v in by_status.items()),
        failed_turn_latency_max_s=_max(latencies), model_requests=len(model_requests),
        model_requests_per_turn=dict(Counter(per_turn.values())), malformed_streams=malformed[:20],
        histories=summary, attempts=[_compact(a) for a in attempts],
    )


def scenario_model_faults(args: argparse.Namespace, outcome: Outcome) -> None:
    outcome.details["settings"] = {
        "clients": args.clients, "duration_s": args.duration, "think_s": args.think,
        "model": {"fail_rate": 0.1, "fail_status": 500, "timeout_rate": 0.1, "timeout_seconds": args.model_hang,
                  "first_token_delay": args.model_latency, "token_delay": 0.01},
        "api": {"LLM_TIMEOUT": args.llm_timeout, "LLM_MAX_RETRIES": args.llm_max_retries},
    }
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model = stack.enter_context(offline_model(first_token_delay=args.model_latency, token_delay=0.01))
        env = bench_api_env(redis_url, model, LLM_TIMEOUT=str(args.llm_timeout),
                            LLM_MAX_RETRIES=str(args.llm_max_retries))
        api = stack.enter_context(api_server(env))
        try:
            asyncio.run(_model_faults_load(api.url, model, args, outcome))
        finally:
            outcome.details["api_log"] = _log_summary(api_log_lines(api))


# -- scenario: disconnects --------------------------------------------------------------------------
@dataclass
class Disconnect:
    marker: str
    session_id: str | None = None
    status: int | None = None
    first_token_s: float | None = None
    error: str | None = None
    frames: list[str] = field(default_factory=list)
    started: float = 0.0  # wall clock, to compare with the model's request log


async def _disconnect_one(client: httpx.AsyncClient, marker: str, timeout: float) -> Disconnect:
    """Start a stream, read it up to its first token frame, then drop the connection."""
    result = Disconnect(marker, started=time.time())
    message = f"[[latency:0:0.3]] [[tokens:30]] storm question {marker}"
    start = time.monotonic()

    async def run() -> None:
        async with client.stream("POST", "/chat/stream", json={"message": message, "max_turns": 3}) as response:
            result.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                result.error = response.text[:200]
                return
            async for event, data in sse_frames(response):
                result.frames.append(event)
                if event == "session":
                    result.session_id = data.get("session_id")
                elif event == "token":
                    result.first_token_s = time.monotonic() - start
                    return  # leaving the block closes the unfinished response: the connection is dropped
                elif event in ("error", "done"):
                    result.error = f"{event} frame before any token: {data}"[:200]
                    return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        result.error = f"no token within {timeout:g} s (frames so far: {result.frames})"
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    return result


async def _storm(url: str, label: str, total: int, wave: int, timeout: float) -> list[Disconnect]:
    results: list[Disconnect] = []
    for w in range(-(-total // wave)):
        size = min(wave, total - w * wave)
        shards = -(-size // 20)  # clients of at most 20 connections each (see bench/concurrency.py)
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(httpx.AsyncClient(
                base_url=url, timeout=httpx.Timeout(timeout), limits=httpx.Limits(max_connections=20)))
                for _ in range(shards)]
            batch = await asyncio.gather(*(
                _disconnect_one(clients[i % shards], f"dc-{label}-{w}-{i}-{secrets.token_hex(4)}", timeout)
                for i in range(size)))
        results.extend(batch)
        print(f"  {label} wave {w + 1}: {sum(r.first_token_s is not None for r in batch)}/{size} streams got a "
              f"token and disconnected", flush=True)
    return results


async def _settle(url: str, redis_url: str, observe: float, lock_bound: float) -> dict[str, Any]:
    """Watch the API after a storm for ``observe`` s: when the lock keys and the runs in flight reach 0."""
    start = time.monotonic()
    locks_zero_at: float | None = None
    runs_zero_at: float | None = None
    locks: list[str] = []
    runs: float | None = None
    while True:
        elapsed = time.monotonic() - start
        locks = await _lock_keys(redis_url)
        if not locks and locks_zero_at is None:
            locks_zero_at = elapsed
        runs = await _runs_in_flight(url)
        if runs == 0 and runs_zero_at is None:
            runs_zero_at = elapsed
        if elapsed >= observe:
            break
        await asyncio.sleep(0.5)
    return {"locks_zero_after_s": locks_zero_at, "locks_at_end": len(locks), "lock_samples": locks[:5],
            "runs_in_flight_zero_after_s": runs_zero_at, "runs_in_flight_at_end": runs,
            "locks_ok": locks_zero_at is not None and locks_zero_at <= lock_bound and not locks}


def _marker_arrivals(requests: list[dict[str, Any]]) -> dict[str, list[float]]:
    """For each stream marker, the arrival times (wall clock) of the model requests that contain it."""
    arrivals: dict[str, list[float]] = {}
    for request in requests:
        text = " ".join(str(m.get("content")) for m in request.get("messages") or [])
        for marker in set(re.findall(r"dc-[\w-]+", text)):
            arrivals.setdefault(marker, []).append(float(request.get("time", 0.0)))
    return arrivals


def _model_view(results: list[Disconnect], arrivals: dict[str, list[float]]) -> dict[str, Any]:
    """Model requests per stream (streams that got a token), and what became of the streams that got none."""
    per_stream = Counter(len(arrivals.get(r.marker, [])) for r in results if r.first_token_s is not None)
    stuck = [r for r in results if r.first_token_s is None]
    return {
        "model_requests_per_stream": {str(k): v for k, v in sorted(per_stream.items())},
        "without_token": [{"marker": r.marker, "frames": r.frames, "model_requests": len(arrivals.get(r.marker, [])),
                           "model_request_after_s": round(min(arrivals[r.marker]) - r.started, 2)
                           if arrivals.get(r.marker) else None} for r in stuck][:20],
    }


async def _disconnects(url: str, pid: int, redis_url: str, model_url: str, args: argparse.Namespace,
                       outcome: Outcome) -> None:
    # The model's request log is kept for the whole scenario (markers are unique): a stream of the
    # warm-up whose model request comes late is still seen.
    await _offline_reset(model_url, stop_word=False)
    phases: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    storms: dict[str, list[Disconnect]] = {}
    for label in ("warm-up", "measured"):
        t = time.monotonic()
        results = await _storm(url, label, args.disconnect_clients, args.wave, args.token_timeout)
        storms[label] = results
        storm_s = time.monotonic() - t
        settle = await _settle(url, redis_url, args.observe, args.lock_bound)
        view = _model_view(results, _marker_arrivals(await _offline_requests(model_url)))
        stat = process_stats(pid)
        stats[label] = {"rss_mib": round(stat.rss_mib, 1), "threads": stat.threads,
                        "peak_rss_mib": round(stat.peak_rss_mib, 1)}
        got = [r.first_token_s for r in results if r.first_token_s is not None]
        phases[label] = {
            "streams": len(results), "storm_s": round(storm_s, 2), "got_token": len(got),
            "statuses": dict(Counter(str(r.status) for r in results)),
            "errors": [f"{r.marker}: {r.error}" for r in results if r.error][:20],
            "no_token": len(results) - len(got),
            "no_token_by_wave": dict(Counter(r.marker.split("-")[-3] for r in results if r.first_token_s is None)),
            "first_token_p50_s": percentile(got, 50), "first_token_max_s": _max(got),
            **view, **settle,
        }
        print(f"  {label}: model requests per stream {view['model_requests_per_stream']}, lock keys "
              f"left {settle['locks_at_end']}, RSS {stat.rss_mib:.1f} MiB, threads {stat.threads}", flush=True)
    # The warm-up's streams, watched until the end of the scenario.
    arrivals = _marker_arrivals(await _offline_requests(model_url))
    phases["warm-up"].update(_model_view(storms["warm-up"], arrivals))
    measured = storms["measured"]

    phase = phases["measured"]
    warm = phases["warm-up"]
    outcome.check(f"every stream got its first token frame (within {args.token_timeout:g} s) and was disconnected",
                  f"{phase['got_token']} of {phase['streams']} (warm-up {warm['got_token']} of {warm['streams']}); "
                  f"HTTP statuses {phase['statuses']}; without a token, by wave: {phase['no_token_by_wave']} "
                  f"(warm-up {warm['no_token_by_wave']}); their model request came after (s): "
                  f"{_stuck_delays(phase)} (warm-up {_stuck_delays(warm)})",
                  phase["got_token"] == phase["streams"] and warm["got_token"] == warm["streams"])
    per_stream = phase["model_requests_per_stream"]
    outcome.check(f"no model request after the disconnect (marker in exactly 1 model request, watched "
                  f"{args.observe:g} s)",
                  f"streams by model requests: {per_stream} (warm-up {warm['model_requests_per_stream']})",
                  set(per_stream) == {"1"} and set(warm["model_requests_per_stream"]) == {"1"})
    outcome.check(f"no leaked lock: no {LOCK_PATTERN} key within {args.lock_bound:g} s",
                  f"0 keys after {_fmt_s(phase['locks_zero_after_s'])} (warm-up "
                  f"{_fmt_s(warm['locks_zero_after_s'])}); {phase['locks_at_end']} at the end",
                  bool(phase["locks_ok"] and warm["locks_ok"]))

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        semaphore = asyncio.Semaphore(10)

        async def saved(sid: str) -> int:
            async with semaphore:
                response = await client.get(f"/session/{sid}")
                return len(response.json().get("messages", [])) if response.status_code == 200 else -1

        counts = await asyncio.gather(*(saved(r.session_id) for r in measured if r.session_id))
    saved_turns = sum(1 for c in counts if c > 0)
    unreadable = sum(1 for c in counts if c < 0)
    outcome.check("no disconnected turn saved (the sessions stay empty)",
                  f"{len(counts)} sessions: {saved_turns} with messages, {unreadable} unreadable",
                  saved_turns == 0 and unreadable == 0)
    before, after = stats["warm-up"], stats["measured"]
    rss_limit = before["rss_mib"] * (1 + args.rss_tolerance / 100)
    outcome.check(f"no growth after the storm: RSS <= +{args.rss_tolerance:g}%, threads <= +{args.thread_tolerance}",
                  f"RSS {before['rss_mib']:.1f} -> {after['rss_mib']:.1f} MiB, threads {before['threads']} -> "
                  f"{after['threads']}",
                  after["rss_mib"] <= rss_limit and after["threads"] <= before["threads"] + args.thread_tolerance)
    outcome.key_numbers = (
        f"{phase['streams']} streams in waves of {args.wave} (after a warm-up storm of as many): "
        f"{phase['got_token']} got a token ({phase['no_token']} none within {args.token_timeout:g} s); model requests "
        f"per stream {per_stream}; lock keys 0 after {_fmt_s(phase['locks_zero_after_s'])}; {saved_turns} turns "
        f"saved; RSS {before['rss_mib']:.0f} -> {after['rss_mib']:.0f} MiB, threads {before['threads']} -> "
        f"{after['threads']}"
    )
    outcome.details.update(phases=phases, process=stats,
                           disconnects=[asdict(r) for r in measured])


def _stuck_delays(phase: dict[str, Any]) -> str:
    """When the model got the requests of the streams that saw no token, from each stream's start."""
    delays = [w["model_request_after_s"] for w in phase["without_token"]]
    return "[" + ", ".join("never" if d is None else f"{d:.1f}" for d in delays) + "]"


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def scenario_disconnects(args: argparse.Namespace, outcome: Outcome) -> None:
    outcome.details["settings"] = {
        "streams": args.disconnect_clients, "wave": args.wave, "observe_s": args.observe,
        "message": "[[latency:0:0.3]] [[tokens:30]] storm question <marker>", "max_turns": 3,
        "model": {"stop_word": False},
    }
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model = stack.enter_context(offline_model())
        api = stack.enter_context(api_server(bench_api_env(redis_url, model)))
        try:
            asyncio.run(_disconnects(api.url, api.pid, redis_url, model, args, outcome))
        finally:
            outcome.details["api_log"] = _log_summary(api_log_lines(api))


# -- scenario: worker-kill --------------------------------------------------------------------------
async def _worker_kill(first: Any, second: Any, redis_url: str, args: argparse.Namespace, outcome: Outcome) -> None:
    ttl = args.kill_lease_ttl
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as a_client, \
            httpx.AsyncClient(base_url=second.url, timeout=30) as b_client:
        first_turn = await chat_attempt(a_client, 0, 0, "first turn, before the crash", None)
        if not first_turn.ok or not first_turn.session_id:
            raise RuntimeError(f"the first turn failed: {first_turn.outcome} {first_turn.detail}")
        sid = first_turn.session_id
        killed_message = "[[latency:0:0.5]] [[tokens:40]] the turn that is killed"
        tokens = 0
        lock_pttl: int | None = None
        kill_at = 0.0
        store = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            async with a_client.stream("POST", "/chat/stream",
                                       json={"message": killed_message, "session_id": sid}) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"the long run answered {response.status_code}")
                async for event, _ in sse_frames(response):
                    if event == "token":
                        tokens += 1
                        if tokens >= 3:
                            lock_pttl = int(await store.pttl(f"agent-api:lock:session:{sid}"))
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
            events.append({"t": round(attempt.start, 3), "latency_s": round(attempt.latency, 3),
                           "status": attempt.outcome})
            if attempt.ok:
                first_ok, after_turn = attempt.end, attempt
                break
            await asyncio.sleep(0.25)
        history = (await b_client.get(f"/session/{sid}")).json().get("messages", [])

    statuses = [e["status"] for e in events]
    before_ok = statuses[:-1] if first_ok is not None else statuses
    outcome.check("the dead worker held the session's lock when it was killed",
                  f"lock TTL left at the kill: {lock_pttl} ms" if lock_pttl is not None else "not read",
                  lock_pttl is not None and lock_pttl > 0)
    outcome.check("the second worker answers 409 while the lock lives (and nothing else before its 200)",
                  f"{statuses.count('409')} x 409 before the 200; others: "
                  f"{_fmt_counts(dict(Counter(s for s in before_ok if s != '409')))}",
                  statuses.count("409") > 0 and all(s == "409" for s in before_ok))
    bound = ttl + args.kill_bound
    outcome.check(f"the session answers 200 within LEASE_TTL + {args.kill_bound:g} s = {bound:g} s of the kill",
                  "no 200" if first_ok is None else f"200 after {first_ok:.2f} s",
                  first_ok is not None and first_ok <= bound)
    contents = [str(m.get("content")) for m in history]
    roles = [m.get("role") for m in history]
    expected_roles = ["user", "assistant", "user", "assistant"]
    intact = (roles == expected_roles and contents[0] == first_turn.message and contents[1] == first_turn.response
              and after_turn is not None and contents[2] == after_turn.message and contents[3] == after_turn.response
              and not any("killed" in c for c in contents) and "I can see 2 earlier messages" in contents[3])
    outcome.check("history intact: the first turn and the new one, the killed turn not saved",
                  f"{len(history)} messages, roles {roles}; killed turn stored: "
                  f"{any('killed' in c for c in contents)}", intact)
    outcome.key_numbers = (
        f"killed after {tokens} tokens (lock TTL {lock_pttl} ms left); second worker: "
        f"{statuses.count('409')} x 409, then 200 after {'-' if first_ok is None else f'{first_ok:.2f} s'} "
        f"(bound {bound:g} s); history {len(history)} messages, killed turn {'absent' if intact else 'see checks'}"
    )
    outcome.details.update(session_id=sid, tokens_before_kill=tokens, lock_pttl_ms=lock_pttl,
                           second_worker_attempts=events, first_200_after_kill_s=first_ok,
                           history=[{"role": m.get("role"), "content": m.get("content")} for m in history])


def scenario_worker_kill(args: argparse.Namespace, outcome: Outcome) -> None:
    outcome.details["settings"] = {"lease_ttl": args.kill_lease_ttl, "workers": "2 API processes, one Redis",
                                   "message": "[[latency:0:0.5]] [[tokens:40]] the turn that is killed"}
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model = stack.enter_context(offline_model())
        env = bench_api_env(redis_url, model, LEASE_TTL=str(args.kill_lease_ttl))
        first = stack.enter_context(api_server(env))
        second = stack.enter_context(api_server(env))
        try:
            asyncio.run(_worker_kill(first, second, redis_url, args, outcome))
        finally:
            outcome.details["api_log_first"] = _log_summary(api_log_lines(first))
            outcome.details["api_log_second"] = _log_summary(api_log_lines(second))


RUNNERS: dict[str, Callable[[argparse.Namespace, Outcome], None]] = {
    "redis-restart": scenario_redis_restart,
    "model-faults": scenario_model_faults,
    "disconnects": scenario_disconnects,
    "worker-kill": scenario_worker_kill,
}


def run_scenario(name: str, args: argparse.Namespace, command: str, revision: str) -> Outcome:
    outcome = Outcome(name, date=datetime.date.today().isoformat(), command=command, revision=revision)
    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _time_limit)
    signal.alarm(int(SCENARIO_TIME_LIMIT_S))
    try:
        RUNNERS[name](args, outcome)
    except Exception as exc:  # the scenario could not be run to its end: it fails, with the reason
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.details["traceback"] = traceback.format_exc().splitlines()[-12:]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    outcome.duration_s = round(time.monotonic() - start, 1)
    outcome.passed = outcome.error is None and bool(outcome.checks) and all(c.ok for c in outcome.checks)
    if outcome.error and not outcome.key_numbers:
        outcome.key_numbers = f"did not complete: {outcome.error[:160]}"
    return outcome


class ScenarioTimeout(Exception):
    pass


def _time_limit(signum: int, frame: Any) -> None:
    raise ScenarioTimeout(f"the scenario ran longer than {SCENARIO_TIME_LIMIT_S:.0f} s")


# -- report -----------------------------------------------------------------------------------------
def _verdict(outcome: dict[str, Any]) -> str:
    return "PASS" if outcome["passed"] else "**FAIL**"


def _doc(results: dict[str, dict[str, Any]]) -> str:
    rows = [[f"`{name}`", _verdict(o), o["key_numbers"].replace("|", "/"), o["date"]]
            for name in SCENARIOS if (o := results.get(name))]
    lines = [
        "## Faults: Redis restart, model failures, disconnects, a killed worker",
        "",
        "Each scenario starts what it needs on loopback (a real `redis-server`, the offline model in its own "
        "process, `agent-api serve` with one uvicorn worker, no API keys), runs a bounded load, stops everything and "
        "judges the run PASS or FAIL from the checks listed under the table (every check must hold).",
        "",
        "- `redis-restart`: Redis with `--appendonly yes --appendfsync always`; 20 clients each continue their own "
        "session with `POST /chat` (409 and 503 mean retry later); Redis is stopped with SIGTERM for 5 s in the "
        "middle and started again on the same port and data directory. 2 s before the outage and 10 s after it, a "
        "burst of 60 concurrent `GET /session` (peak traffic: the API's Redis pool grows, and after the restart the "
        "burst reaches connections opened before it). The API runs with LEASE_TTL=10, so that a lock orphaned by "
        "the outage (its run could not release it) lapses within the run.",
        "- `model-faults`: the offline model fails 10% of its requests with 500 and lets another 10% hang past "
        "LLM_TIMEOUT=2 s (LLM_MAX_RETRIES=1); 20 clients for 30 s, half continuing sessions with `POST /chat`, "
        "half with `POST /chat/stream`; model requests counted from the offline model's log.",
        "- `disconnects`: 500 streams (in waves of 100, after a warm-up storm of as many) asking for 30 tokens "
        "0.3 s apart with `max_turns` 3 and the model's stop word off (an uncancelled run would call the model 3 "
        "times), each dropping its connection right after its first `token` frame; watched for 10 s afterwards "
        "(longer than a whole reply).",
        "- `worker-kill`: two API processes on one Redis, both with LEASE_TTL=3; a stream of 40 tokens 0.5 s apart "
        "on a session is cut by SIGKILLing its worker; the other worker then serves the session.",
        "",
        markdown_table(["Scenario", "Verdict", "Key numbers", "Date"], rows),
        "",
    ]
    for name in SCENARIOS:
        o = results.get(name)
        if not o:
            continue
        lines += [f"`{name}` checks ({o['duration_s']:.0f} s run, service at commit {o['revision']}):", ""]
        lines.append(markdown_table(["Check", "Measured", "Holds"],
                                    [[c["name"], c["measured"].replace("|", "/"), "yes" if c["ok"] else "**no**"]
                                     for c in o["checks"]]))
        if o.get("error"):
            lines += ["", f"The scenario did not complete: `{o['error'][:300]}`."]
        if not o["passed"]:
            logs = [line for key in ("api_log", "api_log_first", "api_log_second")
                    for line in o["details"].get(key, []) if STARTUP_NOTICE not in line][:6]
            if logs:
                lines += ["", "API log (warnings and errors, most frequent first):", "", "```text", *logs, "```"]
            else:
                lines += ["", "The API logged no warning or error during the run (besides the start-up notice that "
                          "authentication is off)."]
        lines.append("")
    lines += [
        f"- Machine: a {os.cpu_count()}-core shared machine; Python {platform.python_version()} on "
        f"{platform.system()}.",
        "- Reproduce: `.venv/bin/python bench/faults.py` (or `--scenario NAME`; every request's outcome: "
        "`bench/results/faults.json`).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], action="append",
                        help="scenario to run (repeatable; default: all)")
    parser.add_argument("--clients", type=int, default=20, help="clients of redis-restart and model-faults (20)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of load in redis-restart (at least; see --outage) and model-faults (30)")
    parser.add_argument("--think", type=float, default=1.0, help="pause of a client after a successful turn, s (1)")
    parser.add_argument("--retry-delay", type=float, default=0.5, help="pause after a 409/503, s (0.5)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="client time-out per request, s (60)")
    parser.add_argument("--model-latency", type=float, default=0.05, help="the model's first-token delay, s (0.05)")
    parser.add_argument("--outage-at", type=float, default=10.0, help="redis-restart: stop Redis after, s (10)")
    parser.add_argument("--outage", type=float, default=5.0, help="redis-restart: Redis down for, s (5)")
    parser.add_argument("--lease-ttl", type=float, default=10.0, help="redis-restart: the API's LEASE_TTL (10)")
    parser.add_argument("--burst", type=int, default=60,
                        help="redis-restart: concurrent GET /session 2 s before the outage and --recovery-bound s "
                             "after it (60)")
    parser.add_argument("--fail-fast-bound", type=float, default=10.0,
                        help="redis-restart: longest answer allowed during the outage, s (10)")
    parser.add_argument("--recovery-bound", type=float, default=10.0,
                        help="redis-restart: first 200 after the restart within, s (10)")
    parser.add_argument("--llm-timeout", type=float, default=2.0, help="model-faults: the API's LLM_TIMEOUT (2)")
    parser.add_argument("--llm-max-retries", type=int, default=1, help="model-faults: LLM_MAX_RETRIES (1)")
    parser.add_argument("--model-hang", type=float, default=5.0,
                        help="model-faults: how long a hanging model request sleeps, s (5)")
    parser.add_argument("--disconnect-clients", type=int, default=500, help="disconnects: streams per storm (500)")
    parser.add_argument("--wave", type=int, default=100, help="disconnects: streams started at once (100)")
    parser.add_argument("--token-timeout", type=float, default=30.0,
                        help="disconnects: a stream without a token frame after this many s fails (30)")
    parser.add_argument("--observe", type=float, default=10.0,
                        help="disconnects: watch the model and the locks after a storm for, s (10)")
    parser.add_argument("--lock-bound", type=float, default=5.0,
                        help="disconnects: no lock key left after, s (5)")
    parser.add_argument("--rss-tolerance", type=float, default=10.0, help="disconnects: allowed RSS growth, %% (10)")
    parser.add_argument("--thread-tolerance", type=int, default=5, help="disconnects: allowed new threads (5)")
    parser.add_argument("--kill-lease-ttl", type=float, default=3.0, help="worker-kill: LEASE_TTL of both workers (3)")
    parser.add_argument("--kill-bound", type=float, default=5.0,
                        help="worker-kill: a 200 within LEASE_TTL + this many s (5)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    chosen = args.scenario or ["all"]
    names = SCENARIOS if "all" in chosen else [s for s in SCENARIOS if s in chosen]
    if args.clients < 2 or args.duration <= 0 or args.wave < 1 or args.disconnect_clients < 1:
        parser.error("--clients must be at least 2; --duration, --wave and --disconnect-clients positive")
    if args.outage_at + args.outage >= args.duration:
        parser.error("the outage must end before --duration")

    raise_open_files_limit()
    command = " ".join([".venv/bin/python bench/faults.py", *(argv if argv is not None else sys.argv[1:])])
    revision = service_revision()
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the machine is busy (1-minute load average {load:.2f})", file=sys.stderr)

    path = RESULTS_DIR / "faults.json"
    try:
        stored: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        stored = {}
    results: dict[str, dict[str, Any]] = stored.get("scenarios", {})
    outcomes: list[Outcome] = []
    for name in names:
        print(f"== {name}", flush=True)
        outcome = run_scenario(name, args, command, revision)
        outcomes.append(outcome)
        results[name] = asdict(outcome)
        print(text_table(["check", "measured", "holds"], [[c.name, c.measured, "yes" if c.ok else "NO"]
                                                            for c in outcome.checks]))
        if outcome.error:
            print(f"error: {outcome.error}")
            print("\n".join(outcome.details.get("traceback", [])))
        print(f"{name}: {'PASS' if outcome.passed else 'FAIL'} ({outcome.duration_s:.0f} s) - {outcome.key_numbers}\n",
              flush=True)
        save_raw("faults", {"benchmark": "faults", "machine": {"cpus": os.cpu_count(),
                                                               "python": platform.python_version()},
                            "scenarios": {n: results[n] for n in SCENARIOS if n in results}})

    print(text_table(["scenario", "verdict", "key numbers"],
                     [[o.scenario, "PASS" if o.passed else "FAIL", o.key_numbers] for o in outcomes]))
    print("\nraw results: bench/results/faults.json")
    if not args.no_doc:
        update_doc_section("faults", _doc(results))
        print("updated: docs/benchmarks.md (section 'faults')")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
