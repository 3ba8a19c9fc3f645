"""`agent-api serve` with nothing configured: embedded store, offline model, clean stdout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.utils.redis_server import free_port


def test_serve_runs_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "REDIS_", "OAI_", "API_KEYS", "SESSION_", "MAX_HISTORY", "LLM_"))
    }
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        # run from an empty directory so that no .env is read
        process = subprocess.Popen(
            [sys.executable, "-m", "agent_api.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health.status_code == 200
        assert health.json()["store"] == "embedded" and health.json()["model_backend"] == "offline"

        first = httpx.post(f"{base}/chat", json={"message": "Does this work without a key?"}, timeout=30)
        assert first.status_code == 200, first.text
        sid = first.json()["session_id"]
        second = httpx.post(f"{base}/chat", json={"message": "And now?", "session_id": sid}, timeout=30)
        assert "I can see 2 earlier messages" in second.json()["response"]
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)

    log = err.read_text()
    assert "offline model" in log and "embedded" in log
    printed = out.read_text()
    for autogen_output in ("TERMINATE", "research_assistant", "(to ", ">>>>", "Offline answer"):
        assert autogen_output not in printed, printed
