"""``POST /chat`` and ``POST /chat/stream``: one user turn through a team."""

from __future__ import annotations

from typing import Any, get_args

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from agent_api.errors import AgentAPIError
from agent_api.models.chat import AgentRequest, AgentResponse, ChatMessage, Usage
from agent_api.models.stream import FrameType, StreamFrameData
from agent_api.observability import note
from agent_api.routers.deps import AUTH_RESPONSES, PrincipalDep, RunsDep, StateDep
from agent_api.routers.streams import follow_response
from agent_api.routers.waiting import client_closed, wait_for_end
from agent_api.runs.model import IfBusy
from agent_api.runs.service import RunOptions, raise_for_failure

router = APIRouter(tags=["chat"], responses=AUTH_RESPONSES)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown or expired session."},
    409: {
        "description": "The session is running another turn (see `if_busy`), belongs to another team, or the run "
        "was cancelled or interrupted."
    },
    413: {"description": "The request body is too large."},
    422: {"description": "Invalid request; `detail` names the field."},
    502: {"description": "The model provider failed; the session was not changed."},
    503: {"description": "The session store or the model provider is unavailable."},
    504: {"description": "The model did not answer in time; the session was not changed."},
}

STREAM_DESCRIPTION = """
Answers `text/event-stream`. The turn is a run (its id is in the `X-Run-ID` header and the first
frame). Every frame has an `id:` (the event's id in the run's log, increasing), an `event:` (its
type) and a JSON `data:` that always holds `session_id`, `chunk` and `done`, so a client that
appends `chunk` until `done` gets exactly the final answer.

| event | when | extra fields |
|---|---|---|
| `session` | first frame | `agent` (the team), `run_id` |
| `token` | the model wrote some text | `agent`, `text`; `chunk` = `text` for the answering agent, `""` for the others |
| `message` | an agent finished a message | `agent`, `message` |
| `tool_call` / `tool_result` | an agent called a tool / got its result | `tool_call` / `tool_result` |
| `usage` | the run finished | `usage` |
| `error` | the run failed after the stream began | `detail`, `status`, `error_type` |
| `done` | last frame, always | `done: true`, `run_status`, `response`, `turns_used`, `finished`, `usage` |

A comment line (`: ping`) is sent every 15 s while the model is silent. If the client disconnects,
the run is cancelled (no further model calls) and the unfinished turn is not saved, unless the body
says `"on_disconnect": "continue"`: then the run finishes and saves its turn, and the client can
re-attach with `GET /runs/{run_id}/events` and `Last-Event-ID`.
"""


def _event_schema() -> dict[str, Any]:
    """One event of the stream, as OpenAPI describes text/event-stream items; ``data`` is JSON."""
    # The models the data refers to (ChatMessage, Usage) are components already, through /chat.
    data = StreamFrameData.model_json_schema(ref_template="#/components/schemas/{model}")
    data.pop("$defs", None)
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "id": {
                "type": "string",
                "description": "The event's id in the run's log, increasing. Absent only on the error and done frames "
                "a follower gets when reading the log itself failed (they are not in the log).",
            },
            "event": {"type": "string", "enum": list(get_args(FrameType))},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
        },
    }


SSE_CONTENT = {"text/event-stream": {"schema": _event_schema()}}

STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of Server-Sent Events; each frame's `data` is a StreamFrameData.",
        "content": SSE_CONTENT,
    },
    **{k: v for k, v in ERRORS.items() if k in (404, 409, 413, 422)},
}


def _options(request: AgentRequest, *, stream: bool) -> RunOptions:
    return RunOptions(stream=stream, if_busy=IfBusy(request.if_busy), wait=not stream)


@router.post(
    "/chat",
    response_model=AgentResponse,
    response_model_exclude_none=True,
    responses={
        200: {"description": "The answer (JSON), or the event stream when `stream` is true.", "content": SSE_CONTENT},
        **ERRORS,
    },
)
async def chat(request: AgentRequest, http: Request, runs: RunsDep, state: StateDep, principal: PrincipalDep) -> Any:
    """Send a message to a team; get its answer when it has finished (or a stream if `stream`)."""
    if request.stream:
        return await chat_stream(request, runs, state, principal)
    run = await runs.create(request, principal.key_id, _options(request, stream=False))
    note(team=run.team, session_id=run.session_id, run_id=run.id)
    ended = await wait_for_end(runs, run.id, http, cancel_if_abandoned=request.on_disconnect == "cancel")
    if ended is None:
        return client_closed()
    try:
        raise_for_failure(ended)
    except AgentAPIError as exc:
        exc.headers.setdefault("X-Session-ID", run.session_id)
        exc.headers.setdefault("X-Run-ID", run.id)
        raise
    result = ended.result or {}
    usage = Usage.model_validate(result["usage"])
    note(turns_used=result["turns_used"], prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
    return AgentResponse(
        session_id=run.session_id,
        response=result["response"],
        turns_used=result["turns_used"],
        messages=[ChatMessage.model_validate(m) for m in result["messages"]],
        finished=result["finished"],
        agent=run.team,
        usage=usage,
        cached=result.get("cached", False),
        run_id=run.id,
    )


@router.post(
    "/chat/stream", responses=STREAM_RESPONSES, description=STREAM_DESCRIPTION, response_class=EventSourceResponse
)
async def chat_stream(
    request: AgentRequest, runs: RunsDep, state: StateDep, principal: PrincipalDep
) -> EventSourceResponse:
    """Send a message to a team and receive its work as Server-Sent Events."""
    run = await runs.create(request, principal.key_id, _options(request, stream=True))
    note(team=run.team, session_id=run.session_id, run_id=run.id)
    return follow_response(runs, run, state.settings, cancel_on_disconnect=request.on_disconnect == "cancel")
