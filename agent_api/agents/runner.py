"""TeamRunner: runs teams in the service's own thread pool and bridges their events to asyncio."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import json
import logging
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import openai
import pydantic

from agent_api.agents.autogen_compat import MODEL_TIMEOUT_ERRORS
from agent_api.agents.cache import ResponseCache, RunCache
from agent_api.agents.events import InputReply, InputRequest, RunEvent, RunOutcome
from agent_api.agents.llm import LLMProvider
from agent_api.agents.messages import trim_history
from agent_api.agents.model_http import RequestAborted
from agent_api.agents.run import TeamRun
from agent_api.agents.teams import Team
from agent_api.errors import (
    AgentAPIError,
    AgentRunError,
    ModelError,
    ModelRateLimited,
    ModelTimeout,
    RunCancelled,
    ShuttingDown,
)
from agent_api.models.chat import ChatMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFinished:
    """The last item of a run's event stream."""

    outcome: RunOutcome


_END = object()
_STOP = object()


def _consume(future: asyncio.Future[RunOutcome]) -> None:
    if not future.cancelled():
        future.exception()


def translate_model_error(exc: BaseException) -> AgentAPIError | None:
    """The caller-facing error for a model failure, or None if ``exc`` is not one."""
    if isinstance(exc, (*MODEL_TIMEOUT_ERRORS, openai.APITimeoutError, httpx.TimeoutException)):
        return ModelTimeout()
    if isinstance(exc, openai.RateLimitError):
        retry_after = exc.response.headers.get("retry-after", "").strip()
        return ModelRateLimited(headers={"Retry-After": retry_after if retry_after.isdigit() else "5"})
    # A stream that breaks mid-way surfaces as httpx's error: the OpenAI client does not wrap it.
    if isinstance(exc, (openai.OpenAIError, httpx.TransportError)):
        return ModelError()
    # A reply that is not what the API promises: the OpenAI client raises the JSON parser's error
    # (for a body or a stream event that is not JSON) or pydantic's, unwrapped.
    if isinstance(exc, (json.JSONDecodeError, pydantic.ValidationError)):
        return ModelError()
    return None


