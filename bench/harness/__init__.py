"""The harness shared by the benchmark scripts in ``bench/``.

- :mod:`harness.processes`: subprocesses on loopback ports, stopped by the context manager that
  started them (also on error), with bounded waits;
- :mod:`harness.services`: redis-server, the offline model, ``agent-api serve`` and ``agent-api worker``;
- :mod:`harness.load`: HTTP load generation (clients, Server-Sent Events, the offline model's log);
- :mod:`harness.measure`: CPU time and memory of the service's processes, percentiles;
- :mod:`harness.tables`: tables for the terminal and for markdown, number formatting;
- :mod:`harness.results`: raw results files, the sections of docs/benchmarks.md, run metadata;
- :mod:`harness.cli`: the flags every script has (``--quick``, ``--no-doc``) and its start-up.

The scripts import it as a top-level package (``from harness.services import api_server``):
running ``python bench/<script>.py`` puts ``bench/`` first on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "bench" / "results"
DOC_PATH = ROOT / "docs" / "benchmarks.md"

if str(ROOT) not in sys.path:  # so that `agent_api` imports from this checkout even without an install
    sys.path.append(str(ROOT))
