"""Usage per API key: runs and tokens by key, team and UTC day, and the daily token budgets.

    {prefix}usage:{key_id}:{YYYY-MM-DD}   hash: runs|<team>, prompt|<team>, completion|<team>, and
                                          tokens (all teams: what a budget is checked against)

Every run is counted once, where it ends (its worker, or the API process that cancelled it
before it started); its tokens are those the model reported for a run that finished its turn.
The counters are Redis's (in memory when embedded), so every API process sees the same totals
and a budget holds across them. A budget is checked before a run is created: a run that crosses
it mid-way finishes its turn, and the next one is refused until the day ends (UTC).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import redis.asyncio as redis
from redis.exceptions import RedisError

from agent_api.errors import BudgetExceeded, StoreUnavailable
from agent_api.models.chat import Usage

log = logging.getLogger(__name__)

_FIELDS = ("runs", "prompt", "completion")


def today() -> date:
    return datetime.now(UTC).date()


def next_reset(now: datetime | None = None) -> datetime:
    """When today's budget resets: the next UTC midnight."""
    now = now or datetime.now(UTC)
    return datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)


@dataclass
class TeamDay:
    """One team's usage by one key on one day."""

    day: date
    team: str
    runs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Budgets:
    """Daily token budgets: ``default`` for every key (0: none), ``per_key`` overrides by key id."""

    default: int = 0
    per_key: dict[str, int] = field(default_factory=dict)

    def limit_for(self, key_id: str) -> int:
        return self.per_key.get(key_id, self.default)

    @classmethod
    def parse(cls, default: int, overrides: str) -> Budgets:
        """``overrides`` as ``key_id=tokens,key_id=tokens`` (0: no budget for that key)."""
        per_key: dict[str, int] = {}
        for item in overrides.split(","):
            if not item.strip():
                continue
            key_id, sep, value = item.partition("=")
            if not sep or not key_id.strip() or not value.strip().isdigit():
                raise ValueError(f"expected key_id=tokens, got {item.strip()!r}")
            per_key[key_id.strip()] = int(value)
        return cls(default, per_key)


@dataclass(frozen=True)
class Counters:
    """Increments of the fields of one Redis hash, which then expires after ``ttl`` seconds."""

    key: str
    ttl: int
    increments: list[tuple[str, int]]


class UsageStore:
    """The usage counters in Redis, and the budget check against them."""

    def __init__(
        self, client: redis.Redis, budgets: Budgets, *, retention_days: int, prefix: str = "agent-api:"
    ) -> None:
        self.redis = client
        self.budgets = budgets
        self.retention = int(timedelta(days=retention_days).total_seconds())
        self.prefix = prefix

    def _key(self, key_id: str, day: date) -> str:
        return f"{self.prefix}usage:{key_id}:{day.isoformat()}"

    def counters(self, key_id: str, team: str, usage: Usage | None) -> Counters:
        """What counting one ended run of ``team`` by ``key_id`` today adds, with its tokens if it
        has any: written by the run's end in the same step (``RunStore.finish``)."""
        increments = [(f"runs|{team}", 1)]
        if usage is not None and usage.total_tokens:
            increments += [
                (f"prompt|{team}", usage.prompt_tokens),
                (f"completion|{team}", usage.completion_tokens),
                ("tokens", usage.prompt_tokens + usage.completion_tokens),
            ]
        return Counters(self._key(key_id, today()), self.retention, increments)

    async def used_today(self, key_id: str) -> int:
        try:
            raw = await self.redis.hget(self._key(key_id, today()), "tokens")  # type: ignore[misc]
        except RedisError as exc:
            raise StoreUnavailable() from exc
        return int(raw or 0)

    async def check_budget(self, key_id: str) -> None:
        """Raise :class:`BudgetExceeded` when ``key_id`` has used its daily tokens."""
        limit = self.budgets.limit_for(key_id)
        if limit <= 0:
            return
        used = await self.used_today(key_id)
        if used >= limit:
            raise BudgetExceeded(limit, used, next_reset())

    async def report(self, key_id: str, start: date, end: date, team: str | None = None) -> list[TeamDay]:
        """``key_id``'s usage from ``start`` to ``end`` (inclusive), per day and team, oldest first."""
        days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(self._key(key_id, day))
                raws = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable() from exc
        out: list[TeamDay] = []
        for day, raw in zip(days, raws, strict=True):
            by_team: dict[str, TeamDay] = {}
            for name, value in raw.items():
                kind, sep, team_name = str(name).partition("|")
                if not sep or kind not in _FIELDS or (team is not None and team_name != team):
                    continue
                entry = by_team.setdefault(team_name, TeamDay(day, team_name))
                if kind == "runs":
                    entry.runs = int(value)
                elif kind == "prompt":
                    entry.prompt_tokens = int(value)
                else:
                    entry.completion_tokens = int(value)
            out.extend(by_team[name] for name in sorted(by_team))
        return out
