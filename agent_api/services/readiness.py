"""Readiness: can this process serve turns now? Redis answers, and the model server is reachable."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from agent_api.config import Settings
from agent_api.tls import client_tls_context

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"


def model_base_url(settings: Settings) -> str | None:
    """Where the model server is; None for the built-in offline model (always there)."""
    if settings.uses_offline_model:
        return None
    if settings.openai_base_url:
        return str(settings.openai_base_url)
    for entry in settings.load_config_list():
        return str(entry.get("base_url") or OPENAI_URL)
    return OPENAI_URL


class ModelProbe:
    """Whether the model server answers HTTP at all (any status: a 401 is an answer), checked at
    most every ``ttl`` seconds: readiness checks come often, and the probe must not load the server."""

    def __init__(self, base_url: str | None, *, timeout: float = 2.0, ttl: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout
        self.ttl = ttl
        self._client: httpx.AsyncClient | None = None
        self._checked = -float("inf")
        self._problem: str | None = None
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        """None when the model server is reachable, else why not."""
        if self.base_url is None:
            return None
        async with self._lock:
            if time.monotonic() - self._checked >= self.ttl:
                self._problem = await self._probe()
                self._checked = time.monotonic()
            return self._problem

    async def _probe(self) -> str | None:
        assert self.base_url is not None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, verify=client_tls_context())
        try:
            await self._client.get(f"{self.base_url}/models")
        except httpx.HTTPError as exc:
            log.warning("model server %s unreachable: %s", self.base_url, type(exc).__name__)
            return f"the model server is unreachable ({type(exc).__name__})"
        return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
