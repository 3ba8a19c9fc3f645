"""Plots of the benchmark results, for docs/benchmarks.md.

Reads ``bench/results/concurrency.json`` (written by ``bench/concurrency.py``) and
``bench/results/soak.json`` (written by ``bench/soak.py``) and draws, with matplotlib's Agg backend:

- ``docs/latency-vs-concurrency.png``: p50 and p95 latency and the wall time of a batch against the
  number N of simultaneous conversations (the median run of each N, with the range of the wall time
  over all runs);
- ``docs/soak-memory.png``: the API process's RSS (and thread count) over the soak, with the two
  windows whose medians the soak's verdict compares.

It then rewrites the ``plots`` section of ``docs/benchmarks.md`` with links to both images. A
missing results file is reported and its plot skipped. Needs matplotlib (``pip install -e '.[bench]'``).

Run from the repository root::

    .venv/bin/python bench/plots.py
    .venv/bin/python bench/plots.py --quick   # from the quick runs' results, drawn beside them
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import matplotlib  # type: ignore[import-not-found,unused-ignore]  # the `bench` extra; no stubs needed

matplotlib.use("Agg")  # no display: draw to files

import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]  # noqa: E402  (after the backend)
from harness import DOC_PATH  # noqa: E402
from harness.cli import add_output_flags, output, parse_args  # noqa: E402
from harness.results import Output, shown  # noqa: E402

CONCURRENCY_PNG = DOC_PATH.parent / "latency-vs-concurrency.png"
SOAK_PNG = DOC_PATH.parent / "soak-memory.png"
DPI = 110


def _load(name: str, out: Output) -> dict[str, Any] | None:
    data = out.load(name)
    if data is None:
        print(f"skipped: {shown(out.results_path(name))} does not exist (run bench/{name}.py first)")
    return data


def _subtitle(raw: dict[str, Any]) -> str:
    return f"{raw.get('date', '?')}, service {raw.get('service_revision', '?')}"


def plot_concurrency(raw: dict[str, Any], path: Path = CONCURRENCY_PNG) -> Path:
    """Latency (p50, p95) and wall time against N, from the median run of each N."""
    runs = raw["runs"]
    ns, p50, p95, wall, wall_lo, wall_hi = [], [], [], [], [], []
    for summary in sorted(raw["summary"], key=lambda s: s["n"]):
        n = summary["n"]
        median = next(r for r in runs if r["n"] == n and r["repeat"] == summary["median_repeat"])
        ns.append(n)
        p50.append(median["p50_ms"] / 1000)
        p95.append(median["p95_ms"] / 1000)
        wall.append(median["wall_s"])
        wall_lo.append(median["wall_s"] - summary["wall_min_s"])
        wall_hi.append(summary["wall_max_s"] - median["wall_s"])

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=DPI)
    ax.errorbar(ns, wall, yerr=[wall_lo, wall_hi], marker="s", capsize=4, label="wall time of the batch")
    ax.plot(ns, p95, marker="^", label="p95 latency")
    ax.plot(ns, p50, marker="o", label="p50 latency")
    model = raw.get("settings", {}).get("model_latency_s")
    if model:
        ax.axhline(model, color="grey", linestyle=":", linewidth=1, label=f"model latency ({model * 1000:.0f} ms)")
    for n, w in zip(ns, wall, strict=True):
        ax.annotate(f"{w:.1f} s", (n, w), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("N: POST /chat requests sent at once (log scale)")
    ax.set_ylabel("seconds (log scale)")
    ax.set_title(f"Latency vs concurrency, one worker\n{_subtitle(raw)}", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_soak(raw: dict[str, Any], path: Path = SOAK_PNG) -> Path:
    """RSS (left axis) and threads (right axis) over the soak, with the compared windows shaded."""
    samples = raw["samples"]
    analysis = raw["analysis"]
    minutes = [s["t"] / 60 for s in samples]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=DPI)
    ax.plot(minutes, [s["rss_mib"] for s in samples], color="tab:blue", marker=".", label="RSS (MiB)")
    for key, window, colour in (
        ("baseline", "baseline_window_s", "tab:green"),
        ("last", "final_window_s", "tab:orange"),
    ):
        lo, hi = analysis[window]
        median = analysis["rss_baseline_mib" if key == "baseline" else "rss_final_mib"]
        ax.axvspan(lo / 60, hi / 60, color=colour, alpha=0.12)
        ax.hlines(
            median, lo / 60, hi / 60, colors=colour, linewidth=2, label=f"median RSS, {key} window: {median:.1f} MiB"
        )
    ax.set_xlabel("minutes since the start of the traffic")
    ax.set_ylabel("RSS of the API process (MiB)")
    low = min(s["rss_mib"] for s in samples)
    high = max(s["rss_mib"] for s in samples)
    ax.set_ylim(max(0.0, low - 20), high + 20)
    ax.grid(True, alpha=0.3)
    threads = ax.twinx()
    threads.plot(
        minutes, [s["threads"] for s in samples], color="tab:grey", linestyle="--", linewidth=1, label="threads"
    )
    threads.set_ylabel("threads")
    threads.set_ylim(0, max(s["threads"] for s in samples) * 1.3 + 1)
    lines = ax.get_legend_handles_labels()
    more = threads.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=9, loc="lower right")
    settings = raw.get("settings", {})
    verdict = raw.get("verdict", "?")
    slope = analysis.get("rss_slope_mib_per_min")
    trend = f", trend {slope:+.2f} MiB/min" if isinstance(slope, float) and slope == slope else ""
    ax.set_title(
        f"Soak: {settings.get('minutes', '?'):g} min at {settings.get('rate', '?'):g} requests/s, "
        f"RSS growth {analysis['rss_growth_mib']:+.1f} MiB{trend} ({verdict})\n{_subtitle(raw)}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _doc(drawn: dict[str, Path]) -> str:
    lines = [
        "## Plots",
        "",
        "Drawn by `bench/plots.py` from the raw results of the scripts above "
        "(`.venv/bin/python bench/plots.py`; needs the `bench` extra: `pip install -e '.[bench]'`).",
        "",
    ]
    if "concurrency" in drawn:
        lines += [
            "Latency (p50, p95) and wall time of N simultaneous `POST /chat` requests "
            "(section *Concurrency*; the median run of each N, bars: the range of the wall time over all runs):",
            "",
            f"![Latency and wall time against N]({drawn['concurrency'].name})",
            "",
        ]
    if "soak" in drawn:
        lines += [
            "The API process's RSS and threads during the soak (section *Soak*; shaded: the two windows "
            "whose median RSS the verdict compares):",
            "",
            f"![RSS of the API process over the soak]({drawn['soak'].name})",
            "",
        ]
    if not drawn:
        lines.append("No results to plot yet.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_flags(parser)
    args = parse_args(parser, argv)
    out = output(args)
    drawn: dict[str, Path] = {}
    for name, plot, png in (("concurrency", plot_concurrency, CONCURRENCY_PNG), ("soak", plot_soak, SOAK_PNG)):
        raw = _load(name, out)
        if raw is not None:
            drawn[name] = plot(raw, out.images_dir / png.name)
            print(f"wrote {shown(drawn[name])}")
    out.report("plots", _doc(drawn))
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
