"""Engines benchmark: the same one-assistant team run by AG2 (``research``) and by AutoGen
AgentChat (``research_ac``).

Setup: one uvicorn worker of ``agent-api serve``, a real redis-server and the offline model in its
own process, every process started here on a loopback port and stopped at the end. Each scenario
runs against a fresh API process, after a short warm-up, for each team in turn:

1. CPU per conversation: ``--conversations`` (default 200) one-turn conversations (``POST /chat``,
   a new session each), ``--cpu-concurrency`` (default 10) at a time, with a model that answers at
   once (20 words). The API process's CPU time (user + system, from /proc) over the whole block,
   divided by the conversations: what one conversation costs the service.
2. First-token delay at 200 concurrent streams: ``--concurrent`` (default 200) ``POST /chat/stream``
   started at the same moment, the model waiting 0.5 s before its first token and 0.05 s between
   tokens (20 words). A stream's delay is the time to its first token of the answer minus the
   model's 0.5 s. Repeated ``--repeat`` times (default 3); the median run by p50 is reported.

The machine is a small shared box: the figures are medians and vary from run to run; compare the
two engines within one run. The script prints a table, saves the numbers to
``bench/results/engines.json`` and rewrites the ``engines`` section of ``docs/benchmarks.md``.

    .venv/bin/python bench/engines.py
    .venv/bin/python bench/engines.py --quick   # a smoke run, nothing published
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from harness.cli import add_output_flags, output, parse_args, start
from harness.load import offline_reset, sharded_clients, sse_frames
from harness.measure import measured, percentile
from harness.results import run_metadata, shown
from harness.services import api_server, bench_api_env, offline_model, redis_server
from harness.tables import fmt, markdown_table, text_table

TEAMS = {"research": "ag2", "research_ac": "agentchat"}
FIRST_TOKEN_DELAY = 0.5
TOKEN_DELAY = 0.05
REPLY_TOKENS = 20
QUICK = {"conversations": 10, "concurrent": 10, "repeat": 1, "warmup": 1}


@dataclass
class CpuRun:
    team: str
    conversations: int
    errors: int
    api_cpu_s: float
    wall_s: float

    @property
    def cpu_ms_per_conversation(self) -> float:
        return 1000 * self.api_cpu_s / max(1, self.conversations - self.errors)


@dataclass
class StreamRun:
    team: str
    repeat: int
    streams: int
    errors: int
    delays_ms: list[float] = field(default_factory=list)
    api_cpu_s: float = 0.0

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.delays_ms, 50) if self.delays_ms else None

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.delays_ms, 95) if self.delays_ms else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--conversations", type=int, default=200, help="one-turn conversations per team in scenario 1 (default: 200)")
    add("--cpu-concurrency", type=int, default=10, help="conversations at a time in scenario 1 (default: 10)")
    add("--concurrent", type=int, default=200, help="streams at once in scenario 2 (default: 200)")
    add("--repeat", type=int, default=3, help="runs of scenario 2 per team; the median is reported (default: 3)")
    add("--warmup", type=int, default=3, help="warm-up requests before each scenario (default: 3)")
    add("--timeout", type=float, default=120.0, help="client time-out per request, s (default: 120)")
    add_output_flags(parser)
    return parser


async def _chat(client: httpx.AsyncClient, team: str, i: int) -> bool:
    try:
        response = await client.post("/chat", json={"message": f"Conversation {i}: explain tides.", "agent": team})
        return response.status_code == 200 and bool(response.json().get("response"))
    except httpx.HTTPError:
        return False


async def _cpu(url: str, pid: int, model_url: str, team: str, args: argparse.Namespace) -> CpuRun:
    await offline_reset(model_url, first_token_delay=0.0, token_delay=0.0, reply_tokens=REPLY_TOKENS)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout) as client:
        for i in range(args.warmup):
            await _chat(client, team, -i)
        limit = asyncio.Semaphore(args.cpu_concurrency)

        async def one(i: int) -> bool:
            async with limit:
                return await _chat(client, team, i)

        with measured(pid) as usage:
            ok = await asyncio.gather(*(one(i) for i in range(args.conversations)))
    return CpuRun(team, args.conversations, ok.count(False), usage.api_cpu_s, usage.wall_s)


async def _stream(client: httpx.AsyncClient, team: str, i: int, go: asyncio.Event) -> float | None:
    await go.wait()
    sent = time.perf_counter()
    try:
        body = {"message": f"Stream {i}: explain tides.", "agent": team}
        async with client.stream("POST", "/chat/stream", json=body) as response:
            if response.status_code != 200:
                return None
            first: float | None = None
            async for event, data in sse_frames(response):
                if event == "token" and data.get("chunk") and first is None:
                    first = time.perf_counter() - sent
                if event == "error":
                    return None
                if event == "done":
                    return None if first is None else 1000 * (first - FIRST_TOKEN_DELAY)
    except httpx.HTTPError:
        return None
    return None


async def _streams(url: str, pid: int, model_url: str, team: str, repeat: int, args: argparse.Namespace) -> StreamRun:
    await offline_reset(
        model_url, first_token_delay=FIRST_TOKEN_DELAY, token_delay=TOKEN_DELAY, reply_tokens=REPLY_TOKENS
    )
    clients = sharded_clients(url, args.concurrent, args.timeout)
    try:
        warm = asyncio.Event()
        warm.set()
        for i in range(args.warmup):
            await _stream(clients[0], team, -i, warm)
        go = asyncio.Event()
        tasks = [asyncio.ensure_future(_stream(clients[i % len(clients)], team, i, go)) for i in range(args.concurrent)]
        await asyncio.sleep(0.2)  # every task is waiting on the start line
        with measured(pid) as usage:
            go.set()
            results = await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()
    delays = [r for r in results if r is not None]
    return StreamRun(team, repeat, args.concurrent, len(results) - len(delays), delays, usage.api_cpu_s)


def _measure(args: argparse.Namespace) -> tuple[list[CpuRun], list[StreamRun]]:
    cpu_runs: list[CpuRun] = []
    stream_runs: list[StreamRun] = []
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        model_url = stack.enter_context(offline_model(reply_tokens=REPLY_TOKENS))
        env = bench_api_env(redis_url, model_url)
        for team in TEAMS:
            with api_server(env) as api:
                cpu = asyncio.run(_cpu(api.url, api.pid, model_url, team, args))
            cpu_runs.append(cpu)
            print(
                f"{team}: CPU per conversation {cpu.cpu_ms_per_conversation:.1f} ms "
                f"({cpu.conversations} conversations, {cpu.errors} errors, wall {cpu.wall_s:.1f} s)",
                flush=True,
            )
            for k in range(1, args.repeat + 1):
                with api_server(env) as api:
                    run = asyncio.run(_streams(api.url, api.pid, model_url, team, k, args))
                stream_runs.append(run)
                print(
                    f"{team}: {run.streams} concurrent streams, run {k}/{args.repeat}: first-token delay "
                    f"p50 {fmt(run.p50_ms, 1)} ms, p95 {fmt(run.p95_ms, 1)} ms; errors {run.errors}; "
                    f"API CPU {run.api_cpu_s:.2f} s",
                    flush=True,
                )
    return cpu_runs, stream_runs


def _rows(cpu_runs: list[CpuRun], stream_runs: list[StreamRun]) -> list[list[str]]:
    rows = []
    for team, engine in TEAMS.items():
        cpu = next(r for r in cpu_runs if r.team == team)
        runs = sorted((r for r in stream_runs if r.team == team), key=lambda r: r.p50_ms or float("inf"))
        median = runs[len(runs) // 2]
        p50s = [r.p50_ms for r in runs if r.p50_ms is not None]
        spread = f"{fmt(min(p50s), 0)}–{fmt(max(p50s), 0)}" if p50s else "-"
        rows.append(
            [
                f"`{team}`",
                engine,
                fmt(cpu.cpu_ms_per_conversation, 1),
                fmt(median.p50_ms, 1),
                fmt(median.p95_ms, 1),
                spread,
                fmt(statistics.median(r.api_cpu_s for r in runs), 2),
                str(cpu.errors + sum(r.errors for r in runs)),
            ]
        )
    return rows


HEADER = [
    "Team",
    "Engine",
    "CPU per conversation, ms",
    "First-token delay p50, ms",
    "p95, ms",
    "p50 over runs, ms",
    "API CPU per stream burst, s",
    "Errors",
]


def _doc(rows: list[list[str]], args: argparse.Namespace, command: str, revision: str, load: float) -> str:
    return "\n".join(
        [
            "## Engines: AG2 and AgentChat",
            "",
            "The same one-assistant team run by each engine: `research` (AG2, the classic AutoGen API: a run",
            "is a thread of the pool) and `research_ac` (AutoGen AgentChat: a run is a task in the event loop).",
            f"CPU per conversation: {args.conversations} one-turn `POST /chat` conversations, "
            f"{args.cpu_concurrency} at a time, a model",
            "that answers at once; the API process's CPU time divided by the conversations. First-token delay:",
            f"{args.concurrent} `POST /chat/stream` at once, the model waiting {FIRST_TOKEN_DELAY * 1000:.0f} ms "
            f"before its first token ({TOKEN_DELAY * 1000:.0f} ms between",
            f"tokens, {REPLY_TOKENS} words); the time to the first token of the answer minus those "
            f"{FIRST_TOKEN_DELAY * 1000:.0f} ms, median run of {args.repeat}.",
            "One uvicorn worker, a real redis-server, the offline model in its own process; a fresh API process",
            "per scenario. The machine is a noisy 2-core box: read the medians, and compare within one run.",
            "",
            markdown_table(HEADER, rows),
            "",
            f"Command: `{command}`; revision `{revision}`; load average at start {load:.2f}.",
            "Raw numbers: `bench/results/engines.json`.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_args(parser, argv, QUICK)
    if min(args.conversations, args.cpu_concurrency, args.concurrent, args.repeat) < 1 or args.warmup < 0:
        parser.error("sizes must be positive and --warmup not negative")
    out = output(args)
    begun = start("engines.py", argv, connections=args.concurrent)
    cpu_runs, stream_runs = _measure(args)
    rows = _rows(cpu_runs, stream_runs)
    print()
    print(text_table(HEADER, rows))
    raw: dict[str, Any] = {
        **run_metadata("engines", begun.command, begun.revision, begun.load),
        "settings": {
            "first_token_delay_s": FIRST_TOKEN_DELAY,
            "token_delay_s": TOKEN_DELAY,
            "reply_tokens": REPLY_TOKENS,
            "cpu_concurrency": args.cpu_concurrency,
            "warmup": args.warmup,
        },
        "cpu_runs": [{**asdict(r), "cpu_ms_per_conversation": r.cpu_ms_per_conversation} for r in cpu_runs],
        "stream_runs": [{**asdict(r), "p50_ms": r.p50_ms, "p95_ms": r.p95_ms} for r in stream_runs],
    }
    print(f"\nraw numbers: {shown(out.save('engines', raw))}")
    out.report("engines", _doc(rows, args, begun.command, begun.revision, begun.load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
