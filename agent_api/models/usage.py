"""Body of ``GET /usage``."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class UsageCounts(BaseModel):
    runs: int = Field(description="Runs that ended (any status).")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TeamDayUsage(UsageCounts):
    """One team's usage on one UTC day."""

    date: date
    team: str


class BudgetStatus(BaseModel):
    """The key's daily token budget today."""

    daily_tokens: int = Field(description="Tokens the key may use per UTC day.")
    used_today: int
    remaining_today: int
    resets_at: datetime = Field(description="The next UTC midnight.")


class UsageReport(BaseModel):
    """A key's usage per day and team, oldest first, with totals over the range."""

    key_id: str = Field(description="The key's non-secret id (as in the logs).")
    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    team: str | None = None
    days: list[TeamDayUsage]
    totals: UsageCounts
    budget: BudgetStatus | None = Field(default=None, description="Absent when the key has no budget.")
