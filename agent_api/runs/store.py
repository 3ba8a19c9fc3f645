"""RunStore: run records, each run's event log, and the per-session order of runs, in Redis.

    {prefix}run:{id}               hash: the run record (see Run.to_fields), expires RUN_TTL after the end
    {prefix}run:{id}:events        stream: the event log; entry ids are the events' ids (Last-Event-ID)
    {prefix}run:{id}:end           stream: one entry once the run has ended (what waiters block on)
    {prefix}session:{sid}:active   string: the run the session is given to (queued on a worker, or running)
    {prefix}session:{sid}:pending  list: runs waiting for the session, in the order they start
    {prefix}session:{sid}:runs     sorted set: the session's runs by creation time
    {prefix}runs:active:{owner}    sorted set: the key's runs that have not ended (the per-key limit)
    {prefix}runs:owner:{owner}     sorted set: the key's newest runs by creation time (GET /runs)
    {prefix}runs:ends:{uuid}       list: an API process's notices of the ends of runs its requests wait
                                   for, pushed by the end step (EndNotices, runs/ends.py)
    {prefix}runs:input             pub/sub channel: a waiting run (named in the message) was answered
    {prefix}run:{id}:events        pub/sub channel too: each script that adds to the log publishes
                                   the entries it added, with their ids (followers take them there)
    {prefix}runs:followers         pub/sub channel: nothing is published; a follower process listens
                                   to it to know its pub/sub connection is up

Every change of status is one Lua script, so that a run record, its log and the session's order
never disagree: creating a run decides the busy-session policy atomically (and writes the record
of the session it starts, if new); starting it reads the session it continues; ending it saves
its turn to the session, counts its usage, writes its last events, frees the session and names
the run to start next in the same step. A turn is thus saved whole with its run's end, or not at
all, and a conversation costs few round trips. The session's own layout and its Lua functions
are SessionManager's (services/sessions.py).
With the embedded store (fakeredis) there is no blocking read; followers wait on an in-process
wake-up instead, set by every append (everything runs in one process then).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from agent_api.errors import RateLimited, SessionBusy, SessionNotFound, StoreUnavailable
from agent_api.runs.ends import PUSH_NOTICE_LUA, EndNotices
from agent_api.runs.model import IfBusy, Run, RunStatus, sources_of, utcnow
from agent_api.services import pubsub
from agent_api.services.sessions import (
    APPEND_TURN_LUA,
    LOAD_FOR_RUN_LUA,
    NewSession,
    SessionKeys,
    StoredSession,
    Turn,
)
from agent_api.services.usage import Counters

log = logging.getLogger(__name__)

# Every script that adds to a run's log publishes what it added, with the entries' ids, on the
# channel named like the log's key (Fanout: followers take events from the message, not from a
# read). ``add_events`` adds ARGV[from..to] (event/data pairs) to ``stream``; ``publish_events``
# publishes the entries added, as JSON: [[id, event, data], ...].
ADD_EVENTS_LUA = """
local function add_events(added, stream, from, to)
  for i = from, to, 2 do
    local id = redis.call('XADD', stream, '*', 'e', ARGV[i], 'd', ARGV[i + 1])
    added[#added + 1] = {id, ARGV[i], ARGV[i + 1]}
  end
  return added
end
local function add_event(added, stream, event, data)
  local id = redis.call('XADD', stream, '*', 'e', event, 'd', data)
  added[#added + 1] = {id, event, data}
  return id
end
local function publish_events(stream, added)
  if #added > 0 then redis.call('PUBLISH', stream, cjson.encode(added)) end
end
"""

# KEYS: 1 events. ARGV: event/data pairs.
APPEND_LUA = (
    ADD_EVENTS_LUA
    + """
publish_events(KEYS[1], add_events({}, KEYS[1], 1, #ARGV))
"""
)

# KEYS: 1 run, 2 events, 3 session's active run, 4 its pending runs, 5 its runs, 6 the key's active
# runs, 7 its run index, 8 the new session's record, 9-12 the job's (QueueStep). ARGV: 1 run id,
# 2 if_busy, 3 max runs, 4 created (ms), 5 run TTL, 6 session frame, 7 run key prefix, 8 index
# size, 9-10 the new session's field count and TTL, 11-12 the job's (QueueStep; '' for none),
# then the new session's fields, then the run's. Returns {code, current}: 1 started now (4: its
# job not written, its key taken), 2 queued behind ``current``, 3 interrupting it; -1 busy, -2
# the key's limit, -3 the run exists.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {-3, ''} end
local max = tonumber(ARGV[3])
if max > 0 and redis.call('ZCARD', KEYS[6]) >= max then return {-2, ''} end
local current = redis.call('GET', KEYS[3])
local code = 1
if current then
  if ARGV[2] == 'reject' then return {-1, current} end
  if ARGV[2] == 'enqueue' then
    redis.call('RPUSH', KEYS[4], ARGV[1])
    code = 2
  else
    redis.call('LPUSH', KEYS[4], ARGV[1])
    local rollback = '0'
    if ARGV[2] == 'rollback' then rollback = '1' end
    redis.call('HSET', ARGV[7] .. current, 'cancel_to', 'interrupted', 'rollback', rollback)
    code = 3
  end
else
  redis.call('SET', KEYS[3], ARGV[1])
  current = ''
end
local session_fields = tonumber(ARGV[9])
for i = 13, 12 + 2 * session_fields, 2 do redis.call('HSET', KEYS[8], ARGV[i], ARGV[i + 1]) end
if session_fields > 0 then redis.call('EXPIRE', KEYS[8], ARGV[10]) end
for i = 13 + 2 * session_fields, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if code == 1 and ARGV[11] ~= '' then
  -- The run's job, as saq's enqueue script writes it (QueueStep): KEYS 9-12 incomplete, job,
  -- queued, abort; ARGV 11-12 the job's record and its scheduled time.
  if not redis.call('ZSCORE', KEYS[9], KEYS[10]) and redis.call('EXISTS', KEYS[12]) == 0 then
    redis.call('SET', KEYS[10], ARGV[11])
    redis.call('ZADD', KEYS[9], ARGV[12], KEYS[10])
    if ARGV[12] == '0' then redis.call('RPUSH', KEYS[11], KEYS[10]) end
  else
    code = 4
  end
end
redis.call('XADD', KEYS[2], '*', 'e', 'session', 'd', ARGV[6])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[5])
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[7], ARGV[4], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -tonumber(ARGV[8]) - 1)
redis.call('EXPIRE', KEYS[7], tonumber(ARGV[5]) + 86400)
return {code, current}
"""

# KEYS: 1 run, 2 its job's record (JobWrite). ARGV: 1 started_at, 2 worker, 3-5 where sessions are
# (SessionKeys: head, messages suffix, TTL; '' for none), 6 the job's record ('' for none): the
# run, and then the session it continues (not for a stateless run), TTL refreshed.
_START = (
    LOAD_FOR_RUN_LUA
    + """
if ARGV[6] ~= '' then redis.call('SET', KEYS[2], ARGV[6]) end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return false end
if redis.call('HEXISTS', KEYS[1], 'cancel_to') == 1 then return false end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2])
local run = redis.call('HGETALL', KEYS[1])
if ARGV[3] == '' or redis.call('HEXISTS', KEYS[1], 'history') == 1 then return {run} end
local session = ARGV[3] .. redis.call('HGET', KEYS[1], 'session_id')
return {run, load_session(session, session .. ARGV[4], tonumber(ARGV[5]))}
"""
)

_REQUEST_STOP = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status == 'queued' or status == 'running' or status == 'requires_input' then
  if redis.call('HEXISTS', KEYS[1], 'cancel_to') == 0 then redis.call('HSET', KEYS[1], 'cancel_to', ARGV[1]) end
end
return status
"""

# KEYS: 1 run, 2 events, 3 session's active run, 4 its pending runs, 5 the key's active runs, 6 end,
# 7 counters, 8-9 the session's turn keys, 10-12 the job's record, active list and incomplete set
# (JobWrite). ARGV: 1 run id, 2 status, 3 the statuses it may end from, 4 ended_at, 5 run TTL,
# 6 result, 7 error, 8 counters n, 9 their TTL, 10 turn messages m (-1: no turn), 11 max history,
# 12 session TTL, 13 updated_at, 14 the job's record ('' for none), 15 its TTL; then n counter
# field/amount pairs, m messages, and event/data pairs.
_FINISH = (
    APPEND_TURN_LUA
    + ADD_EVENTS_LUA
    + """
if ARGV[14] ~= '' then
  redis.call('LREM', KEYS[11], 1, KEYS[10])
  redis.call('ZREM', KEYS[12], KEYS[10])
  local ttl = tonumber(ARGV[15])
  if ttl > 0 then redis.call('SETEX', KEYS[10], ttl, ARGV[14])
  elseif ttl == 0 then redis.call('SET', KEYS[10], ARGV[14])
  else redis.call('DEL', KEYS[10]) end
end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, '', '0', 0} end
local allowed = false
for s in string.gmatch(ARGV[3], '[^,]+') do if s == status then allowed = true end end
if not allowed then return {0, '', '0', 0} end
local counted, saved = tonumber(ARGV[8]), tonumber(ARGV[10])
local first_message = 16 + 2 * counted
local first_event = first_message + math.max(saved, 0)
local turns = 0
if saved >= 0 then
  turns = append_turn(KEYS[8], KEYS[9], tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13], first_message,
    first_event - 1)
  if turns < 0 then return {-1, '', '0', 0} end
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'ended_at', ARGV[4])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[7]) end
for i = 16, first_message - 1, 2 do redis.call('HINCRBY', KEYS[7], ARGV[i], ARGV[i + 1]) end
if counted > 0 then redis.call('EXPIRE', KEYS[7], ARGV[9]) end
local added = add_events({}, KEYS[2], first_event, #ARGV)
redis.call('XADD', KEYS[6], '*', 's', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[6], ARGV[5])
"""
    + PUSH_NOTICE_LUA
    + """
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('LREM', KEYS[4], 0, ARGV[1])
local next = ''
if redis.call('GET', KEYS[3]) == ARGV[1] then
  next = redis.call('LPOP', KEYS[4])
  if next then redis.call('SET', KEYS[3], next) else redis.call('DEL', KEYS[3]); next = '' end
end
publish_events(KEYS[2], added)
return {1, next, redis.call('HGET', KEYS[1], 'rollback') or '0', turns}
"""
)


_REQUEST_INPUT = (
    ADD_EVENTS_LUA
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'cancel_to') == 1 then return 0 end
local added = {}
local event = add_event(added, KEYS[2], 'input_request', ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'requires_input', 'input_request', ARGV[1], 'input_request_id', ARGV[2],
  'input_event', event)
redis.call('HDEL', KEYS[1], 'input_reply')
publish_events(KEYS[2], added)
return 1
"""
)

