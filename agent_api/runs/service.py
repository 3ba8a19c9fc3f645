"""RunService: what every way in does with runs — create, read, follow, wait for, cancel.

Routers call it; it never runs agents (workers do, through the job queue). Ownership is checked
here: a run, like a session, exists only for the API key that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from agent_api.agents.registry import TeamRegistry
from agent_api.errors import (
    InvalidField,
    RunFailed,
    RunIdTaken,
    RunNotFound,
    RunNotWaiting,
    RunStopped,
    SessionTeamMismatch,
    ShuttingDown,
    StoreUnavailable,
    WorkerLost,
    WrongInputRequest,
)
from agent_api.metrics import STREAM_FOLLOWERS
from agent_api.models.chat import AgentRequest, ChatMessage
from agent_api.models.runs import EVENT_ID_PATTERN, InputAnswer
from agent_api.runs import frames
from agent_api.runs.lifecycle import RunLifecycle
from agent_api.runs.model import IfBusy, Run, RunStatus, utcnow
from agent_api.runs.store import READ_PAGE, InputRefused, LogEntry, RunExists, RunStore, entry_order
from agent_api.runs.webhooks import WebhookRefused, validate_webhook_url
from agent_api.services import pubsub
from agent_api.services.sessions import NewSession, SessionManager, new_session_id
from agent_api.services.usage import UsageStore
from agent_api.shutdown import Shutdown
from agent_api.telemetry import current_context_carrier

log = logging.getLogger(__name__)

CURSOR = re.compile(EVENT_ID_PATTERN)


def new_run_id() -> str:
    return "run_" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class RunOptions:
    """What a way in adds to the ``/chat`` body when it creates a run."""

    stream: bool
    if_busy: IfBusy = IfBusy.REJECT
    webhook: str | None = None
    metadata: dict[str, object] | None = None
    run_id: str | None = None
    # Stateless: the conversation so far comes with the request, and nothing is saved to a session.
    history: list[ChatMessage] | None = None
    llm_params: dict[str, object] | None = None  # model parameters for this run's agents
    # The caller waits for the run's end (wait()) in this process: the end step tells it directly.
    wait: bool = False


class RunService:
    """Creates runs, reads them and their events, and stops them."""

    def __init__(
        self,
        store: RunStore,
        lifecycle: RunLifecycle,
        sessions: SessionManager,
        teams: TeamRegistry,
        shutdown: Shutdown,
        *,
        usage: UsageStore | None = None,
        max_runs_per_key: int | None,
        allow_private_webhooks: bool,
        follow_block: float = 5.0,
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.sessions = sessions
        self.teams = teams
        self.shutdown = shutdown
        self.usage = usage
        self.max_runs_per_key = max_runs_per_key
        self.allow_private_webhooks = allow_private_webhooks
        self.follow_block = follow_block

    async def create(self, request: AgentRequest, owner: str, options: RunOptions) -> Run:
        """Check the request, store the run and hand it to a worker (or queue it behind the session's)."""
        if self.shutdown.draining.is_set():
            raise ShuttingDown()
        if self.usage is not None:
            await self.usage.check_budget(owner)  # before any model call: nothing is created
        if options.webhook is not None:
            try:
                await validate_webhook_url(options.webhook, allow_private=self.allow_private_webhooks)
            except WebhookRefused as exc:
                raise InvalidField(["body", "webhook"], str(exc)) from exc
        if options.history is not None:
            if request.session_id is not None:
                raise InvalidField(["body", "session_id"], "A stateless run cannot continue a session.")
            session_id, team, new_session = new_session_id(), self.teams.get(request.agent).name, None
        else:
            session_id, team, new_session = await self._session_for(request, owner)
        max_turns = request.max_turns
        least = self.teams.get(team).min_turns
        if max_turns < least:
            if "max_turns" in request.model_fields_set:
                raise InvalidField(
                    ["body", "max_turns"],
                    f"Team {team!r} needs max_turns of at least {least}: its answering agent speaks after "
                    f"{least - 1} other agent(s).",
                )
            max_turns = least  # the default would leave the answering agent no turn
        run = Run(
            id=options.run_id or new_run_id(),
            owner=owner,
            session_id=session_id,
            team=team,
            status=RunStatus.QUEUED,
            created_at=utcnow(),
            message=request.message,
            max_turns=max_turns,
            stream=options.stream,
            webhook=options.webhook,
            metadata=dict(options.metadata or {}),
            history=(
                [m.model_dump(mode="json", exclude_none=True) for m in options.history]
                if options.history is not None
                else None
            ),
            llm_params=dict(options.llm_params or {}),
            trace=current_context_carrier(),
        )
        try:
            await self._admit(run, options, new_session)
        except BaseException:
            self.store.forget_end(run.id)
            raise
        return run

    async def _admit(self, run: Run, options: RunOptions, new_session: NewSession | None) -> None:
        """Store the new run and hand it to a worker (or queue it behind the session's run)."""
        try:
            admission = await self.store.create(
                run,
                if_busy=options.if_busy,
                max_runs=self.max_runs_per_key,
                session_frame=frames.session_frame(run.session_id, run.team, run.id),
                new_session=new_session,
                enqueue=self.lifecycle.dispatcher.enqueue_step(run.id),
                notify=options.wait,
            )
        except RunExists as exc:
            raise RunIdTaken() from exc
        if admission.interrupted is not None:
            await self.stop(admission.interrupted, RunStatus.INTERRUPTED)
        if admission.dispatch and not admission.enqueued:
            try:
                await self.lifecycle.dispatcher.enqueue(run.id)
            except Exception:
                # A run nobody will take must not hold its session: end it, best effort.
                with contextlib.suppress(Exception):
                    await self.lifecycle.fail(run, StoreUnavailable())
                raise StoreUnavailable() from None

    async def _session_for(self, request: AgentRequest, owner: str) -> tuple[str, str, NewSession | None]:
        """The run's session and team, and the record of the session if the run starts a new one
        (written with the run, in one step)."""
        if request.session_id is None:
            team = self.teams.get(request.agent).name
            session_id = new_session_id()
            return session_id, team, self.sessions.new_record(team, owner, session_id)
        session_team = await self.sessions.team_of(request.session_id, owner)
        # A session stays with its team: 'agent' may be omitted when continuing.
        name = request.agent if "agent" in request.model_fields_set else session_team
        if name != session_team:
            raise SessionTeamMismatch(session_team, name)
        return request.session_id, self.teams.get(name).name, None

    async def get(self, run_id: str, owner: str) -> Run:
        run = await self.store.get(run_id)
        if run is None or run.owner != owner:
            raise RunNotFound()
        return run

    async def session_runs(self, session_id: str, owner: str, limit: int = 100) -> list[Run]:
        await self.sessions.team_of(session_id, owner)  # 404 unless it is the caller's session
        runs = await self.store.get_many(await self.store.session_runs(session_id, limit))
        return [run for run in runs if run.owner == owner]

    async def active_run(self, session_id: str, owner: str) -> Run | None:
        """The caller's session's run in progress (queued, running or waiting), if any."""
        await self.sessions.team_of(session_id, owner)  # 404 unless it is the caller's session
        run_id = await self.store.active_run(session_id)
        run = await self.store.get(run_id) if run_id else None
        return run if run is not None and run.owner == owner else None

    async def owner_runs(self, owner: str, limit: int = 100) -> list[Run]:
        """The key's newest runs, newest first."""
        return await self.store.get_many(await self.store.owner_runs(owner, limit))

    async def answer(self, run_id: str, owner: str, answer: InputAnswer) -> Run:
        """Give the caller's waiting run a person's answer; the run as it is then (running again)."""
        run = await self.get(run_id, owner)
        pending = run.input_request if run.status is RunStatus.REQUIRES_INPUT else None
        if pending is None:
            raise RunNotWaiting(run.status.value)
        if answer.request_id != pending.get("request_id"):
            raise WrongInputRequest(str(pending.get("request_id")))
        if answer.kind != pending.get("kind"):
            field, what = ("content", "a message") if pending.get("kind") == "message" else ("approved", "an approval")
            raise InvalidField(["body", field], f"The pending request asks for {what}: send {field}.")
        reply: dict[str, object] = {"request_id": answer.request_id, "kind": answer.kind}
        response: dict[str, object] = dict(reply)
        if answer.content is not None:
            reply["content"] = answer.content
        else:
            reply["approved"] = response["approved"] = bool(answer.approved)
            reply["reason"] = answer.reason or ""
        try:
            await self.store.answer_input(run_id, reply, frames.input_response_frame(run.session_id, run.id, response))
        except InputRefused as exc:  # it changed meanwhile: answered, cancelled or timed out
            if exc.pending is not None:
                raise WrongInputRequest(exc.pending) from None
            raise RunNotWaiting(exc.status or "expired") from None
        return await self.get(run_id, owner)

    async def cancel(self, run_id: str, owner: str, *, wait: float = 5.0) -> Run:
        """Stop the caller's run; the run as it is once stopped (or after ``wait`` seconds)."""
        run = await self.get(run_id, owner)
        if not run.status.final:
            await self.stop(run_id, RunStatus.CANCELLED)
            try:
                return await asyncio.wait_for(self.wait(run_id), wait)
            except TimeoutError:
                pass
        return await self.get(run_id, owner)

    async def stop(self, run_id: str, final: RunStatus) -> None:
        """End a run as ``final`` (cancelled or interrupted), wherever it is."""
        status = await self.store.request_stop(run_id, final)
        if status is None or status.final:
            return
        if status is RunStatus.QUEUED:
            run = await self.store.get(run_id)
            if run is not None and await self.lifecycle.fail(run, RunStopped(final.value), final):
                await self.lifecycle.dispatcher.abort(run_id)  # take it off the queue, if it is there
                return
        # Running (or it started just now): its worker stops it and ends it as asked.
        await self.lifecycle.dispatcher.abort(run_id)

    async def follow(self, run_id: str, after: str = "0") -> AsyncIterator[LogEntry]:
        """The run's events after ``after`` (see :func:`check_cursor`), as they are written, until ``done``.

        With Redis, the events come from the messages the run's writes publish, through this
        process's one pub/sub connection (``RunStore.fanout``): what was written before the
        subscription, or while it was lost, is read from the log. Without that connection (the
        embedded store, or Redis's pub/sub unreachable), each follower blocks on the log itself; so
        does a follower that finds events in the log that were not published (a worker of an older
        version, during an upgrade), after ``follow_block`` seconds without a message.
        """
        cursor = after
        fanout = self.store.fanout
        if fanout is not None and fanout.up:
            async with fanout.watching(self.store.events_key(run_id), timeout=self.follow_block) as watch:
                if watch is not None:
                    try:
                        async for entry in self._published(run_id, cursor, watch):
                            yield entry
                            cursor = entry.id
                        return  # done, or the run is gone
                    except _ReadTheLog:
                        pass
        following = STREAM_FOLLOWERS.labels("log")
        following.inc()
        try:
            while True:
                entries = await self.store.read(run_id, cursor, block=self.follow_block)
                if not entries:
                    if not await self.store.exists(run_id):  # expired, or rolled back
                        return
                    continue
                for entry in entries:
                    yield entry
                    if entry.event == "done":
                        return
                cursor = entries[-1].id
        finally:
            following.dec()

    async def _published(self, run_id: str, after: str, watch: pubsub.Watch) -> AsyncIterator[LogEntry]:
        """The run's events after ``after`` from its published messages (``watch``), until ``done``
        or the run is gone; :class:`_ReadTheLog` when they stop coming that way."""
        following = STREAM_FOLLOWERS.labels("pubsub")
        following.inc()
        try:
            last = entry_order(after)
            batch = await self._read_to_end(run_id, after)  # written before the subscription
            unpublished = False
            while True:
                for entry in batch:
                    order = entry_order(entry.id)
                    if order <= last:  # both read and published
                        continue
                    last, after = order, entry.id
                    yield entry
                    if entry.event == "done":
                        return
                if unpublished:
                    raise _ReadTheLog()  # its writer does not publish (an older version)
                item: object = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.follow_block):
                        item = await watch.messages.get()
                if item is pubsub.LOST:
                    raise _ReadTheLog()
                if isinstance(item, list):
                    batch = item
                    continue
                # Messages may have been missed (a lost connection), or it was quiet for a while: read the log.
                batch = await self._read_to_end(run_id, after)
                if item is None:  # quiet: events in the log now came without their message
                    unpublished = bool(batch)
                    if not batch and not await self.store.exists(run_id):
                        return  # expired, or rolled back
        finally:
            following.dec()

    async def _read_to_end(self, run_id: str, after: str) -> list[LogEntry]:
        """Every event of the run's log after ``after``, as it is now."""
        entries: list[LogEntry] = []
        while len(page := await self.store.read(run_id, after, block=0)) == READ_PAGE:
            entries += page
            after = page[-1].id
        return entries + page

    async def abandon(self, run_id: str) -> None:
        """The caller waiting on or following the run went away: cancel the run. Not while the
        service stops: its runs belong to the workers then, and their clients can re-attach."""
        if not self.shutdown.draining.is_set():
            await asyncio.shield(self.stop(run_id, RunStatus.CANCELLED))

    async def wait(self, run_id: str, *, cancel_if_abandoned: bool = False) -> Run:
        """The run once it has ended; with ``cancel_if_abandoned``, a caller that goes away first cancels it."""
        try:
            run = await self._ended(run_id)
        except asyncio.CancelledError:
            if cancel_if_abandoned:
                await self.abandon(run_id)
            raise
        finally:
            self.store.forget_end(run_id)
        if run is None:  # gone before its time: only a rollback deletes a run
            raise RunStopped(RunStatus.INTERRUPTED.value)
        return run

    async def _ended(self, run_id: str) -> Run | None:
        """The run once it has ended (None if it is gone): its end's notice or a blocking read of
        its end marker (``RunStore.wait_end``), again after each block (a run that ended unmarked
        ends the wait by its record)."""
        while True:
            ended, run = await self.store.wait_end(run_id, block=self.follow_block)
            if ended or run is None or run.status.final:
                return run


class _ReadTheLog(Exception):
    """A follower's events stopped coming from published messages: it reads the log itself."""


def check_cursor(after: str, loc: list[str | int]) -> str:
    """``after`` if it is an event id ("0": before the first event), else a 422 naming ``loc``."""
    if not CURSOR.match(after):
        raise InvalidField(loc, "Not an event id of a run's stream (such as 1732000000000-0, or 0 for the start).")
    return after


def raise_for_failure(run: Run) -> None:
    """Raise the error a run ended with, as the caller waiting on it should see it."""
    if run.status is RunStatus.SUCCEEDED:
        return
    if run.status in (RunStatus.CANCELLED, RunStatus.INTERRUPTED):
        raise RunStopped(run.status.value)
    error = run.error or {}
    if error.get("type") == WorkerLost.error_type:
        raise WorkerLost()
    raise RunFailed(
        str(error.get("type", "internal")),
        str(error.get("detail", "The run failed.")),
        int(error.get("status", 500)),
        headers=dict(error.get("headers") or {}),
    )
