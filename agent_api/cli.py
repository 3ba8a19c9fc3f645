"""The ``agent-api`` command: ``serve`` the API, or run the ``offline-llm`` model server."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
from typing import Any, NoReturn

import uvicorn
from pydantic import ValidationError

from agent_api.config import Settings, get_settings
from agent_api.security import hash_key, key_id_of
from agent_api.serving import QuietSupervisor
from agent_api.supervisor import worker_processes

EXIT_CONFIG = 2  # a setting, a team file or the port is wrong: fix it, restarting will not help


def _refuse(what: str, problem: str) -> NoReturn:
    print(f"agent-api: {what}: {problem}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def _checked_settings(what: str, *, needs_redis: str | None = None) -> Settings:
    """The settings, with everything start-up reads checked now: one line and exit 2 if one is wrong.

    ``needs_redis``: why REDIS_URL must be set, if it must. For a process that runs agents: the
    teams are checked in this process, which loads AutoGen anyway.
    """
    settings = _valid_settings(what, needs_redis=needs_redis)
    _check_what_start_up_reads(what, settings, apart=False)
    return settings


def _valid_settings(what: str, *, needs_redis: str | None = None) -> Settings:
    """The settings, valid (one line and exit 2 if not); nothing they name is read yet."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]).upper() if error.get("loc") else "settings"
        _refuse(what, f"{name}: {str(error['msg']).removeprefix('Value error, ')}")
    if needs_redis is not None and settings.redis_url is None:
        _refuse(what, f"REDIS_URL: not set; {needs_redis}")
    return settings


def _check_what_start_up_reads(what: str, settings: Settings, *, apart: bool) -> None:
    """The teams and the model config list the settings name: one line and exit 2 if one is wrong.

    The teams are checked as a process that runs them would load them (their tools' schemas
    included, which needs AutoGen): here, clearly, not in each worker. ``apart``: in a short-lived
    process, so that `serve`, which only supervises and serves HTTP, does not hold AutoGen's
    memory for its whole life.
    """
    from agent_api.agents.loader import check_teams

    if apart:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as checker:
            problem = checker.submit(check_teams, settings.teams_dir, settings.team_plugin_list).result()
    else:
        problem = check_teams(settings.teams_dir, settings.team_plugin_list)
    if problem is not None:
        _refuse(what, problem)
    try:
        settings.load_config_list()
    except OSError as exc:
        _refuse(what, f"OAI_CONFIG_LIST: cannot read {settings.oai_config_list!r}: {exc.strerror or exc}")
    except ValueError as exc:  # json.JSONDecodeError included
        _refuse(what, f"OAI_CONFIG_LIST: not a valid config list: {exc}")


