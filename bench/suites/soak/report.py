"""The soak's verdict and report: memory of the baseline and final windows, errors, the doc section."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
from collections import Counter
from dataclasses import asdict
from typing import Any

from harness.measure import percentile
from harness.tables import fmt, markdown_table, yes

from suites.soak.traffic import MAX_SESSIONS, MIX, Result, Sample

RSS_GROWTH_PCT = 10.0
RSS_GROWTH_MIB = 20.0


def _windows(duration: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The baseline window (the second minute) and the final one (the last minute), in seconds."""
    end = duration + 60  # the last sample is taken once the last requests have been answered
    if duration >= 180:
        return (60.0, 120.0), (duration - 60.0, end)
    return (duration / 5, 2 * duration / 5), (4 * duration / 5, end)


def _median_in(samples: list[Sample], window: tuple[float, float], attr: str) -> float:
    values = [getattr(s, attr) for s in samples if window[0] <= s.t < window[1]]
    return float(statistics.median(values)) if values else float("nan")


def _slope_mib_per_min(samples: list[Sample], since: float) -> float:
    """The least-squares slope of RSS over time (MiB per minute) of the samples from ``since`` s on."""
    points = [(s.t / 60, s.rss_mib) for s in samples if s.t >= since]
    if len(points) < 2:
        return float("nan")
    mean_t = statistics.fmean(t for t, _ in points)
    mean_r = statistics.fmean(r for _, r in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / var if var else float("nan")


def analyse(results: list[Result], samples: list[Sample], duration: float) -> dict[str, Any]:
    baseline_w, final_w = _windows(duration)
    base = _median_in(samples, baseline_w, "rss_mib")
    final = _median_in(samples, final_w, "rss_mib")
    growth = final - base
    memory_ok = growth == growth and growth <= base * RSS_GROWTH_PCT / 100 and growth <= RSS_GROWTH_MIB
    errors = [r for r in results if not r.ok]
    ops: dict[str, dict[str, Any]] = {}
    for op in [*MIX, "skipped"]:
        mine = [r for r in results if r.op == op]
        if not mine:
            continue
        latencies = [r.latency_s * 1000 for r in mine if r.ok]
        ops[op] = {
            "requests": len(mine),
            "errors": sum(not r.ok for r in mine),
            "statuses": dict(sorted(Counter(str(r.status) for r in mine).items())),
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "max_ms": max(latencies, default=float("nan")),
        }
    return {
        "baseline_window_s": baseline_w,
        "final_window_s": [final_w[0], duration],
        "rss_baseline_mib": base,
        "rss_final_mib": final,
        "rss_growth_mib": growth,
        "rss_growth_pct": growth / base * 100 if base else float("nan"),
        "rss_min_mib": min(s.rss_mib for s in samples),
        "rss_max_mib": max(s.rss_mib for s in samples),
        "threads_baseline": _median_in(samples, baseline_w, "threads"),
        "threads_final": _median_in(samples, final_w, "threads"),
        "threads_max": max(s.threads for s in samples),
        "rss_slope_mib_per_min": _slope_mib_per_min(samples, baseline_w[0]),
        "memory_ok": bool(memory_ok),
        "requests": len(results),
        "errors": len(errors),
        "errors_ok": not errors,
        "errors_by_kind": dict(Counter(f"{r.op} {r.status}" for r in errors)),
        "error_samples": [asdict(r) for r in errors[:20]],
        "deliberate_404": sum(1 for r in results if r.op == "get_deleted" and r.ok),
        "ops": ops,
        "passed": bool(memory_ok) and not errors,
    }


OPS_HEADER = ["operation", "requests", "errors", "statuses", "p50 (ms)", "p95 (ms)", "max (ms)"]


def op_rows(analysis: dict[str, Any]) -> list[list[str]]:
    return [
        [
            op,
            str(o["requests"]),
            str(o["errors"]),
            ", ".join(f"{k}: {v}" for k, v in o["statuses"].items()),
            fmt(o["p50_ms"], 0),
            fmt(o["p95_ms"], 0),
            fmt(o["max_ms"], 0),
        ]
        for op, o in analysis["ops"].items()
    ]


def checks(a: dict[str, Any]) -> list[list[str]]:
    base_w, final_w = a["baseline_window_s"], a["final_window_s"]
    return [
        [
            f"memory flat: median RSS of the last window within +{RSS_GROWTH_PCT:g}% and +{RSS_GROWTH_MIB:g} MiB of "
            "the baseline window's",
            f"{fmt(a['rss_baseline_mib'], 1)} MiB ({base_w[0]:.0f}-{base_w[1]:.0f} s) -> "
            f"{fmt(a['rss_final_mib'], 1)} MiB "
            f"({final_w[0]:.0f}-{final_w[1]:.0f} s): {a['rss_growth_mib']:+.1f} MiB ({a['rss_growth_pct']:+.1f}%)",
            yes(a["memory_ok"]),
        ],
        [
            "0 errors (any non-2xx but the deliberate 404s, exceptions, stream errors, requests not sent on time)",
            f"{a['errors']} errors in {a['requests']} requests"
            + (f": {', '.join(f'{k}: {v}' for k, v in a['errors_by_kind'].items())}" if a["errors"] else "")
            + f"; {a['deliberate_404']} deliberate 404s",
            yes(a["errors_ok"]),
        ],
        [
            "RSS trend from the baseline window on (reported, not judged)",
            f"{fmt(a.get('rss_slope_mib_per_min', float('nan')), 2)} MiB per minute (least squares)",
            "-",
        ],
        [
            "threads (reported, not judged)",
            f"median {fmt(a['threads_baseline'], 0)} -> {fmt(a['threads_final'], 0)}, max {a['threads_max']}",
            "-",
        ],
    ]


def doc(a: dict[str, Any], args: argparse.Namespace, command: str, revision: str) -> str:
    mix = ", ".join(f"{op.replace('_', ' ')} {w}%" for op, w in MIX.items())
    lines = [
        "## Soak: steady mixed traffic, memory and threads",
        "",
        f"{args.minutes:g} minute(s) of traffic at {args.rate:g} requests/s on a fixed schedule ({a['requests']} "
        f"requests), against `agent-api serve` with one uvicorn worker and the default settings (no API keys), "
        f"sessions in a real `redis-server`, and the offline model in its own process answering after "
        f"{args.model_latency * 1000:.0f} ms. The intended mix: {mix}; half the streams start a conversation, half "
        f"continue one; at {MAX_SESSIONS} sessions a new conversation gives way to a deletion, so the pool stays "
        "bounded (the second table counts what was sent). A GET of a deleted session must answer 404; a session "
        "has at most one request in flight. Every "
        f"{args.sample:g} s the API process's RSS (VmRSS) and thread count are read from /proc.",
        "",
        f"**Verdict: {'PASS' if a['passed'] else 'FAIL'}.**",
        "",
        markdown_table(["Check", "Measured", "Holds"], checks(a)),
        "",
        markdown_table(OPS_HEADER, op_rows(a)),
        "",
        f"RSS over the run: {fmt(a['rss_min_mib'], 1)} to {fmt(a['rss_max_mib'], 1)} MiB "
        "(plot: [soak-memory.png](soak-memory.png), drawn by `bench/plots.py`).",
        "",
        f"- Date: {datetime.date.today().isoformat()}; service at commit {revision}; Python "
        f"{platform.python_version()} on {platform.system()}, a {os.cpu_count()}-core shared machine.",
        f"- Reproduce: `{command}` (every sample and request count: `bench/results/soak.json`).",
    ]
    return "\n".join(lines)
