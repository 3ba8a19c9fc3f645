"""``POST /ag-ui/{team}``: AG-UI's agent endpoint, where the agent is a whole team.

The thread is the session (created for the calling key the first time its ``threadId`` is
seen), the AG-UI run is the service's run (its ``runId`` is the run's id, so ``/runs`` can read,
follow and cancel it), and the run's events go out as AG-UI events (``protocols/agui.py``).

A run that asks a person ends its AG-UI run with an interrupt and waits; the next AG-UI run on
the thread answers it (``resume``) and streams the rest of that same run of the service.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from ag_ui.core import ResumeEntry, RunAgentInput
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Path
from sse_starlette import EventSourceResponse

from agent_api.config import Settings
from agent_api.errors import (
    InvalidField,
    RunNotFound,
    RunNotWaiting,
    SessionTeamMismatch,
    TeamNotFound,
    UnknownTeam,
    WrongInputRequest,
)
from agent_api.models.chat import SESSION_ID_PATTERN, AgentRequest
from agent_api.models.runs import RUN_ID_PATTERN
from agent_api.observability import note
from agent_api.protocols import agui
from agent_api.routers.deps import AUTH_RESPONSES, PrincipalDep, RunsDep, SessionsDep, StateDep
from agent_api.routers.streams import encode_run, sse_response
from agent_api.runs.model import Run, RunStatus
from agent_api.runs.service import RunOptions, RunService
from agent_api.services.sessions import SessionManager

router = APIRouter(tags=["ag-ui"], responses=AUTH_RESPONSES)

_THREAD_ID = re.compile(SESSION_ID_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)

DESCRIPTION = """
Runs the team on AG-UI's `RunAgentInput` and answers with AG-UI events (Server-Sent Events):
`RUN_STARTED`; for each agent's turn `STEP_STARTED` / `STEP_FINISHED` (the step name is the
agent's), its text messages `TEXT_MESSAGE_START` (with the agent's `name`) /
`TEXT_MESSAGE_CONTENT` (deltas as the tokens come) / `TEXT_MESSAGE_END`, and its tool calls
`TOOL_CALL_START` / `TOOL_CALL_ARGS` / `TOOL_CALL_END` / `TOOL_CALL_RESULT`; then `RUN_FINISHED`
(`result`: the team's final answer; or `outcome` `cancelled` for a run stopped before it completed,
by a cancel or a newer run on the thread) or `RUN_ERROR` (it failed).

`threadId` is the session: the first run of a thread creates it for the calling key, later runs
continue its stored history (the last message of `messages` is the new user message; the earlier
ones are the client's copy and are not read). `runId` becomes the run's id: `GET /runs/{runId}`
reads it, `/runs/{runId}/events` follows it, `/runs/{runId}/cancel` stops it. Closing the
connection cancels the run. `forwardedProps.max_turns` (1-20) bounds the agents' replies.
`state`, `tools` and `context` are accepted and not used: the team's tools are its own.

**Interrupts.** When the team asks a person (a team with `human_input`, or a tool call of its
`approve_tools`), the stream ends with `RUN_FINISHED` whose `outcome` is an interrupt with one
`Interrupt`: `id` the request's id, `message` what the person answers (the agent's message, or
the tool call to approve), `reason` `input_required` (the user's next message: `responseSchema`
is a string) or `tool_call` (approve the call `toolCallId`: `responseSchema` is
`{approved: boolean, reason?: string}`), `expiresAt` when the run stops waiting (INPUT_TIMEOUT),
`metadata` the asking `agent` and the `serviceRunId`. The run is not cancelled: it waits.

