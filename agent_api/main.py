"""The FastAPI app: ``create_app(settings)``, and ``app`` for ``uvicorn agent_api.main:app``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from agent_api import __version__, metrics
from agent_api.agents.cache import ResponseCache
from agent_api.agents.llm import cache_openai_kwargs, create_llm_provider, quiet_autogen_logging
from agent_api.agents.loader import load_teams
from agent_api.agents.registry import TeamRegistry
from agent_api.agents.runner import TeamRunner, create_executor
from agent_api.config import Settings, get_settings
from agent_api.exception_handlers import install_exception_handlers
from agent_api.middleware import BodySizeLimit
from agent_api.observability import AccessLog, configure_logging, valid_request_id
from agent_api.routers import agents, chat, health, sessions
from agent_api.routers.deps import AppState
from agent_api.routers.ui import mount_ui
from agent_api.security import KeyRing
from agent_api.services.chat import ChatService
from agent_api.services.leases import Leases
from agent_api.services.ratelimit import RequestRateLimiter
from agent_api.services.sessions import SessionManager
from agent_api.services.store import create_redis, create_sync_redis
from agent_api.shutdown import Shutdown

log = logging.getLogger("agent_api")

DESCRIPTION = """
Serve AutoGen multi-agent teams over HTTP.

* `POST /chat` runs one user turn through a team and answers when it has finished;
  `POST /chat/stream` sends the team's work as Server-Sent Events while it happens.
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


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_level, settings.log_format)
    quiet_autogen_logging()
    cache_openai_kwargs()
    async with AsyncExitStack() as stack:
        redis = create_redis(settings)
        stack.push_async_callback(redis.aclose)
        offline_url = None
        if settings.uses_offline_model:
            from agent_api.offline_llm import OfflineServer

            offline = OfflineServer().start()
            stack.callback(offline.stop)
            offline_url = offline.base_url
            log.warning(
                "No model configured (OPENAI_API_KEY, OPENAI_BASE_URL or OAI_CONFIG_LIST): "
                "using the built-in offline model, which gives canned answers."
            )
        llm = create_llm_provider(settings, offline_base_url=offline_url)
        stack.callback(llm.close)
        executor = create_executor(settings.thread_pool_size)
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        response_cache = None
        if settings.llm_cache == "redis":
            response_cache = ResponseCache(create_sync_redis(settings), ttl=settings.llm_cache_ttl)
            stack.callback(response_cache.close)
            log.info("response cache on: first turns answered from Redis for %ss", settings.llm_cache_ttl)

        shutdown = Shutdown(settings.shutdown_grace_seconds)
        watcher = asyncio.get_running_loop().create_task(shutdown.watch())
        stack.callback(watcher.cancel)

        keys = KeyRing(settings.api_key_list)
        _announce_auth(keys)
        # Per-key limits apply when there are keys; open mode has one anonymous caller.
        rate_limiter = None
        if keys.enabled and settings.rate_limit:
            rate_limiter = RequestRateLimiter.create(settings.rate_limit, None if settings.redis_url is None else redis)
        max_runs = settings.max_concurrent_runs_per_key if keys.enabled else 0

        session_manager = SessionManager(redis, ttl=settings.session_ttl, max_history=settings.max_history_messages)
        teams: TeamRegistry = app.state.teams
        runner = TeamRunner(llm, executor, max_history=settings.max_history_messages, cache=response_cache)
        await runner.warm_up(list(teams))
        chat_service = ChatService(
            session_manager,
            runner,
            teams,
            Leases(redis, ttl=settings.lease_ttl),
            shutdown,
            model=llm.model,
            max_runs_per_key=max_runs or None,
            max_running=settings.thread_pool_size,
        )
        app.state.agent_api = AppState(
            settings=settings,
            sessions=session_manager,
            teams=teams,
            llm=llm,
            chat=chat_service,
            keys=keys,
            rate_limiter=rate_limiter,
            shutdown=shutdown,
        )
        log.info(
            "agent-api %s ready: store=%s model=%s (%s), %d run threads",
            __version__,
            "embedded" if settings.redis_url is None else "redis",
            llm.model,
            llm.backend,
            settings.thread_pool_size,
        )
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; its long-lived parts are created when it starts (the lifespan)."""
    settings = settings or get_settings()
    docs = settings.docs_enabled
    app = FastAPI(
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
    install_exception_handlers(app)
    for module in (chat, sessions, agents, health):
        app.include_router(module.router)
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
            allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Session-ID", "X-Request-ID", "Retry-After"],
        )
    app.add_middleware(AccessLog)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID", validator=valid_request_id)
    _document_teams(app, [team.name for team in app.state.teams])
    return app


def _document_teams(app: FastAPI, names: list[str]) -> None:
    """List the registered teams as the allowed values of ``agent`` in the OpenAPI schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema["components"]["schemas"]["AgentRequest"]["properties"]["agent"]["enum"] = names
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
