"""``/a2a/{team}``: every team as an A2A agent (the official ``a2a-sdk``, JSON-RPC binding).

A task is a run (the task id is the run id) and a context is a session (the context id is the
session id), so an A2A client's tasks can also be read, followed and cancelled through
``/runs``, and ``tasks/cancel`` really stops the team. The SDK's JSON-RPC dispatcher parses and
answers the protocol; :class:`TeamRequestHandler` implements its handler interface on runs. Every
JSON-RPC request is authenticated and rate-limited with the service's API keys before the SDK
sees it; the Agent Cards are public, and name the key as their security scheme.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_routes import create_jsonrpc_routes
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import (
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, request_response

from agent_api import __version__
from agent_api.errors import AgentAPIError, RunNotFound
from agent_api.models.chat import SESSION_ID_PATTERN, AgentRequest
from agent_api.observability import count_error, note
from agent_api.protocols import a2a
from agent_api.routers.deps import PRINCIPAL_STATE, AppState, KeyGate, gated_principal
from agent_api.routers.streams import encode_run
from agent_api.routers.waiting import wait_for_end
from agent_api.runs.model import Run
from agent_api.runs.service import RunOptions
from agent_api.security import Principal

PREFIX = "/a2a"
CARD_PATH = "/.well-known/agent-card.json"
REQUEST_STATE = "agent_api_request"  # the call context's Starlette request
_CONTEXT_ID = re.compile(SESSION_ID_PATTERN)


def _a2a_error(exc: AgentAPIError) -> Exception:
    """A service error as the A2A error a client understands (JSON-RPC error codes)."""
    count_error(exc.error_type)
    if exc.status_code == 404:
        return InvalidParamsError(message=exc.detail)
    if exc.status_code in (409, 422, 429):
        return InvalidRequestError(message=exc.detail)
    return InternalError(message=exc.detail)


class TeamRequestHandler(RequestHandler):
    """A2A's request handler for one team, on runs."""

    def __init__(self, app: FastAPI, team: str) -> None:
        self.app = app
        self.team = team

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.agent_api
        return state

    @staticmethod
    def _owner(context: ServerCallContext) -> str:
        principal = context.state.get(PRINCIPAL_STATE)
        if not isinstance(principal, Principal):  # pragma: no cover - the gate sets it on every request
            raise InvalidRequestError(message="Not authenticated.")
        return principal.key_id

    async def _run(self, task_id: str, context: ServerCallContext) -> Run:
        """The caller's run behind ``task_id``, if it is a task of this agent."""
        try:
            run = await self.state.runs.get(task_id, self._owner(context))
        except RunNotFound:
            raise TaskNotFoundError() from None
        except AgentAPIError as exc:
            raise _a2a_error(exc) from None
        if run.team != self.team:
            raise TaskNotFoundError()
        return run

    async def _start(self, params: SendMessageRequest, context: ServerCallContext, *, wait: bool = False) -> Run:
        owner = self._owner(context)
        message: Message = params.message
        if message.task_id:
            raise UnsupportedOperationError(
                message="A task ends with its run and cannot be continued: send a new message with the same "
                "contextId instead."
            )
        try:
            text = a2a.message_text(message)
        except a2a.A2AInputError as exc:
            raise InvalidParamsError(message=str(exc)) from None
        session_id = message.context_id or None
        try:
            if session_id is not None:
                if not _CONTEXT_ID.match(session_id):
                    raise InvalidParamsError(message="contextId must be 1-64 letters, digits, '-' or '_'.")
                team = await self.state.sessions.claim(session_id, self.team, owner)
                if team != self.team:
                    raise InvalidParamsError(message=f"This context belongs to the agent {team!r}.")
            request = AgentRequest(message=text, agent=self.team, session_id=session_id, stream=True)
            run = await self.state.runs.create(request, owner, RunOptions(stream=True, wait=wait))
        except AgentAPIError as exc:
            raise _a2a_error(exc) from None
        note(team=run.team, session_id=run.session_id, run_id=run.id, protocol="a2a")
        return run

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        configuration = params.configuration
        # A blocking send waits here for its run's end: the run's end step tells this process.
        run = await self._start(params, context, wait=not configuration.return_immediately)
        if configuration.return_immediately:
            return a2a.task(run)
        try:
            ended = await wait_for_end(self.state.runs, run.id, context.state[REQUEST_STATE], cancel_if_abandoned=True)
        except AgentAPIError as exc:
            raise _a2a_error(exc) from None
        if ended is None:  # the client left: its run is cancelled, and nobody reads this
            return a2a.task(run)
        history = configuration.history_length if configuration.HasField("history_length") else None
        return a2a.task(ended, history_length=history)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        run = await self._start(params, context)
        async for event in self._follow(run, stop_on_leave=True):
            yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        run = await self._run(params.id, context)
        if run.status.final:
            raise UnsupportedOperationError(message=f"The task has ended ({run.status.value}); read it with GetTask.")
        async for event in self._follow(run, stop_on_leave=False):
            yield event

    async def _follow(self, run: Run, *, stop_on_leave: bool) -> AsyncGenerator[Event]:
        async for event in encode_run(self.state.runs, run, a2a.StreamEncoder(run), cancel_on_leave=stop_on_leave):
            yield event

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        run = await self._run(params.id, context)
        return a2a.task(run, history_length=params.history_length if params.HasField("history_length") else None)

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        run = await self._run(params.id, context)
        if run.status.final:
            raise TaskNotCancelableError(message=f"The task has ended ({run.status.value}).")
        try:
            stopped = await self.state.runs.cancel(run.id, run.owner)
        except AgentAPIError as exc:
            raise _a2a_error(exc) from None
        return a2a.task(stopped)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        limit = params.page_size or 50
        try:
            runs = await self.state.runs.owner_runs(self._owner(context), 500)
        except AgentAPIError as exc:
            raise _a2a_error(exc) from None
        found = [
            run
            for run in runs
            if run.team == self.team
            and (not params.context_id or run.session_id == params.context_id)
            and (not params.status or a2a.STATES[run.status] == params.status)
        ]
        tasks = [a2a.task(run) for run in found[:limit]]
        return ListTasksResponse(tasks=tasks, page_size=limit, total_size=len(found), next_page_token="")

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError()

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError()

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError()

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError()

    async def on_get_extended_agent_card(self, params: GetExtendedAgentCardRequest, context: ServerCallContext) -> Any:
        raise ExtendedAgentCardNotConfiguredError()


