"""SessionManager against a real redis-server, and the embedded store on the same code path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from agent_api.config import Settings
from agent_api.errors import SessionNotFound, StoreUnavailable
from agent_api.models.chat import ChatMessage
from agent_api.services.sessions import SessionManager
from agent_api.services.store import create_redis
from tests.utils.redis_server import RedisServer, free_port


def msg(role: str, content: str) -> ChatMessage:
    return ChatMessage(role=role, content=content, timestamp=datetime.now(UTC), name=role)  # type: ignore[arg-type]


@pytest.fixture(params=["redis-server", "embedded"])
async def manager(
    request: pytest.FixtureRequest, redis_server: RedisServer, redis_client: redis.Redis
) -> AsyncIterator[SessionManager]:
    if request.param == "redis-server":
        client = create_redis(Settings(_env_file=None, redis_url=redis_server.url))  # type: ignore[call-arg,arg-type]
    else:
        client = create_redis(Settings(_env_file=None))  # type: ignore[call-arg]
        assert isinstance(client, fakeredis.FakeAsyncRedis)
    yield SessionManager(client, ttl=60, max_history=5)
    await client.aclose()


async def test_append_only_adds_and_trims_oldest(manager: SessionManager) -> None:
    session = await manager.create("research", "k1")
    assert (await manager.load(session.id, "k1")).messages == []
    assert await manager.append_messages(session.id, [msg("user", "1"), msg("assistant", "2")]) == 1
    assert await manager.append_messages(session.id, [msg("user", "3"), msg("assistant", "4")]) == 2
    assert await manager.append_messages(session.id, [msg("user", "5"), msg("assistant", "6")]) == 3
    loaded = await manager.load(session.id, "k1")
    assert [m.content for m in loaded.messages] == ["2", "3", "4", "5", "6"]
    assert loaded.turns == 3 and loaded.agent == "research" and 0 < loaded.expires_in <= 60


async def test_concurrent_appends_lose_nothing(manager: SessionManager) -> None:
    manager.max_history = 1000
    session = await manager.create("research", "k1")
    await asyncio.gather(*(manager.append_messages(session.id, [msg("user", str(i))]) for i in range(50)))
    loaded = await manager.load(session.id, "k1")
    assert sorted(int(m.content) for m in loaded.messages) == list(range(50))
    assert loaded.turns == 50


async def test_unknown_and_deleted_sessions(manager: SessionManager) -> None:
    with pytest.raises(SessionNotFound):
        await manager.load("missing", "k1")
    with pytest.raises(SessionNotFound):
        await manager.append_messages("missing", [msg("user", "x")])
    with pytest.raises(SessionNotFound):
        await manager.team_of("missing", "k1")
    with pytest.raises(SessionNotFound):
        await manager.delete("missing", "k1")
    session = await manager.create("research", "k1")
    await manager.delete(session.id, "k1")
    with pytest.raises(SessionNotFound):
        await manager.load(session.id, "k1")


async def test_append_after_expiry_writes_nothing(manager: SessionManager) -> None:
    session = await manager.create("research", "k1")
    await manager.redis.delete(f"agent-api:session:{session.id}")  # what expiry does
    with pytest.raises(SessionNotFound):
        await manager.append_messages(session.id, [msg("user", "late")])
    assert await manager.redis.exists(f"agent-api:session:{session.id}:messages") == 0


async def test_ttl_expires_sessions(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    manager = SessionManager(client, ttl=1, max_history=10)
    session = await manager.create("research", "k1")
    await manager.append_messages(session.id, [msg("user", "hi")])
    await asyncio.sleep(2.2)
    with pytest.raises(SessionNotFound):
        await manager.load(session.id, "k1")
    assert not redis_client.keys("agent-api:*")
    await client.aclose()


async def test_unreachable_redis_is_store_unavailable() -> None:
    settings = Settings(
        _env_file=None,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # type: ignore[call-arg,arg-type]
        redis_timeout=0.5,
    )
    client = create_redis(settings)
    manager = SessionManager(client, ttl=60, max_history=10)
    with pytest.raises(StoreUnavailable):
        await manager.load("abc", "k1")
    assert await manager.ping() is False
    await client.aclose()


async def test_pool_waits_for_a_connection_instead_of_failing(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    settings = Settings(_env_file=None, redis_url=redis_server.url, redis_max_connections=2)  # type: ignore[call-arg,arg-type]
    client = create_redis(settings)
    manager = SessionManager(client, ttl=60, max_history=10)
    session = await manager.create("research", "k1")
    results = await asyncio.gather(*(manager.load(session.id, "k1") for _ in range(200)), return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results)
    await client.aclose()


async def test_a_session_is_invisible_to_other_owners(manager: SessionManager) -> None:
    session = await manager.create("research", "k1")
    with pytest.raises(SessionNotFound):
        await manager.load(session.id, "k2")
    with pytest.raises(SessionNotFound):
        await manager.delete(session.id, "k2")
    assert (await manager.load(session.id, "k1")).owner == "k1"
