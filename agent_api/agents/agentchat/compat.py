"""Every place the AgentChat engine relies on AutoGen AgentChat (``autogen-agentchat``,
``autogen-core``, ``autogen-ext`` 0.7) beyond building its documented objects.

Like ``agents.autogen_compat`` for AG2, this is the one module that imports AgentChat: the
model client's settings, agents and teams, the message types history is restored as and the
stream's items are read from, cancellation, usage, termination components and how a failure
inside a team comes out. Each item is checked against the installed packages by
``tests/unit/test_agentchat_contract.py`` (no model, no network): after an upgrade, run it first.

Nothing here imports the service's other modules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, Team, TerminationCondition
from autogen_agentchat.conditions import TextMentionTermination
from autogen_agentchat.messages import (
    BaseChatMessage,
    ModelClientStreamingChunkEvent,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import CancellationToken, ComponentModel, FunctionCall
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    UserMessage,
)
from autogen_core.tools import BaseTool, ToolSchema
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.openai._model_info import get_info
from pydantic import BaseModel, ConfigDict

__all__ = ["CancellationToken", "Team"]

# --- Logging --------------------------------------------------------------------------------------

# AgentChat logs every message and model call at INFO on these loggers (content included).
EVENT_LOGGERS = ("autogen_core.events", "autogen_agentchat.events")


class _DropCancelled(logging.Filter):
    """A cancelled run's agent handler is logged by the runtime as an error ("Error processing
    publish message ..." with the CancelledError): a cancel is not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def quiet_agentchat_logging() -> None:
    """Keep message contents out of the logs and cancels out of the errors (idempotent)."""
    for name in EVENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    runtime = logging.getLogger("autogen_core")
    if not any(isinstance(f, _DropCancelled) for f in runtime.filters):
        runtime.addFilter(_DropCancelled())


# --- The model client -------------------------------------------------------------------------

# What AgentChat must be told about a model it does not know by name (an offline or local model
# behind an OpenAI-compatible API): OpenAIChatCompletionClient refuses such a name without it.
DEFAULT_MODEL_INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
)


def model_info(model: str) -> ModelInfo | None:
    """None for a model AgentChat knows (its own table), else :data:`DEFAULT_MODEL_INFO`."""
    try:
        get_info(model)
    except (KeyError, ValueError):  # ValueError: "model_info is required when model name is not ..."
        return DEFAULT_MODEL_INFO
    return None


def model_client(
    *,
    model: str,
    api_key: str,
    base_url: str | None,
    http_client: httpx.AsyncClient,
    stream: bool,
    timeout: float | None = None,
    max_retries: int | None = None,
    settings: dict[str, Any] | None = None,
) -> OpenAIChatCompletionClient:
    """The OpenAI-compatible model client of one agent.

    Relies on: keyword arguments that ``AsyncOpenAI`` takes (``http_client``, ``timeout``,
    ``max_retries``) going to it, the rest of ``settings`` (temperature, max_tokens, ...) to every
    request; ``stream_options`` going with every *streaming* request, so the last streamed
    chunk carries the usage (``include_usage``), which ``create_stream`` puts on its result.
    """
    kwargs: dict[str, Any] = {"model": model, "api_key": api_key, "http_client": http_client, **(settings or {})}
    if base_url:
        kwargs["base_url"] = base_url
    if timeout is not None:
        kwargs["timeout"] = timeout
    if max_retries is not None:
        kwargs["max_retries"] = max_retries
    info = model_info(model)
    if info is not None:
        kwargs["model_info"] = info
    if stream:
        kwargs["stream_options"] = {"include_usage": True}
    return OpenAIChatCompletionClient(**kwargs)


# --- Agents and teams -------------------------------------------------------------------------


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="allow")


class ServiceTool(BaseTool[_Arguments, Any]):
    """A registered tool as AgentChat calls it: the schema the service built (the one AG2's agents
    get), the function called with the model's JSON arguments as keywords, in the loop's default
    executor (a tool is a plain synchronous function).

    Relies on ``BaseTool``: ``schema`` is what the model is sent (``name``, ``description``,
    ``parameters``), ``run_json`` validates the arguments with ``args_type`` and awaits ``run``.
    (AgentChat's ``FunctionTool`` reads the function's annotations, which AG2's schema builder
    has already rewritten.)
    """

    def __init__(self, function: Callable[..., Any], *, name: str, description: str, parameters: dict[str, Any]):
        super().__init__(_Arguments, object, name, description)
        self._function = function
        self._parameters = parameters

    @property
    def schema(self) -> ToolSchema:
        return ToolSchema(name=self.name, description=self.description, parameters=self._parameters)  # type: ignore[typeddict-item]

    async def run(self, args: _Arguments, cancellation_token: CancellationToken) -> Any:
        arguments = args.model_dump()
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._function, **arguments))


def function_tool(
    function: Callable[..., Any], *, name: str, description: str, parameters: dict[str, Any]
) -> ServiceTool:
    return ServiceTool(function, name=name, description=description, parameters=parameters)


