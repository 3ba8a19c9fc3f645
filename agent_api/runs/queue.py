"""Dispatching runs to workers: saq on Redis, or in-process tasks when embedded.

With Redis, runs travel through a saq queue (``docs/job-queue.md`` says why saq): any number of
``agent-api worker`` processes, on any machine that reaches Redis, take them with a blocking
dequeue. saq owns the job's lifecycle around our function: it cancels a running job that is
aborted (a user's cancel), and its sweep finds jobs whose heartbeat stopped (a killed worker).
Each job is one attempt (``retries=1``) and the run's own ``queued -> running`` step refuses a
second start, so a run is never started twice even where saq would retry it.

Without Redis, the same job function runs as an asyncio task of the API process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as redis
from saq import Job, Status, Worker
from saq.queue.redis import RedisQueue
from saq.utils import now as saq_now

from agent_api.metrics import LIVE_WORKERS, QUEUE_DEPTH
from agent_api.runs.store import JobWrite, QueueStep
from agent_api.services import pubsub

log = logging.getLogger(__name__)

JOB_FUNCTION = "execute_run"
Execute = Callable[[str], Coroutine[Any, Any, None]]
LostHandler = Callable[[str], Awaitable[None]]


# saq keeps a job as the JSON of ``Job.to_dict()``; a heartbeat moves only its ``touched`` field
# (saq's ``stuck`` compares it, in ms, with the job's ``heartbeat``). Rewriting the field in place
# leaves the rest of the record as it is: a status set meanwhile (an abort) is not overwritten.
# tests/integration/test_queue.py checks, with saq writing the records, that this still holds.
_TOUCH = """
local touched = '"touched": ' .. ARGV[1]
local n = 0
for _, key in ipairs(KEYS) do
  local job = redis.call('GET', key)
  if job then
    local updated, found = string.gsub(job, '"touched": %d+', touched, 1)
    if found == 1 then
      redis.call('SET', key, updated, 'KEEPTTL')
      n = n + 1
    end
  end
