"""Redis pool: the client CPU of one command through redis-py's BlockingConnectionPool and through
the service's LeanBlockingPool (agent_api/services/redis_pool.py), side by side in one run.

A throw-away redis-server on a loopback port; in this process, on uvloop as the service runs, one
asyncio client per pool (50 connections at most, decoded replies, as the service configures them).
Each measurement sends ``--commands`` (default 20000) GETs of one key, one at a time (1 concurrent
caller) and from 50 concurrent callers, and divides this process's CPU time (user + system) by the
commands: what the client side of a round trip costs, redis-server's CPU excluded. Each pool and
concurrency is measured ``--repeat`` times (default 5), the pools alternating; medians are reported
with their range.

    .venv/bin/python bench/redis_pool.py
    .venv/bin/python bench/redis_pool.py --quick   # a smoke run, nothing published
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import redis.asyncio as aioredis
import uvloop
from harness.cli import add_output_flags, output, parse_args, start
from harness.results import run_metadata
from harness.services import redis_server
from harness.tables import fmt, markdown_table, text_table
from redis.asyncio.connection import BlockingConnectionPool

from agent_api.services.redis_pool import LeanBlockingPool

POOLS: dict[str, type[BlockingConnectionPool]] = {
    "BlockingConnectionPool (redis-py)": BlockingConnectionPool,
    "LeanBlockingPool (the service)": LeanBlockingPool,
}
CONCURRENCY = (1, 50)
QUICK = {"commands": 500, "repeat": 1}


async def cpu_per_command(url: str, pool_class: type[BlockingConnectionPool], callers: int, commands: int) -> float:
    """Microseconds of this process's CPU per GET, ``commands`` of them from ``callers`` concurrent loops."""
    pool = pool_class.from_url(url, max_connections=50, timeout=5, decode_responses=True)
    client = aioredis.Redis.from_pool(pool)
    try:
        await client.set("bench:key", "value")

        async def caller(n: int) -> None:
            for _ in range(n):
                await client.get("bench:key")

        await asyncio.gather(*(caller(50) for _ in range(callers)))  # warm: every connection open
        began = time.process_time()
        await asyncio.gather(*(caller(commands // callers) for _ in range(callers)))
        return 1e6 * (time.process_time() - began) / (commands // callers * callers)
    finally:
        await client.aclose()


def measure(url: str, commands: int, repeat: int) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {name: {str(c): [] for c in CONCURRENCY} for name in POOLS}

    async def all_runs() -> None:
        for _ in range(repeat):
            for callers in CONCURRENCY:
                for name, pool_class in POOLS.items():
                    samples[name][str(callers)].append(await cpu_per_command(url, pool_class, callers, commands))

    uvloop.run(all_runs())
    return samples


def medians(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {name: {c: statistics.median(v) for c, v in by_c.items()} for name, by_c in samples.items()}


def report(data: dict[str, Any], previous: dict[str, Any]) -> str:
    meta = data["meta"]
    machine = meta["machine"]
    samples = data["samples"]
    before = medians(previous["samples"]) if previous.get("samples") else {}
    header = ["pool", "callers", "client CPU per GET (µs), median (range)", "previous run", "vs redis-py's pool"]
    stock = next(iter(POOLS))
    rows = []
    for name, by_c in samples.items():
        for callers, values in by_c.items():
            median = statistics.median(values)
            ratio = median / statistics.median(samples[stock][callers])
            rows.append(
                [
                    name,
                    callers,
                    f"{fmt(median, 1)} ({fmt(min(values), 1)}–{fmt(max(values), 1)})",
                    fmt(before.get(name, {}).get(callers), 1) if before else "-",
                    f"{ratio:.2f}×",
                ]
            )
    return "\n".join(
        [
            "## Redis pool: the client's CPU per round trip",
            "",
            f"redis-py's `BlockingConnectionPool` beside the service's `LeanBlockingPool` "
            f"(`agent_api/services/redis_pool.py`), in one process on uvloop against a throw-away redis-server "
            f"on loopback: {data['sizes']['commands']} `GET`s one at a time and from 50 concurrent callers, this "
            f"process's CPU (user + system) divided by the commands; medians of {data['sizes']['repeat']} runs, "
            f"the pools alternating. Machine: {machine['cpus']} cores, Python {machine['python']}; {meta['date']}; "
            f"1-minute load average at the start {fmt(machine['load_average_at_start'], 2)}. "
            "Reproduce: `.venv/bin/python bench/redis_pool.py` (raw numbers: `bench/results/redis_pool.json`).",
            "",
            markdown_table(header, rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20000, help="GETs per measurement (default: 20000)")
    parser.add_argument("--repeat", type=int, default=5, help="measurements per pool and concurrency (default: 5)")
    add_output_flags(parser)
    args = parse_args(parser, argv, QUICK)
    if args.commands < max(CONCURRENCY) or args.repeat < 1:
        parser.error(f"--commands must be at least {max(CONCURRENCY)} and --repeat positive")
    out = output(args)
    previous = {k: v for k, v in (out.load("redis_pool") or {}).items() if k != "previous"}
    begun = start("redis_pool.py", argv)
    with redis_server() as url:
        samples = measure(url, args.commands, args.repeat)
    data: dict[str, Any] = {
        "meta": run_metadata("redis_pool", begun.command, begun.revision, begun.load),
        "sizes": {"commands": args.commands, "repeat": args.repeat},
        "samples": samples,
        "previous": previous,
    }
    out.save("redis_pool", data)
    rows = [[name, c, fmt(v, 1)] for name, by_c in medians(samples).items() for c, v in by_c.items()]
    print(text_table(["pool", "callers", "client CPU per GET (µs)"], rows))
    out.report("redis-pool", report(data, previous))
    return 0


if __name__ == "__main__":
    sys.exit(main())
