"""The ``scaling`` section of docs/benchmarks.md: each figure of *now* beside *before*'s, against the targets."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.tables import fmt, markdown_table, yes

from suites.scaling.measure import (
    BURST_MODEL_DELAY,
    CPU_MODEL_DELAY,
    FEW_TOKENS,
    MANY_TOKENS,
    SERVICES,
    STREAM_FIRST_TOKEN,
    STREAM_TOKEN_DELAY,
    STREAM_TOKENS,
    WARMUP,
)

Entry = dict[str, Any]  # one service's results in one scenario: {"median": run, "runs": [run, ...]}
DEFAULT_SIZES = {
    "repeat": 3,
    "one": 100,
    "concurrent": 200,
    "conversations": 1000,
    "burst": 1000,
    "streams": 200,
    "token_streams": 40,
    "token_batch": 10,
    "memory": 5000,
    "memory_concurrency": 50,
}
MB_PER_MIB = 2**20 / 10**6


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None


def _get(run: dict[str, Any], path: str) -> float | None:
    """A number in a run by its dotted path (``at_n.cpu_ms_per_conversation``); None when absent."""
    value: Any = run
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return _num(value)


@dataclass(frozen=True)
class Target:
    """A row of the targets table: a figure (its median over the runs), its unit, whether *now*'s meets the target."""

    label: str
    scenario: str
    path: str  # the figure in a run, dotted
    unit: str
    digits: int
    met: Callable[[Entry], bool]

    def cell(self, entry: Entry | None) -> str:
        """The figure's median over the runs, with its range when there are several."""
        if not entry:
            return "-"
        value = _median_of(entry, self.path)
        text = f"{fmt(value, self.digits)}{self.unit}" if value is not None else "-"
        values = [v for v in (_get(r, self.path) for r in entry.get("runs") or []) if v is not None]
        if len(values) > 1 and min(values) != max(values):
            text += f" ({fmt(min(values), self.digits)}–{fmt(max(values), self.digits)})"
        return text


def _median_of(entry: Entry, path: str) -> Any:
    """The median of a figure over the runs (each figure on its own: the runs' medians may differ)."""
    values = [v for v in (_get(r, path) for r in entry.get("runs") or []) if isinstance(v, int | float)]
    return statistics.median(values) if values else _get(entry["median"], path)


def _below(path: str, limit: float) -> Callable[[Entry], bool]:
    def met(entry: Entry) -> bool:
        value = _median_of(entry, path)
        return value is not None and value <= limit

    return met


def _zero_errors(entry: Entry) -> bool:
    return sum(int(r.get("errors", 1)) for r in entry.get("runs") or [entry["median"]]) == 0


def _targets(sizes: dict[str, dict[str, int]]) -> list[Target]:
    def size(scenario: str, key: str) -> int:
        return sizes.get(scenario, {}).get(key, DEFAULT_SIZES[key])

    c, n, streams = size("cpu", "concurrent"), size("burst", "burst"), size("streams", "streams")
    memory = size("memory", "memory")
    return [
        Target(
            "service CPU per conversation, 1 at a time: ≤ 5 ms",
            "cpu",
            "at_1.cpu_ms_per_conversation",
            " ms",
            2,
            _below("at_1.cpu_ms_per_conversation", 5),
        ),
        Target(
            f"... at {c} concurrent: ≤ 1.3 × the figure at 1",
            "cpu",
            "at_n.cpu_ms_per_conversation",
            " ms",
            2,
            _below("ratio", 1.3),
        ),
        Target(f"... ratio, {c} concurrent / 1: ≤ 1.3", "cpu", "ratio", "×", 2, _below("ratio", 1.3)),
        Target(
            f"{n} concurrent `/chat`, {BURST_MODEL_DELAY * 1000:.0f} ms model: wall ≤ 3 s",
            "burst",
            "wall_s",
            " s",
            2,
            _below("wall_s", 3),
        ),
        Target("... errors: 0 (all runs)", "burst", "errors", "", 0, _zero_errors),
        Target(
            f"{streams} concurrent streams: first token at the client after the model sent it, p50 ≤ 150 ms",
            "streams",
            "after_model_p50_ms",
            " ms",
            1,
            _below("after_model_p50_ms", 150),
        ),
        Target("... p99 ≤ 500 ms", "streams", "after_model_p99_ms", " ms", 1, _below("after_model_p99_ms", 500)),
        Target(
            "stream path CPU per token: ≤ 40 µs", "tokens", "cpu_us_per_token", " µs", 1, _below("cpu_us_per_token", 40)
        ),
        Target(
            f"RSS growth over {memory} conversations: ≤ 20 MB ({20 / MB_PER_MIB:.1f} MiB)",
            "memory",
            "growth_mib",
            " MiB",
            1,
            _below("growth_mib", 20 / MB_PER_MIB),
        ),
    ]


