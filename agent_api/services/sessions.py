"""SessionManager: each conversation's history in Redis, with a TTL.

A session is two keys that expire together:

    {prefix}session:{id}           hash: agent, owner, created_at, updated_at, turns
    {prefix}session:{id}:messages  list: one JSON ChatMessage per entry, oldest first

A turn appends only its new messages (RPUSH), trims the list to ``max_history`` (oldest
dropped) and refreshes both TTLs, atomically in one Lua script that refuses to write into a
session that expired meanwhile. Nothing else rewrites the history.

A session belongs to the API key that created it (``owner``, a digest of the key): for any other
key it does not exist, on every operation.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as redis
from redis.exceptions import RedisError

from agent_api.errors import SessionNotFound, StoreUnavailable
from agent_api.models.chat import ChatMessage

log = logging.getLogger(__name__)

# Appending a turn, as a Lua function of the session's keys and of the ARGV range holding the
# messages: the session's own script below, and the step that ends a run (RunStore.finish), which
# saves the run's turn in the same step, use it. -1 when the session has expired (nothing written).
APPEND_TURN_LUA = """
local function append_turn(meta, messages, max, ttl, now, first, last)
  if redis.call('EXISTS', meta) == 0 then return -1 end
  for i = first, last do redis.call('RPUSH', messages, ARGV[i]) end
  redis.call('LTRIM', messages, -max, -1)
  redis.call('HSET', meta, 'updated_at', now)
  local turns = redis.call('HINCRBY', meta, 'turns', 1)
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', messages, ttl)
  return turns
end
"""

# Loading the session of a run that starts, its TTL refreshed: its record, its messages and its
# TTL, as a Lua function of the session's keys, used by the step that starts a run (RunStore.start).
LOAD_FOR_RUN_LUA = """
local function load_session(meta, messages, ttl)
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', messages, ttl)
  return {redis.call('HGETALL', meta), redis.call('LRANGE', messages, 0, -1), redis.call('TTL', meta)}
end
"""

_APPEND = APPEND_TURN_LUA + (
    "return append_turn(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], 4, #ARGV)"
)

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'agent', ARGV[1], 'owner', ARGV[2], 'created_at', ARGV[3], 'updated_at', ARGV[3],
             'turns', 0)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return redis.call('HMGET', KEYS[1], 'owner', 'agent')
"""

_DELETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
"""


@dataclass(frozen=True)
class Session:
    """A session as loaded: its metadata and its history, oldest message first."""

    id: str
    agent: str
    owner: str
    created_at: datetime
    updated_at: datetime
    turns: int
    expires_in: int
    messages: list[ChatMessage]


@dataclass(frozen=True)
class Turn:
    """One turn's messages to append to a session (see ``APPEND_TURN_LUA``), as stored."""

    meta_key: str
    messages_key: str
    max_history: int
    ttl: int
    updated_at: str
    messages: list[str]


@dataclass(frozen=True)
class SessionKeys:
    """Where a session is, for a step that finds the session id itself (``LOAD_FOR_RUN_LUA``):
    its record at ``head + id``, its messages at ``head + id + messages_suffix``."""

    head: str
    messages_suffix: str
    ttl: int


@dataclass(frozen=True)
class StoredSession:
    """A session as ``LOAD_FOR_RUN_LUA`` read it: its record's fields, its messages and its TTL."""

    fields: dict[str, str]
    messages: list[str]
    ttl: int


@dataclass(frozen=True)
class NewSession:
    """The record of a new, empty session: its key, its fields and its TTL."""

    key: str
    fields: dict[str, str]
    ttl: int


