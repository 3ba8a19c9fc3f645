"""Where a conversation's CPU goes: the team on its own, and the service around it, in one run.

The service's CPU per one-turn conversation is the team's work (AutoGen's chat and its model call
through the OpenAI SDK) plus the service's own (the HTTP request, the run's record, the queue, the
run's events and end, the session's turn). This script measures the two apart, each conversation
new, one at a time, the model answering after 100 ms (the offline model, in its own process):

1. ``team alone``: in this process, the service's engine as a worker process runs it
   (``engine.open_engine``: the same model client and changes to AutoGen and the OpenAI SDK, a
   run thread per conversation, the heap settled as a worker settles it), the ``research`` team
   run through ``TeamRunner.events``; no HTTP in front, no Redis, no queue. This process's CPU.
2. ``service, research``: the one-command production start (``agent-api serve`` with Redis, default
   process counts, as ``bench/scaling.py`` starts it), ``POST /chat`` to the ``research`` team.
   The CPU of all its processes, and split: the API processes, the worker processes, the rest
   (``serve`` itself).
3. ``service, model-free team``: the same service, ``POST /chat`` to a team that answers at once
   without AutoGen or a model (``bench/plugins/model_free.py``, loaded with ``TEAM_PLUGINS``):
   its run goes every step every run goes, so this is what the service costs on its own.

(2) minus (3) is what the team costs inside the service, to compare with (1). Each is measured
``--repeat`` times (default 3), alternating; medians with their range.

    .venv/bin/python bench/cost_split.py
    .venv/bin/python bench/cost_split.py --quick   # a smoke run, nothing published
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvloop
from harness import ROOT
from harness.cli import add_output_flags, output, parse_args, start
from harness.measure import command_label, descendants, process_stats
from harness.results import run_metadata
from harness.services import offline_model
from harness.tables import fmt, markdown_table, text_table
from pydantic import SecretStr
from suites.scaling.measure import CPU_MODEL_DELAY, service

from agent_api.agents.loader import load_teams
from agent_api.agents.registry import TeamRegistry
from agent_api.config import Settings
from agent_api.engine import open_engine
from agent_api.heap import settle_heap
from agent_api.models.chat import AgentRequest

QUICK = {"conversations": 30, "repeat": 1}
TEAM = "research"
MODEL_FREE = "model_free"  # bench/plugins/model_free.py
WITH_MODEL_FREE = {"TEAM_PLUGINS": MODEL_FREE, "PYTHONPATH": str(ROOT / "bench" / "plugins")}
WARM = 10  # conversations before each measurement
PARTS = ("api", "workers", "other")
Figures = dict[str, list[float]]


@contextlib.contextmanager
def settings_env_dropped() -> Iterator[None]:
    """This process's environment without any of the service's settings, restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.lower() in Settings.model_fields}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


def team_alone(model_url: str, conversations: int) -> float:
    """This process's CPU per conversation (ms): the team run by the service's engine, here."""
    with settings_env_dropped():
        settings = Settings(_env_file=None, openai_base_url=model_url, openai_api_key=SecretStr("bench"))  # type: ignore[call-arg]
    return uvloop.run(_team_alone(settings, conversations))


async def _team_alone(settings: Settings, conversations: int) -> float:
    teams = TeamRegistry(load_teams())
    team = teams.get(TEAM)
    max_turns = AgentRequest.model_fields["max_turns"].default
    async with contextlib.AsyncExitStack() as stack:
        _, runner = await open_engine(settings, teams, stack)
        settle_heap()

        async def converse(text: str) -> None:
            async for _ in runner.events(team, [], text, max_turns, stream=False):
                pass

        for i in range(WARM):
            await converse(f"Warm-up {i}: explain tides.")
        cpu = time.process_time()
        for i in range(conversations):
            await converse(f"Conversation {i} ({time.time()}): explain tides.")
        return 1e3 * (time.process_time() - cpu) / conversations


def _part(label: str) -> str:
    if "multiprocessing.spawn" in label:
        return "api"  # uvicorn's API processes
    if label.endswith(" worker"):
        return "workers"
    return "other"