@dataclass(frozen=True)
class Detail:
    """A row of the supporting table: a cell made from one service's results in a scenario."""

    label: str
    scenario: str
    cell: Callable[[Entry], str]


def _figure(path: str, digits: int, unit: str = "") -> Callable[[Entry], str]:
    def cell(entry: Entry) -> str:
        value = _get(entry["median"], path)
        return f"{fmt(value, digits)}{unit}" if value is not None else "-"

    return cell


def _pair(first: str, second: str, digits: int, unit: str = "") -> Callable[[Entry], str]:
    def cell(entry: Entry) -> str:
        a, b = _get(entry["median"], first), _get(entry["median"], second)
        return f"{fmt(a, digits)} / {fmt(b, digits)}{unit}"

    return cell


def _all_errors(*paths: str) -> Callable[[Entry], str]:
    def cell(entry: Entry) -> str:
        runs = entry.get("runs") or [entry["median"]]
        counts = [sum(int(_get(r, p) or 0) for r in runs) for p in paths]
        return " / ".join(str(c) for c in counts)

    return cell


def _processes(entry: Entry) -> str:
    return str(entry["median"].get("processes", "-"))


def _details(sizes: dict[str, dict[str, int]]) -> list[Detail]:
    def size(scenario: str, key: str) -> int:
        return sizes.get(scenario, {}).get(key, DEFAULT_SIZES[key])

    c, tn = size("cpu", "concurrent"), size("tokens", "token_streams")
    return [
        Detail("cpu: p50 latency at 1 (ms)", "cpu", _figure("at_1.p50_ms", 1)),
        Detail(f"cpu: conversations per second at {c} concurrent", "cpu", _figure("at_n.per_s", 1)),
        Detail(f"cpu: errors at 1 / at {c}, all runs", "cpu", _all_errors("at_1.errors", "at_n.errors")),
        Detail("burst: p50 / p95 latency (ms)", "burst", _pair("p50_ms", "p95_ms", 0)),
        Detail("burst: service CPU during the burst (s)", "burst", _figure("cpu_s", 2)),
        Detail("burst: the load generator's CPU during the burst (s)", "burst", _figure("client_cpu_s", 2)),
        Detail(
            "streams: TTFT overhead p50 / p95 (ms, minus the model's 200 ms)",
            "streams",
            _pair("ttft_overhead_p50_ms", "ttft_overhead_p95_ms", 1),
        ),
        Detail("streams: first token after the model, max (ms)", "streams", _figure("after_model_max_ms", 1)),
        Detail(
            f"streams: token frames per stream ({STREAM_TOKENS} tokens)",
            "streams",
            _figure("token_frames_per_stream", 1),
        ),
        Detail("streams: errors, all runs", "streams", _all_errors("errors")),
        Detail("streams: streams matched to their model request", "streams", _figure("matched_to_model", 0)),
        Detail("streams: answers whose chunks differ from the `done` response", "streams", _figure("incomplete", 0)),
        Detail(
            f"tokens: frames per stream, {FEW_TOKENS} / {MANY_TOKENS} tokens",
            "tokens",
            _pair("few.frames_per_stream", "many.frames_per_stream", 1),
        ),
        Detail(
            f"tokens: complete answers of {tn}, {FEW_TOKENS} / {MANY_TOKENS} tokens",
            "tokens",
            _pair("few.complete", "many.complete", 0),
        ),
        Detail(
            f"tokens: service CPU for {tn} streams, {FEW_TOKENS} / {MANY_TOKENS} tokens (s)",
            "tokens",
            _pair("few.cpu_s", "many.cpu_s", 2),
        ),
        Detail(
            f"tokens: model calls, {FEW_TOKENS} / {MANY_TOKENS} tokens",
            "tokens",
            _pair("few.model_calls", "many.model_calls", 0),
        ),
        Detail("tokens: errors", "tokens", _all_errors("few.errors", "many.errors")),
        Detail("memory: tree RSS warm / after all (MiB)", "memory", _pair("rss_warm_mib", "rss_final_mib", 1)),
        Detail("memory: errors", "memory", _all_errors("errors")),
        Detail("memory: processes at the end", "memory", _figure("processes_final", 0)),
        Detail("processes in the service's tree after warm-up (cpu)", "cpu", _processes),
    ]