end
return n
"""


class RunJobQueue(RedisQueue):
    """saq's Redis queue with a sweep that gives up only dead workers' jobs, and says so.

    saq's own sweep gives up every job of the active list whose status is not ``active``, and so
    also a job a live worker has just dequeued but not yet marked active: under load that
    window is long enough to lose runs. Here such a job is given up only if it is still not
    active at the next sweep this process makes (seconds later); an active job, when its
    heartbeat is older than ``heartbeat`` (saq's ``stuck``). Each run given up is reported to
    ``on_lost``.
    """

    on_lost: LostHandler | None = None
    _suspects: frozenset[bytes] = frozenset()
    # The run's start step writes a job's record when the job starts (SaqDispatcher.job_write).
    starts_written_by_runs = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dequeuing = asyncio.Lock()
        self._ended_by_runs: set[str] = set()  # jobs whose completion the run's end step wrote

    async def update(self, job: Job, **kwargs: Any) -> None:
        """saq's update of a job, except its start, where the run's start step writes the record.

        saq's worker marks a job active (a copy of the job, a write and a publish nobody hears)
        just before it calls the job's function, whose first step is the run's start, which
        writes the same record (``SaqDispatcher.job_write``): one round trip per run fewer. The
        job itself changes as saq's update changes it.
        """
        if kwargs.get("status") == Status.ACTIVE and self.starts_written_by_runs:
            job.touched = saq_now()
            for name, value in kwargs.items():
                if hasattr(job, name):
                    setattr(job, name, value)
            return
        await super().update(job, **kwargs)

    async def _finish(self, job: Job, status: Status, *, result: Any = None, error: str | None = None) -> None:
        """saq's end of a job, unless the run's end step wrote it completed (one round trip fewer)."""
        if status == Status.COMPLETE and job.key in self._ended_by_runs:
            self._ended_by_runs.discard(job.key)
            return
        self._ended_by_runs.discard(job.key)
        await super()._finish(job, status, result=result, error=error)

    def ended_by_run(self, job_key: str) -> None:
        self._ended_by_runs.add(job_key)

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        """saq's dequeue, one at a time in this process: worker processes take jobs in turn.

        Redis gives a job to the client that has waited longest for one. With every free job
        slot of every worker waiting, all the slots of the worker that started first were
        older than any other's: a burst of runs went to one worker process while the others
        idled, and one core ran the agents. With one waiting dequeue per process, consecutive
        jobs go to the worker processes in turn (each waits again at the back once it has one).
        """
        async with self._dequeuing:
            return await super().dequeue(timeout, poll_interval)

    async def notify(self, job: Job) -> None:
        """Publish a job's change, as saq does, except its start and its success.

        saq publishes every change of every job for whoever waits on it (``job.refresh()``);
        here only the sweep waits, on the jobs it aborts. Every run starts and most succeed: two
        publishes, two round trips, per run that nobody hears.
        """
        if job.status not in (Status.ACTIVE, Status.COMPLETE):
            await super().notify(job)

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        if not await self.redis.set(self._sweep, 1, nx=True, ex=lock):
            return []  # another process swept within the interval
        ids: list[bytes] = await self.redis.lrange(self._active, 0, -1)  # type: ignore[misc]
        raws = await self.redis.mget(ids) if ids else []
        dead: list[Job] = []
        suspects: set[bytes] = set()
        for job_id, raw in zip(ids, raws, strict=True):
            job = self.deserialize(raw) if raw else None
            if job is None:
                async with self.redis.pipeline(transaction=True) as pipe:  # a job record that expired
                    pipe.lrem(self._active, 0, job_id)  # type: ignore[arg-type]
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
            elif job.status in (Status.ACTIVE, Status.ABORTING):
                if job.stuck:
                    dead.append(job)
            elif job_id in self._suspects:
                dead.append(job)
            else:
                suspects.add(job_id)
        self._suspects = frozenset(suspects)
        for job in dead:
            log.warning("giving up job %s: its worker stopped", job.key)
            await self.abort(job, error=self.swept_error_message)
            with contextlib.suppress(asyncio.TimeoutError):
                await job.refresh(abort)
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)
            if self.on_lost is not None:
                await self.on_lost(job.key)
        return [job.id for job in dead]


class _ZeroGraceNotice(logging.Filter):
    """Drops saq's warning that its tasks outlived its shutdown grace period, which is 0 here.

    A worker's runs get their grace period from :meth:`SaqDispatcher.stop_gracefully`; saq's own
    ``stop()`` then cancels its job slots and upkeep tasks at once, and its zero grace period always
    "runs out" on them: the warning came at every stop and meant nothing. saq's warning that tasks
    did not finish their cancellation in time still comes through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Some tasks did not finish within the shutdown grace period")


_ZERO_GRACE_NOTICE = _ZeroGraceNotice()


class SaqDispatcher:
    """Runs as saq jobs keyed by run id."""

    def __init__(self, client: redis.Redis, *, heartbeat: int, name: str = "agent-api-runs") -> None:
        # saq reads and writes bytes; the client must not decode responses.
        self.queue = RunJobQueue(client, name=name, max_concurrent_ops=1000)
        self.heartbeat = heartbeat
        self.cancel_channel = f"{name}:cancel"
        self._running: dict[str, asyncio.Task[None]] = {}  # this process's runs, by id
        self._jobs: dict[str, Job] = {}  # ... and their jobs
        self._touch = client.register_script(_TOUCH)

    def _job(self, run_id: str) -> Job:
        return Job(JOB_FUNCTION, kwargs={"run_id": run_id}, key=run_id, timeout=0, heartbeat=self.heartbeat, retries=1)

    async def enqueue(self, run_id: str) -> None:
        await self.queue.enqueue(self._job(run_id))

    def enqueue_step(self, run_id: str) -> QueueStep:
        """The run's enqueue for the step that creates the run to do too (one round trip fewer).

        What saq's ``Queue.enqueue`` prepares before its enqueue script (the job's queue, its
        queued time and status; no before-enqueue hooks are registered here), and that script's
        keys and arguments. tests/integration/test_queue.py checks it against saq's own enqueue.
        """
        job = self._job(run_id)
        job.queue = self.queue
        job.queued = saq_now()
        job.status = Status.QUEUED
        queue = self.queue
        record = queue.serialize(job)
        return QueueStep(keys=(queue._incomplete, job.id, queue._queued, job.abort_id), args=(record, job.scheduled))

    async def abort(self, run_id: str) -> None:
        """Stop a run wherever it is: off the queue, or cancelled in whichever worker runs it.

        The worker hears of it at once (a message on ``cancel_channel``); saq's own abort, which
        workers poll for every few seconds, is the fallback should that message be missed.
        """
        job = await self.queue.job(run_id)
        if job is not None and not job.completed:
            await self.queue.abort(job, "cancelled")
            await self.queue.redis.publish(self.cancel_channel, run_id)

    async def listen_for_cancels(self) -> None:
        """Cancel this process's runs named on ``cancel_channel`` (runs until cancelled).

        A cancel published while the listener was not subscribed (Redis restarting) is not heard
        here: saq's abort, polled by the worker, stops the run then.
        """

        def cancel(run_id: str) -> None:
            task = self._running.get(run_id)
            if task is not None:
                task.cancel()

        await pubsub.listen(self.queue.redis, self.cancel_channel, cancel, name="cancel listener")

    def worker(self, execute: Execute, *, concurrency: int, grace: float, in_process: bool) -> Worker[Any]:
        """A saq worker that runs ``execute(run_id)`` per job; :meth:`beat_forever` keeps the jobs alive."""

        async def execute_run(ctx: dict[str, Any], *, run_id: str) -> None:
            self._jobs[run_id] = ctx["job"]
            work = asyncio.get_running_loop().create_task(execute(run_id))
            self._running[run_id] = work
            try:
                await work
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if work.cancelled() and current is not None and not current.cancelling():
                    return  # the run was cancelled (and has ended itself): the job is done
                raise
            finally:
                self._running.pop(run_id, None)
                self._jobs.pop(run_id, None)

        logging.getLogger("saq").addFilter(_ZERO_GRACE_NOTICE)  # (once per process: the same filter)
        worker: Worker[Any] = Worker(
            self.queue,
            functions=[(JOB_FUNCTION, execute_run)],
            concurrency=concurrency,
            # abort: saq's poll for aborted jobs, a fallback for the cancel channel (each poll reads
            # every running job); sweep: how soon a dead worker is noticed; schedule: jobs to run
            # later, which runs never are (saq's default polls for them every second).
            timers={"abort": 2, "sweep": 5, "worker_info": 10, "schedule": 60},
            # stop() cancels at once: the grace period for running runs is stop_gracefully's.
            shutdown_grace_period_s=0,
            # How long the one waiting dequeue of the process (RunJobQueue.dequeue) blocks before
            # it is sent again: an idle worker costs Redis nothing in between.
            dequeue_timeout=60,
        )
        worker.SIGNALS = []  # the process's owner handles signals and calls stop_gracefully
        self.queue.starts_written_by_runs = True  # execute() starts with the run's start step
        return worker

    def job_write(self, run_id: str, *, ending: bool) -> JobWrite | None:
        """The record of the job executing ``run_id`` here, for the run's start or end step to write.

        Started: the job as saq's worker has just marked it active (RunJobQueue._update leaves the
        write to this step). Ending: the job as saq's ``finish`` completes it (status, completion
        time, progress; no result), leaving the queue's active list and incomplete set, kept for
        its TTL (saq's ``_finish``); once written, saq's own completion is skipped. A job that
        ends otherwise (aborted, failed, retried) is still written by saq, after this.
        tests/integration/test_queue.py checks both against saq's own writes.
        """
        job = self._jobs.get(run_id)
        if job is None:
            return None
        queue = self.queue
        if not ending:
            return JobWrite(key=job.id, record=queue.serialize(job))
        done = queue.copy(job)
        done.status, done.result, done.error = Status.COMPLETE, None, None
        done.completed, done.progress = saq_now(), 1.0
        return JobWrite(
            key=job.id,
            record=queue.serialize(done),
            done_lists=(queue._active, queue._incomplete),
            ttl=job.ttl,
            written=lambda: queue.ended_by_run(job.key),
        )

    @staticmethod
    async def stop_gracefully(worker: Worker[Any], grace: float) -> None:
        """Let the runs in progress finish for up to ``grace`` seconds, then stop the worker.

        Runs still going then are cancelled and end ``failed`` (``shutdown``): nothing half-done
        is saved, and no run is started again elsewhere.
        """
        # (Not worker.event: setting it makes saq stop at once, without a grace period. A job
        # taken during the grace period is stopped with the rest.)
        running = [context["task"] for context in list(worker.job_task_contexts.values())]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        await worker.stop()

    async def beat_forever(self) -> None:
        """Refresh the heartbeat of every job this process runs, every ``heartbeat / 3`` seconds.

        One script per beat for all of them (saq's ``job.update()`` per job is a read, a write and
        a publish each: about 9% of a loaded worker's CPU).
        """
        interval = max(1.0, self.heartbeat / 3)
        while True:
            await asyncio.sleep(interval)
            if self._running:
                with contextlib.suppress(Exception):  # a missed beat is retried; the sweep waits 3 of them
                    await self.touch(list(self._running))

    async def touch(self, run_ids: list[str]) -> int:
        """Set the ``touched`` time of these runs' jobs to now, in one round trip; return how many exist."""
        keys = [self.queue.job_id(run_id) for run_id in run_ids]
        touched: int = await self._touch(keys=keys, args=[saq_now()])
        return touched

    async def sweep_forever(self, interval: float = 5.0) -> None:
        """What the API processes do for the queue: sweep dead workers' jobs, report the depth.

        So that a run is failed even when the last worker died. saq's lock makes one process
        sweep per interval.
        """
        while True:
            try:
                await self.queue.sweep(lock=int(interval))
                QUEUE_DEPTH.set(await self.queue.count("queued"))
                info = await self.queue.info()
                LIVE_WORKERS.set(len(info.get("workers", {})))
            except Exception:
                log.warning("queue upkeep failed; retrying", exc_info=True)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        await self.queue.disconnect()


class MemoryDispatcher:
    """The embedded default: each run is a task of this process, at most ``concurrency`` at once."""

    def __init__(self, execute: Execute | None = None, *, concurrency: int = 200) -> None:
        self.execute = execute
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def enqueue_step(self, run_id: str) -> None:
        """None: a run's task is started by :meth:`enqueue`, after the step that creates the run."""
        return None

    def job_write(self, run_id: str, *, ending: bool) -> None:
        """None: a run's task has no record of its own."""
        return None

    async def enqueue(self, run_id: str) -> None:
        if self.execute is None:
            raise RuntimeError("no executor attached")
        task = asyncio.get_running_loop().create_task(self._run(run_id), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))
        QUEUE_DEPTH.inc()

    async def _run(self, run_id: str) -> None:
        assert self.execute is not None
        try:
            async with self._slots:
                QUEUE_DEPTH.dec()
                await self.execute(run_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s failed outside the run", run_id)

    async def abort(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()

    async def stop(self, grace: float) -> None:
        """Let running runs finish for ``grace`` seconds, then cancel the rest."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