def assistant_agent(
    *,
    name: str,
    system_message: str,
    description: str,
    client: OpenAIChatCompletionClient,
    tools: Sequence[ServiceTool],
    history: Sequence[LLMMessage],
    stream: bool,
) -> AssistantAgent:
    """An assistant whose model context starts with ``history`` (its view of the conversation).

    ``model_client_stream``: the agent yields a ``ModelClientStreamingChunkEvent`` per streamed
    piece, then its whole message. With tools, ``reflect_on_tool_use``: after a tool call the
    agent calls the model again with the results and answers in text (a ``TextMessage``), as the
    AG2 teams do; at most ``max_tool_iterations`` rounds of calls.
    """
    return AssistantAgent(
        name=name,
        model_client=client,
        tools=list(tools) or None,
        system_message=system_message,
        description=description or "An assistant.",
        model_context=UnboundedChatCompletionContext(initial_messages=list(history)),
        model_client_stream=stream,
        reflect_on_tool_use=bool(tools),
        max_tool_iterations=3,
    )


def text_mention(text: str, sources: Sequence[str] | None) -> TerminationCondition:
    return TextMentionTermination(text, sources=list(sources) if sources else None)


def load_termination(config: dict[str, Any]) -> TerminationCondition:
    """A termination condition from its component dict (checked by ``components.check_component`` first)."""
    return TerminationCondition.load_component(ComponentModel.model_validate(config))


def either(first: TerminationCondition, second: TerminationCondition | None) -> TerminationCondition:
    return first if second is None else first | second


def group(
    kind: Literal["round_robin", "selector"],
    agents: Sequence[ChatAgent],
    *,
    termination: TerminationCondition,
    max_turns: int,
    selector_client: OpenAIChatCompletionClient | None = None,
    allow_repeated_speaker: bool = False,
) -> Team:
    """The team that runs one turn: ``max_turns`` bounds the agents' messages (the caller's excluded)."""
    if kind == "selector":
        assert selector_client is not None
        return SelectorGroupChat(
            list(agents),
            model_client=selector_client,
            termination_condition=termination,
            max_turns=max_turns,
            allow_repeated_speaker=allow_repeated_speaker,
        )
    return RoundRobinGroupChat(list(agents), termination_condition=termination, max_turns=max_turns)


# --- History ------------------------------------------------------------------------------------


def user_message(text: str, source: str) -> LLMMessage:
    return UserMessage(content=text, source=source)


def assistant_message(text: str, source: str) -> LLMMessage:
    return AssistantMessage(content=text, source=source)


def tool_calls_message(calls: Sequence[tuple[str, str, str]], source: str) -> LLMMessage:
    """An assistant's tool calls, as ``(id, name, arguments JSON)``."""
    return AssistantMessage(
        content=[FunctionCall(id=i, name=n, arguments=a) for i, n, a in calls],
        source=source,
    )


def tool_results_message(results: Sequence[tuple[str, str, str]]) -> LLMMessage:
    """Tool results, as ``(call id, tool name, content)``."""
    return FunctionExecutionResultMessage(
        content=[FunctionExecutionResult(call_id=i, name=n, content=c, is_error=False) for i, n, c in results]
    )


# --- The stream ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    agent: str
    text: str


@dataclass(frozen=True)
class Text:
    agent: str
    text: str


@dataclass(frozen=True)
class ToolCalls:
    agent: str
    calls: list[tuple[str, str, str]]  # id, name, arguments


@dataclass(frozen=True)
class ToolResults:
    agent: str
    results: list[tuple[str, str, str]]  # call id, name, content


StreamItem = Token | Text | ToolCalls | ToolResults


def read_item(item: object) -> StreamItem | None:
    """One item of ``Team.run_stream`` as the service reads it; None for what it ignores.

    ``ModelClientStreamingChunkEvent``: a streamed piece of the speaker's reply (``source``,
    ``content``). ``ToolCallRequestEvent`` / ``ToolCallExecutionEvent``: an agent's calls
    (``FunctionCall``) and their results (``FunctionExecutionResult``). A chat message with text
    (``TextMessage``, and ``ToolCallSummaryMessage`` without reflection): an agent's (or the
    caller's) whole message, after its chunks. The final ``TaskResult``, thoughts and selector
    events are ignored.
    """
    if isinstance(item, ModelClientStreamingChunkEvent):
        return Token(item.source, item.content)
    if isinstance(item, ToolCallRequestEvent):
        return ToolCalls(item.source, [(c.id, c.name, c.arguments) for c in item.content])
    if isinstance(item, ToolCallExecutionEvent):
        return ToolResults(item.source, [(r.call_id, r.name, r.content) for r in item.content])
    if isinstance(item, BaseChatMessage):
        return Text(item.source, item.to_model_text() if not isinstance(item, TextMessage) else item.content)
    return None


def usage_of(item: object) -> tuple[int, int]:
    """``(prompt, completion)`` tokens a stream item reports (``models_usage``; messages and events)."""
    usage = getattr(item, "models_usage", None)
    if usage is None:
        return 0, 0
    return int(usage.prompt_tokens), int(usage.completion_tokens)


# --- Failures -------------------------------------------------------------------------------------

# An exception inside a team's runtime (a model call that failed) does not come out as itself:
# run_stream raises RuntimeError(str(SerializableException)), whose text starts with the
# original exception's type name and a colon.
_ERROR_TYPE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):")


def inner_error_type(exc: BaseException) -> str | None:
    """The type name of the exception inside a team that ``exc`` reports, if it is one."""
    if type(exc) is not RuntimeError:
        return None
    match = _ERROR_TYPE.match(str(exc))
    return match.group(1) if match else None