class _CallContext(DefaultServerCallContextBuilder):
    """The SDK's call context (headers, extensions), plus the caller the gate authenticated and the request."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[PRINCIPAL_STATE] = gated_principal(request)
        context.state[REQUEST_STATE] = request  # a blocking send watches it for its client leaving
        return context


def card_for(request: Request, name: str, description: str) -> dict[str, Any]:
    url = str(request.base_url).rstrip("/") + f"{PREFIX}/{name}"
    return agent_card_to_dict(a2a.agent_card(name, description, url, version=__version__))


def mount_a2a(app: FastAPI) -> None:
    """The JSON-RPC endpoint and Agent Card of every team, and the directory of cards at ``/a2a``."""
    teams = [(team.name, team.description) for team in app.state.teams]
    for name, description in teams:
        for route in create_jsonrpc_routes(TeamRequestHandler(app, name), f"{PREFIX}/{name}", _CallContext()):
            assert isinstance(route, Route)
            gated = KeyGate(app, request_response(route.endpoint))
            app.router.routes.append(Route(route.path, endpoint=gated, methods=["POST"]))

        async def card(request: Request, name: str = name, description: str = description) -> JSONResponse:
            return JSONResponse(card_for(request, name, description))

        app.router.routes.append(Route(f"{PREFIX}/{name}{CARD_PATH}", endpoint=card, methods=["GET"]))

    async def directory(request: Request) -> JSONResponse:
        return JSONResponse({"agents": [card_for(request, name, description) for name, description in teams]})

    app.router.routes.append(Route(PREFIX, endpoint=directory, methods=["GET"]))
