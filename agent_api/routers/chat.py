"""``POST /chat`` and ``POST /chat/stream``: one user turn through a team."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, get_args

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from agent_api.config import Settings
from agent_api.models.chat import AgentRequest, AgentResponse
from agent_api.models.stream import FrameType, StreamFrame, StreamFrameData
from agent_api.routers.deps import AUTH_RESPONSES, ChatDep, PrincipalDep, StateDep
from agent_api.services.chat import ChatService, Turn

router = APIRouter(tags=["chat"], responses=AUTH_RESPONSES)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown or expired session."},
    409: {"description": "The session is running another request, or belongs to another team."},
    413: {"description": "The request body is too large."},
    422: {"description": "Invalid request; `detail` names the field."},
    502: {"description": "The model provider failed; the session was not changed."},
    503: {"description": "The session store or the model provider is unavailable."},
    504: {"description": "The model did not answer in time; the session was not changed."},
}

STREAM_DESCRIPTION = """
Answers `text/event-stream`. Every frame has an `id:` (increasing within the run), an `event:`
(its type) and a JSON `data:` that always holds `session_id`, `chunk` and `done`, so a client
that appends `chunk` until `done` gets exactly the final answer.

| event | when | extra fields |
|---|---|---|
| `session` | first frame | `agent` (the team) |
| `token` | the model wrote some text | `agent`, `text`; `chunk` = `text` for the answering agent, `""` for the others |
| `message` | an agent finished a message | `agent`, `message` |
| `tool_call` / `tool_result` | an agent called a tool / got its result | `tool_call` / `tool_result` |
| `usage` | the run finished | `usage` |
| `error` | the run failed after the stream began | `detail`, `status`, `error_type` |
| `done` | last frame, always | `done: true`, `response`, `turns_used`, `finished`, `usage` |

A comment line (`: ping`) is sent every 15 s while the model is silent. If the client disconnects,
the run is cancelled (no further model calls) and the unfinished turn is not saved.
"""


def _event_schema() -> dict[str, Any]:
    """One event of the stream, as OpenAPI describes text/event-stream items; ``data`` is JSON."""
    # The models the data refers to (ChatMessage, Usage) are components already, through /chat.
    data = StreamFrameData.model_json_schema(ref_template="#/components/schemas/{model}")
    data.pop("$defs", None)
    return {
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "description": "Increasing within the run."},
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


async def _sse(frames: AsyncIterator[StreamFrame]) -> AsyncIterator[ServerSentEvent]:
    number = 0
    async for frame in frames:
        number += 1
        yield ServerSentEvent(data=frame.data.model_dump_json(exclude_none=True), event=frame.event, id=str(number))


def stream_response(service: ChatService, turn: Turn, settings: Settings) -> EventSourceResponse:
    # sse-starlette rather than a bare StreamingResponse: it detects the client going away (which
    # cancels the run), sends keep-alive comments while the model is silent, and lets streams end
    # with a last frame when the server shuts down.
    return EventSourceResponse(
        _sse(service.stream(turn)),
        ping=settings.sse_ping_seconds,
        # On shutdown the stream ends itself (a last error and done frame) once the grace period
        # for running turns is over; sse-starlette must not cut it off before that.
        shutdown_grace_period=settings.shutdown_grace_seconds + 5,
        # Normally the stream releases the turn's leases itself; this covers a stream that never started.
        background=BackgroundTask(turn.release),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/chat",
    response_model=AgentResponse,
    response_model_exclude_none=True,
    responses={
        200: {"description": "The answer (JSON), or the event stream when `stream` is true.", "content": SSE_CONTENT},
        **ERRORS,
    },
)
async def chat(request: AgentRequest, service: ChatDep, state: StateDep, principal: PrincipalDep) -> Any:
    """Send a message to a team; get its answer when it has finished (or a stream if `stream`)."""
    if request.stream:
        turn = await service.begin(request, principal)
        return stream_response(service, turn, state.settings)
    return await service.chat(request, principal)


@router.post(
    "/chat/stream", responses=STREAM_RESPONSES, description=STREAM_DESCRIPTION, response_class=EventSourceResponse
)
async def chat_stream(
    request: AgentRequest, service: ChatDep, state: StateDep, principal: PrincipalDep
) -> EventSourceResponse:
    """Send a message to a team and receive its work as Server-Sent Events."""
    turn = await service.begin(request, principal)
    return stream_response(service, turn, state.settings)