def _layout(data: dict[str, Any], service: str) -> str:
    """The processes of ``service``'s tree after its warm-up, from the first scenario that has them."""
    for scenario in ("cpu", "burst", "streams", "tokens", "memory"):
        run = data.get(scenario, {}).get(service, {}).get("median") or {}
        if "layout" in run:
            commands = ", ".join(f"{count} × `{command}`" for command, count in run["layout"].items())
            total = run.get("processes", sum(run["layout"].values()))
            return f"{total} process{'es' if total != 1 else ''} ({commands})"
    return "-"


def _kept(data: dict[str, Any], now: str) -> str:
    """The scenarios a partial run (``--only``) kept from earlier runs, and where they were measured ("" if none)."""
    earlier: dict[tuple[str, str], list[str]] = {}
    for scenario, measured in data.get("measured", {}).items():
        if measured.get("revision") != now:
            earlier.setdefault((measured.get("revision") or "?", measured.get("date") or "?"), []).append(scenario)
    return "; ".join(f"{', '.join(names)} at {rev} ({date})" for (rev, date), names in earlier.items())


def _carried_over(data: dict[str, Any], now: str) -> list[str]:
    kept = _kept(data, now)
    return [f"- A partial run: the *now* figures of these scenarios are from an earlier run: {kept}."] if kept else []


