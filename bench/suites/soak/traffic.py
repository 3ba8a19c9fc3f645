"""The soak's traffic: a mix of requests at a fixed rate, a pool of sessions, RSS samples of the API."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx
from harness.load import sse_frames
from harness.measure import process_stats

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


async def soak(url: str, pid: int, args: argparse.Namespace) -> tuple[list[Result], list[Sample], dict[str, Any]]:
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
                samples.append(
                    Sample(round(time.monotonic() - t0, 2), round(stat.rss_mib, 2), stat.threads, stat.cpu_seconds)
                )
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
                traffic.results.append(
                    Result("skipped", round(t, 3), 0.0, None, False, f"{len(in_flight)} requests in flight")
                )
                continue
            op, session = traffic.pick()
            task = asyncio.create_task(traffic.run(op, session, t))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if i and i % int(60 * args.rate) == 0:
                errors = sum(not r.ok for r in traffic.results)
                stat = samples[-1] if samples else None
                print(
                    f"  {t / 60:.0f} min: {len(traffic.results)} requests, {errors} errors, RSS "
                    f"{stat.rss_mib if stat else 0:.1f} MiB, threads {stat.threads if stat else 0}",
                    flush=True,
                )
        sent_for = time.monotonic() - t0
        if in_flight:
            await asyncio.wait(in_flight, timeout=args.timeout + 5)
        for task in in_flight:
            task.cancel()
        done.set()
        await sampling
        extra = {
            "late": late,
            "sent_for_s": sent_for,
            "unfinished": len(in_flight),
            "sessions_at_end": len(traffic.free) + len(traffic.busy),
        }
        return traffic.results, samples, extra
