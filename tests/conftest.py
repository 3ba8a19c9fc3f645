"""Fixtures: the offline model and a real redis-server on loopback ports, and the app on real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
import redis

from agent_api.config import Settings
from agent_api.main import create_app
from agent_api.offline_llm import OfflineModelConfig, OfflineServer, ThreadedServer
from tests.utils.redis_server import RedisServer


@pytest.fixture(scope="session")
def offline_server() -> Iterator[OfflineServer]:
    with OfflineServer() as server:
        yield server


@pytest.fixture
def offline(offline_server: OfflineServer) -> Iterator[OfflineServer]:
    """The offline model, with a clean request log and default behaviour for each test."""
    offline_server.model.reset()
    offline_server.model.config = OfflineModelConfig()
    yield offline_server
    offline_server.model.config = OfflineModelConfig()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings_factory(
    offline: OfflineServer, redis_server: RedisServer, redis_client: redis.Redis
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "openai_base_url": offline.base_url,
            "openai_api_key": "test-key",
            "openai_model": "offline-model",
            "redis_url": redis_server.url,
            "llm_max_retries": 0,
            "llm_timeout": 10,
            "thread_pool_size": 32,
            "redis_max_connections": 20,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def serve(settings_factory: Callable[..., Settings]) -> Iterator[Callable[..., AbstractContextManager[httpx.Client]]]:
    """Start an app on a loopback port (real uvicorn, real lifespan) and give an HTTP client to it."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[httpx.Client]:
        app = create_app(settings_factory(**overrides))
        with ThreadedServer(app, lifespan="on") as server, httpx.Client(base_url=server.url, timeout=30) as client:
            yield client

    yield start


@pytest.fixture
def client(serve: Callable[..., AbstractContextManager[httpx.Client]]) -> Iterator[httpx.Client]:
    with serve() as c:
        yield c


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: spread over parallel workers (pytest-xdist), they start at once instead
    of ending the run one after another."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
