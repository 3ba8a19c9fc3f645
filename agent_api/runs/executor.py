"""RunExecutor: the body of the job that runs one run, the same on a worker process and embedded.

It takes the run (``queued -> running``, atomically: a job delivered twice runs once), loads the
session's history, runs the team, writes the team's events to the run's log as they happen and
ends the run. Only a run that succeeded adds its turn to the session, and it adds it whole: once
the team has finished, a cancel can no longer cut the save in half.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from agent_api.agents.events import InputReply, InputRequest, RunEvent, RunOutcome, TokenEvent
from agent_api.agents.registry import TeamRegistry
from agent_api.agents.runner import RunFinished, TeamRunner
from agent_api.errors import AgentAPIError, AgentRunError, InputTimedOut, RunStopped, RunTimedOut, ShuttingDown
from agent_api.metrics import (
    INPUT_WAIT,
    RUN_DURATION,
    RUN_QUEUED,
    RUN_TURNS,
    RUNS_IN_FLIGHT,
    RUNS_WAITING,
    SESSION_TURNS,
    record_usage,
)
from agent_api.models.chat import ChatMessage
from agent_api.runs import frames
from agent_api.runs.lifecycle import RunLifecycle
from agent_api.runs.model import Run, RunStatus, utcnow
from agent_api.runs.store import RunStore
from agent_api.services.sessions import SessionManager, StoredSession
from agent_api.telemetry import context_from, tracer

log = logging.getLogger(__name__)

# Tokens that come faster than this are joined into one frame: fewer Redis writes per token under
# load, and never more than this much delay (the first token after a pause goes out at once).
COALESCE_SECONDS = 0.02
# Any other event (an agent's message, a tool call, and every event of a run that does not
# stream, whose "tokens" are whole replies) waits this long before it is written: a run's last
# reply is followed by the run's end within about a millisecond, whose step then writes it (a
# round trip fewer per run); the events that come meanwhile join the same write.
SETTLE_SECONDS = 0.005


class EventWriter:
    """Writes a run's events to its log in order, coalescing bursts of tokens.

    When the run has ended well, :meth:`detach` hands over what is not written yet, for the run's
    end to write in its own step (one round trip fewer per run): the run's last reply, which
    waits :data:`SETTLE_SECONDS` for that end, and the tokens of the last coalescing window.
    """

    def __init__(self, store: RunStore, run: Run) -> None:
        self.store = store
        self.run = run
        self._pending: list[RunEvent] = []  # added, not yet taken for a write
        self._flushes: list[asyncio.Future[None]] = []  # waiters for what was added before them
        self._wake = asyncio.Event()
        self._writing = False
        self._closing = False  # write what is pending, then stop
        self._detached = False  # stop after the write in progress, if any
        self._last_write = 0.0
        self._task = asyncio.get_running_loop().create_task(self._write())

    def add(self, event: RunEvent) -> None:
        self._pending.append(event)
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every event added so far is written."""
        written = asyncio.get_running_loop().create_future()
        self._flushes.append(written)
        self._wake.set()
        await written

    async def close(self) -> None:
        """Write what is pending and stop."""
        self._closing = True
        self._wake.set()
        await self._task

    async def detach(self) -> list[frames.Frame]:
        """Stop, and return the frames of the events not written yet (the write in progress, if
        any, finishes first): the caller writes them, after everything written before."""
        self._detached = True
        if not self._writing:  # waiting for events, or within a token window: nothing taken
            self._task.cancel()
        await asyncio.wait([self._task])
        if not self._task.cancelled() and (error := self._task.exception()) is not None:
            raise error  # the write in progress failed
        rest, self._pending = self._pending, []
        flushed, self._flushes = self._flushes, []
        _release(flushed)
        return self._frames(rest)

    def abandon(self) -> None:
        self._task.cancel()

    def _frames(self, events: list[RunEvent]) -> list[frames.Frame]:
        return frames.encode_all(self.run.session_id, events)

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending and not self._flushes and not self._closing:
                if self.run.stream and isinstance(self._pending[0], TokenEvent):
                    # Within the window after the last write, wait for the window's end to gather more.
                    wait = self._last_write + COALESCE_SECONDS - time.monotonic()
                else:
                    wait = SETTLE_SECONDS
                if wait > 0:
                    await asyncio.sleep(wait)
            batch, self._pending = self._pending, []
            flushed, self._flushes = self._flushes, []
            if batch:
                self._writing = True
                try:
                    await self.store.append(self.run.id, self._frames(batch))
                finally:
                    self._writing = False
                self._last_write = time.monotonic()
            _release(flushed)
            if self._detached or (self._closing and not self._pending):
                return
            if self._pending or self._flushes:
                self._wake.set()


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


