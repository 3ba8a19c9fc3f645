"""Ending a run, wherever it ends: in its worker, in the API (cancelled before it started), or
in whichever process noticed that its worker died.

Ending is one step in the store (final status, last events, session freed); what follows it is
here: the next run waiting for the session is dispatched, a rolled-back run is deleted, the
webhook is sent and the metrics counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from agent_api.errors import AgentAPIError, StoreUnavailable
from agent_api.metrics import RUNS_FINISHED
from agent_api.models.chat import Usage
from agent_api.runs import frames
from agent_api.runs.model import Run, RunStatus
from agent_api.runs.store import Finished, JobWrite, QueueStep, RunStore
from agent_api.runs.views import run_json
from agent_api.runs.webhooks import WebhookSender
from agent_api.services.sessions import Turn
from agent_api.services.usage import UsageStore

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    """The job queue as runs see it."""

    async def enqueue(self, run_id: str) -> None: ...

    def enqueue_step(self, run_id: str) -> QueueStep | None:
        """The run's enqueue as a step the run's creation also takes (None: :meth:`enqueue` after it)."""
        ...

    def job_write(self, run_id: str, *, ending: bool) -> JobWrite | None:
        """The record of the job executing ``run_id`` in this process, started or (``ending``)
        completed, for the run's own step to write; None where no such job runs."""
        ...

    async def abort(self, run_id: str) -> None: ...


class RunLifecycle:
    """Ends runs and carries out what follows an end."""

    def __init__(
        self,
        store: RunStore,
        dispatcher: Dispatcher,
        webhooks: WebhookSender | None,
        usage: UsageStore | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.webhooks = webhooks
        self.usage = usage

    async def finish(
        self,
        run: Run,
        status: RunStatus,
        events: Sequence[frames.Frame],
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        usage: Usage | None = None,
        turn: Turn | None = None,
    ) -> Finished | None:
        """End ``run`` as ``status``; None when it had ended already (someone else ended it).

        In the same step: the run (and ``usage``, the tokens it used) counts in its key's usage
        once, and ``turn`` is saved to the session (:class:`SessionNotFound` if it has expired:
        then nothing is written).
        """
        counters = self.usage.counters(run.owner, run.team, usage) if self.usage is not None else None
        job = self.dispatcher.job_write(run.id, ending=True)
        finished = await self.store.finish(
            run, status, events, result=result, error=error, counters=counters, turn=turn, job=job
        )
        if finished is None:
            return None
        RUNS_FINISHED.labels(run.team, status.value).inc()
        log.info("run %s %s", run.id, status.value, extra={"run_id": run.id, "status": status.value})
        if finished.next_run is not None:
            await self._dispatch_next(finished.next_run)
        if finished.rollback:
            await self.store.delete(run)
        elif run.webhook and self.webhooks is not None:
            ended = await self.store.get(run.id)
            if ended is not None:
                event_type = f"run.{status.value}"
                self.webhooks.schedule(run.webhook, run_json(ended), event_type=event_type, message_id=run.id)
        return finished

    async def _dispatch_next(self, run_id: str) -> None:
        try:
            await self.dispatcher.enqueue(run_id)
        except Exception:
            log.exception("could not dispatch run %s, next on its session; failing it", run_id)
            waiting = await self.store.get(run_id)
            if waiting is not None:
                await self.fail(waiting, StoreUnavailable())

    async def fail(self, run: Run, error: AgentAPIError, status: RunStatus = RunStatus.FAILED) -> Finished | None:
        """End ``run`` with an error frame and an ``error`` in its record."""
        return await self.finish(
            run,
            status,
            frames.failure_frames(run.session_id, error, status.value),
            error={
                "type": error.error_type,
                "detail": error.detail,
                "status": error.status_code,
                "headers": {k: v for k, v in error.headers.items() if k == "Retry-After"},
            },
        )
