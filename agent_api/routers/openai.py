"""``/v1``: the OpenAI Chat Completions API, where a team is a model.

Every completion is a run: it is created like any other, a worker runs it, and this router waits
for its result or follows its events, written out as OpenAI's objects (``protocols/openai.py``).
Errors under ``/v1`` are in OpenAI's shape (see :func:`openai_error`), so that the SDKs raise
their own exception classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from agent_api.errors import AgentAPIError, InvalidField, TeamNotFound, UnknownTeam
from agent_api.models.chat import SESSION_ID_PATTERN, AgentRequest
from agent_api.observability import note
from agent_api.protocols import openai as oai
from agent_api.routers.deps import PrincipalDep, RunsDep, StateDep
from agent_api.routers.streams import encode_run, sse_response
from agent_api.routers.waiting import client_closed, wait_for_end
from agent_api.runs.model import Run
from agent_api.runs.service import RunOptions, RunService, raise_for_failure

PREFIX = "/v1"


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error shape, which the SDKs turn into their exception classes."""

    error: OpenAIErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "model": OpenAIError}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid request, or a parameter the service cannot honour (`param` names it)."),
    401: _error("Missing or invalid API key."),
    404: _error("Unknown model (team) or session."),
    409: _error("The session is running another turn, belongs to another team, or the run was cancelled."),
    413: {"description": "The request body is too large."},
    429: _error("The key's rate limit or concurrent-run limit; see `Retry-After`."),
    500: _error("The team failed."),
    502: _error("The model provider failed."),
    503: _error("The session store or the model provider is unavailable; see `Retry-After`."),
    504: _error("The model did not answer in time."),
}

router = APIRouter(prefix=PREFIX, tags=["openai"], responses=ERRORS)

STREAM_DESCRIPTION = """
OpenAI's Chat Completions, with a team as the model: `model` is a team's name (see `/v1/models`),
the last message is the user's new message, and the earlier ones are the conversation so far.

Stateless by default: nothing is stored but the run. Send `X-Session-ID: <id>` to continue a
stored session instead (then only the last user message of `messages` is used), or
`X-Session-ID: new` to start one; the answer's `X-Session-ID` header names it.

With `"stream": true` the answer is Server-Sent Events of `chat.completion.chunk` objects: a
first chunk with the role, the answering agent's tokens as they come, a last chunk with
`finish_reason`, a usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`.
Other agents' messages are not in the answer; follow `GET /runs/{id}/events` (the id is the
completion's `id` and the `X-Run-ID` header) to see the whole team at work. Leaving the stream,
or closing the connection of a request without `stream`, cancels the run.
"""


@router.get("/models", responses={k: v for k, v in ERRORS.items() if k in (401, 429)})
async def list_models(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """Every team, as a model."""
    created = oai.timestamp(state.started_at)
    return {"object": "list", "data": [oai.model_card(team.name, created).model_dump() for team in state.teams]}


@router.get("/models/{model}", responses={k: v for k, v in ERRORS.items() if k in (401, 404, 429)})
async def get_model(
    model: Annotated[str, Path(max_length=64)], state: StateDep, principal: PrincipalDep
) -> dict[str, Any]:
    """One team, as a model."""
    try:
        team = state.teams.get(model)
    except UnknownTeam:
        raise TeamNotFound(model, ["path", "model"]) from None
    return oai.model_card(team.name, oai.timestamp(state.started_at)).model_dump()


@router.post(
    "/chat/completions",
    description=STREAM_DESCRIPTION,
    responses={
        200: {
            "description": "A `chat.completion` object, or `chat.completion.chunk` events when `stream` is true.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def chat_completions(
    body: oai.ChatCompletionRequest,
    http: Request,
    runs: RunsDep,
    state: StateDep,
    principal: PrincipalDep,
    x_session_id: Annotated[
        str | None,
        Header(
            pattern=SESSION_ID_PATTERN,
            description="Continue this stored session, or `new` to start one; omit for a stateless completion.",
        ),
    ] = None,
) -> Any:
    """Run a team on a conversation and answer as OpenAI's Chat Completions API does."""
    try:
        team = state.teams.get(body.model)
        conversation = oai.conversation(body.messages, answerer=team.answering_agents[-1])
    except UnknownTeam:
        raise TeamNotFound(body.model, ["body", "model"]) from None
    except oai.ChatCompletionRequestError as exc:
        raise InvalidField(["body", exc.param], exc.message) from None
    stateful = x_session_id is not None
    fields: dict[str, Any] = {"max_turns": body.max_turns} if body.max_turns is not None else {}
    request = AgentRequest(
        message=conversation.message,
        agent=team.name,
        session_id=x_session_id if stateful and x_session_id != "new" else None,
        stream=body.stream,
        **fields,
    )
    options = RunOptions(
        stream=body.stream,
        metadata=oai.run_metadata(body),
        history=None if stateful else conversation.history,
        llm_params=oai.llm_params(body),
        wait=not body.stream,
    )
    run = await runs.create(request, principal.key_id, options)
    note(team=run.team, session_id=run.session_id if stateful else None, run_id=run.id, protocol="openai")
    headers = {"X-Run-ID": run.id}
    if stateful:
        headers["X-Session-ID"] = run.session_id
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        encoder = oai.ChunkEncoder(run.id, oai.timestamp(run.created_at), run.team, include_usage=include_usage)
        return sse_response(_chunks(runs, run, encoder), state.settings, headers)
    ended = await wait_for_end(runs, run.id, http, cancel_if_abandoned=True)  # a client that leaves cancels its run
    if ended is None:
        return client_closed()
    try:
        raise_for_failure(ended)
    except AgentAPIError as exc:
        exc.headers.update(headers)
        raise
    result = ended.result or {}
    answer = oai.completion(run.id, oai.timestamp(run.created_at), run.team, result)
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), headers=headers)


async def _chunks(runs: RunService, run: Run, encoder: oai.ChunkEncoder) -> AsyncIterator[str]:
    async for line in encode_run(runs, run, encoder, cancel_on_leave=True):
        yield line
    yield "[DONE]"


def openai_error(
    status: int, message: str, code: str, loc: list[Any] | None, headers: dict[str, str] | None
) -> JSONResponse:
    """An error under ``/v1``, in OpenAI's shape. Validation errors are 400s there, as OpenAI's are."""
    if status == 422:
        status = 400
    body = oai.error_body(message, type=oai.error_type(status), param=oai.param_of(loc or []), code=code)
    return JSONResponse(body, status_code=status, headers=headers or None)