class _LoopHandoff:
    """Events from a run's thread into the event loop's queue, in order, waking the loop once per batch.

    A token used to cost a wake-up of the event loop (a write to its self-pipe and a callback)
    each; events that arrive while a hand-over is pending join it instead, so a busy loop takes
    the tokens of a fast stream in a few batches.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object], cancelled: threading.Event
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._cancelled = cancelled
        self._lock = threading.Lock()
        self._pending: list[object] = []

    def emit(self, event: RunEvent | InputRequest) -> None:  # in the run's thread
        if self._cancelled.is_set():
            return
        with self._lock:
            self._pending.append(event)
            if len(self._pending) > 1:
                return  # a hand-over is scheduled and will take this one too
        self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:  # in the event loop
        with self._lock:
            events, self._pending = self._pending, []
        for event in events:
            self._queue.put_nowait(event)


class TeamRunner:
    """Runs one team turn at a time per call, many at once, in a sized thread pool.

    AutoGen is synchronous; each run occupies one thread of ``executor`` for its whole length
    (mostly waiting on the model), so the pool size is the service's concurrency.
    """

    def __init__(
        self,
        llm: LLMProvider,
        executor: ThreadPoolExecutor,
        *,
        max_history: int,
        cache: ResponseCache | None = None,
    ) -> None:
        self.llm = llm
        self.executor = executor
        self.max_history = max_history
        self.cache = cache

    async def events(
        self,
        team: Team,
        history: Sequence[ChatMessage],
        message: str,
        max_turns: int,
        *,
        stream: bool,
        stop: asyncio.Event | None = None,
        llm_params: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[RunEvent | InputRequest | RunFinished]:
        """Run the team; yield its events as they happen, then a :class:`RunFinished`.

        An :class:`InputRequest` means the team waits for a person: the caller sets its ``reply``
        (the team's thread waits on it) before it reads on.

        Closing the iterator early (the caller went away) cancels the run: the model stream is
        dropped at the next token and no further model call starts. So does ``stop`` being set
        (the service is shutting down), which raises :class:`ShuttingDown`. ``llm_params``
        (temperature, max_tokens, ...) go with every model call of the agents' replies.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        config = self.llm.config(stream=stream)
        run = TeamRun(
            message=message,
            # The new message counts against the cap too: the model sees at most max_history.
            history=trim_history(history, self.max_history - 1),
            max_turns=max_turns,
            llm_config={**config, **llm_params} if llm_params else config,
            quiet_llm_config=self.llm.config(stream=False),
            # Only a session's first turn may be answered from the cache: later ones have history.
            cache=RunCache(self.cache) if self.cache is not None and not history else None,
        )

        future: asyncio.Future[RunOutcome]
        if team.native_async:
            # An engine that runs in the event loop: the run is a task, its events go straight into the queue.
            def emit(event: RunEvent | InputRequest) -> None:
                if not run.cancelled.is_set():
                    queue.put_nowait(event)

            run.emit = emit
            run.async_http_client = self.llm.async_http_client()
            future = asyncio.ensure_future(self._run_in_loop(team, run))
        else:
            run.emit = _LoopHandoff(loop, queue, run.cancelled).emit
            # The run's context (its trace span) goes with it into the thread: AutoGen's spans are its children.
            context = contextvars.copy_context()
            future = loop.run_in_executor(self.executor, context.run, self._run_in_thread, team, run)
        future.add_done_callback(lambda _: queue.put_nowait(_END))
        # A shutdown reaches the run the way its events do: through the queue.
        stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None

        def on_stop(done: asyncio.Task[Literal[True]]) -> None:
            if not done.cancelled():
                queue.put_nowait(_STOP)

        if stopped is not None:
            stopped.add_done_callback(on_stop)
        try:
            while (item := await queue.get()) is not _END:
                if item is _STOP:
                    raise ShuttingDown()
                yield item  # type: ignore[misc]
            yield RunFinished(await future)
        finally:
            run.cancel()
            if stopped is not None:
                stopped.cancel()
            # A run abandoned by its caller still ends (cancelled) in its thread: collect its
            # outcome so that asyncio does not log it as an exception never retrieved.
            future.add_done_callback(_consume)

    async def run(
        self,
        team: Team,
        history: Sequence[ChatMessage],
        message: str,
        max_turns: int,
        *,
        stop: asyncio.Event | None = None,
    ) -> RunOutcome:
        """Run the team to the end and return its outcome (no token streaming)."""
        async for item in self.events(team, history, message, max_turns, stream=False, stop=stop):
            if isinstance(item, RunFinished):
                return item.outcome
            if isinstance(item, InputRequest):  # nobody to ask here: the person stays silent
                item.reply.set_result(InputReply())
        raise AgentRunError()  # pragma: no cover - events always ends with RunFinished

    async def warm_up(self, teams: Sequence[Team]) -> None:
        """Build every team's agents once, unused: AutoGen and the OpenAI client load lazily, and
        the first request would otherwise pay about a second for it."""

        def build() -> None:
            # The OpenAI client imports its API resources (openai.resources: hundreds of types) on
            # its first request, not when it is built: about a second, in each worker process.
            importlib.import_module("openai.resources.chat.completions")
            config = self.llm.config(stream=True)
            for team in teams:
                team.warm_up(config)

        await asyncio.get_running_loop().run_in_executor(self.executor, build)

    async def _run_in_loop(self, team: Team, run: TeamRun) -> RunOutcome:
        try:
            return await team.run_async(run)
        except (RunCancelled, asyncio.CancelledError):
            if not run.cancelled.is_set():
                raise
        except Exception as exc:
            raise self._failure(team, exc) from exc
        raise RunCancelled()

    def _failure(self, team: Team, exc: Exception) -> AgentAPIError:
        if isinstance(exc, AgentAPIError):  # an engine that maps its failures itself
            log.warning("team %s: %s", team.name, type(exc).__name__)
            return exc
        mapped = translate_model_error(exc)
        if mapped is None:
            log.exception("team %s failed", team.name)
            return AgentRunError()
        log.warning("team %s: model call failed: %s", team.name, type(exc).__name__)
        return mapped

    def _run_in_thread(self, team: Team, run: TeamRun) -> RunOutcome:
        with self.llm.http_client.abortable() as abort:
            # A cancel aborts the model request the run waits on, rather than waiting for its answer.
            run.on_cancel(abort)
            try:
                return team.run(run)
            except (RunCancelled, RequestAborted):
                pass
            except Exception as exc:
                if not run.cancelled.is_set():
                    raise self._failure(team, exc) from exc
                # else: the model's stream, read when the cancel aborted it
        # Cancelled. An aborted model stream still holds its connection (see drop_thread_pool).
        self.llm.http_client.drop_thread_pool()
        raise RunCancelled()


def create_executor(size: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=size, thread_name_prefix="agent-run")
