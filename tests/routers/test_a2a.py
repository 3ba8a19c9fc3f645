"""``/a2a/{team}`` driven by the official ``a2a-sdk`` client: discovery, send, stream, get, cancel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
from a2a.client import A2ACardResolver, A2AClientTimeoutError, ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

from agent_api.offline_llm import OfflineServer
from tests.utils.runs import ended_status
from tests.utils.waiting import abandoned

Serve = Callable[..., AbstractContextManager[httpx.Client]]
SLOW = "[[latency:0:0.2]] [[tokens:40]]"  # about 8 s of tokens: long enough to act on mid-run


def base(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


@asynccontextmanager
async def a2a_client(
    client: httpx.Client, team: str, *, streaming: bool, headers: dict[str, str] | None = None, timeout: float = 30
) -> AsyncIterator[tuple[Client, AgentCard]]:
    async with httpx.AsyncClient(headers=headers or {}, timeout=timeout) as http:
        card = await A2ACardResolver(http, f"{base(client)}/a2a/{team}").get_agent_card()
        agent = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)
        async with agent:
            yield agent, card


def ask(text: str, context_id: str = "", **config: Any) -> SendMessageRequest:
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)], context_id=context_id)
    return SendMessageRequest(message=message, configuration=SendMessageConfiguration(**config))


async def collect(agent: Client, request: SendMessageRequest) -> list[StreamResponse]:
    return [response async for response in agent.send_message(request)]


async def test_cards_describe_the_teams(client: httpx.Client) -> None:
    directory = client.get("/a2a").json()["agents"]
    assert {card["name"] for card in directory} == {"research", "research_team", "research_ac", "research_team_ac"}
    async with a2a_client(client, "research_team", streaming=True) as (_, card):
        assert card.name == "research_team" and "researcher" in card.description
        assert card.capabilities.streaming and not card.capabilities.push_notifications
        assert card.supported_interfaces[0].url == f"{base(client)}/a2a/research_team"
        assert card.security_schemes["apiKey"].api_key_security_scheme.name == "X-API-Key"
        assert [skill.id for skill in card.skills] == ["research_team"]


async def test_send_returns_the_completed_task_and_continues_the_context(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    async with a2a_client(client, "research", streaming=False) as (agent, _):
        responses = await collect(agent, ask("What is a tide?"))
        task = responses[-1].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        answer = task.artifacts[0].parts[0].text
        assert answer == 'Offline answer: you asked "What is a tide?". I can see 0 earlier messages.'
        # the send waited for the run's end notice (runs/ends.py), and took it
        notify = redis_client.hget(f"agent-api:run:{task.id}", "notify")
        assert notify is not None and str(notify).startswith("agent-api:runs:ends:")
        assert redis_client.llen(str(notify)) == 0
        # the task is the run, the context the session
        run = client.get(f"/runs/{task.id}").json()
        assert run["status"] == "succeeded" and run["session_id"] == task.context_id
        again = (await collect(agent, ask("And the moon?", context_id=task.context_id)))[-1].task
        assert again.artifacts[0].parts[0].text.endswith("I can see 2 earlier messages.")
        got = await agent.get_task(GetTaskRequest(id=task.id))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED and got.artifacts[0].parts[0].text == answer


async def test_stream_sends_status_and_answer_chunks(client: httpx.Client) -> None:
    async with a2a_client(client, "research_team", streaming=True) as (agent, _):
        responses = await collect(agent, ask("Explain tides [[tokens:12]] [[latency:0:0.02]]"))
    kinds = [r.WhichOneof("payload") for r in responses]
    assert kinds[0] == "task"
    statuses = [r.status_update for r in responses if r.HasField("status_update")]
    working = [s.status.message.parts[0].text for s in statuses if s.status.state == TaskState.TASK_STATE_WORKING]
    assert working == ["researcher is working", "critic is working", "writer is working"]
    assert statuses[-1].status.state == TaskState.TASK_STATE_COMPLETED
    chunks = [r.artifact_update for r in responses if r.HasField("artifact_update")]
    assert len(chunks) > 3 and chunks[-1].last_chunk
    text = "".join(c.artifact.parts[0].text for c in chunks)
    assert text == statuses[-1].status.message.parts[0].text and text.startswith("Offline answer")


async def test_cancel_stops_the_run(client: httpx.Client, redis_client: redis.Redis) -> None:
    async with a2a_client(client, "research", streaming=False) as (agent, _):
        started = (await collect(agent, ask(f"slow {SLOW}", return_immediately=True)))[-1].task
        assert started.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)
        assert redis_client.hget(f"agent-api:run:{started.id}", "notify") is None  # nobody waits for its end here
        await asyncio.sleep(1)  # the team is at work
        cancelled = await agent.cancel_task(CancelTaskRequest(id=started.id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        run = client.get(f"/runs/{started.id}").json()
        assert run["status"] == "cancelled"
        with pytest.raises(TaskNotCancelableError):  # an ended task cannot be cancelled again
            await agent.cancel_task(CancelTaskRequest(id=started.id))


async def test_a_blocking_send_whose_client_leaves_cancels_its_run(
    client: httpx.Client, offline: OfflineServer
) -> None:
    # The client gives up after a second (its time-out closes the connection); the model would answer in 30.
    async with a2a_client(client, "research", streaming=False, timeout=1) as (agent, _):
        with pytest.raises(A2AClientTimeoutError):
            await collect(agent, ask("walked away [[latency:30:0]]"))
    (run,) = client.get("/runs").json()["runs"]
    assert ended_status(client, run["run_id"]) == "cancelled"
    assert abandoned(offline, "walked away") == [True]  # and the model was left at once


async def test_unknown_and_other_keys_tasks_are_not_found(serve: Serve) -> None:
    with serve(api_keys="alice-key,bob-key") as client:
        assert client.post("/a2a/research", json={}).status_code == 401
        async with a2a_client(client, "research", streaming=False, headers={"X-API-Key": "alice-key"}) as (alice, _):
            task = (await collect(alice, ask("mine")))[-1].task
            with pytest.raises(TaskNotFoundError):
                await alice.get_task(GetTaskRequest(id="run_unknown"))
        headers = {"Authorization": "Bearer bob-key"}
        async with a2a_client(client, "research", streaming=False, headers=headers) as (bob, _):
            with pytest.raises(TaskNotFoundError):
                await bob.get_task(GetTaskRequest(id=task.id))
            with pytest.raises(TaskNotFoundError):
                await bob.cancel_task(CancelTaskRequest(id=task.id))
