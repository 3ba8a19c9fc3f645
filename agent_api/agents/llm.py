"""The one LLM configuration shared by every agent, and the one HTTP pool under it."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent_api.agents.autogen_compat import SharedAcrossAgents

# Re-exported: the engine's startup (engine.open_engine) calls them from here.
from agent_api.agents.autogen_compat import cache_import_checks as cache_import_checks
from agent_api.agents.autogen_compat import cache_openai_kwargs as cache_openai_kwargs
from agent_api.agents.autogen_compat import fast_protocol_checks as fast_protocol_checks
from agent_api.agents.autogen_compat import fast_trigger_matching as fast_trigger_matching
from agent_api.agents.autogen_compat import light_stream_events as light_stream_events
from agent_api.agents.autogen_compat import quiet_autogen_logging as quiet_autogen_logging
from agent_api.agents.autogen_compat import share_openai_clients as share_openai_clients
from agent_api.agents.model_http import ModelTransport, proxies_from_environment
from agent_api.agents.model_streams import ModelAsyncClient, reusable
from agent_api.agents.openai_compat import chunks_from_json as chunks_from_json
from agent_api.agents.openai_compat import fast_stream_event_json as fast_stream_event_json
from agent_api.agents.openai_compat import skip_chat_request_transforms as skip_chat_request_transforms
from agent_api.agents.openai_compat import validate_chat_responses as validate_chat_responses
from agent_api.config import Settings
from agent_api.tls import client_tls_context

log = logging.getLogger(__name__)


class _ResponseCookies(httpx.Cookies):
    """httpx's cookie jar, which passes over a response that sets no cookie.

    httpx hands every response to the standard library's cookie jar, through two adapter objects
    and a ``urllib.request.Request`` built for it: about 3% of a worker process's Python time
    with one model call per conversation. A response with ``Set-Cookie`` (or ``Set-Cookie2``)
    is read as before.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class _ThreadClient(httpx.Client):
    """A run thread's httpx client: its cookie jar is a :class:`_ResponseCookies`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._response_cookies = _ResponseCookies(super().cookies)  # with any cookies given

    @property
    def cookies(self) -> httpx.Cookies:
        return self._response_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # what httpx.Cookies takes
        self._response_cookies = _ResponseCookies(cookies)


class SharedHTTPClient(SharedAcrossAgents, httpx.Client):
    """The HTTP client of every agent: built once, with a small connection pool per run thread.

    AutoGen deep-copies the configuration of every agent it builds; as a
    :class:`~agent_api.agents.autogen_compat.SharedAcrossAgents` the client is not copied with
    it (a copy would mean a new connection pool and SSL context, most of the cost of building
    an agent).

    Requests go out through a pool owned by the calling thread: httpx's pool is guarded by one
    lock and scans all its connections on every request, so a single pool shared by a few
    hundred run threads spends more CPU on that than on the request itself. A run thread is
    reused for many runs, so its connections stay warm. Each pool sends through
    :class:`~agent_api.agents.model_http.ModelTransport` (HTTP/1.1 parsed by httptools: the OpenAI
    client spends about 40% less CPU per streamed call than over httpx's own transport),
    unless a proxy is set in the environment: httpx ignores HTTPS_PROXY and NO_PROXY for a client
    given a transport, so then the pools are httpx's own, which honour them.
    """

    def __init__(self, *, timeout: float, connections_per_thread: int = 2, direct: bool | None = None) -> None:
        """``direct``: whether the pools send through :class:`ModelTransport` rather than httpx's own
        (None: unless a proxy is set in the environment)."""
        # One TLS context for all the pools: httpx builds a new one per client otherwise.
        super().__init__(timeout=timeout, verify=client_tls_context())
        self._thread_timeout = timeout
        self._connections_per_thread = connections_per_thread
        self._direct = not proxies_from_environment() if direct is None else direct
        self._local = threading.local()
        self._pools: list[httpx.Client] = []
        self._pools_lock = threading.Lock()

    def _thread_client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            if self._direct:
                transport = ModelTransport(connections=self._connections_per_thread)
                client = _ThreadClient(timeout=self._thread_timeout, transport=transport)
            else:
                connections = self._connections_per_thread
                limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
                client = _ThreadClient(timeout=self._thread_timeout, limits=limits, verify=client_tls_context())
            self._local.client = client
            with self._pools_lock:
                self._pools.append(client)
        return client

    @contextmanager
    def abortable(self) -> Iterator[Callable[[], None]]:
        """An abort of the calling thread's model requests, callable from any thread until the block ends.

        For a run's cancel: the run's thread waits on the model (a whole answer, or a stream's
        next token) and would see the cancel only when the model answers; the abort makes that
        wait fail at once, and the thread's next requests too, until the block ends (see
        ``ModelTransport.abort_requests``: a ``RequestAborted`` comes out of the model call).
        Once the block has ended the abort does nothing: the thread may be running another run by
        then. Through httpx's own pools (a proxy in the environment) there is nothing to abort
        with, and a request ends when the model answers, as before.
        """
        transport = self._thread_client()._transport
        if not isinstance(transport, ModelTransport):  # httpx's own (a proxy in the environment)
            yield lambda: None
            return
        abort_requests = transport.abort_requests
        lock = threading.Lock()
        running = True

        def abort() -> None:
            with lock:
                if running:
                    abort_requests()

        try:
            yield abort
        finally:
            with lock:
                running = False
                transport.resume()

    def drop_thread_pool(self) -> None:
        """Close the calling thread's pool, connections in use included.

        For a run aborted in the middle of a model stream: the OpenAI client's stream object sits
        in a reference cycle, so its response (and the connection under it) would stay checked
        out until the garbage collector ran, and the thread's next run would wait for a
        connection. The thread opens a new pool on its next request.
        """
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            return
        self._local.client = None
        with self._pools_lock:
            if client in self._pools:
                self._pools.remove(client)
        client.close()

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = self._thread_client().send(request, **kwargs)
        # A streamed answer finishes its HTTP message after [DONE], so its connection is reused
        # (ModelTransport does it in the body it gives).
        return reusable(response) if kwargs.get("stream") and not self._direct else response

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = self._pools, []
        for client in pools:
            client.close()
        super().close()


@dataclass
class LLMProvider:
    """The ``llm_config`` every agent is built from, all sharing one HTTP client."""

    entries: list[dict[str, Any]]
    http_client: SharedHTTPClient
    model: str
    backend: str  # "offline" or "openai-compatible"
    temperature: float | None = None
    _configs: dict[bool, dict[str, Any]] = field(init=False, repr=False)
    _async_client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._configs = {stream: self._build(stream) for stream in (True, False)}

    def _build(self, stream: bool) -> dict[str, Any]:
        config_list = [{**entry, "http_client": self.http_client, "stream": stream} for entry in self.entries]
        llm_config: dict[str, Any] = {"config_list": config_list, "cache_seed": None}
        if self.temperature is not None:
            llm_config["temperature"] = self.temperature
        return llm_config

    def config(self, *, stream: bool) -> dict[str, Any]:
        """The AutoGen ``llm_config``; ``stream`` makes the model send tokens as it writes them.

        Built once and shared by every run: AutoGen copies it into each agent it builds, and
        callers that add to it (AgentSpec.llm_config) copy it first.
        """
        return self._configs[stream]

    def async_http_client(self) -> httpx.AsyncClient:
        """The HTTP client of the engines that run in the event loop (AgentChat), made on first use.

        One pool for every run of the process: a run is a task, not a thread, so there is no
        per-thread pool to keep (see :class:`SharedHTTPClient`), and httpx's async pool is
        only ever touched from the one event loop.
        """
        if self._async_client is None:
            timeout = self.entries[0].get("timeout") if self.entries else None
            self._async_client = ModelAsyncClient(
                timeout=timeout,
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
                verify=client_tls_context(),
            )
        return self._async_client

    def close(self) -> None:
        self.http_client.close()

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None


def create_llm_provider(settings: Settings, *, offline_base_url: str | None = None) -> LLMProvider:
    """The provider for the configured model, or for the offline model at ``offline_base_url``."""
    client = SharedHTTPClient(timeout=settings.llm_timeout)
    common = {"timeout": settings.llm_timeout, "max_retries": settings.llm_max_retries}
    if offline_base_url is not None:
        entries: list[dict[str, Any]] = [
            {"model": "offline-model", "api_key": "offline", "base_url": offline_base_url, "price": [0, 0], **common}
        ]
        return LLMProvider(entries, client, "offline-model", "offline", settings.llm_temperature)

    entries = copy.deepcopy(settings.load_config_list())
    if not entries:
        entry: dict[str, Any] = {"model": settings.openai_model}
        if settings.openai_api_key is not None:
            entry["api_key"] = settings.openai_api_key.get_secret_value()
        else:
            entry["api_key"] = "not-needed"  # local OpenAI-compatible servers (Ollama, vLLM) ignore it
        if settings.openai_base_url:
            entry["base_url"] = settings.openai_base_url
        entries = [entry]
    for entry in entries:
        for key, value in common.items():
            entry.setdefault(key, value)
    return LLMProvider(entries, client, str(entries[0]["model"]), "openai-compatible", settings.llm_temperature)
