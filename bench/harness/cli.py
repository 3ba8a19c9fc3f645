"""What every script does on its command line: ``--quick`` and ``--no-doc``, and its start-up checks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.measure import machine_load
from harness.processes import raise_open_files_limit
from harness.results import QUICK_DIR, Output, service_revision


def add_output_flags(parser: argparse.ArgumentParser, *, doc: bool = True) -> None:
    """``--quick`` (and ``--no-doc`` when the script writes a section of docs/benchmarks.md)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run with small sizes (flags given explicitly still apply); raw results and the doc section "
        f"go to {QUICK_DIR}, never to bench/results or docs/",
    )
    if doc:
        parser.add_argument(
            "--no-doc",
            action="store_true",
            help=f"publish nothing: docs/benchmarks.md is not rewritten and the raw results go to {QUICK_DIR}",
        )


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, quick: Mapping[str, Any] | None = None
) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, the defaults become ``quick`` first (what is given explicitly wins)."""
    args = parser.parse_args(argv)
    if args.quick and quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args


def output(args: argparse.Namespace) -> Output:
    """Where this run writes, from ``--quick`` and ``--no-doc``."""
    doc = not getattr(args, "no_doc", False)
    # Only a full run with its document publishes: a run without one writes where a quick run does,
    # so that the next published run's *previous* figures are the last published ones.
    return Output.published() if doc and not args.quick else Output.quick(doc)


@dataclass(frozen=True)
class Start:
    """What a run records about itself: its command line, the revision under test, the machine's load."""

    command: str
    revision: str
    load: float


def start(script: str, argv: list[str] | None, connections: int | None = None) -> Start:
    """Raise the open-files limit (warning when ``connections`` may exceed it), note the command, revision, load."""
    nofile = raise_open_files_limit()
    if connections is not None and nofile < 2 * connections + 200:
        print(
            f"warning: the open-files limit is {nofile}; {connections} connections may run out of it", file=sys.stderr
        )
    command = " ".join([f".venv/bin/python bench/{script}", *(argv if argv is not None else sys.argv[1:])])
    revision = service_revision()  # before the runs: what the API processes will import
    return Start(command, revision, machine_load())
