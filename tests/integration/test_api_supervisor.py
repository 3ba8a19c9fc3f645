"""serving.QuietSupervisor: serve's API processes, replaced when one exits, stopped on SIGTERM, with
nothing waking the supervisor in between (its health check is an hour away here).

Real processes: the supervisor and the uvicorn processes it starts, on a loopback port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.utils.waiting import wait_until

pytestmark = pytest.mark.slow(seconds=8)

APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
"""

SUPERVISOR = """
import uvicorn
from agent_api import serving

serving.HEALTHCHECK_SECONDS = 3600.0  # only an exit or a signal can wake it within the test
config = uvicorn.Config("supervised_app:app", host="127.0.0.1", port=0, workers=2, log_level="info")
with config.bind_socket() as sock:
    print(sock.getsockname()[1], flush=True)
    serving.QuietSupervisor(config, sockets=[sock]).run()
"""


def _api_processes(pid: int) -> set[int]:
    """The live uvicorn processes the supervisor ``pid`` started (not multiprocessing's resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"resource_tracker" not in command:
            found.add(int(entry.name))
    return found


def test_an_api_process_that_exits_is_replaced_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    (tmp_path / "supervised_app.py").write_text(APP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    with subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as supervisor:
        _supervise(supervisor)


def _supervise(supervisor: subprocess.Popen[bytes]) -> None:
    try:
        assert supervisor.stdout is not None
        url = f"http://127.0.0.1:{int(supervisor.stdout.readline())}"

        def answers() -> bool:
            try:
                return httpx.get(url, timeout=5).text == "ok"
            except httpx.TransportError:
                return False

        wait_until(lambda: len(_api_processes(supervisor.pid)) == 2 and answers(), timeout=30)  # two serving
        first = _api_processes(supervisor.pid)
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        # Replaced at once (its exit woke the supervisor), not at the next health check.
        wait_until(lambda: killed not in (now := _api_processes(supervisor.pid)) and len(now) == 2, timeout=30)
        wait_until(answers, timeout=30)  # and serving

        children = _api_processes(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)  # woke by the signal, not by a timer
        assert supervisor.wait(timeout=30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in children)
        stderr = supervisor.stderr.read().decode() if supervisor.stderr else ""
        assert "Received SIGTERM, exiting." in stderr and "Stopping parent process" in stderr
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=10)