def _check_port(host: str, port: int) -> None:
    """Fail before anything starts when the address cannot be bound (uvicorn would log "ready" first)."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        _refuse("cannot start", f"PORT: cannot listen on {host}:{port}: {exc.strerror or exc}")


def _serve(args: argparse.Namespace) -> None:
    if args.workers_in_process is not None:
        # The settings are read again in each API process: pass the flag on the way they read it.
        os.environ["WORKERS_IN_PROCESS"] = str(args.workers_in_process)
    settings = _valid_settings("cannot start")
    api_processes = args.workers or settings.api_processes
    run_workers = settings.run_worker_processes
    if run_workers and "workers_in_process" not in settings.model_fields_set:
        # The worker processes run the agents; the API processes serve HTTP only.
        os.environ["WORKERS_IN_PROCESS"] = "0"
        get_settings.cache_clear()
    with contextlib.ExitStack() as cleanup:
        if (api_processes > 1 or run_workers) and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Every process writes its metrics here and /metrics on any API process sums them all.
            # prometheus_client reads it when it is imported, so before anything imports it: this
            # process serves the API itself when there is one. Removed when `serve` exits, after
            # its processes have stopped.
            metrics = tempfile.TemporaryDirectory(prefix="agent-api-metrics-", ignore_cleanup_errors=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = cleanup.enter_context(metrics)
        _serve_processes(args, settings, api_processes, run_workers)


def _serve_processes(args: argparse.Namespace, settings: Settings, api_processes: int, run_workers: int) -> None:
    """The API processes (uvicorn) and the worker processes, until the API stops."""
    # This process runs agents itself when it is the one API process and has run workers of its own
    # (the embedded default): it loads AutoGen anyway, and checks the teams without a process apart.
    runs_agents = api_processes == 1 and get_settings().workers_in_process > 0
    _check_what_start_up_reads("cannot start", settings, apart=not runs_agents)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    _check_port(host, port)
    from agent_api.observability import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    # uvicorn's hard deadline comes after the app's own grace period for running turns.
    grace = int(settings.shutdown_grace_seconds) + 10
    if run_workers:
        # uvicorn raises the SIGTERM or SIGINT it handled again once it has stopped; with the
        # default handlers that would end this process before it stops its workers.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": api_processes,
        "log_level": settings.log_level,
        "log_config": None,  # the app's own logging (JSON lines on stderr)
        "access_log": False,  # the app writes one line per request itself
        "timeout_graceful_shutdown": grace,
        # uvicorn's default (5 s) equals many clients' pool idle time: a request sent on a
        # connection the server is closing at that moment fails before it reaches the app.
        "timeout_keep_alive": settings.keep_alive_timeout,
    }
    # The workers stop after the API: requests still waiting for their runs are answered first.
    with worker_processes(run_workers, stop_timeout=grace + 5):
        if api_processes > 1:
            # What uvicorn.run does for several processes, with a supervisor that sleeps at rest.
            config = uvicorn.Config("agent_api.main:app", **options)
            with config.bind_socket() as sock:
                QuietSupervisor(config, sockets=[sock]).run()
        else:
            uvicorn.run("agent_api.main:app", **options)


def _worker(args: argparse.Namespace) -> None:
    import asyncio

    settings = _checked_settings(
        "cannot start the worker", needs_redis="a worker needs REDIS_URL: it takes runs from Redis"
    )
    from agent_api.observability import configure_logging
    from agent_api.worker import run_worker

    configure_logging(settings.log_level, settings.log_format)
    worker = run_worker(settings, metrics_port=args.metrics_port, parent_pid=args.parent_pid)
    try:
        import uvloop  # the event loop uvicorn runs the API on (uvicorn[standard]), where available
    except ImportError:
        asyncio.run(worker)
    else:
        uvloop.run(worker)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="agent-api", description="AutoGen teams behind an HTTP API.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API (settings from the environment and .env)")
    serve.add_argument("--host", help="address to bind (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT, 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        help="API processes (uvicorn workers; default: WORKERS; with Redis one per two cores, at least 2 on 2 cores)",
    )
    serve.add_argument(
        "--workers-in-process",
        type=int,
        help="run workers inside each API process (default: WORKERS_IN_PROCESS, 1; 0 with `agent-api worker`s)",
    )
    worker = commands.add_parser("worker", help="execute runs from the job queue (needs REDIS_URL)")
    worker.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port")
    worker.add_argument("--parent-pid", type=int, help="stop (as on SIGTERM) when the process with this pid exits")
    commands.add_parser("offline-llm", help="run the offline OpenAI-compatible model server", add_help=False)
    hash_parser = commands.add_parser("hash-key", help="print the sha256: form of an API key, for API_KEYS")
    hash_parser.add_argument("key", nargs="?", help="the key (default: read from standard input)")
    id_parser = commands.add_parser(
        "key-id", help="print a key's id (as logs, GET /usage and KEY_TOKEN_BUDGETS name it)"
    )
    id_parser.add_argument("key", nargs="?", help="the key or its sha256: form (default: read from standard input)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "offline-llm":
        from agent_api.offline_llm import main as offline_main

        offline_main(rest)
    elif args.command in ("hash-key", "key-id"):
        key = args.key if args.key is not None else sys.stdin.readline().rstrip("\n")
        if not key:
            parser.error(f"{args.command} needs a non-empty key")
        print(hash_key(key) if args.command == "hash-key" else key_id_of(key))
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    elif args.command == "worker":
        _worker(args)
    else:
        _serve(args)


if __name__ == "__main__":
    main()