def new_session_id() -> str:
    """128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


@asynccontextmanager
async def _store_errors() -> AsyncIterator[None]:
    try:
        yield
    except RedisError as exc:
        log.warning("session store unavailable: %s", type(exc).__name__)
        raise StoreUnavailable() from exc


class SessionManager:
    """Creates, loads, extends and deletes sessions in Redis."""

    def __init__(self, client: redis.Redis, *, ttl: int, max_history: int, prefix: str = "agent-api:") -> None:
        self.redis = client
        self.ttl = ttl
        self.max_history = max_history
        self.prefix = prefix
        self._append = client.register_script(_APPEND)
        self._delete = client.register_script(_DELETE)
        self._claim = client.register_script(_CLAIM)

    def _keys(self, session_id: str) -> tuple[str, str]:
        keys = self.keys()
        return keys.head + session_id, keys.head + session_id + keys.messages_suffix

    def keys(self) -> SessionKeys:
        return SessionKeys(f"{self.prefix}session:", ":messages", self.ttl)

    def new_record(self, agent: str, owner: str, session_id: str, now: datetime | None = None) -> NewSession:
        """The record of an empty session of ``owner`` with ``agent``, to write (see :meth:`create`)."""
        created = (now or datetime.now(UTC)).isoformat()
        fields = {"agent": agent, "owner": owner, "created_at": created, "updated_at": created, "turns": "0"}
        return NewSession(self._keys(session_id)[0], fields, self.ttl)

    async def create(self, agent: str, owner: str, *, session_id: str | None = None) -> Session:
        """Start an empty session of ``owner`` with ``agent``; it expires after the TTL unless a turn extends it.

        (A run that starts a new session writes the record in the step that creates the run.)
        """
        session_id = session_id or new_session_id()
        now = datetime.now(UTC)
        record = self.new_record(agent, owner, session_id, now)
        async with _store_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(record.key, mapping=record.fields)
                pipe.expire(record.key, record.ttl)
                await pipe.execute()
        return Session(session_id, agent, owner, now, now, 0, self.ttl, [])

    async def claim(self, session_id: str, agent: str, owner: str) -> str:
        """The team of ``owner``'s session ``session_id``, creating it empty for ``agent`` if there is
        none (for protocols whose clients name their threads). Atomic: of two callers claiming a new
        id at once, one creates it; another key's session is :class:`SessionNotFound`."""
        meta, _ = self._keys(session_id)
        async with _store_errors():
            found_owner, found_agent = await self._claim(
                keys=[meta], args=[agent, owner, datetime.now(UTC).isoformat(), self.ttl]
            )
        if found_owner != owner or found_agent is None:
            raise SessionNotFound()
        return str(found_agent)

    async def team_of(self, session_id: str, owner: str) -> str:
        """The session's team, checking that it exists and is ``owner``'s (one cheap round trip)."""
        async with _store_errors():
            found_owner, agent = await self.redis.hmget(self._keys(session_id)[0], ["owner", "agent"])  # type: ignore[misc]
        if found_owner is None or found_owner != owner or agent is None:
            raise SessionNotFound()
        return str(agent)

    async def load(self, session_id: str, owner: str) -> Session:
        """The session with its history; :class:`SessionNotFound` if unknown, expired or not ``owner``'s.

        (A run that starts reads its session in the step that starts it: ``LOAD_FOR_RUN_LUA``.)
        """
        meta_key, messages_key = self._keys(session_id)
        async with _store_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(meta_key)
                pipe.lrange(messages_key, 0, -1)
                pipe.ttl(meta_key)
                meta, raw_messages, ttl = await pipe.execute()
        return self.loaded(session_id, owner, StoredSession(meta, raw_messages, int(ttl)))

    def loaded(self, session_id: str, owner: str, stored: StoredSession) -> Session:
        """The session read as ``stored``; :class:`SessionNotFound` if it is none, or not ``owner``'s."""
        meta, raw_messages, ttl = stored.fields, stored.messages, stored.ttl
        if not meta or meta.get("owner") != owner:
            raise SessionNotFound()
        return Session(
            id=session_id,
            agent=meta["agent"],
            owner=owner,
            created_at=datetime.fromisoformat(meta["created_at"]),
            updated_at=datetime.fromisoformat(meta["updated_at"]),
            turns=int(meta.get("turns", 0)),
            expires_in=max(int(ttl), 0),
            messages=[ChatMessage.model_validate_json(m) for m in raw_messages],
        )

    def turn(self, session_id: str, messages: Sequence[ChatMessage]) -> Turn:
        """One turn's new messages for the session, to append with ``APPEND_TURN_LUA``: trimmed to
        ``max_history``, the TTL refreshed."""
        meta, messages_key = self._keys(session_id)
        return Turn(
            meta,
            messages_key,
            self.max_history,
            self.ttl,
            datetime.now(UTC).isoformat(),
            [m.model_dump_json(exclude_none=True) for m in messages],
        )

    async def append_messages(self, session_id: str, messages: Sequence[ChatMessage]) -> int:
        """Append one turn's new messages (see :meth:`turn`).

        Returns the session's turn count; :class:`SessionNotFound` if it expired meanwhile.
        """
        turn = self.turn(session_id, messages)
        args: list[str | int] = [turn.max_history, turn.ttl, turn.updated_at, *turn.messages]
        async with _store_errors():
            turns = int(await self._append(keys=[turn.meta_key, turn.messages_key], args=args))
        if turns < 0:
            raise SessionNotFound()
        return turns

    async def delete(self, session_id: str, owner: str) -> None:
        """Delete ``owner``'s session; :class:`SessionNotFound` if there was none."""
        async with _store_errors():
            # the session's list of runs goes with it (the runs themselves expire with RUN_TTL)
            runs_index = f"{self.prefix}session:{session_id}:runs"
            removed = await self._delete(keys=[*self._keys(session_id), runs_index], args=[owner])
        if not removed:
            raise SessionNotFound()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())  # type: ignore[misc]
        except RedisError:
            return False
