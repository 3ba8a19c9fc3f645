"""The verdict of a scenario, from explicit checks, and running a scenario within a time limit."""

from __future__ import annotations

import argparse
import datetime
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SCENARIO_TIME_LIMIT_S = 600.0  # a scenario that runs longer than this is stopped and fails


@dataclass
class Check:
    """One criterion of a verdict: what is required, what was measured, whether it holds."""

    name: str
    measured: str
    ok: bool


@dataclass
class Outcome:
    """The verdict of one scenario with its checks, headline numbers and raw details."""

    scenario: str
    passed: bool = False
    checks: list[Check] = field(default_factory=list)
    key_numbers: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    date: str = ""
    command: str = ""
    revision: str = ""

    def check(self, name: str, measured: str, ok: bool) -> bool:
        self.checks.append(Check(name, measured, ok))
        return ok


Runner = Callable[[argparse.Namespace, Outcome], None]


def run_scenario(name: str, runner: Runner, args: argparse.Namespace, command: str, revision: str) -> Outcome:
    """Run one scenario to its verdict; an exception or the time limit fails it, with the reason."""
    outcome = Outcome(name, date=datetime.date.today().isoformat(), command=command, revision=revision)
    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _time_limit)
    signal.alarm(int(SCENARIO_TIME_LIMIT_S))
    try:
        runner(args, outcome)
    except Exception as exc:  # the scenario could not be run to its end: it fails, with the reason
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.details["traceback"] = traceback.format_exc().splitlines()[-12:]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    outcome.duration_s = round(time.monotonic() - start, 1)
    outcome.passed = outcome.error is None and bool(outcome.checks) and all(c.ok for c in outcome.checks)
    if outcome.error and not outcome.key_numbers:
        outcome.key_numbers = f"did not complete: {outcome.error[:160]}"
    return outcome


class ScenarioTimeout(Exception):
    pass


def _time_limit(signum: int, frame: Any) -> None:
    raise ScenarioTimeout(f"the scenario ran longer than {SCENARIO_TIME_LIMIT_S:.0f} s")
