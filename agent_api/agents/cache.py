"""The opt-in response cache (``LLM_CACHE=redis``): identical model requests answered from Redis.

It plugs into AutoGen's own cache hook (``initiate_chat(cache=...)``), whose key is a hash of
the whole model request (model, messages and all). The service passes it only to the first turn
of a session: later turns carry their history and are the conversation's own.

Values are the OpenAI client's ``ChatCompletion`` as JSON (with the ``cost`` AutoGen adds), read
back through the model's validation: nothing in Redis is ever executed (no pickle), and a value
that does not validate is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
from types import TracebackType
from typing import Any

import pydantic
import redis
from openai.types.chat import ChatCompletion
from redis.exceptions import RedisError

from agent_api.metrics import CACHE

log = logging.getLogger(__name__)


class ResponseCache:
    """Model responses in Redis with a TTL; a broken Redis only means a miss."""

    def __init__(self, client: redis.Redis, *, ttl: int, prefix: str = "agent-api:llm-cache:") -> None:
        self.client = client
        self.ttl = ttl
        self.prefix = prefix

    def key(self, request: Any) -> str:
        """The Redis key of a model request. Streamed or not, the answer is the same."""
        if isinstance(request, dict):
            request = {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
        return self.prefix + digest

    def get(self, key: str, default: Any = None) -> Any:
        try:
            raw = self.client.get(key)
        except RedisError:
            log.warning("response cache unavailable; asking the model")
            raw = None
        if raw is None:
            return default
        try:
            return ChatCompletion.model_validate_json(raw)  # type: ignore[arg-type]
        except (pydantic.ValidationError, UnicodeDecodeError):
            log.warning("response cache: a value that is not a chat completion; asking the model")
            return default

    def set(self, key: str, value: Any) -> None:
        if not isinstance(value, ChatCompletion):
            log.debug("response cache: not caching a %s", type(value).__name__)
            return
        try:
            self.client.set(key, value.model_dump_json(), ex=self.ttl)
        except RedisError:
            log.warning("response cache unavailable; response not cached")

    def close(self) -> None:
        self.client.close()


class RunCache:
    """One run's view of the cache: counts its hits and misses (AutoGen's cache protocol)."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self.hits = 0
        self.misses = 0
        self._last: tuple[Any, str] | None = None

    def _key(self, request: Any) -> str:
        # AutoGen looks a request up, then stores the answer under the same request object:
        # hash it once.
        if self._last is None or self._last[0] is not request:
            self._last = (request, self.cache.key(request))
        return self._last[1]

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.cache.get(self._key(key), None)
        if value is None:
            self.misses += 1
            CACHE.labels("miss").inc()
            return default
        self.hits += 1
        CACHE.labels("hit").inc()
        return value

    def set(self, key: Any, value: Any) -> None:
        self.cache.set(self._key(key), value)

    def close(self) -> None:
        """The shared cache outlives the run."""

    def __enter__(self) -> RunCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
