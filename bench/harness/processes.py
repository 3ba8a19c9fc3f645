"""Subprocesses on loopback: free ports, start in a fresh directory, bounded waits, stop for sure."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from harness import ROOT

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def child_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """os.environ plus ``extra`` (a None value removes the variable); this checkout comes first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or ``(no output)``."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` and wait up to ``timeout`` s; if it is still running, SIGKILL its process group."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Still running, so the group (its own session, see spawn) is ours: kill it with any children.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


@contextlib.contextmanager
def spawn(
    args: Sequence[str], *, name: str, env: Mapping[str, str | None] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Start ``args`` in a fresh temp dir (its cwd, also holding stdout/stderr files); stop and clean up after."""
    workdir = Path(tempfile.mkdtemp(prefix=f"agent-api-bench-{name}-"))
    try:
        with open(workdir / "stdout.log", "wb") as out, open(workdir / "stderr.log", "wb") as err:
            process = subprocess.Popen(
                list(args),
                cwd=workdir,
                env=child_env(env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            yield process, workdir
        finally:
            stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, stderr: Path, timeout: float
) -> None:
    """Poll ``ready()`` until it returns True; raise (with the stderr tail) on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}:\n{tail(stderr)}")
        try:
            if ready():
                return
        except (OSError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready after {timeout:.0f} s:\n{tail(stderr)}")
        time.sleep(0.1)
