"""``/runs``: turns that outlive their request — start, read, follow, re-attach, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Response
from sse_starlette import EventSourceResponse

from agent_api.models.chat import SESSION_ID_PATTERN
from agent_api.models.runs import (
    EVENT_ID_PATTERN,
    RUN_ID_PATTERN,
    AnswerBody,
    InputAnswer,
    KeyRunList,
    RunList,
    RunRequest,
    RunResponse,
    RunStatusName,
)
from agent_api.observability import note
from agent_api.routers.chat import SSE_CONTENT
from agent_api.routers.deps import AUTH_RESPONSES, PrincipalDep, RunsDep, StateDep
from agent_api.routers.streams import follow_response
from agent_api.runs.model import IfBusy
from agent_api.runs.service import RunOptions
from agent_api.runs.views import run_response

router = APIRouter(tags=["runs"], responses=AUTH_RESPONSES)

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="The id returned by POST /runs.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown or expired run, or another key's."}}

EVENTS_DESCRIPTION = """
The run's events as Server-Sent Events, the same frames as `POST /chat/stream`, from the first
one, or from after the event named by the `Last-Event-ID` header (or `?after=`): a client whose
connection broke re-attaches there and gets exactly the events it missed. The stream ends after
the `done` frame; a finished run replays its events. Any API process serves any run's events.
Leaving the stream does not stop the run.
"""


@router.post(
    "/runs",
    status_code=202,
    response_model=RunResponse,
    response_model_exclude_none=True,
    responses={
        404: {"description": "Unknown or expired session."},
        409: {"description": "The session is running another turn (`if_busy: reject`) or belongs to another team."},
        422: {"description": "Invalid request (a refused webhook URL included); `detail` names the field."},
    },
)
async def create_run(request: RunRequest, runs: RunsDep, principal: PrincipalDep, response: Response) -> RunResponse:
    """Start a turn in the background; follow it at `/runs/{run_id}/events`."""
    options = RunOptions(
        stream=request.stream,
        if_busy=IfBusy(request.if_busy),
        webhook=request.webhook,
        metadata=request.metadata,
    )
    run = await runs.create(request, principal.key_id, options)
    note(team=run.team, session_id=run.session_id, run_id=run.id)
    response.headers["Location"] = f"/runs/{run.id}"
    response.headers["X-Session-ID"] = run.session_id
    return run_response(run)


@router.get("/runs", response_model=KeyRunList, response_model_exclude_none=True)
async def list_runs(
    runs: RunsDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    status: Annotated[RunStatusName | None, Query(description="Only runs in this status.")] = None,
) -> KeyRunList:
    """The calling key's runs (every way in: /chat, /runs, /v1, ...), newest first."""
    found = await runs.owner_runs(principal.key_id, limit)
    return KeyRunList(runs=[run_response(r) for r in found if status is None or r.status.value == status])


@router.get("/runs/{run_id}", response_model=RunResponse, response_model_exclude_none=True, responses=NOT_FOUND)
async def get_run(run_id: RunId, runs: RunsDep, principal: PrincipalDep) -> RunResponse:
    """A run's status, and its result or error once it has ended."""
    return run_response(await runs.get(run_id, principal.key_id))


@router.get(
    "/runs/{run_id}/events",
    response_class=EventSourceResponse,
    description=EVENTS_DESCRIPTION,
    responses={200: {"description": "A stream of Server-Sent Events.", "content": SSE_CONTENT}, **NOT_FOUND},
)
async def run_events(
    run_id: RunId,
    runs: RunsDep,
    state: StateDep,
    principal: PrincipalDep,
    last_event_id: Annotated[
        str, Header(pattern=EVENT_ID_PATTERN, description="Resume after this event id (what EventSource sends).")
    ] = "0",
    after: Annotated[
        str, Query(pattern=EVENT_ID_PATTERN, description="Resume after this event id ('0': from the start).")
    ] = "0",
) -> EventSourceResponse:
    """Follow a run's events (re-attach with `Last-Event-ID`)."""
    cursor = last_event_id if last_event_id != "0" else after
    run = await runs.get(run_id, principal.key_id)
    return follow_response(runs, run, state.settings, after=cursor)


@router.post("/runs/{run_id}/cancel", response_model=RunResponse, response_model_exclude_none=True, responses=NOT_FOUND)
async def cancel_run(run_id: RunId, runs: RunsDep, principal: PrincipalDep) -> RunResponse:
    """Stop a run; nothing of it is saved. Answers with the run once it has stopped."""
    return run_response(await runs.cancel(run_id, principal.key_id))


@router.post(
    "/runs/{run_id}/input",
    response_model=RunResponse,
    response_model_exclude_none=True,
    responses={
        **NOT_FOUND,
        409: {"description": "The run is not waiting for input, or waits on another request (`request_id`)."},
        422: {"description": "Invalid answer, or the wrong kind for the pending request (content vs approved)."},
    },
)
async def answer_run(
    run_id: RunId, answer: Annotated[AnswerBody, Body()], runs: RunsDep, principal: PrincipalDep
) -> RunResponse:
    """Answer the request a `requires_input` run waits on: `{request_id, content}` for a message,
    `{request_id, approved, reason?}` for an approval. The run goes on (any API process may answer)."""
    given = InputAnswer.model_validate(answer.model_dump(exclude_none=True))
    return run_response(await runs.answer(run_id, principal.key_id, given))


@router.get(
    "/session/{session_id}/runs",
    response_model=RunList,
    response_model_exclude_none=True,
    responses={404: {"description": "Unknown or expired session, or another key's."}},
)
async def session_runs(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    runs: RunsDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RunList:
    """A session's runs, newest first."""
    found = await runs.session_runs(session_id, principal.key_id, limit)
    return RunList(session_id=session_id, runs=[run_response(r) for r in found])