_ANSWER_INPUT = (
    ADD_EVENTS_LUA
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-3, ''} end
if status ~= 'requires_input' or redis.call('HEXISTS', KEYS[1], 'cancel_to') == 1 then return {-1, status} end
local pending = redis.call('HGET', KEYS[1], 'input_request_id')
if pending ~= ARGV[1] then return {-2, pending or ''} end
redis.call('HSET', KEYS[1], 'status', 'running', 'input_reply', ARGV[2])
redis.call('HDEL', KEYS[1], 'input_request', 'input_request_id', 'input_event')
local added = {}
add_event(added, KEYS[2], 'input_response', ARGV[3])
publish_events(KEYS[2], added)
return {1, ''}
"""
)

# A waiting run re-reads its record this often, should the message that wakes it be missed.
INPUT_POLL_SECONDS = 5.0

# A read of a run's log returns at most this many events.
READ_PAGE = 500

# GET /runs lists at most this many of a key's newest runs.
OWNER_INDEX_SIZE = 1000


class RunExists(Exception):
    """A run with this id exists already."""


@dataclass(frozen=True)
class Admission:
    """How a new run was admitted: started now, waiting behind ``current``, or interrupting it."""

    dispatch: bool
    interrupted: str | None = None
    enqueued: bool = False  # dispatched by the step that created it (its QueueStep)


@dataclass(frozen=True)
class QueueStep:
    """A job queue's enqueue of a run, for the step that creates the run to do it too.

    Keys and arguments of saq's enqueue script (``SaqDispatcher.enqueue_step``): the queue's
    incomplete set, the job's record, the queued list and the job's abort key; the record and the
    time it is scheduled for.
    """

    keys: tuple[str, str, str, str]
    args: tuple[str | bytes, int]


@dataclass(frozen=True)
class JobWrite:
    """A job queue's record of the job that executes a run, for the run's start or end to write.

    The record (``key``, ``record``) as saq writes it when the job starts (``SET``) or completes
    (``SaqDispatcher.job_write``). When it completes, the job also leaves the queue's active list
    and incomplete set (``done_lists``), and its record is kept for ``ttl`` seconds (0: kept, <0:
    deleted), as in saq's ``_finish``; ``written`` is called once the step has run.
    """

    key: str
    record: str | bytes
    done_lists: tuple[str, str] | None = None  # (active list, incomplete set)
    ttl: int = 0
    written: Callable[[], None] | None = None


@dataclass(frozen=True)
class Finished:
    """A run that ended: the run to start next on its session, whether to delete it (rollback)."""

    next_run: str | None
    rollback: bool
    turns: int | None = None  # the session's turns, with the one this run saved


@dataclass(frozen=True)
class LogEntry:
    """One event of a run's log: its id, its type and its JSON data."""

    id: str
    event: str
    data: str


