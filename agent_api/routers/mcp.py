"""``/mcp``: every team as a tool of a streamable-HTTP MCP server (the official ``mcp`` SDK).

A tool call is a run: ``ask_<team>`` creates it, reports progress while the team works (who
speaks, the tools they call) and answers with the team's final answer and the session id. The
client cancelling the call (MCP's ``notifications/cancelled``) cancels the run. Every HTTP
request to ``/mcp`` is authenticated with the service's API keys (``Authorization: Bearer`` or
``X-API-Key``) and rate-limited like any other route, before the MCP SDK sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agent_api import __version__
from agent_api.agents.teams import Team
from agent_api.errors import AgentAPIError
from agent_api.models.chat import MAX_MESSAGE_CHARS, SESSION_ID_PATTERN, AgentRequest, message_problem
from agent_api.observability import count_error
from agent_api.routers.deps import AppState, KeyGate, gated_principal
from agent_api.runs.service import RunOptions, raise_for_failure
from agent_api.security import Principal

log = logging.getLogger(__name__)

PATH = "/mcp"
PROGRESS_INTERVAL = 0.5  # at most this often a "still writing" progress while tokens stream


class TeamAnswer(BaseModel):
    """What a team answered."""

    answer: str = Field(description="The team's final answer.")
    session_id: str = Field(description="Pass it back to continue this conversation.")
    run_id: str = Field(description="The run (GET /runs/{run_id} has every message of it).")
    finished: bool = Field(description="True when the team ended the conversation, false when it ran out of turns.")


def _principal(ctx: Context) -> Principal:
    principal = gated_principal(ctx.request_context.request)
    if principal is None:  # pragma: no cover - the gate sets it on every request
        raise ToolError("Not authenticated.")
    return principal


def _progress_note(event: str, data: dict[str, Any]) -> str | None:
    agent = data.get("agent")
    if event == "token":
        return f"{agent} is writing"
    if event == "message":
        return f"{agent} finished a message"
    if event == "tool_call":
        return f"{agent} calls {data.get('tool_call', {}).get('name')}"
    if event == "tool_result":
        return "a tool answered"
    return None


def _ask_tool(state: AppState, team: Team) -> Any:
    async def ask(
        message: Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS, description="Your message.")],
        ctx: Context,
        session_id: Annotated[
            str | None,
            Field(pattern=SESSION_ID_PATTERN, description="Continue this conversation (from an earlier answer)."),
        ] = None,
    ) -> TeamAnswer:
        principal = _principal(ctx)
        problem = message_problem(message)
        if problem is not None:
            raise ToolError(problem)
        request = AgentRequest(message=message, agent=team.name, session_id=session_id, stream=True)
        try:
            run = await state.runs.create(request, principal.key_id, RunOptions(stream=True))
        except AgentAPIError as exc:
            count_error(exc.error_type)
            raise ToolError(exc.detail) from None
        log.info("mcp: run %s started for %s", run.id, team.name, extra={"run_id": run.id})
        try:
            step, last_note = 0, 0.0
            async for entry in state.runs.follow(run.id):
                note = _progress_note(entry.event, orjson.loads(entry.data))
                now = time.monotonic()
                if note is None or (entry.event == "token" and now - last_note < PROGRESS_INTERVAL):
                    continue
                step += 1
                last_note = now
                await ctx.report_progress(step, None, note)
            ended = await state.runs.get(run.id, principal.key_id)
        except asyncio.CancelledError:  # the client cancelled the call: so does its run
            await state.runs.abandon(run.id)
            raise
        except AgentAPIError as exc:
            raise ToolError(exc.detail) from None
        try:
            raise_for_failure(ended)
        except AgentAPIError as exc:
            count_error(exc.error_type)
            raise ToolError(f"{exc.detail} (run {run.id}, {exc.error_type})") from None
        result = ended.result or {}
        return TeamAnswer(
            answer=result["response"], session_id=run.session_id, run_id=run.id, finished=result["finished"]
        )

    return ask


def build_server(state: AppState) -> MCPServer:
    """The MCP server: one ``ask_<team>`` tool per team."""
    server: MCPServer = MCPServer("agent-api", version=__version__)
    for team in state.teams:
        server.add_tool(
            _ask_tool(state, team),
            name=f"ask_{team.name}",
            title=f"Ask {team.name}",
            description=f"{team.description} Answers with the team's final answer and a session id that "
            "continues the conversation.",
        )
    return server


@contextlib.asynccontextmanager
async def serve_mcp(app: FastAPI, state: AppState) -> AsyncIterator[None]:
    """Run the MCP server for the app's lifetime (its session manager lives in the lifespan)."""
    manager = StreamableHTTPSessionManager(
        app=build_server(state)._lowlevel_server,
        # Stateful: a call's cancellation arrives as a separate request of the same MCP session,
        # which must reach the task running the call. Sessions live in this process.
        stateless=False,
        # Every request carries an API key (when keys are configured), so the SDK's protection of
        # unauthenticated local servers against DNS rebinding is not needed, and it would refuse
        # any Host header but localhost's.
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    app.state.mcp_app = KeyGate(app, StreamableHTTPASGIApp(manager))
    async with manager.run():
        yield


class _Endpoint:
    """``/mcp`` as a route from the start; it forwards to the server of the running lifespan."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = getattr(self.app.state, "mcp_app", None)
        if inner is None:
            await JSONResponse({"detail": "The service is starting."}, 503)(scope, receive, send)
            return
        await inner(scope, receive, send)


def mount_mcp(app: FastAPI) -> None:
    app.router.routes.append(Route(PATH, endpoint=_Endpoint(app), methods=["GET", "POST", "DELETE"]))
