"""ChatService: one user turn, from the stored session through the team and back to the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from agent_api.agents.events import MessageEvent, RunOutcome, TokenEvent, ToolCallEvent, ToolResultEvent
from agent_api.agents.registry import TeamRegistry
from agent_api.agents.runner import RunFinished, TeamRunner
from agent_api.agents.teams import Team
from agent_api.errors import AgentAPIError, AgentRunError, SessionTeamMismatch, ShuttingDown
from agent_api.metrics import RUN_DURATION, RUN_TURNS, RUNS_IN_FLIGHT, SESSION_AGE, SESSION_TURNS, record_usage
from agent_api.models.chat import AgentRequest, AgentResponse
from agent_api.models.stream import FrameType, StreamFrame, StreamFrameData
from agent_api.observability import count_error, note
from agent_api.security import Principal
from agent_api.services.leases import Lease, Leases
from agent_api.services.sessions import Session, SessionManager, new_session_id
from agent_api.shutdown import Shutdown

log = logging.getLogger(__name__)


@dataclass
class Turn:
    """A turn that passed every check and holds its leases: its team and its session as loaded.

    Whoever runs it must call :meth:`release` when it ends, however it ends.
    """

    team: Team
    session: Session
    request: AgentRequest
    lease: Lease
    gate: asyncio.Semaphore
    released: bool = field(default=False, init=False)

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.gate.release()
        await self.lease.release()


class ChatService:
    """Runs user turns against teams, keeping each session's history in the store."""

    def __init__(
        self,
        sessions: SessionManager,
        runner: TeamRunner,
        teams: TeamRegistry,
        leases: Leases,
        shutdown: Shutdown,
        *,
        model: str = "",
        max_runs_per_key: int | None = None,
        max_running: int = 200,
    ) -> None:
        self.sessions = sessions
        self.runner = runner
        self.teams = teams
        self.leases = leases
        self.shutdown = shutdown
        self.model = model
        self.max_runs_per_key = max_runs_per_key
        # Turns past this many wait here, before touching Redis: a burst of requests queues in
        # memory instead of crowding the store's connections (and the run threads).
        self._gate = asyncio.Semaphore(max_running)

    async def begin(self, request: AgentRequest, principal: Principal) -> Turn:
        """Check the turn, then take its leases (one run per session, N per key).

        Nothing is written before every check has passed. The history is read after the session
        lock is taken, so a turn always sees the one that ran just before it.
        """
        if self.shutdown.draining.is_set():
            raise ShuttingDown()
        await self._gate.acquire()
        try:
            return await self._begin(request, principal.key_id)
        except BaseException:
            self._gate.release()
            raise

    async def _begin(self, request: AgentRequest, owner: str) -> Turn:
        prepare: Callable[[], Awaitable[Session]]
        if request.session_id is None:
            team = self.teams.get(request.agent)
            session_id = new_session_id()
            prepare = partial(self.sessions.create, team.name, owner, session_id=session_id)
        else:
            session_id = request.session_id
            session_team = await self.sessions.team_of(session_id, owner)
            # A session stays with its team: 'agent' may be omitted when continuing.
            name = request.agent if "agent" in request.model_fields_set else session_team
            if name != session_team:
                raise SessionTeamMismatch(session_team, name)
            team = self.teams.get(name)
            prepare = partial(self.sessions.load, session_id, owner, touch=True)
        lease = await self.leases.acquire(session_id, owner, self.max_runs_per_key)
        try:
            session = await prepare()
        except BaseException:
            await lease.release()
            raise
        return Turn(team, session, request, lease, self._gate)

    async def chat(self, request: AgentRequest, principal: Principal) -> AgentResponse:
        """Run one turn to the end and save only the messages it added."""
        turn = await self.begin(request, principal)
        watch = RunWatch(turn)
        try:
            outcome = await self.runner.run(
                turn.team, turn.session.messages, request.message, request.max_turns, stop=self.shutdown.expired
            )
            session_turns = await self.sessions.append_messages(turn.session.id, outcome.messages)
            watch.finished(outcome, session_turns, self.model)
        except AgentAPIError as exc:
            exc.headers.setdefault("X-Session-ID", turn.session.id)
            watch.failed(exc.error_type)
            raise
        finally:
            watch.close()
            await turn.release()
        return AgentResponse(
            session_id=turn.session.id,
            response=outcome.response,
            turns_used=outcome.turns_used,
            messages=outcome.messages,
            finished=outcome.finished,
            agent=turn.team.name,
            usage=outcome.usage,
            cached=outcome.cached,
        )

    async def stream(self, turn: Turn) -> AsyncIterator[StreamFrame]:
        """Run a turn, yielding frames as the agents work; always ends with a ``done`` frame.

        The history is saved when the run completes, as :meth:`chat` saves it. If the caller
        goes away (the iterator is closed) the run is cancelled and nothing is saved.
        """
        watch = RunWatch(turn)
        try:
            async for frame in self._stream(turn, watch):
                yield frame
        except (GeneratorExit, asyncio.CancelledError):
            watch.failed("cancel")
            count_error("cancel")
            raise
        finally:
            watch.close()
            await turn.release()

    async def _stream(self, turn: Turn, watch: RunWatch) -> AsyncIterator[StreamFrame]:
        sid = turn.session.id

        def frame(event: FrameType, **data: object) -> StreamFrame:
            return StreamFrame(event=event, data=StreamFrameData(session_id=sid, **data))  # type: ignore[arg-type]

        yield frame("session", agent=turn.team.name)
        request = turn.request
        outcome: RunOutcome | None = None
        try:
            async for item in self.runner.events(
                turn.team,
                turn.session.messages,
                request.message,
                request.max_turns,
                stream=True,
                stop=self.shutdown.expired,
            ):
                if isinstance(item, TokenEvent):
                    yield frame("token", agent=item.agent, text=item.text, chunk=item.chunk)
                elif isinstance(item, MessageEvent):
                    yield frame("message", agent=item.message.name, message=item.message)
                elif isinstance(item, ToolCallEvent):
                    yield frame(
                        "tool_call",
                        agent=item.agent,
                        tool_call={"id": item.call_id, "name": item.name, "arguments": item.arguments},
                    )
                elif isinstance(item, ToolResultEvent):
                    yield frame(
                        "tool_result", agent=item.agent, tool_result={"id": item.call_id, "content": item.content}
                    )
                elif isinstance(item, RunFinished):
                    outcome = item.outcome
            if outcome is None:
                raise AgentRunError()
            session_turns = await self.sessions.append_messages(sid, outcome.messages)
            watch.finished(outcome, session_turns, self.model)
        except Exception as exc:
            # The 200 has gone out: report the failure in a frame, without the exception's text.
            error = exc if isinstance(exc, AgentAPIError) else AgentRunError()
            if error is exc:
                log.info("stream %s ended with %s", sid, error.error_type)
            else:
                log.exception("stream %s failed", sid)
            watch.failed(error.error_type)
            count_error(error.error_type)
            yield frame("error", detail=error.detail, status=error.status_code, error_type=error.error_type)
            yield frame("done", done=True, turns_used=0, finished=False)
            return
        yield frame("usage", usage=outcome.usage)
        yield frame(
            "done",
            done=True,
            response=outcome.response,
            turns_used=outcome.turns_used,
            finished=outcome.finished,
            usage=outcome.usage,
            cached=outcome.cached,
        )


class RunWatch:
    """Metrics and log details of one run: in flight while open, then its outcome."""

    def __init__(self, turn: Turn) -> None:
        self.team = turn.team.name
        self.session = turn.session
        self.started = time.perf_counter()
        self.outcome = "ok"
        RUNS_IN_FLIGHT.labels(self.team).inc()
        note(team=self.team, session_id=self.session.id)

    def finished(self, outcome: RunOutcome, session_turns: int, model: str) -> None:
        RUN_TURNS.labels(self.team).observe(outcome.turns_used)
        record_usage(self.team, model, outcome.usage)
        SESSION_TURNS.labels(self.team).observe(session_turns)
        SESSION_AGE.labels(self.team).observe((datetime.now(UTC) - self.session.created_at).total_seconds())
        note(
            turns_used=outcome.turns_used,
            prompt_tokens=outcome.usage.prompt_tokens,
            completion_tokens=outcome.usage.completion_tokens,
            cached=outcome.cached,
        )

    def failed(self, error_type: str) -> None:
        self.outcome = error_type

    def close(self) -> None:
        RUNS_IN_FLIGHT.labels(self.team).dec()
        RUN_DURATION.labels(self.team, self.outcome).observe(time.perf_counter() - self.started)
