"""The official ``openai`` Node SDK against the service (installed by ``make test`` from tests/node's lockfile)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

NODE_DIR = Path(__file__).parents[1] / "node"


def test_openai_node_sdk_talks_to_a_team(client: httpx.Client) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.skip("node or tests/node/node_modules missing: `make test` installs them")
    env = {**os.environ, "BASE_URL": str(client.base_url).rstrip("/") + "/v1", "API_KEY": "unused"}
    done = subprocess.run(
        [node, "openai_client.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(seen["models"]) == {"research", "research_team", "research_ac", "research_team_ac"}
    content = seen["completion"]["content"]
    assert content.startswith('Offline answer: you asked "Hello from Node')
    assert seen["completion"]["id"].startswith("run_")
    # the stream's deltas add up to the completion, token by token, and end with its usage
    assert seen["stream"]["text"] == content and seen["stream"]["chunks"] > 3
    assert seen["stream"]["finishReason"] == "stop" and seen["stream"]["usage"] == seen["completion"]["usage"]
    assert seen["notFound"] == {"isNotFound": True, "status": 404, "code": "model_not_found"}