def _methodology(data: dict[str, Any], revisions: dict[str, str]) -> list[str]:
    meta = data["meta"]
    machine = meta["machine"]
    sizes: dict[str, dict[str, int]] = data.get("sizes", {})

    def size(scenario: str, key: str) -> int:
        return sizes.get(scenario, {}).get(key, DEFAULT_SIZES[key])

    repeated = {"cpu": "CPU per conversation", "burst": "burst", "streams": "streams", "tokens": "CPU per token"}
    repeats = {s: size(s, "repeat") for s in repeated}
    repeat = max(repeats.values())
    # A partial run keeps the other scenarios' figures, measured with their own number of runs.
    common = Counter(repeats.values()).most_common(1)[0][0]
    apart = [f"the {repeated[s]}: {n}" for s, n in repeats.items() if n != common]
    counted = f"{common} runs each" + (f" ({'; '.join(apart)})" if apart else "")
    load = round(machine.get("load_average_at_start") or 0, 2)
    tn, tb = size("tokens", "token_streams"), size("tokens", "token_batch")
    memory, warm = size("memory", "memory"), max(1, size("memory", "memory") // 10)
    return [
        f"Two services side by side in one run: *before*, the service at {revisions['before']} (run from a "
        f"temporary git worktree), and *now*, this checkout ({revisions['now']}). Each is started the way "
        "production starts it, one command: `python -m agent_api.cli serve` with `REDIS_URL` (a real "
        "redis-server) and `OPENAI_BASE_URL`/`OPENAI_API_KEY` (the offline model, in its own process), every "
        "other setting dropped: no process counts are given (no `WORKERS`, `--workers`, `WORKERS_IN_PROCESS` "
        "or `THREAD_POOL_SIZE`), so each runs the processes its defaults start. Each scenario runs on *before* "
        "then on *now*, each on a fresh redis-server and a fresh service (per repeat too), once it answers "
        f"`/health/ready` with 200 and has served {WARMUP} warm-up conversations. The service's CPU (user + "
        "system) and resident memory are summed over all its processes: the one started and every descendant "
        "(from /proc), not redis-server, the model or the load generator, which share the machine with it. "
        "Conversations are one-turn and new (no `session_id`).",
        "",
        f"- CPU per conversation: one-turn `POST /chat`, the model answering after {CPU_MODEL_DELAY * 1000:.0f} "
        f"ms: {size('cpu', 'one')} one after another, then {size('cpu', 'conversations')} by "
        f"{size('cpu', 'concurrent')} concurrent client loops (closed loop); the service's CPU over each "
        "stretch divided by its conversations.",
        f"- Burst: {size('burst', 'burst')} `POST /chat` at once, a {BURST_MODEL_DELAY * 1000:.0f} ms model: "
        "the wall time from the first sent to the last answered, errors, latency; the CPU of the service and, "
        "beside it, of the load generator (aiohttp's client in the benchmark's process, on the same two cores; "
        "httpx's until 2026-12-04, about five times the CPU per request).",
        f"- Streams: {size('streams', 'streams')} `POST /chat/stream` at once; the model sends its first token "
        f"{STREAM_FIRST_TOKEN * 1000:.0f} ms after a request arrives, then {STREAM_TOKENS} tokens "
        f"{STREAM_TOKEN_DELAY * 1000:.0f} ms apart. Per stream: the arrival of the first token of the answer at "
        "the client minus the moment the model sent it (its record of the stream's request, matched by the "
        f"question's unique text, plus {STREAM_FIRST_TOKEN * 1000:.0f} ms). The TTFT overhead (arrival minus "
        f"request sent minus {STREAM_FIRST_TOKEN * 1000:.0f} ms) is shown for reference.",
        f"- CPU per token: the service's CPU for {tn} streams ({tb} at a time, a 0 ms model) with "
        f"{MANY_TOKENS}-token answers minus that for {tn} streams with {FEW_TOKENS}-token answers, divided by "
        f"{tn} × {MANY_TOKENS - FEW_TOKENS} tokens.",
        f"- RSS growth: {memory} one-turn conversations by {size('memory', 'memory_concurrency')} concurrent "
        f"loops (a 0 ms model); the tree's summed RSS after all of them minus after the first {warm}.",
        (
            f"- CPU per conversation, the burst, the streams and the CPU per token: {counted}, the "
            "services alternating; the targets table gives each figure's median over the runs with its range in "
            "brackets, the supporting figures are those of the median run (by the figure at "
            f"{size('cpu', 'concurrent')}, by wall time, by p50, by CPU per token); memory: one run."
            if repeat > 1
            else "- One run of each scenario."
        ),
        f"- Machine: {machine.get('cpus')} cores, Python {machine.get('python')}; {meta['date']}; 1-minute load "
        f"average at the start {load}.",
        *_carried_over(data, revisions["now"]),
        "- Reproduce: `.venv/bin/python bench/scaling.py` (raw numbers: `bench/results/scaling.json`).",
        "",
    ]


def report(data: dict[str, Any], previous: dict[str, Any]) -> str:
    """The section from this run's ``data`` and the run before's (``previous``)."""
    if "meta" not in data:
        return "## Scaling: every core, the cost of a conversation\n\nNo results yet: run `bench/scaling.py`."
    revisions = {"before": "?", "now": "?", **data["meta"].get("revisions", {})}
    sizes: dict[str, dict[str, int]] = data.get("sizes", {})
    lines = ["## Scaling: every core, the cost of a conversation", "", *_methodology(data, revisions)]
    lines += ["Process layout observed (the service's process tree after its warm-up):", ""]
    lines += [f"- *{service}*: {_layout(data, service)}" for service in SERVICES]
    lines.append("")

    def entry(source: dict[str, Any], scenario: str, service: str) -> Entry | None:
        found: Entry | None = source.get(scenario, {}).get(service)
        return found if found and found.get("median") else None

    rows = []
    for target in _targets(sizes):
        if target.scenario not in data:
            continue
        now = entry(data, target.scenario, "now")
        met = yes(target.met(now)) if now else "-"
        rows.append([target.label, target.cell(entry(data, target.scenario, "before")), target.cell(now), met])
    if rows:
        header = ["target", f"before ({revisions['before']})", f"now ({revisions['now']})", "met"]
        lines += ["Targets from the issue (*met*: *now*'s figure):", "", markdown_table(header, rows), ""]

    before_meta = previous.get("meta", {})
    was = before_meta.get("revisions", {}).get("now", before_meta.get("service_revision", "-"))
    details = []
    for detail in _details(sizes):
        if detail.scenario not in data:
            continue
        cells = [entry(data, detail.scenario, s) for s in SERVICES]
        earlier = entry(previous, detail.scenario, "now")
        details.append(
            [detail.label, *(detail.cell(c) if c else "-" for c in cells), detail.cell(earlier) if earlier else "-"]
        )
    if details:
        kept = _kept(previous, was)
        run = f"{before_meta.get('date', '-')}, {was}" + (f"; {kept}" if kept else "")
        header = ["detail", "before", "now", f"now in the previous run ({run})"]
        lines += ["Supporting figures (median runs):", "", markdown_table(header, details), ""]
    return "\n".join(lines)
