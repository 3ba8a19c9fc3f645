"""supervisor.orphaned: a process that ``serve`` started learns that ``serve`` is gone, on either
event loop it runs (the API processes' and the workers' uvloop, asyncio's own), and where the
system gives no pidfd (the check every second)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.utils.waiting import wait_until

# The grandchild: waits for its parent (the middle process) to go, then says so.
CHILD = """
import asyncio, os, sys
from agent_api.supervisor import orphaned
if sys.argv[2] == "no-pidfd":
    del os.pidfd_open
parent = os.getppid()
main = orphaned(parent, poll=0.1)
open(sys.argv[1], "w").write("waiting")
if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.run(main)
else:
    asyncio.run(main)
open(sys.argv[1], "w").write("gone")
"""

# The middle process: starts the grandchild, says it has, and sleeps until it is killed.
MIDDLE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "no-pidfd"])
def test_orphaned_returns_once_the_parent_is_gone(tmp_path: Path, loop: str) -> None:
    said = tmp_path / "said"
    command = [sys.executable, "-c", MIDDLE, textwrap.dedent(CHILD), str(said), loop]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as middle:
        try:
            assert middle.stdout is not None
            child = int(middle.stdout.readline())
            try:
                wait_until(lambda: said.exists() and said.read_text() == "waiting", timeout=20)
                time.sleep(0.3)
                assert said.read_text() == "waiting"  # its parent is still there
                middle.kill()
                middle.wait(timeout=10)
                wait_until(lambda: said.read_text() == "gone", timeout=20)
            finally:
                subprocess.run(["kill", "-9", str(child)], capture_output=True)
        finally:
            middle.kill()
