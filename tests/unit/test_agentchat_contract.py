"""What the AgentChat engine relies on in autogen-agentchat / autogen-core / autogen-ext, checked
against the installed packages with no model and no network (see agents/agentchat/compat.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import httpx
from autogen_agentchat.messages import (
    ModelClientStreamingChunkEvent,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_agentchat.teams._group_chat._events import SerializableException
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import FunctionExecutionResult, RequestUsage

from agent_api.agents.agentchat import compat
from agent_api.agents.agentchat.engine import _tool, agent_history
from agent_api.models.chat import ChatMessage


def now() -> datetime:
    return datetime.now(UTC)


async def test_model_client_settings() -> None:
    assert compat.model_info("offline-model") == compat.DEFAULT_MODEL_INFO
    assert compat.model_info("gpt-4o-mini") is None
    async with httpx.AsyncClient() as http:
        client = compat.model_client(
            model="offline-model",
            api_key="k",
            base_url="http://127.0.0.1:9/v1",
            http_client=http,
            stream=True,
            timeout=5,
            max_retries=0,
            settings={"temperature": 0.2},
        )
        assert client._client._client is http  # AsyncOpenAI got the shared HTTP client
        assert client._create_args["stream_options"] == {"include_usage": True}
        assert client._create_args["temperature"] == 0.2 and client.model_info["function_calling"]


async def test_service_tool_schema_and_call() -> None:
    tool = _tool("calculator")
    assert tool.schema["name"] == "calculator" and "expression" in tool.schema["parameters"]["properties"]
    assert await tool.run_json({"expression": "6*7"}, CancellationToken()) == "42"


async def test_history_is_the_agents_model_context() -> None:
    history = [
        ChatMessage(role="user", content="q", name="user", timestamp=now()),
        ChatMessage(
            role="assistant",
            content="",
            name="a",
            timestamp=now(),
            tool_calls=[{"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}],
        ),
        ChatMessage(role="tool", content="42", name="user", tool_call_id="c1", timestamp=now()),
        ChatMessage(role="assistant", content="It is 42.", name="a", timestamp=now()),
        ChatMessage(role="assistant", content="Checked.", name="b", timestamp=now()),
    ]
    mine = [type(m).__name__ for m in agent_history(history, "a")]
    assert mine == [
        "UserMessage",
        "AssistantMessage",
        "FunctionExecutionResultMessage",
        "AssistantMessage",
        "UserMessage",
    ]
    theirs = agent_history(history, "b")
    assert [type(m).__name__ for m in theirs] == ["UserMessage", "UserMessage", "AssistantMessage"]
    agent = compat.assistant_agent(
        name="a",
        system_message="s",
        description="",
        client=None,  # type: ignore[arg-type]
        tools=[],
        history=agent_history(history, "a"),
        stream=True,
    )
    assert len(await agent.model_context.get_messages()) == 5


def test_stream_items_are_read() -> None:
    usage = RequestUsage(prompt_tokens=3, completion_tokens=2)
    assert compat.read_item(ModelClientStreamingChunkEvent(source="a", content="x")) == compat.Token("a", "x")
    call = ToolCallRequestEvent(
        source="a", content=[FunctionCall(id="c", name="n", arguments="{}")], models_usage=usage
    )
    assert compat.read_item(call) == compat.ToolCalls("a", [("c", "n", "{}")]) and compat.usage_of(call) == (3, 2)
    result = ToolCallExecutionEvent(
        source="a", content=[FunctionExecutionResult(call_id="c", name="n", content="42", is_error=False)]
    )
    assert compat.read_item(result) == compat.ToolResults("a", [("c", "n", "42")])
    assert compat.read_item(TextMessage(source="a", content="hi")) == compat.Text("a", "hi")
    assert compat.read_item(object()) is None and compat.usage_of(object()) == (0, 0)


def test_a_failure_inside_a_team_is_reported_by_its_type_name() -> None:
    error = RuntimeError(str(SerializableException.from_exception(TimeoutError("slow"))))
    assert compat.inner_error_type(error) == "TimeoutError"
    assert compat.inner_error_type(ValueError("TimeoutError: no")) is None


def test_termination_components_load() -> None:
    condition = compat.either(compat.text_mention("TERMINATE", ["w"]), None)
    loaded = compat.load_termination(condition.dump_component().model_dump())
    assert type(loaded).__name__ == "TextMentionTermination"


def test_cancels_are_not_logged_as_errors() -> None:
    compat.quiet_agentchat_logging()
    logger = logging.getLogger("autogen_core")
    record = logger.makeRecord("autogen_core", logging.ERROR, "f", 1, "Error processing publish message", (), None)
    record.exc_info = (asyncio.CancelledError, asyncio.CancelledError(), None)
    assert not all(f.filter(record) for f in logger.filters if isinstance(f, logging.Filter))
    assert logging.getLogger("autogen_agentchat.events").level == logging.WARNING
