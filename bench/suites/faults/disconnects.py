"""``disconnects``: storms of streams that drop their connection after the first token."""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import time
from collections import Counter
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from harness.load import offline_requests, offline_reset, sharded_clients, sse_frames
from harness.measure import percentile, process_stats
from harness.services import api_log_lines, api_server, bench_api_env, offline_model, redis_server

from suites.faults.outcome import Outcome
from suites.faults.probes import LOCK_PATTERN, lock_keys, log_summary, max_or_zero, runs_in_flight


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
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(c) for c in sharded_clients(url, size, timeout)]
            batch = await asyncio.gather(
                *(
                    _disconnect_one(clients[i % len(clients)], f"dc-{label}-{w}-{i}-{secrets.token_hex(4)}", timeout)
                    for i in range(size)
                )
            )
        results.extend(batch)
        print(
            f"  {label} wave {w + 1}: {sum(r.first_token_s is not None for r in batch)}/{size} streams got a "
            f"token and disconnected",
            flush=True,
        )
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
        locks = await lock_keys(redis_url)
        if not locks and locks_zero_at is None:
            locks_zero_at = elapsed
        runs = await runs_in_flight(url)
        if runs == 0 and runs_zero_at is None:
            runs_zero_at = elapsed
        if elapsed >= observe:
            break
        await asyncio.sleep(0.5)
    return {
        "locks_zero_after_s": locks_zero_at,
        "locks_at_end": len(locks),
        "lock_samples": locks[:5],
        "runs_in_flight_zero_after_s": runs_zero_at,
        "runs_in_flight_at_end": runs,
        "locks_ok": locks_zero_at is not None and locks_zero_at <= lock_bound and not locks,
    }


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
        "without_token": [
            {
                "marker": r.marker,
                "frames": r.frames,
                "model_requests": len(arrivals.get(r.marker, [])),
                "model_request_after_s": round(min(arrivals[r.marker]) - r.started, 2)
                if arrivals.get(r.marker)
                else None,
            }
            for r in stuck
        ][:20],
    }