def _published_entries(data: str) -> list[LogEntry]:
    """The entries a script added to a run's log, from the message it published (ADD_EVENTS_LUA)."""
    return [LogEntry(str(entry_id), str(event), str(payload)) for entry_id, event, payload in json.loads(data)]


def entry_order(entry_id: str) -> tuple[int, int]:
    """An event id ("1732000000000-0"; "0" for the start) as something that sorts as the log does."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class InputRefused(Exception):
    """An answer that does not fit: the run is not waiting (``pending`` is None), or waits on ``pending``."""

    def __init__(self, status: str | None, pending: str | None) -> None:
        super().__init__(status, pending)
        self.status = status
        self.pending = pending


@asynccontextmanager
async def _store_errors() -> AsyncIterator[None]:
    try:
        yield
    except RedisError as exc:
        log.warning("run store unavailable: %s", type(exc).__name__)
        raise StoreUnavailable() from exc


class _Wakeups:
    """Followers of the embedded store wait here; appends wake them (one process only)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def arm(self, run_id: str) -> asyncio.Event:
        """The event the next :meth:`wake` of ``run_id`` sets (take it before checking, then wait)."""
        return self._events.setdefault(run_id, asyncio.Event())

    async def wait(self, run_id: str, timeout: float, event: asyncio.Event | None = None) -> None:
        event = event or self.arm(run_id)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    def forget(self, run_id: str) -> None:
        self._events.pop(run_id, None)

    def wake(self, run_id: str) -> None:
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """Wake every waiter (to look again: a wake-up may have been missed)."""
        events, self._events = self._events, {}
        for event in events.values():
            event.set()


