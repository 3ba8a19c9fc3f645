"""The FastAPI app: ``create_app(settings)``, and ``app`` for ``uvicorn agent_api.main:app``."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sse_starlette.sse import AppStatus
from starlette.middleware.cors import CORSMiddleware

from agent_api import __version__
from agent_api.agents.loader import load_teams
from agent_api.agents.registry import TeamRegistry
from agent_api.config import Settings, get_settings
from agent_api.exception_handlers import install_exception_handlers
from agent_api.heap import settle_heap
from agent_api.middleware import BodySizeLimit
from agent_api.observability import AccessLog, configure_logging, valid_request_id
from agent_api.routers import agents, agui, chat, health, metrics, openai, runs, sessions, usage
from agent_api.routers.a2a import mount_a2a
from agent_api.routers.deps import AppState
from agent_api.routers.mcp import mount_mcp, serve_mcp
from agent_api.routers.ui import mount_ui
from agent_api.runs.model import utcnow
from agent_api.runs.queue import SaqDispatcher
from agent_api.runs.service import RunService
from agent_api.runtime import open_runtime
from agent_api.security import KeyRing
from agent_api.services.ratelimit import RequestRateLimiter
from agent_api.services.readiness import ModelProbe, model_base_url
from agent_api.serving import QuietServer
from agent_api.shutdown import Shutdown
from agent_api.supervisor import orphaned
from agent_api.telemetry import setup_tracing

if TYPE_CHECKING:
    from agent_api.engine import Workers

log = logging.getLogger("agent_api")

DESCRIPTION = """
Serve AutoGen multi-agent teams over HTTP.

* `POST /chat` runs one user turn through a team and answers when it has finished;
  `POST /chat/stream` sends the team's work as Server-Sent Events while it happens.
* `POST /runs` starts a turn in the background: poll it, follow its events (and re-attach with
  `Last-Event-ID`), cancel it, or get a webhook when it ends. `/chat` is a run you wait for.
* Every team is also a model of the OpenAI-compatible API (`/v1/chat/completions`), an AG-UI
  agent (`POST /ag-ui/{team}`), an MCP tool (`/mcp`, not listed here) and an A2A agent
  (`/a2a/{team}`, cards at `/a2a`; not listed here). Each of them creates runs.
* Sessions keep each conversation's history (with a TTL) so that the next turn continues it.
* Send your API key as `X-API-Key` or `Authorization: Bearer` (the "Authorize" button here).
"""


def _announce_auth(keys: KeyRing) -> None:
    if keys.enabled:
        log.info("API keys required: %d configured", len(keys))
    else:
        log.warning(
            "AUTHENTICATION IS OFF: API_KEYS is empty, so anyone who can reach this service can use it "
            "and all callers share one set of sessions. Set API_KEYS before exposing it."
        )


def _uvicorn_server() -> QuietServer | None:
    """The uvicorn server running this app (its SIGTERM handler is a bound method of it), made quiet.

    None when the app does not run in uvicorn's main thread (an ASGI test client, a server in a
    thread of its own, which installs no signal handler).
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return QuietServer.adopt(server)


async def _watch_server_exit(shutdown: Shutdown, server: QuietServer | None, poll: float = 0.2) -> None:
    """Start the shutdown (draining runs) as soon as uvicorn is asked to exit.

    uvicorn has no shutdown hook that runs before it waits for open connections. Its server
    tells when it exits; without one, sse-starlette's flag (set by uvicorn's signal handler) is
    polled.
    """
    if server is not None:
        await server.exiting()
    else:
        while not AppStatus.should_exit:
            await asyncio.sleep(poll)
    await shutdown.begin()


async def _stop_when_orphaned(parent_pid: int, server: QuietServer | None) -> None:
    """One of several API processes: stop (as on SIGTERM) once the ``serve`` that started it is gone.

    uvicorn's supervisor starts them with multiprocessing; without this they would live on after
    a ``serve`` killed with SIGKILL, holding the port.
    """
    await orphaned(parent_pid)
    log.warning("the process that started this API process (%d) is gone: stopping", parent_pid)
    if server is not None:
        server.should_exit = True  # as its SIGTERM handler does


