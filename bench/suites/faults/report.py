"""The ``faults`` section of docs/benchmarks.md: the verdicts, the scenarios' checks, the API log of a failure."""

from __future__ import annotations

import os
import platform
from typing import Any

from harness.tables import markdown_table, yes

from suites.faults import SCENARIOS

STARTUP_NOTICE = "AUTHENTICATION IS OFF"  # the API's expected start-up warning without API_KEYS


def _verdict(outcome: dict[str, Any]) -> str:
    return "PASS" if outcome["passed"] else "**FAIL**"


def doc(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        [f"`{name}`", _verdict(o), o["key_numbers"].replace("|", "/"), o["date"]]
        for name in SCENARIOS
        if (o := results.get(name))
    ]
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
        lines.append(
            markdown_table(
                ["Check", "Measured", "Holds"],
                [[c["name"], c["measured"].replace("|", "/"), yes(c["ok"])] for c in o["checks"]],
            )
        )
        if o.get("error"):
            lines += ["", f"The scenario did not complete: `{o['error'][:300]}`."]
        if not o["passed"]:
            logs = [
                line
                for key in ("api_log", "api_log_first", "api_log_second")
                for line in o["details"].get(key, [])
                if STARTUP_NOTICE not in line
            ][:6]
            if logs:
                lines += ["", "API log (warnings and errors, most frequent first):", "", "```text", *logs, "```"]
            else:
                lines += [
                    "",
                    "The API logged no warning or error during the run (besides the start-up notice that "
                    "authentication is off).",
                ]
        lines.append("")
    lines += [
        f"- Machine: a {os.cpu_count()}-core shared machine; Python {platform.python_version()} on "
        f"{platform.system()}.",
        "- Reproduce: `.venv/bin/python bench/faults.py` (or `--scenario NAME`; every request's outcome: "
        "`bench/results/faults.json`).",
    ]
    return "\n".join(lines)
