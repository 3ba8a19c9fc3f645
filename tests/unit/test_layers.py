"""The layers of the design: the engine (agents) and the domain below the HTTP edge import nothing
of the web stack, directly or through the modules they import."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "agent_api"
WEB = ("fastapi", "starlette", "sse_starlette", "uvicorn", "fastapi_offline")
# Below the HTTP edge: these never reach the web stack.
LOWER_LAYERS = ("agents", "runs", "services", "protocols", "models", "errors", "metrics", "config")


def _module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports(name: str) -> frozenset[str]:
    """The modules ``name`` imports at module level (not under TYPE_CHECKING)."""
    path = _module_path(name)
    assert path is not None, name
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def _reach(name: str) -> dict[str, list[str]]:
    """Every module ``name`` imports, directly or through the package's own modules, with a path to it."""
    paths: dict[str, list[str]] = {name: [name]}
    todo = [name]
    while todo:
        current = todo.pop()
        for imported in _imports(current):
            if imported in paths:
                continue
            if imported.startswith("agent_api"):
                if _module_path(imported) is None:  # "from agent_api.x import name": a name, not a module
                    continue
                todo.append(imported)
            paths[imported] = [*paths[current], imported]
    return paths


def _lower_modules() -> list[str]:
    names = []
    for layer in LOWER_LAYERS:
        root = PACKAGE / layer
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]
        for path in files:
            relative = path.relative_to(PACKAGE.parent).with_suffix("")
            names.append(".".join(p for p in relative.parts if p != "__init__"))
    return names


@pytest.mark.parametrize("module", _lower_modules())
def test_lower_layers_never_reach_the_web_stack(module: str) -> None:
    web = {m: path for m, path in _reach(module).items() if m.split(".")[0] in WEB}
    assert not web, " ; ".join(" -> ".join(path) for path in web.values())


def test_the_engine_does_not_know_the_runs_or_the_http_edge() -> None:
    for module in _lower_modules():
        if not module.startswith("agent_api.agents"):
            continue
        reached = _reach(module)
        above = [m for m in reached if m.startswith(("agent_api.runs", "agent_api.routers", "agent_api.main"))]
        assert not above, (module, [reached[m] for m in above])


ENGINES = ("autogen", "autogen_agentchat", "autogen_core", "autogen_ext")
# What a process that leaves the runs to worker processes imports: the HTTP edge and the team descriptions.
API_SIDE = (
    "agent_api.main",
    "agent_api.cli",
    "agent_api.runtime",
    "agent_api.agents.loader",
    "agent_api.agents.registry",
    "agent_api.agents.agentchat.team",
)


@pytest.mark.parametrize("module", API_SIDE)
def test_the_api_side_never_reaches_an_agent_engine(module: str) -> None:
    """AutoGen is loaded only where runs execute (engine.py, imported by the worker and the embedded default)."""
    engines = {m: path for m, path in _reach(module).items() if m.split(".")[0] in ENGINES}
    assert not engines, " ; ".join(" -> ".join(path) for path in engines.values())


def test_settling_a_worker_heap_freezes_it_and_collects_the_young_less_often() -> None:
    """settle_heap, run in a fresh interpreter (it changes the collector of the whole process)."""
    code = (
        "import gc, agent_api.engine; from agent_api.heap import YOUNG_COLLECTION_EVERY, settle_heap; "
        "before = gc.get_freeze_count(); settle_heap(); "
        "print(before, gc.get_freeze_count(), gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    before, frozen, threshold = done.stdout.split()
    assert int(before) == 0
    assert int(frozen) > 100_000  # AutoGen and the OpenAI SDK's objects, out of every collection
    assert threshold == "True"