def _in_background(stack: AsyncExitStack, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` as a task of this loop until ``stack`` closes (then it is cancelled)."""
    task = asyncio.get_running_loop().create_task(work)
    stack.callback(task.cancel)


async def _stop_on_drain(shutdown: Shutdown, workers: Workers) -> None:
    await shutdown.draining.wait()
    await workers.stop(shutdown.grace)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_level, settings.log_format)
    async with AsyncExitStack() as stack:
        teams: TeamRegistry = app.state.teams
        runtime = await open_runtime(settings, teams, stack)
        shutdown = Shutdown(settings.shutdown_grace_seconds)
        # Before the server's main loop starts (it starts once the app has), so that it is quiet.
        server = _uvicorn_server()
        _in_background(stack, _watch_server_exit(shutdown, server))
        parent = multiprocessing.parent_process()  # uvicorn's supervisor, when there are several API processes
        if parent is not None and parent.pid is not None:
            _in_background(stack, _stop_when_orphaned(parent.pid, server))

        model, backend = settings.openai_model, "openai-compatible"
        if settings.workers_in_process:
            # Only a process that runs agents loads the engine (AutoGen, the model client).
            from agent_api.engine import open_engine, start_workers

            llm, runner = await open_engine(settings, teams, stack)
            workers = await start_workers(
                runtime, llm, runner, stack, count=settings.workers_in_process, in_process=True
            )
            model, backend = llm.model, llm.backend
            # On SIGTERM the in-process workers let their runs finish for the grace period, then
            # fail the rest: followers get the ending, and the server can close its connections.
            _in_background(stack, _stop_on_drain(shutdown, workers))
        elif settings.uses_offline_model:
            model, backend = "offline-model", "offline"
        if isinstance(runtime.dispatcher, SaqDispatcher):
            _in_background(stack, runtime.dispatcher.sweep_forever())
        if runtime.store.fanout is not None:  # followers' events over one pub/sub connection
            _in_background(stack, runtime.store.fanout.run())
        if runtime.store.ends is not None:  # the ends of the runs this process's requests wait for
            _in_background(stack, runtime.store.ends.run())

        keys = KeyRing(settings.api_key_list, settings.admin_key_list)
        _announce_auth(keys)
        # Per-key limits apply when there are keys; open mode has one anonymous caller.
        rate_limiter = None
        if keys.enabled and settings.rate_limit:
            rate_limiter = RequestRateLimiter.create(
                settings.rate_limit, None if settings.redis_url is None else runtime.redis
            )
        max_runs = settings.max_concurrent_runs_per_key if keys.enabled else 0
        runs = RunService(
            runtime.store,
            runtime.lifecycle,
            runtime.sessions,
            teams,
            shutdown,
            usage=runtime.usage,
            max_runs_per_key=max_runs or None,
            allow_private_webhooks=settings.webhook_allow_private,
        )
        model_probe = ModelProbe(model_base_url(settings))
        stack.push_async_callback(model_probe.close)
        app.state.agent_api = AppState(
            settings=settings,
            sessions=runtime.sessions,
            teams=teams,
            model=model,
            model_backend=backend,
            runs=runs,
            keys=keys,
            rate_limiter=rate_limiter,
            shutdown=shutdown,
            started_at=utcnow(),
            model_probe=model_probe,
            usage=runtime.usage,
        )
        await stack.enter_async_context(serve_mcp(app, app.state.agent_api))
        log.info(
            "agent-api %s ready: store=%s model=%s (%s), %d in-process run worker(s)",
            __version__,
            "embedded" if settings.redis_url is None else "redis",
            model,
            backend,
            settings.workers_in_process,
        )
        if server is not None:
            # A process of the app's own (not a test client's): what it has built stays out of
            # the collector's way from now on (its full collections cost a third of its CPU under load).
            settle_heap()
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; its long-lived parts are created when it starts (the lifespan)."""
    settings = settings or get_settings()
    docs = settings.docs_enabled
    # The docs pages load Swagger UI and ReDoc from the package (fastapi-offline), not from a CDN:
    # they work offline and under a strict Content-Security-Policy.
    app = (FastAPIOffline if docs else FastAPI)(
        title="agent-api",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    # Team files are checked now, so that a bad one stops start-up with its name and problem.
    app.state.teams = TeamRegistry(load_teams(settings.teams_dir, settings.team_plugin_list))
    install_exception_handlers(app, {openai.PREFIX: openai.openai_error})
    for module in (chat, runs, openai, agui, sessions, agents, usage, health):
        app.include_router(module.router)
    mount_mcp(app)
    mount_a2a(app)
    mount_ui(app)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    # Middleware, innermost first: body limit, CORS, access log and metrics, request id.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID", "Last-Event-ID"],
            expose_headers=["X-Session-ID", "X-Run-ID", "X-Request-ID", "Retry-After", "Location"],
        )
    app.add_middleware(AccessLog)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID", validator=valid_request_id)
    tracing = setup_tracing(settings)
    if tracing is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Outermost: a request's span covers everything, and its context is current in the routes.
        FastAPIInstrumentor.instrument_app(app, tracer_provider=tracing, excluded_urls="/health,/metrics,/static")
    _document_teams(app, [team.name for team in app.state.teams])
    return app


def _document_teams(app: FastAPI, names: list[str]) -> None:
    """List the registered teams as the allowed values of ``agent`` in the OpenAPI schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for model in ("AgentRequest", "RunRequest"):
                schema["components"]["schemas"][model]["properties"]["agent"]["enum"] = names
            schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"] = names
            for path, method, name in (("/v1/models/{model}", "get", "model"), ("/ag-ui/{team}", "post", "team")):
                for parameter in schema["paths"][path][method]["parameters"]:
                    if parameter["name"] == name:
                        parameter["schema"]["enum"] = names
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # ``agent_api.main:app`` is built on first access, so importing this module reads no settings.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
