"""``POST /ag-ui/{team}``: AG-UI's agent endpoint, where the agent is a whole team.

The thread is the session (created for the calling key the first time its ``threadId`` is
seen), the AG-UI run is the service's run (its ``runId`` is the run's id, so ``/runs`` can read,
follow and cancel it), and the run's events go out as AG-UI events (``protocols/agui.py``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from ag_ui.core import RunAgentInput
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Path
from sse_starlette import EventSourceResponse

from agent_api.errors import InvalidField, SessionTeamMismatch, TeamNotFound, UnknownTeam
from agent_api.models.chat import SESSION_ID_PATTERN, AgentRequest
from agent_api.models.runs import RUN_ID_PATTERN
from agent_api.observability import note
from agent_api.protocols import agui
from agent_api.routers.deps import AUTH_RESPONSES, PrincipalDep, RunsDep, SessionsDep, StateDep
from agent_api.routers.streams import encode_run, sse_response
from agent_api.runs.service import RunOptions

router = APIRouter(tags=["ag-ui"], responses=AUTH_RESPONSES)

_THREAD_ID = re.compile(SESSION_ID_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)

DESCRIPTION = """
Runs the team on AG-UI's `RunAgentInput` and answers with AG-UI events (Server-Sent Events):
`RUN_STARTED`; for each agent's turn `STEP_STARTED` / `STEP_FINISHED` (the step name is the
agent's), its text messages `TEXT_MESSAGE_START` (with the agent's `name`) /
`TEXT_MESSAGE_CONTENT` (deltas as the tokens come) / `TEXT_MESSAGE_END`, and its tool calls
`TOOL_CALL_START` / `TOOL_CALL_ARGS` / `TOOL_CALL_END` / `TOOL_CALL_RESULT`; then `RUN_FINISHED`
(`result`: the team's final answer) or `RUN_ERROR`.

`threadId` is the session: the first run of a thread creates it for the calling key, later runs
continue its stored history (the last message of `messages` is the new user message; the earlier
ones are the client's copy and are not read). `runId` becomes the run's id: `GET /runs/{runId}`
reads it, `/runs/{runId}/events` follows it, `/runs/{runId}/cancel` stops it. Closing the
connection cancels the run. `forwardedProps.max_turns` (1-20) bounds the agents' replies.
`state`, `tools` and `context` are accepted and not used: the team's tools are its own.
"""


def _max_turns(forwarded: Any) -> dict[str, Any]:
    """``max_turns`` for the run, if the client gave one (else the service's default applies)."""
    value = forwarded.get("max_turns") if isinstance(forwarded, dict) else None
    if value is None:
        return {}
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 20:
        raise InvalidField(["body", "forwardedProps", "max_turns"], "max_turns must be an integer from 1 to 20.")
    return {"max_turns": value}


@router.post(
    "/ag-ui/{team}",
    response_class=EventSourceResponse,
    description=DESCRIPTION,
    responses={
        200: {
            "description": "AG-UI events, as Server-Sent Events.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        404: {"description": "Unknown team, or a thread of another key."},
        409: {"description": "The thread is running another run, belongs to another team, or the runId is in use."},
        422: {"description": "Malformed input; `detail` names the field."},
    },
)
async def run_agent(
    team: Annotated[str, Path(max_length=64, description="The team to run (GET /agents lists them).")],
    run_input: RunAgentInput,
    runs: RunsDep,
    sessions: SessionsDep,
    state: StateDep,
    principal: PrincipalDep,
) -> EventSourceResponse:
    """Run a team for an AG-UI client (CopilotKit, `@ag-ui/client`)."""
    try:
        name = state.teams.get(team).name
    except UnknownTeam:
        raise TeamNotFound(team, ["path", "team"]) from None
    if not _THREAD_ID.match(run_input.thread_id):
        raise InvalidField(["body", "threadId"], "threadId must be 1-64 letters, digits, '-' or '_'.")
    if not _RUN_ID.match(run_input.run_id):
        raise InvalidField(["body", "runId"], "runId must be 1-64 letters, digits, '-' or '_'.")
    try:
        message = agui.user_message(run_input)
    except agui.AgUiInputError as exc:
        raise InvalidField(["body", exc.field], exc.message) from None
    max_turns = _max_turns(run_input.forwarded_props)
    session_team = await sessions.claim(run_input.thread_id, name, principal.key_id)
    if session_team != name:
        raise SessionTeamMismatch(session_team, name)
    request = AgentRequest(message=message, agent=name, session_id=run_input.thread_id, stream=True, **max_turns)
    run = await runs.create(request, principal.key_id, RunOptions(stream=True, run_id=run_input.run_id))
    note(team=run.team, session_id=run.session_id, run_id=run.id, protocol="ag-ui")
    encoder = agui.AgUiEncoder(run_input.thread_id, run.id)
    # The body is AG-UI's own encoding (its EventEncoder): sse-starlette passes bytes through.
    body = (line.encode() async for line in encode_run(runs, run, encoder, cancel_on_leave=True))
    return sse_response(body, state.settings, {"X-Run-ID": run.id}, media_type=EventEncoder().get_content_type())