class RunExecutor:
    """Runs runs: one call of :meth:`execute` per job."""

    def __init__(
        self,
        store: RunStore,
        lifecycle: RunLifecycle,
        sessions: SessionManager,
        runner: TeamRunner,
        teams: TeamRegistry,
        *,
        worker_id: str,
        model: str,
        run_timeout: float | None = None,
        input_timeout: float = 3600.0,
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.sessions = sessions
        self.runner = runner
        self.teams = teams
        self.worker_id = worker_id
        self.model = model
        self.run_timeout = run_timeout
        self.input_timeout = input_timeout

    async def execute(self, run_id: str) -> None:
        job = self.lifecycle.dispatcher.job_write(run_id, ending=False)
        taken = await self.store.start(run_id, self.worker_id, self.sessions.keys(), job=job)
        if taken is None:  # ended before it started, or delivered twice: never run a run twice
            log.info("run %s is not queued any more; skipped", run_id)
            return
        run, session = taken
        RUN_QUEUED.observe(max(0.0, (utcnow() - run.created_at).total_seconds()))
        RUNS_IN_FLIGHT.labels(run.team).inc()
        started = time.perf_counter()
        outcome_label = "ok"
        # The run's span is a child of the request that created it, wherever that request was served.
        with tracer().start_as_current_span(
            f"run {run.team}",
            context=context_from(run.trace),
            kind=SpanKind.CONSUMER,
            attributes={
                "agent_api.run.id": run.id,
                "agent_api.team": run.team,
                "gen_ai.conversation.id": run.session_id,
                "agent_api.worker": self.worker_id,
            },
        ) as span:
            try:
                outcome_label = await self._execute(run, session)
            finally:
                RUNS_IN_FLIGHT.labels(run.team).dec()
                RUN_DURATION.labels(run.team, outcome_label).observe(time.perf_counter() - started)
                span.set_attribute("agent_api.run.outcome", outcome_label)
                if outcome_label != "ok":
                    span.set_status(StatusCode.ERROR, outcome_label)
                    span.set_attribute("error.type", outcome_label)

    async def _execute(self, run: Run, session: StoredSession | None) -> str:
        writer = EventWriter(self.store, run)
        deadline = asyncio.timeout(self.run_timeout)
        try:
            # The deadline cancels the team like a caller leaving would: no further model call starts.
            async with deadline:
                outcome = await self._run_team(run, session, writer, deadline)
            unwritten = await writer.detach()  # written by the run's end, in its step
        except asyncio.CancelledError:
            writer.abandon()
            await asyncio.shield(self._stopped(run))
            raise
        except Exception as exc:
            # What happened before the failure stays in the log, ahead of the error frame.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.close(), 5)
            writer.abandon()
            if isinstance(exc, TimeoutError) and deadline.expired() and self.run_timeout is not None:
                exc = RunTimedOut(self.run_timeout)
            error = exc if isinstance(exc, AgentAPIError) else AgentRunError()
            if error is exc:
                log.info("run %s failed: %s", run.id, error.error_type)
            else:
                log.exception("run %s failed", run.id)
            await asyncio.shield(self.lifecycle.fail(run, error))
            return error.error_type
        # The turn is saved whole or not at all: a cancel from here on waits for the save.
        save = asyncio.ensure_future(self._succeed(run, outcome, unwritten))
        try:
            return await asyncio.shield(save)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await save
            raise

    async def _run_team(
        self, run: Run, session: StoredSession | None, writer: EventWriter, deadline: asyncio.Timeout
    ) -> RunOutcome:
        if run.history is not None:
            history = [ChatMessage.model_validate(m) for m in run.history]
        else:
            # The step that started the run read its session (TTL refreshed): every run but a
            # stateless one has it (RunStore.start with the sessions' keys, in execute).
            assert session is not None
            history = self.sessions.loaded(run.session_id, run.owner, session).messages
        team = self.teams.get(run.team)
        outcome: RunOutcome | None = None
        events = self.runner.events(
            team, history, run.message, run.max_turns, stream=run.stream, llm_params=run.llm_params
        )
        async with contextlib.aclosing(events):
            async for item in events:
                if isinstance(item, RunFinished):
                    outcome = item.outcome
                elif isinstance(item, InputRequest):
                    item.reply.set_result(await self._ask(run, item, writer, deadline))
                else:
                    writer.add(item)
        if outcome is None:  # pragma: no cover - events always ends with RunFinished
            raise AgentRunError()
        return outcome

    async def _ask(self, run: Run, request: InputRequest, writer: EventWriter, deadline: asyncio.Timeout) -> InputReply:
        """The run waits for a person: status requires_input, an ``input_request`` frame after the
        events before it, then the answer (from any API process) or ``input_timeout``. The wait does
        not count against RUN_TIMEOUT; a cancel ends it at once (the job is cancelled)."""
        await writer.flush()
        described = request.describe()
        await self.store.request_input(run.id, described, frames.input_request_frame(run.session_id, run.id, described))
        loop = asyncio.get_running_loop()
        paused_at, resume_by = loop.time(), deadline.when()
        deadline.reschedule(None)
        RUNS_WAITING.labels(run.team).inc()
        outcome = "cancelled"
        try:
            reply = await self.store.wait_for_input(run.id, request.request_id, self.input_timeout)
            if reply is None:
                outcome = "timeout"
                raise InputTimedOut(self.input_timeout)
            outcome = "answered"
            return InputReply(
                content=str(reply.get("content") or ""),
                approved=bool(reply.get("approved")),
                reason=str(reply.get("reason") or ""),
            )
        finally:
            RUNS_WAITING.labels(run.team).dec()
            INPUT_WAIT.labels(run.team, outcome).observe(loop.time() - paused_at)
            if resume_by is not None:
                deadline.reschedule(resume_by + (loop.time() - paused_at))

    async def _succeed(self, run: Run, outcome: RunOutcome, unwritten: list[frames.Frame]) -> str:
        result: dict[str, Any] = {
            "response": outcome.response,
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in outcome.messages],
            "usage": outcome.usage.model_dump(),
            "turns_used": outcome.turns_used,
            "finished": outcome.finished,
            "cached": outcome.cached,
        }
        events = [*unwritten, *frames.success_frames(run.session_id, outcome, RunStatus.SUCCEEDED.value)]
        # The turn is saved by the step that ends the run: never for a run ended elsewhere meanwhile.
        turn = None if run.stateless else self.sessions.turn(run.session_id, outcome.messages)
        try:
            finished = await self.lifecycle.finish(
                run, RunStatus.SUCCEEDED, events, result=result, usage=outcome.usage, turn=turn
            )
        except AgentAPIError as exc:  # the session expired meanwhile, or the store is gone
            with contextlib.suppress(AgentAPIError):
                if unwritten:  # what the team did stays in the log, ahead of the error frame
                    await self.store.append(run.id, unwritten)
            await self.lifecycle.fail(run, exc)
            return exc.error_type
        if finished is None:
            log.warning("run %s finished after it was ended elsewhere; its turn was not saved", run.id)
            return "ok"
        RUN_TURNS.labels(run.team).observe(outcome.turns_used)
        if finished.turns is not None:
            SESSION_TURNS.labels(run.team).observe(finished.turns)
        record_usage(run.team, self.model, outcome.usage)
        span = trace.get_current_span()
        span.set_attribute("gen_ai.usage.input_tokens", outcome.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", outcome.usage.completion_tokens)
        return "ok"

    async def _stopped(self, run: Run) -> None:
        """The job was cancelled: by a user's cancel, a newer run's interrupt, or a shutdown."""
        current = await self.store.get(run.id)
        final = current.cancel_to if current is not None and current.cancel_to else None
        if final is None:  # nobody asked: the worker is shutting down
            await self.lifecycle.fail(run, ShuttingDown())
            return
        await self.lifecycle.fail(run, RunStopped(final.value), final)
