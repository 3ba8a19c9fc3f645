"""Measurements: CPU time and memory of the service's processes (or process tree), the client's CPU, percentiles."""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar


@dataclass(frozen=True)
class ProcessStats:
    """CPU time and memory of one process (not its children), from /proc."""

    cpu_seconds: float  # user + system
    peak_rss_mib: float  # VmHWM: the high-water mark of the resident set
    rss_mib: float  # VmRSS: the resident set now
    threads: int


def process_stats(pid: int) -> ProcessStats:
    """Read /proc/PID/stat and /proc/PID/status (Linux only)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()

    def mib(key: str) -> float:
        return int(status.get(key, "0 kB").split()[0]) / 1024  # the kernel reports kB

    return ProcessStats(
        cpu_seconds=(utime + stime) / ticks,
        peak_rss_mib=mib("VmHWM"),
        rss_mib=mib("VmRSS"),
        threads=int(status.get("Threads", "0")),
    )


@dataclass(frozen=True)
class TreeStats:
    """CPU time and memory of a process and all its live descendants, from /proc."""

    cpu_seconds: float  # user + system of each live process, and of the exited children each has waited for
    rss_mib: float  # the sum of the live processes' resident sets
    processes: int  # live processes (zombies not counted)
    commands: dict[str, int]  # how many processes run each command (see :func:`command_label`)


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (``[0]`` is field 3 of proc(5)); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def command_label(pid: int) -> str:
    """A short label for a process's command line, without paths or options: ``python -m agent_api.cli serve``.

    The program's file name, then ``-m MODULE`` (or ``-c`` and the module the code imports) and the
    positional arguments up to the first option.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
    except OSError:
        return "?"
    words, args, i = [os.path.basename(argv[0])], argv[1:], 0
    while i < len(args) and len(words) < 5:
        arg = args[i]
        if arg in ("-m", "-c") and i + 1 < len(args):
            value = args[i + 1]
            if arg == "-c":
                imported = re.search(r"(?:from|import) ([\w.]+)", value)
                value = imported.group(1) if imported else "..."
            words += [arg, value]
            i += 2
        elif arg.startswith("-"):
            if len(words) > 1:
                break  # the options of the program (ports, paths, ...)
            i += 1  # the interpreter's own flags (-B, -u, ...)
        else:
            words.append(os.path.basename(arg))
            i += 1
    return " ".join(w[:40] for w in words)


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (children, their children, ...), by the parent pid in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot; with the pid, it names one process); None when gone."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None else None  # field 22 of proc(5)


def tree_stats(pid: int) -> TreeStats:
    """CPU time, resident memory and the number of processes of ``pid`` and its live descendants (Linux only).

    The CPU of a child that exited and was waited for moves into its parent's cutime/cstime, which
    are counted too: a worker process that exits during a measurement keeps its CPU in the sum.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
    cpu_ticks, rss_pages, processes = 0, 0, 0
    commands: Counter[str] = Counter()
    for member in descendants(pid):
        fields = _proc_stat(member)
        if fields is None:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of proc(5); rss (pages): field 24
        cpu_ticks += sum(int(f) for f in fields[11:15])
        if fields[0] != "Z":
            rss_pages += int(fields[21])
            processes += 1
            commands[command_label(member)] += 1
    return TreeStats(cpu_ticks / ticks, rss_pages * page_mib, processes, dict(commands))


def client_cpu_seconds() -> float:
    """User + system CPU time of this process (the load generator) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Usage:
    """What a measured stretch cost: wall time, the API process's and the load generator's CPU time."""

    wall_s: float = 0.0
    api_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    after: ProcessStats = field(default_factory=lambda: ProcessStats(0.0, 0.0, 0.0, 0))


@contextlib.contextmanager
def measured(pid: int) -> Iterator[Usage]:
    """Measure the block: its wall time, the CPU time of process ``pid`` and of this one; ``pid``'s stats after."""
    usage = Usage()
    before = process_stats(pid)
    client_before = client_cpu_seconds()
    start = time.perf_counter()
    yield usage
    usage.wall_s = time.perf_counter() - start
    usage.client_cpu_s = client_cpu_seconds() - client_before
    usage.after = process_stats(pid)
    usage.api_cpu_s = usage.after.cpu_seconds - before.cpu_seconds


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_index(values: Sequence[float]) -> int:
    """The index of the median of ``values`` (the lower middle one when their number is even)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2]


class Repeated(Protocol):
    """A run of a benchmark repeated several times: its error count and its errors by kind."""

    errors: int
    errors_by_kind: dict[str, int]


R = TypeVar("R", bound=Repeated)


def median_run(runs: Sequence[R], key: Callable[[R], float]) -> dict[str, Any]:
    """The median of repeated runs by ``key`` with the range of ``key`` and the errors over all of them.

    A NaN ``key`` (no successful request) sorts last when choosing the median run.
    """
    values = [key(r) for r in runs]
    return {
        "median": runs[median_index([v if v == v else math.inf for v in values])],
        "runs": len(runs),
        "min": min(values),
        "max": max(values),
        "errors_all_runs": sum(r.errors for r in runs),
        "errors_by_kind_all_runs": dict(sum((Counter(r.errors_by_kind) for r in runs), Counter())),
    }


def machine_load() -> float:
    """The 1-minute load average; warns on stderr when the machine is busy (more than half its cores)."""
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: the machine is busy (1-minute load average {load:.2f}); the numbers will be noisier",
            file=sys.stderr,
        )
    return load