def _written(job: JobWrite | None) -> None:
    if job is not None and job.written is not None:
        job.written()


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    """A hash as HGETALL returns it inside a script (a flat list of fields and values)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RunStore:
    """Run records and event logs; ``follow_client`` serves blocking reads (None: embedded)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        follow_client: redis.Redis | None,
        run_ttl: int,
        prefix: str = "agent-api:",
    ) -> None:
        self.redis = client
        self.follow_client = follow_client
        self.run_ttl = run_ttl
        self.prefix = prefix
        self._wakeups = _Wakeups() if follow_client is None else None
        # Runs waiting for a person, woken by an answer: directly when embedded, else via pub/sub.
        self._answers = _Wakeups()
        self.input_channel = f"{prefix}runs:input"
        self._create = client.register_script(_CREATE)
        self._request_input = client.register_script(_REQUEST_INPUT)
        self._answer_input = client.register_script(_ANSWER_INPUT)
        self._start = client.register_script(_START)
        self._request_stop = client.register_script(_REQUEST_STOP)
        self._finish = client.register_script(_FINISH)
        self._append = client.register_script(APPEND_LUA)
        # Followers' events, from the messages the scripts publish (one connection for all of
        # them); run by the API processes (fanout.run()). None when embedded.
        self.fanout = (
            pubsub.Fanout(follow_client, f"{prefix}runs:followers", _published_entries)
            if follow_client is not None
            else None
        )
        # The ends of the runs this process's requests wait for, pushed by the runs' end step
        # (ends.run(), in the API processes). None when embedded.
        self.ends = EndNotices(follow_client, prefix) if follow_client is not None else None

    # keys
    def run_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    def events_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:events"

    def end_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:end"

    def _session_keys(self, session_id: str) -> tuple[str, str, str]:
        base = f"{self.prefix}session:{session_id}"
        return f"{base}:active", f"{base}:pending", f"{base}:runs"

    def _owner_key(self, owner: str) -> str:
        return f"{self.prefix}runs:active:{owner}"

    def _owner_index(self, owner: str) -> str:
        return f"{self.prefix}runs:owner:{owner}"

    async def create(
        self,
        run: Run,
        *,
        if_busy: IfBusy,
        max_runs: int | None,
        session_frame: str,
        new_session: NewSession | None = None,
        enqueue: QueueStep | None = None,
        notify: bool = False,
    ) -> Admission:
        """Store a new run and its first event, applying the busy-session policy and the key's limit.

        ``new_session``, the record of the session the run starts, is written in the same step,
        only if the run is admitted; so is the run's job (``enqueue``), if the run starts now.
        ``notify``: this process will wait for the run's end (:meth:`wait_end`), which the end
        step then pushes to it (:class:`EndNotices`; when embedded, nothing to do). The caller
        :meth:`forgets <forget_end>` the run when it no longer waits, the run created or not.
        """
        active, pending, index = self._session_keys(run.session_id)
        keys = [
            self.run_key(run.id),
            self.events_key(run.id),
            active,
            pending,
            index,
            self._owner_key(run.owner),
            self._owner_index(run.owner),
            new_session.key if new_session is not None else self.run_key(run.id),  # (unused without one)
            *(enqueue.keys if enqueue is not None else [self.run_key(run.id)] * 4),  # (unused without one)
        ]
        args: list[str | bytes | int] = [
            run.id,
            if_busy.value,
            max_runs or 0,
            int(run.created_at.timestamp() * 1000),
            self.run_ttl,
            session_frame,
            self.run_key(""),
            OWNER_INDEX_SIZE,
            len(new_session.fields) if new_session is not None else 0,
            new_session.ttl if new_session is not None else 0,
            *(enqueue.args if enqueue is not None else ("", 0)),
        ]
        for name, value in new_session.fields.items() if new_session is not None else []:
            args += [name, value]
        for name, value in run.to_fields().items():
            args += [name, value]
        if notify and self.ends is not None:
            self.ends.expect(run.id)
            args += ["notify", self.ends.key]
        async with _store_errors():
            code, current = await self._create(keys=keys, args=args)
        code = int(code)
        if code == -3:
            raise RunExists(run.id)
        if code == -2:
            raise RateLimited(
                f"Too many runs in progress for this API key (at most {max_runs} at a time); "
                "retry when one has finished.",
                retry_after=5,
            )
        if code == -1:
            raise SessionBusy()
        self._wake(run.id)
        # 4: started now, but the job's key was taken (as saq's own enqueue would refuse it)
        return Admission(
            dispatch=code in (1, 4),
            interrupted=(str(current) or None) if code == 3 else None,
            enqueued=code == 1 and enqueue is not None,
        )

    async def get(self, run_id: str) -> Run | None:
        async with _store_errors():
            raw = await self.redis.hgetall(self.run_key(run_id))  # type: ignore[misc]
        return Run.from_fields(raw) if raw else None

    async def get_many(self, run_ids: Sequence[str]) -> list[Run]:
        async with _store_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for run_id in run_ids:
                    pipe.hgetall(self.run_key(run_id))
                raws = await pipe.execute()
        return [Run.from_fields(raw) for raw in raws if raw]

    async def session_runs(self, session_id: str, limit: int) -> list[str]:
        """The session's run ids, newest first."""
        async with _store_errors():
            ids = await self.redis.zrevrange(self._session_keys(session_id)[2], 0, limit - 1)
        return [str(i) for i in ids]

    async def active_run(self, session_id: str) -> str | None:
        """The run the session is given to (queued on a worker, running, or waiting), if any."""
        async with _store_errors():
            run_id = await self.redis.get(self._session_keys(session_id)[0])
        return str(run_id) if run_id else None

    async def owner_runs(self, owner: str, limit: int) -> list[str]:
        """The key's run ids, newest first (some may have expired since)."""
        async with _store_errors():
            ids = await self.redis.zrevrange(self._owner_index(owner), 0, limit - 1)
        return [str(i) for i in ids]

    async def start(
        self, run_id: str, worker: str, sessions: SessionKeys | None = None, *, job: JobWrite | None = None
    ) -> tuple[Run, StoredSession | None] | None:
        """Move a queued run to running; None when it is not queued (ended, or taken already).

        With ``sessions``, the same step reads the session the run continues (its TTL refreshed),
        unless the run is stateless; with ``job``, it writes the record of the run's job (started)
        whatever the run's status.
        """
        args: list[str | bytes | int] = [utcnow().isoformat(), worker]
        args += [sessions.head, sessions.messages_suffix, sessions.ttl] if sessions is not None else ["", "", 0]
        args.append(job.record if job is not None else "")
        keys = [self.run_key(run_id), job.key if job is not None else self.run_key(run_id)]
        async with _store_errors():
            reply = await self._start(keys=keys, args=args)
        _written(job)
        if not reply:
            return None
        raw_run, *rest = reply
        run = Run.from_fields(_pairs(raw_run))
        if not rest:
            return run, None
        fields, messages, ttl = rest[0]
        return run, StoredSession(_pairs(fields), [str(m) for m in messages], int(ttl))

    async def request_stop(self, run_id: str, final: RunStatus) -> RunStatus | None:
        """Ask a run to end as ``final``; its status at that moment (None if unknown)."""
        async with _store_errors():
            status = await self._request_stop(keys=[self.run_key(run_id)], args=[final.value])
        return RunStatus(status) if status else None

    async def finish(
        self,
        run: Run,
        status: RunStatus,
        events: Sequence[tuple[str, str]],
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        counters: Counters | None = None,
        turn: Turn | None = None,
        job: JobWrite | None = None,
    ) -> Finished | None:
        """End a run as ``status`` with its last events; None when it had ended already.

        In the same step, so only by the one that ends it: ``counters`` (the run's usage) are
        added, and ``turn`` is appended to the session. A turn is saved whole with the run's end or
        not at all: :class:`SessionNotFound` (and nothing of the run written) if the session has
        expired. ``job``, the record of the job that executed the run (completed), is written
        whatever the outcome.
        """
        active, pending, _ = self._session_keys(run.session_id)
        keys = [
            self.run_key(run.id),
            self.events_key(run.id),
            active,
            pending,
            self._owner_key(run.owner),
            self.end_key(run.id),
            # (the run's key stands in for keys a step does not use)
            counters.key if counters is not None else self.run_key(run.id),
            turn.meta_key if turn is not None else self.run_key(run.id),
            turn.messages_key if turn is not None else self.run_key(run.id),
            job.key if job is not None else self.run_key(run.id),
            *(job.done_lists if job is not None and job.done_lists is not None else [self.run_key(run.id)] * 2),
        ]
        args: list[str | bytes | int] = [
            run.id,
            status.value,
            ",".join(sources_of(status)),
            utcnow().isoformat(),
            self.run_ttl,
            json.dumps(result) if result is not None else "",
            json.dumps(error) if error is not None else "",
            len(counters.increments) if counters is not None else 0,
            counters.ttl if counters is not None else 0,
            len(turn.messages) if turn is not None else -1,
            turn.max_history if turn is not None else 0,
            turn.ttl if turn is not None else 0,
            turn.updated_at if turn is not None else "",
            job.record if job is not None else "",
            job.ttl if job is not None else 0,
        ]
        for name, amount in counters.increments if counters is not None else []:
            args += [name, amount]
        args += turn.messages if turn is not None else []
        for event, data in events:
            args += [event, data]
        async with _store_errors():
            done, next_run, rollback, turns = await self._finish(keys=keys, args=args)
        _written(job)
        done = int(done)
        if done == -1:
            raise SessionNotFound()
        self._wake(run.id)
        if not done:
            return None
        return Finished(next_run=str(next_run) or None, rollback=rollback == "1", turns=int(turns) or None)

    async def delete(self, run: Run) -> None:
        async with _store_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.run_key(run.id), self.events_key(run.id), self.end_key(run.id))
                pipe.zrem(self._session_keys(run.session_id)[2], run.id)
                pipe.zrem(self._owner_index(run.owner), run.id)
                await pipe.execute()
        self._wake(run.id)

    async def append(self, run_id: str, events: Sequence[tuple[str, str]]) -> None:
        """Add events to a run's log (and publish them for its followers), in one round trip."""
        async with _store_errors():
            if self.follow_client is None:  # embedded: nobody listens to the channel
                async with self.redis.pipeline(transaction=False) as pipe:
                    for event, data in events:
                        pipe.xadd(self.events_key(run_id), {"e": event, "d": data})
                    await pipe.execute()
            else:
                args: list[str] = []
                for event, data in events:
                    args += [event, data]
                await self._append(keys=[self.events_key(run_id)], args=args)
        self._wake(run_id)

    async def read(self, run_id: str, after: str, *, block: float) -> list[LogEntry]:
        """The events after ``after`` ("0": from the start), waiting up to ``block`` seconds for one
        (0: not at all)."""
        key = self.events_key(run_id)
        async with _store_errors():
            if block > 0 and self.follow_client is not None:
                reply = await self.follow_client.xread({key: after}, count=READ_PAGE, block=int(block * 1000))
            else:
                reply = await self.redis.xread({key: after}, count=READ_PAGE)
                if not reply and block > 0 and self._wakeups is not None:  # embedded: woken by a write
                    await self._wakeups.wait(run_id, block)
                    reply = await self.redis.xread({key: after}, count=READ_PAGE)
        if not reply:
            return []
        return [LogEntry(str(entry_id), fields["e"], fields["d"]) for entry_id, fields in reply[0][1]]

    async def wait_end(self, run_id: str, *, block: float) -> tuple[bool, Run | None]:
        """Wait up to ``block`` seconds for the run to end: whether it has, and its record then.

        A run created with ``notify`` by this process: its end step's notice (no round trip of
        the waiter's own; see :class:`EndNotices`), or after ``block`` without one, a read of its
        record. Another run: one round trip, a blocking read that only the run's end answers,
        pipelined with a read of the record (Redis runs a connection's commands in order, so the
        record is read once the end has come or the block has run out). A waiter that needs the
        result, not the events, takes one round trip however many events the run writes meanwhile.
        """
        if self.ends is not None and self.ends.expects(run_id):
            run = await self.ends.wait(run_id, block)
            if run is not None:
                return True, run
            return False, await self.get(run_id)  # no notice (yet): the record tells
        key = self.end_key(run_id)
        async with _store_errors():
            if self.follow_client is not None:
                async with self.follow_client.pipeline(transaction=False) as pipe:
                    pipe.xread({key: "0"}, count=1, block=int(block * 1000))
                    pipe.hgetall(self.run_key(run_id))
                    ended, raw = await pipe.execute()
                return bool(ended), Run.from_fields(raw) if raw else None
            assert self._wakeups is not None
            loop = asyncio.get_running_loop()
            give_up = loop.time() + block
            while True:
                woken = self._wakeups.arm(run_id)
                if await self.redis.exists(key):
                    return True, await self.get(run_id)
                left = give_up - loop.time()
                if left <= 0:
                    return False, await self.get(run_id)
                await self._wakeups.wait(run_id, left, woken)

    def forget_end(self, run_id: str) -> None:
        """No more waiting for ``run_id``'s end (see ``create``'s ``notify``)."""
        if self.ends is not None:
            self.ends.forget(run_id)

    async def request_input(self, run_id: str, request: dict[str, Any], frame_data: str) -> bool:
        """Move a running run to requires_input, waiting on ``request``; False if it is not running
        (or is being stopped)."""
        async with _store_errors():
            done = await self._request_input(
                keys=[self.run_key(run_id), self.events_key(run_id)],
                args=[json.dumps(request), request["request_id"], frame_data],
            )
        self._wake(run_id)
        return bool(int(done))

    async def answer_input(self, run_id: str, reply: dict[str, Any], frame_data: str) -> None:
        """Give the waiting run its answer (``reply["request_id"]`` must be the pending request) and
        move it back to running; :class:`InputRefused` when it does not fit."""
        async with _store_errors():
            code, detail = await self._answer_input(
                keys=[self.run_key(run_id), self.events_key(run_id)],
                args=[reply["request_id"], json.dumps(reply), frame_data],
            )
            code = int(code)
            if code == 1 and self.follow_client is not None:
                await self.redis.publish(self.input_channel, run_id)
        if code == -1:
            raise InputRefused(str(detail), None)
        if code == -2:
            raise InputRefused(RunStatus.REQUIRES_INPUT.value, str(detail) or None)
        if code == -3:
            raise InputRefused(None, None)
        self._wake(run_id)
        self._answers.wake(run_id)

    async def wait_for_input(self, run_id: str, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The answer to ``request_id`` once it comes; None after ``timeout`` seconds without one."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        try:
            while True:
                woken = self._answers.arm(run_id)
                async with _store_errors():
                    raw = await self.redis.hget(self.run_key(run_id), "input_reply")  # type: ignore[misc]
                if raw:
                    reply: dict[str, Any] = json.loads(raw)
                    if reply.get("request_id") == request_id:
                        return reply
                left = give_up - loop.time()
                if left <= 0:
                    return None
                await self._answers.wait(run_id, min(left, INPUT_POLL_SECONDS), woken)
        finally:
            self._answers.forget(run_id)

    async def listen_for_answers(self) -> None:
        """Wake this process's waiting runs when another process answers them (runs until cancelled).

        Each (re)subscription wakes them all: an answer published while the listener was not
        subscribed is found when they read their record again.
        """
        await pubsub.listen(
            self.redis,
            self.input_channel,
            self._answers.wake,
            on_subscribed=self._answers.wake_all,
            name="input listener",
        )

    async def exists(self, run_id: str) -> bool:
        async with _store_errors():
            return bool(await self.redis.exists(self.run_key(run_id)))

    def _wake(self, run_id: str) -> None:
        if self._wakeups is not None:
            self._wakeups.wake(run_id)
