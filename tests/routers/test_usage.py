"""Usage per key and daily token budgets, through real HTTP, a real redis-server and the offline model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api.offline_llm import OfflineServer
from agent_api.services.usage import Budgets, next_reset
from tests.utils.process import serve_process
from tests.utils.redis_server import RedisServer

Serve = Callable[..., AbstractContextManager[httpx.Client]]
ALICE, BOB, ADMIN = {"X-API-Key": "alice-key"}, {"X-API-Key": "bob-key"}, {"X-API-Key": "admin-key"}


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def chat(client: httpx.Client, headers: dict[str, str], **body: Any) -> httpx.Response:
    return client.post("/chat", json={"message": "Count me.", "max_turns": 1, **body}, headers=headers)


def test_usage_is_counted_per_key_and_team_and_each_key_sees_its_own(serve: Serve) -> None:
    with serve(api_keys="alice-key,bob-key", admin_api_keys="admin-key") as client:
        spent = [chat(client, ALICE).json()["usage"] for _ in range(2)]
        spent.append(chat(client, ALICE, agent="research_team", max_turns=3).json()["usage"])
        bob_spent = chat(client, BOB).json()["usage"]

        mine = client.get("/usage", headers=ALICE).json()
        today = datetime.now(UTC).date()
        assert mine["key_id"] == key_id("alice-key") and mine["to"] == today.isoformat()
        assert mine["from"] == (today - timedelta(days=29)).isoformat()
        by_team = {d["team"]: d for d in mine["days"]}
        assert set(by_team) == {"research", "research_team"} and {d["date"] for d in mine["days"]} == {str(today)}
        assert by_team["research"]["runs"] == 2 and by_team["research_team"]["runs"] == 1
        assert by_team["research"]["prompt_tokens"] == sum(u["prompt_tokens"] for u in spent[:2])
        assert mine["totals"]["total_tokens"] == sum(u["total_tokens"] for u in spent) > 0
        assert mine["totals"]["runs"] == 3 and "budget" not in mine

        only = client.get("/usage", params={"team": "research_team"}, headers=ALICE).json()
        assert [d["team"] for d in only["days"]] == ["research_team"] and only["totals"]["runs"] == 1
        theirs = client.get("/usage", headers=BOB).json()
        assert theirs["totals"]["total_tokens"] == bob_spent["total_tokens"] and theirs["totals"]["runs"] == 1

        # another key's usage: 403 for a plain key, readable with an admin key
        refused = client.get("/usage", params={"key_id": key_id("bob-key")}, headers=ALICE)
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        assert client.get("/usage", params={"key_id": key_id("alice-key")}, headers=ALICE).status_code == 200
        seen = client.get("/usage", params={"key_id": key_id("alice-key")}, headers=ADMIN).json()
        assert seen["totals"] == mine["totals"] and seen["key_id"] == key_id("alice-key")
        assert client.get("/usage", headers=ADMIN).json()["totals"]["runs"] == 0  # the admin key's own
        assert chat(client, ADMIN).status_code == 200  # an admin key is an API key too
        assert client.get("/usage").status_code == 401


def test_a_range_without_runs_and_bad_ranges(serve: Serve) -> None:
    with serve() as client:  # open mode: one anonymous caller
        assert chat(client, {}).status_code == 200
        report = client.get("/usage").json()
        assert report["key_id"] == "anonymous" and report["totals"]["runs"] == 1
        old = client.get("/usage", params={"from": "2020-01-01", "to": "2020-01-31"}).json()
        assert old["days"] == [] and old["totals"] == {
            "runs": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
        }
        for params in (
            {"from": "2026-02-02", "to": "2026-02-01"},
            {"from": "2020-01-01", "to": "2026-01-01"},
            {"from": "yesterday"},
            {"to": "0"},
            {"to": "2026-02-30"},
            {"key_id": "not-a-key-id"},
        ):
            response = client.get("/usage", params=params)
            assert response.status_code == 422, (params, response.text)


def test_a_key_over_its_budget_is_refused_before_any_model_call(serve: Serve, offline: OfflineServer) -> None:
    first = None
    with serve(
        api_keys="alice-key,bob-key", daily_token_budget=10**6, key_token_budgets=f"{key_id('alice-key')}=100"
    ) as client:
        first = chat(client, ALICE).json()["usage"]["total_tokens"]
        assert 0 < first < 100
        while (report := client.get("/usage", headers=ALICE).json())["budget"]["remaining_today"] > 0:
            assert chat(client, ALICE).status_code == 200  # a run that crosses the budget finishes its turn
        budget = report["budget"]
        assert budget["daily_tokens"] == 100 and budget["used_today"] >= 100
        assert budget["resets_at"] == next_reset().strftime("%Y-%m-%dT%H:%M:%SZ")
        calls = len(offline.model.requests)
        for path in ("/chat", "/runs", "/chat/stream"):
            refused = client.post(path, json={"message": "more"}, headers=ALICE)
            assert refused.status_code == 429, refused.text
            assert "daily budget of 100 tokens" in refused.json()["detail"]
            assert 0 < int(refused.headers["retry-after"]) <= 86400
        assert len(offline.model.requests) == calls  # refused before the model was asked
        assert client.get("/runs", headers=ALICE).json()["runs"][0]["status"] == "succeeded"  # no run was made
        # bob has the default budget, far away
        assert chat(client, BOB).status_code == 200
        assert client.get("/usage", headers=BOB).json()["budget"]["daily_tokens"] == 10**6


@pytest.mark.slow(seconds=15)
def test_a_budget_holds_across_api_processes(
    tmp_path: Path, offline: OfflineServer, redis_server: RedisServer, redis_client: Any
) -> None:
    env = {
        "OPENAI_BASE_URL": offline.base_url,
        "OPENAI_API_KEY": "test-key",
        "REDIS_URL": redis_server.url,
        "API_KEYS": "alice-key",
        "DAILY_TOKEN_BUDGET": "60",
        "LOG_FORMAT": "text",
    }
    with ExitStack() as stack:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        a = stack.enter_context(httpx.Client(base_url=stack.enter_context(serve_process(a_dir, env)).url, timeout=30))
        b = stack.enter_context(httpx.Client(base_url=stack.enter_context(serve_process(b_dir, env)).url, timeout=30))
        while a.get("/usage", headers=ALICE).json()["budget"]["remaining_today"] > 0:
            assert chat(a, ALICE).status_code == 200
        refused = chat(b, ALICE)  # B never served alice: it reads the same counters
        assert refused.status_code == 429 and "daily budget of 60 tokens" in refused.json()["detail"]
        assert b.get("/usage", headers=ALICE).json()["totals"] == a.get("/usage", headers=ALICE).json()["totals"]


def test_budget_settings_are_parsed() -> None:
    budgets = Budgets.parse(500, " abc=10, def=0 ,")
    assert budgets.limit_for("abc") == 10 and budgets.limit_for("def") == 0 and budgets.limit_for("x") == 500
    for bad in ("abc", "abc=ten", "=5"):
        with pytest.raises(ValueError, match="key_id=tokens"):
            Budgets.parse(0, bad)
    assert next_reset(datetime(2026, 12, 2, 23, 59, tzinfo=UTC)) == datetime(2026, 12, 3, tzinfo=UTC)
