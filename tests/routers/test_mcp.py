"""``/mcp`` driven by the official ``mcp`` SDK's client over streamable HTTP: list, call, continue, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from agent_api.offline_llm import OfflineServer
from tests.utils.runs import ended_status

Serve = Callable[..., AbstractContextManager[httpx.Client]]
SLOW = "[[latency:0:0.2]] [[tokens:40]]"  # about 8 s of tokens: long enough to act on mid-run


@asynccontextmanager
async def mcp_session(client: httpx.Client, headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    url = str(client.base_url).rstrip("/") + "/mcp"
    async with (
        httpx2.AsyncClient(headers=headers or {}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        yield session


async def test_teams_are_tools(client: httpx.Client) -> None:
    async with mcp_session(client) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == {"ask_research", "ask_research_team", "ask_research_ac", "ask_research_team_ac"}
    schema = tools["ask_research_team"].input_schema
    assert schema["required"] == ["message"] and set(schema["properties"]) == {"message", "session_id"}
    output = tools["ask_research"].output_schema
    assert output is not None and set(output["properties"]) >= {"answer", "session_id", "run_id"}
    assert "researcher" in (tools["ask_research_team"].description or "")


async def test_call_reports_progress_and_continues_a_session(client: httpx.Client) -> None:
    reports: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, message))

    async with mcp_session(client) as session:
        first = await session.call_tool(
            "ask_research_team", {"message": "Why is the sea salty?"}, progress_callback=on_progress
        )
        assert not first.is_error, first.content
        answer = first.structured_content
        assert answer is not None and answer["answer"].startswith('Offline answer: you asked "Why is the sea salty?')
        assert answer["finished"] is True
        # progress came while the team worked: every agent, in order
        notes = [m for _, m in reports]
        assert [v for v, _ in reports] == sorted(v for v, _ in reports)
        assert [n for n in notes if n and n.endswith("finished a message")] == [
            "researcher finished a message",
            "critic finished a message",
            "writer finished a message",
        ]
        again = await session.call_tool("ask_research", {"message": "And then?", "session_id": answer["session_id"]})
    # a session stays with its team: the error says so, without internals
    assert again.is_error and "belongs to team 'research_team'" in again.content[0].text  # type: ignore[union-attr]
    run = client.get(f"/runs/{answer['run_id']}").json()
    assert run["status"] == "succeeded" and run["session_id"] == answer["session_id"]

    async with mcp_session(client) as session:
        second = await session.call_tool(
            "ask_research_team", {"message": "And the Dead Sea?", "session_id": answer["session_id"]}
        )
    assert second.structured_content is not None
    assert second.structured_content["answer"].endswith("I can see 4 earlier messages.")


async def test_cancelling_the_call_cancels_the_run(client: httpx.Client, offline: OfflineServer) -> None:
    async with mcp_session(client) as session:
        started = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            started.set()

        async def call() -> None:
            await session.call_tool("ask_research", {"message": f"slow {SLOW}"}, progress_callback=on_progress)

        with anyio.move_on_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await started.wait()  # the team is at work
                group.cancel_scope.cancel()  # the client gives up on the call: MCP's cancellation
        runs = client.get("/runs").json()["runs"]
        run_id = runs[0]["run_id"]
        assert await asyncio.to_thread(ended_status, client, run_id) == "cancelled"
        # the session is still usable
        after = await session.call_tool("ask_research", {"message": "still there?"})
        assert not after.is_error


async def test_bad_arguments_and_failures_are_tool_errors(client: httpx.Client) -> None:
    async with mcp_session(client) as session:
        empty = await session.call_tool("ask_research", {"message": ""})
        failed = await session.call_tool("ask_research", {"message": "break [[fail:500]]"})
        unknown = await session.call_tool("ask_research", {"message": "hi", "session_id": "no-such-session"})
    assert empty.is_error
    assert failed.is_error and "upstream_error" in failed.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in failed.content[0].text  # type: ignore[union-attr]
    assert unknown.is_error and "not found" in unknown.content[0].text.lower()  # type: ignore[union-attr]


def test_keys_and_limits(serve: Serve) -> None:
    with serve(api_keys="alice-key,bob-key", rate_limit="100/minute") as client:
        # no key, a wrong key: refused before MCP
        assert client.post("/mcp", json={}).status_code == 401
        bad = client.post("/mcp", json={}, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and "www-authenticate" in bad.headers

        async def scenario() -> tuple[Any, int]:
            async with mcp_session(client, {"Authorization": "Bearer alice-key"}) as session:
                mine = await session.call_tool("ask_research", {"message": "mine"})
            assert mine.structured_content is not None
            sid = mine.structured_content["session_id"]
            async with mcp_session(client, {"X-API-Key": "bob-key"}) as session:
                theirs = await session.call_tool("ask_research", {"message": "yours?", "session_id": sid})
            return theirs, client.get(
                f"/runs/{mine.structured_content['run_id']}", headers={"X-API-Key": "bob-key"}
            ).status_code

        theirs, status = asyncio.run(scenario())
        assert theirs.is_error and status == 404  # another key's session and run do not exist for bob

    with serve(api_keys="k", rate_limit="2/minute") as client:
        headers = {"Authorization": "Bearer k"}
        codes = [client.post("/mcp", json={}, headers=headers).status_code for _ in range(3)]
        assert codes[-1] == 429
