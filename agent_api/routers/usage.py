"""``GET /usage``: a key's runs and tokens per day and team, and its budget."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from agent_api.errors import Forbidden, InvalidField
from agent_api.models.usage import BudgetStatus, TeamDayUsage, UsageCounts, UsageReport
from agent_api.routers.deps import AUTH_RESPONSES, PrincipalDep, StateDep
from agent_api.services.usage import next_reset, today

router = APIRouter(tags=["usage"], responses=AUTH_RESPONSES)

MAX_DAYS = 366
DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidField(["query", name], f"{value!r} is not a date (YYYY-MM-DD).") from None


KEY_ID_PATTERN = r"^[0-9a-f]{32}$|^anonymous$"


@router.get(
    "/usage",
    response_model=UsageReport,
    response_model_exclude_none=True,
    responses={
        403: {"description": "key_id names another key, and the calling key is not an admin key."},
        422: {"description": "Bad dates (from after to, a range over 366 days) or key_id."},
    },
)
async def get_usage(
    state: StateDep,
    principal: PrincipalDep,
    from_: Annotated[
        str | None, Query(alias="from", pattern=DATE, description="First UTC day, YYYY-MM-DD (default: to - 29 days).")
    ] = None,
    to: Annotated[str | None, Query(pattern=DATE, description="Last UTC day, inclusive (default: today).")] = None,
    team: Annotated[str | None, Query(max_length=64, description="Only this team.")] = None,
    key_id: Annotated[
        str | None, Query(pattern=KEY_ID_PATTERN, description="Another key's id (admin keys only).")
    ] = None,
) -> UsageReport:
    """The calling key's runs and tokens per UTC day and team (an admin key: any key's, with `key_id`)."""
    if key_id is not None and key_id != principal.key_id and not principal.admin:
        raise Forbidden("Only an admin key (ADMIN_API_KEYS) may read another key's usage.")
    who = key_id or principal.key_id
    end = _day(to, "to") if to is not None else today()
    start = _day(from_, "from") if from_ is not None else end - timedelta(days=29)
    if start > end:
        raise InvalidField(["query", "from"], "from is after to.")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidField(["query", "from"], f"At most {MAX_DAYS} days at a time.")
    days = await state.usage.report(who, start, end, team)
    rows = [
        TeamDayUsage(
            date=d.day,
            team=d.team,
            runs=d.runs,
            prompt_tokens=d.prompt_tokens,
            completion_tokens=d.completion_tokens,
            total_tokens=d.total_tokens,
        )
        for d in days
    ]
    totals = UsageCounts(
        runs=sum(r.runs for r in rows),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        total_tokens=sum(r.total_tokens for r in rows),
    )
    budget = None
    limit = state.usage.budgets.limit_for(who)
    if limit > 0:
        used = await state.usage.used_today(who)
        budget = BudgetStatus(
            daily_tokens=limit, used_today=used, remaining_today=max(0, limit - used), resets_at=next_reset()
        )
    return UsageReport.model_validate(
        {"from": start, "to": end, "key_id": who, "team": team, "days": rows, "totals": totals, "budget": budget}
    )
