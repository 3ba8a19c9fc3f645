"""Fixtures: the offline model and a real redis-server on loopback ports, and the app on real HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
import redis

from agent_api.config import Settings
from agent_api.offline_llm import OfflineModelConfig, OfflineServer, ThreadedServer
from agent_api.tls import client_tls_context
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

    # Imported here: the controlling process of a parallel run loads this file but runs no test.
    from agent_api.main import create_app

    @contextmanager
    def start(**overrides: Any) -> Iterator[httpx.Client]:
        app = create_app(settings_factory(**overrides))
        with (
            ThreadedServer(app, lifespan="on") as server,
            httpx.Client(base_url=server.url, timeout=30, verify=client_tls_context()) as client,
        ):
            yield client

    yield start


@pytest.fixture
def client(serve: Callable[..., AbstractContextManager[httpx.Client]]) -> Iterator[httpx.Client]:
    with serve() as c:
        yield c


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The order for a parallel run: each test process's share starts with its slow tests."""
    items[:] = parallel_order(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def slow_seconds(item: pytest.Item) -> float:
    """How long a test marked slow takes alone (``@pytest.mark.slow(seconds=N)``, 10 by default); 0 if not slow."""
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 10))


def parallel_order(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` reordered for ``workers`` test processes taking work as pytest-xdist's
    ``--dist worksteal`` hands it out: contiguous blocks of equal size, then idle processes steal
    the tail of the busiest one's block.

    The slow tests are spread over the blocks, longest first, each to the block with the least
    slow time so far, and head their block: they all start at once and overlap, instead of one
    process running them one after another while the others run out of work. The other tests keep
    their order (tests of one module share their process's fixtures) and fill the blocks.
    """
    slow = sorted((item for item in items if slow_seconds(item)), key=slow_seconds, reverse=True)
    fast = [item for item in items if not slow_seconds(item)]
    workers = max(1, min(workers, len(items)))
    sizes = [0] * workers
    left = len(items)
    for block in range(workers):  # as worksteal cuts its first distribution
        sizes[block] = left // (workers - block)
        left -= sizes[block]
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in slow:
        block = min((b for b in range(workers) if len(heads[b]) < sizes[b]), key=lambda b: loads[b])
        heads[block].append(item)
        loads[block] += slow_seconds(item)
    ordered: list[pytest.Item] = []
    rest = iter(fast)
    for block in range(workers):
        ordered += heads[block]
        ordered += [next(rest) for _ in range(sizes[block] - len(heads[block]))]
    return ordered