async def _disconnects(
    url: str, pid: int, redis_url: str, model_url: str, args: argparse.Namespace, outcome: Outcome
) -> None:
    # The model's request log is kept for the whole scenario (markers are unique): a stream of the
    # warm-up whose model request comes late is still seen.
    await offline_reset(model_url, stop_word=False)
    phases: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    storms: dict[str, list[Disconnect]] = {}
    for label in ("warm-up", "measured"):
        t = time.monotonic()
        results = await _storm(url, label, args.disconnect_clients, args.wave, args.token_timeout)
        storms[label] = results
        storm_s = time.monotonic() - t
        settle = await _settle(url, redis_url, args.observe, args.lock_bound)
        view = _model_view(results, _marker_arrivals(await offline_requests(model_url)))
        stat = process_stats(pid)
        stats[label] = {
            "rss_mib": round(stat.rss_mib, 1),
            "threads": stat.threads,
            "peak_rss_mib": round(stat.peak_rss_mib, 1),
        }
        got = [r.first_token_s for r in results if r.first_token_s is not None]
        phases[label] = {
            "streams": len(results),
            "storm_s": round(storm_s, 2),
            "got_token": len(got),
            "statuses": dict(Counter(str(r.status) for r in results)),
            "errors": [f"{r.marker}: {r.error}" for r in results if r.error][:20],
            "no_token": len(results) - len(got),
            "no_token_by_wave": dict(Counter(r.marker.split("-")[-3] for r in results if r.first_token_s is None)),
            "first_token_p50_s": percentile(got, 50),
            "first_token_max_s": max_or_zero(got),
            **view,
            **settle,
        }
        print(
            f"  {label}: model requests per stream {view['model_requests_per_stream']}, lock keys "
            f"left {settle['locks_at_end']}, RSS {stat.rss_mib:.1f} MiB, threads {stat.threads}",
            flush=True,
        )
    # The warm-up's streams, watched until the end of the scenario.
    arrivals = _marker_arrivals(await offline_requests(model_url))
    phases["warm-up"].update(_model_view(storms["warm-up"], arrivals))
    measured = storms["measured"]

    phase = phases["measured"]
    warm = phases["warm-up"]
    outcome.check(
        f"every stream got its first token frame (within {args.token_timeout:g} s) and was disconnected",
        f"{phase['got_token']} of {phase['streams']} (warm-up {warm['got_token']} of {warm['streams']}); "
        f"HTTP statuses {phase['statuses']}; without a token, by wave: {phase['no_token_by_wave']} "
        f"(warm-up {warm['no_token_by_wave']}); their model request came after (s): "
        f"{_stuck_delays(phase)} (warm-up {_stuck_delays(warm)})",
        phase["got_token"] == phase["streams"] and warm["got_token"] == warm["streams"],
    )
    per_stream = phase["model_requests_per_stream"]
    outcome.check(
        f"no model request after the disconnect (marker in exactly 1 model request, watched {args.observe:g} s)",
        f"streams by model requests: {per_stream} (warm-up {warm['model_requests_per_stream']})",
        set(per_stream) == {"1"} and set(warm["model_requests_per_stream"]) == {"1"},
    )
    outcome.check(
        f"no leaked lock: no {LOCK_PATTERN} key within {args.lock_bound:g} s",
        f"0 keys after {_fmt_s(phase['locks_zero_after_s'])} (warm-up "
        f"{_fmt_s(warm['locks_zero_after_s'])}); {phase['locks_at_end']} at the end",
        bool(phase["locks_ok"] and warm["locks_ok"]),
    )

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        semaphore = asyncio.Semaphore(10)

        async def saved(sid: str) -> int:
            async with semaphore:
                response = await client.get(f"/session/{sid}")
                return len(response.json().get("messages", [])) if response.status_code == 200 else -1

        counts = await asyncio.gather(*(saved(r.session_id) for r in measured if r.session_id))
    saved_turns = sum(1 for c in counts if c > 0)
    unreadable = sum(1 for c in counts if c < 0)
    outcome.check(
        "no disconnected turn saved (the sessions stay empty)",
        f"{len(counts)} sessions: {saved_turns} with messages, {unreadable} unreadable",
        saved_turns == 0 and unreadable == 0,
    )
    before, after = stats["warm-up"], stats["measured"]
    rss_limit = before["rss_mib"] * (1 + args.rss_tolerance / 100)
    outcome.check(
        f"no growth after the storm: RSS <= +{args.rss_tolerance:g}%, threads <= +{args.thread_tolerance}",
        f"RSS {before['rss_mib']:.1f} -> {after['rss_mib']:.1f} MiB, threads {before['threads']} -> {after['threads']}",
        after["rss_mib"] <= rss_limit and after["threads"] <= before["threads"] + args.thread_tolerance,
    )
    outcome.key_numbers = (
        f"{phase['streams']} streams in waves of {args.wave} (after a warm-up storm of as many): "
        f"{phase['got_token']} got a token ({phase['no_token']} none within {args.token_timeout:g} s); model requests "
        f"per stream {per_stream}; lock keys 0 after {_fmt_s(phase['locks_zero_after_s'])}; {saved_turns} turns "
        f"saved; RSS {before['rss_mib']:.0f} -> {after['rss_mib']:.0f} MiB, threads {before['threads']} -> "
        f"{after['threads']}"
    )
    outcome.details.update(phases=phases, process=stats, disconnects=[asdict(r) for r in measured])


def _stuck_delays(phase: dict[str, Any]) -> str:
    """When the model got the requests of the streams that saw no token, from each stream's start."""
    delays = [w["model_request_after_s"] for w in phase["without_token"]]
    return "[" + ", ".join("never" if d is None else f"{d:.1f}" for d in delays) + "]"


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def run(args: argparse.Namespace, outcome: Outcome) -> None:
    """Run the scenario: start what it needs, load it, judge the result into ``outcome``."""
    outcome.details["settings"] = {
        "streams": args.disconnect_clients,
        "wave": args.wave,
        "observe_s": args.observe,
        "message": "[[latency:0:0.3]] [[tokens:30]] storm question <marker>",
        "max_turns": 3,
        "model": {"stop_word": False},
    }
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model = stack.enter_context(offline_model())
        api = stack.enter_context(api_server(bench_api_env(redis_url, model)))
        try:
            asyncio.run(_disconnects(api.url, api.pid, redis_url, model, args, outcome))
        finally:
            outcome.details["api_log"] = log_summary(api_log_lines(api))
