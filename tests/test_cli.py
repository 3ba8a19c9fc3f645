"""`agent-api serve` with nothing configured: embedded store, offline model, clean stdout."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.utils.process import serve_process


def test_serve_runs_on_embedded_defaults(tmp_path: Path) -> None:
    with serve_process(tmp_path, {"LOG_FORMAT": "text"}) as server:
        base = server.url
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200
        assert health.json()["store"] == "embedded" and health.json()["model_backend"] == "offline"

        first = httpx.post(f"{base}/chat", json={"message": "Does this work without a key?"}, timeout=30)
        assert first.status_code == 200, first.text
        sid = first.json()["session_id"]
        second = httpx.post(f"{base}/chat", json={"message": "And now?", "session_id": sid}, timeout=30)
        assert "I can see 2 earlier messages" in second.json()["response"]
        assert httpx.get(f"{base}/docs").status_code == 200
        server.terminate()

    log = server.stderr.read_text()
    assert "offline model" in log and "embedded" in log
    printed = server.stdout.read_text()
    for autogen_output in ("TERMINATE", "research_assistant", "(to ", ">>>>", "Offline answer"):
        assert autogen_output not in printed, printed
