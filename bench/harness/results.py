"""Where a run's output goes: its raw results file, its section of docs/benchmarks.md, run metadata.

A published run writes ``bench/results/{name}.json`` and rewrites its section of
``docs/benchmarks.md``; a quick run (``--quick``) writes both to a scratch directory instead
(:data:`QUICK_DIR`), so it never replaces a published figure.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import DOC_PATH, RESULTS_DIR, ROOT

DOC_TITLE = "# Benchmarks"
DOC_INTRO = (
    "Measurements of agent-api made by the scripts in `bench/`; each section is rewritten by the script named in it."
)
QUICK_DIR = Path(tempfile.gettempdir()) / "agent-api-bench-quick"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def update_doc_section(doc: Path, name: str, markdown: str) -> Path:
    """Replace the text between ``<!-- {name}:start -->`` and ``<!-- {name}:end -->`` in ``doc``.

    The file is created (title and intro) when missing, and the marked section appended when absent.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = f"{start}\n{markdown.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else f"{DOC_TITLE}\n\n{DOC_INTRO}\n"
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i >= 0 and j >= 0:
        text = text[:i] + body + text[j + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    write_atomically(doc, text)
    return doc


def shown(path: Path) -> str:
    """A path as the scripts print it: relative to the checkout when inside it (``bench/results/x.json``)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@dataclass(frozen=True)
class Output:
    """Where a run writes: raw results, the document (None: not rewritten) and images."""

    results_dir: Path
    doc_path: Path | None
    images_dir: Path

    @classmethod
    def published(cls) -> Output:
        """``bench/results/`` and ``docs/benchmarks.md`` (its images in ``docs/``)."""
        return cls(RESULTS_DIR, DOC_PATH, DOC_PATH.parent)

    @classmethod
    def quick(cls, doc: bool = True) -> Output:
        """A scratch directory for everything, the document included."""
        return cls(QUICK_DIR, QUICK_DIR / "benchmarks.md" if doc else None, QUICK_DIR)

    def results_path(self, name: str) -> Path:
        return self.results_dir / f"{name}.json"

    def save(self, name: str, data: Any) -> Path:
        """Write ``data`` as JSON to ``{results_dir}/{name}.json``; return the path."""
        path = self.results_path(name)
        write_atomically(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        return path

    def load(self, name: str) -> dict[str, Any] | None:
        """The last raw results saved under ``name`` (None when there are none or they are not JSON)."""
        try:
            data: dict[str, Any] = json.loads(self.results_path(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data

    def update_doc(self, section: str, markdown: str) -> Path | None:
        """Rewrite ``section`` of the document; None (and nothing written) when the run has no document."""
        return None if self.doc_path is None else update_doc_section(self.doc_path, section, markdown)

    def report(self, section: str, markdown: str) -> None:
        """Rewrite ``section`` of the document and say so (nothing when the run has no document)."""
        doc = self.update_doc(section, markdown)
        if doc is not None:
            print(f"updated: {shown(doc)} (section '{section}')")


def service_revision() -> str:
    """The commit under test, e.g. ``5bb31b6``, with ``+ uncommitted changes`` when agent_api/ differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "agent_api", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} + uncommitted changes" if dirty else commit


def run_metadata(benchmark: str, command: str, revision: str, load: float | None) -> dict[str, Any]:
    """The header of every raw results file: what ran, when, on which revision and machine."""
    return {
        "benchmark": benchmark,
        "date": datetime.date.today().isoformat(),
        "command": command,
        "service_revision": revision,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.system(),
            "load_average_at_start": load,
        },
    }