Resume it with the next run on the same thread, with one entry in `resume`:
`[{interruptId, status, payload}]` (`messages` is then not read, nor `forwardedProps.max_turns`
used: the run goes on as it began). `resolved` answers it: for a message the payload is the text
or `{content}` (empty lets the team go on by itself, or accepts its final answer; `exit` ends the
conversation); for an approval `true` / `false` or `{approved, reason?}` (a refusal and its
reason reach the agent as the tool's result). The stream then carries the rest of the run as a
new AG-UI run: `RUN_STARTED` with the new `runId` ... `RUN_FINISHED` (or the next interrupt).
`cancelled` cancels the run: `RUN_STARTED`, then `RUN_FINISHED` with the cancelled outcome. The
run of the service keeps its first id (the `X-Run-ID` header, the interrupt's `serviceRunId`);
the resuming `runId` names the AG-UI run only. While a run waits, a new message on the thread is
refused (409): resume first. A resume whose interrupt no run of the thread waits on is a 409,
and a payload of another shape a 422 (`detail` names the field); neither changes anything.
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
        404: {"description": "Unknown team, or a thread of another key (or, to resume, an unknown thread)."},
        409: {
            "description": "The thread is running another run, belongs to another team, or the runId is in use; "
            "or no run of the thread waits on the interrupt a resume answers."
        },
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
    max_turns = _max_turns(run_input.forwarded_props)
    try:
        entry = agui.resume_entry(run_input)
        message = agui.user_message(run_input) if entry is None else ""
    except agui.AgUiInputError as exc:
        raise InvalidField(["body", *exc.loc], exc.message) from None
    if entry is not None:
        return await _resume(name, run_input, entry, runs, sessions, state.settings, principal.key_id)
    session_team = await sessions.claim(run_input.thread_id, name, principal.key_id)
    if session_team != name:
        raise SessionTeamMismatch(session_team, name)
    request = AgentRequest(message=message, agent=name, session_id=run_input.thread_id, stream=True, **max_turns)
    run = await runs.create(request, principal.key_id, RunOptions(stream=True, run_id=run_input.run_id))
    note(team=run.team, session_id=run.session_id, run_id=run.id, protocol="ag-ui")
    encoder = agui.AgUiEncoder(run_input.thread_id, run.id, input_timeout=state.settings.input_timeout)
    return _stream(runs, run, encoder, state.settings)


def _stream(
    runs: RunService, run: Run, encoder: agui.AgUiEncoder, settings: Settings, after: str = "0"
) -> EventSourceResponse:
    """The run's events from after ``after`` as one AG-UI run, which ends when the run does or
    when it waits for a person (then the run is left waiting; leaving before that cancels it)."""
    events = encode_run(runs, run, encoder, after=after, cancel_on_leave=True, until=lambda: encoder.ended)
    # The body is AG-UI's own encoding (its EventEncoder): sse-starlette passes bytes through.
    body = (line.encode() async for line in events)
    return sse_response(body, settings, {"X-Run-ID": run.id}, media_type=EventEncoder().get_content_type())


async def _resume(
    team: str,
    run_input: RunAgentInput,
    entry: ResumeEntry,
    runs: RunService,
    sessions: SessionManager,
    settings: Settings,
    owner: str,
) -> EventSourceResponse:
    """Answer (or cancel) the run of the thread that waits on the entry's interrupt, and stream the
    rest of that run as the new AG-UI run. Nothing changes when the interrupt is not the one waited on."""
    session_team = await sessions.team_of(run_input.thread_id, owner)
    if session_team != team:
        raise SessionTeamMismatch(session_team, team)
    run = await _waiting_run(runs, run_input.thread_id, owner, entry.interrupt_id)
    after = run.input_event or "0"  # the resumed stream starts after the run's input_request event
    if entry.status == "cancelled":
        await runs.cancel(run.id, owner)
    else:
        try:
            answer = agui.input_answer(entry, run.input_request or {})
        except agui.AgUiInputError as exc:
            raise InvalidField(["body", *exc.loc], exc.message) from None
        await runs.answer(run.id, owner, answer)
    note(team=run.team, session_id=run.session_id, run_id=run.id, protocol="ag-ui")
    encoder = agui.AgUiEncoder(
        run_input.thread_id,
        run_input.run_id,
        service_run_id=run.id,
        input_timeout=settings.input_timeout,
    )
    return _stream(runs, run, encoder, settings, after)


async def _waiting_run(runs: RunService, thread_id: str, owner: str, interrupt_id: str) -> Run:
    """The thread's run that waits on ``interrupt_id``: its active run, in requires_input."""
    run = await runs.active_run(thread_id, owner)
    if run is None or run.status is not RunStatus.REQUIRES_INPUT:
        latest = run or next(iter(await runs.session_runs(thread_id, owner, limit=1)), None)
        if latest is None:
            raise RunNotFound()
        raise RunNotWaiting(latest.status.value)
    pending = str((run.input_request or {}).get("request_id", ""))
    if pending != interrupt_id:
        raise WrongInputRequest(pending)
    return run