def _cpu_by_part(root: int) -> dict[str, float]:
    totals = dict.fromkeys(PARTS, 0.0)
    for pid in [root, *descendants(root)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            totals["other" if pid == root else _part(command_label(pid))] += process_stats(pid).cpu_seconds
    return totals


async def _chats(url: str, team: str, count: int, tag: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for i in range(count):
            body = {"message": f"Conversation {tag}-{i}: explain tides.", "agent": team}
            response = await client.post("/chat", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"/chat to {team} answered {response.status_code}: {response.text[:200]}")


def service_split(url: str, pid: int, team: str, conversations: int) -> dict[str, float]:
    """The service's CPU per conversation (ms) to ``team``, in all and per kind of process."""
    asyncio.run(_chats(url, team, WARM, f"warm-{time.time()}"))
    before = _cpu_by_part(pid)
    asyncio.run(_chats(url, team, conversations, f"{time.time()}"))
    after = _cpu_by_part(pid)
    split = {part: 1e3 * (after[part] - before[part]) / conversations for part in PARTS}
    split["total"] = sum(split.values())
    return split


def measure(conversations: int, repeat: int) -> dict[str, Any]:
    alone: list[float] = []
    full: dict[str, Figures] = {"research": {}, "model_free": {}}
    with offline_model(first_token_delay=CPU_MODEL_DELAY) as model_url:
        for _ in range(repeat):
            alone.append(team_alone(model_url, conversations))
            # The production start as bench/scaling.py makes it, the model-free team added.
            with service("now", None, model_url, settings=WITH_MODEL_FREE) as svc:
                for name, team in (("research", TEAM), ("model_free", MODEL_FREE)):
                    for part, value in service_split(svc.url, svc.pid, team, conversations).items():
                        full[name].setdefault(part, []).append(value)
    return {"team_alone": alone, "service": full}


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return fmt(values[0], 2)
    return f"{fmt(statistics.median(values), 2)} ({fmt(min(values), 2)}–{fmt(max(values), 2)})"


def _median(values: list[float] | None) -> str:
    return fmt(statistics.median(values), 2) if values else "-"


def _team_part(service: dict[str, Figures]) -> list[float]:
    """Per run: the service's CPU per conversation to ``research`` minus that to the model-free team."""
    return [r - f for r, f in zip(service["research"]["total"], service["model_free"]["total"], strict=True)]


def rows(samples: dict[str, Any], previous: dict[str, Any]) -> list[list[str]]:
    service, old = samples["service"], previous.get("service") or {}
    figures: list[tuple[str, Figures, list[float] | None]] = [
        (
            "the service, `research` team (AutoGen, one model call)",
            service["research"],
            old.get("research", {}).get("total"),
        ),
        (
            "the service, a team without AutoGen or a model: the service's own",
            service["model_free"],
            old.get("model_free", {}).get("total"),
        ),
        (
            "the team's part in the service (the two above, subtracted)",
            {"total": _team_part(service)},
            _team_part(old) if old else None,
        ),
        (
            "the team alone, in one process (no HTTP, Redis or queue)",
            {"total": samples["team_alone"]},
            previous.get("team_alone"),
        ),
    ]
    return [
        [what, _cell(f["total"]), *(_cell(f[part]) if part in f else "-" for part in PARTS), _median(before)]
        for what, f, before in figures
    ]


HEADER = ["CPU per one-turn conversation (ms)", "all", "API processes", "worker processes", "other", "previous run"]


def report(data: dict[str, Any], previous: dict[str, Any]) -> str:
    meta, sizes = data["meta"], data["sizes"]
    machine = meta["machine"]
    return "\n".join(
        [
            "## Where a conversation's CPU goes: the team, and the service around it",
            "",
            "A one-turn conversation's CPU is the team's work (AutoGen's chat and its model call through the OpenAI "
            "SDK) and the service's own (the HTTP request, the run's record, the queue, the run's events and end, the "
            "session's turn). Measured apart, in one run, each conversation new and one at a time, the offline model "
            f"answering after {int(CPU_MODEL_DELAY * 1000)} ms in its own process: the service started as "
            "`bench/scaling.py` starts it (`agent-api serve` with Redis, default process counts; the CPU of all its "
            "processes, and split by kind), `POST /chat` to the `research` team and to a team that answers at once "
            "without AutoGen or a model (`bench/plugins/model_free.py`: its run goes every step every run goes); and "
            "the `research` team alone, in the benchmark's process, run by the service's engine as a worker process "
            "runs it (`TeamRunner`, the same model client and changes to AutoGen and the SDK). "
            f"{sizes['conversations']} conversations per figure after {WARM} to warm up; medians of "
            f"{sizes['repeat']} runs (range), alternating. "
            f"Machine: {machine['cpus']} cores, Python {machine['python']}; {meta['date']}; "
            f"1-minute load average at the start {fmt(machine['load_average_at_start'], 2)}. "
            "Reproduce: `.venv/bin/python bench/cost_split.py` (raw numbers: `bench/results/cost_split.json`).",
            "",
            markdown_table(HEADER, rows(data["samples"], previous)),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=300, help="conversations per figure (default: 300)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (default: 3)")
    add_output_flags(parser)
    args = parse_args(parser, argv, QUICK)
    if args.conversations < 1 or args.repeat < 1:
        parser.error("--conversations and --repeat must be positive")
    out = output(args)
    previous = (out.load("cost_split") or {}).get("samples") or {}
    begun = start("cost_split.py", argv)
    samples = measure(args.conversations, args.repeat)
    data: dict[str, Any] = {
        "meta": run_metadata("cost_split", begun.command, begun.revision, begun.load),
        "sizes": {"conversations": args.conversations, "repeat": args.repeat},
        "samples": samples,
    }
    out.save("cost_split", data)
    print(text_table(HEADER, rows(samples, {})))
    out.report("cost-split", report(data, previous))
    return 0


if __name__ == "__main__":
    sys.exit(main())
