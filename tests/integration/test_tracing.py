"""Traces across real processes: an API process and a worker process export with OTLP to a
receiver on a loopback port, as they would to a collector."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api.offline_llm import OfflineServer
from agent_api.telemetry import CONTENT_ATTRIBUTES
from tests.utils.otlp import OtlpReceiver, ReceivedSpan
from tests.utils.process import serve_process, worker_process
from tests.utils.redis_server import RedisServer
from tests.utils.runs import start_run, wait_for_end

pytestmark = pytest.mark.slow(seconds=8)

QUESTION = 'What is 17*3? [[tool:calculator {"expression": "17*3"}]]'


@pytest.fixture
def receiver() -> Any:
    with OtlpReceiver() as r:
        yield r


def _env(offline: OfflineServer, redis_server: RedisServer, receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": offline.base_url,
        "OPENAI_API_KEY": "test-key",
        "REDIS_URL": redis_server.url,
        "OPENAI_MODEL": "offline-model",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the batch exporter's delay (ms): spans arrive promptly
        "LOG_FORMAT": "json",
        **extra,
    }


def _children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id]


def _descendants(spans: list[ReceivedSpan], root: ReceivedSpan) -> list[ReceivedSpan]:
    out, todo = [], [root]
    while todo:
        kids = _children(spans, todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def test_a_group_run_with_a_tool_is_one_trace_across_the_api_and_the_worker(
    tmp_path: Path, offline: OfflineServer, redis_server: RedisServer, redis_client: Any, receiver: OtlpReceiver
) -> None:
    env = _env(offline, redis_server, receiver)
    with ExitStack() as stack:
        api = stack.enter_context(
            serve_process(tmp_path, {**env, "WORKERS_IN_PROCESS": "0", "OTEL_SERVICE_NAME": "api"})
        )
        worker = stack.enter_context(worker_process(tmp_path, {**env, "OTEL_SERVICE_NAME": "worker"}))
        client = stack.enter_context(httpx.Client(base_url=api.url, timeout=30))
        run = start_run(client, {"agent": "research_team", "message": QUESTION})
        ended = wait_for_end(client, run["run_id"])
        assert ended["status"] == "succeeded"

        (run_span,) = receiver.wait_for("run research_team")
        receiver.wait_for("execute_tool calculator")
        (request,) = [s for s in receiver.wait_for("POST /runs") if s.kind == 2]  # SERVER
        assert request.service == "api" and run_span.service == "worker"
        # the worker's run span is the child of the API's request span: one trace across the hop
        assert run_span.trace_id == request.trace_id and run_span.parent_id == request.span_id
        assert run_span.attributes["agent_api.run.id"] == run["run_id"]
        assert run_span.attributes["gen_ai.conversation.id"] == run["session_id"]
        assert run_span.attributes["agent_api.run.outcome"] == "ok"
        usage = ended["result"]["usage"]
        assert run_span.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]

        spans = [s for s in receiver.spans if s.trace_id == run_span.trace_id]
        inside = _descendants(spans, run_span)
        agents = {s.attributes.get("gen_ai.agent.name") for s in inside if s.name.startswith("invoke_agent")}
        assert {"researcher", "critic", "writer"} <= agents
        chats = [s for s in inside if s.attributes.get("gen_ai.operation.name") == "chat"]
        assert chats and all(s.attributes.get("gen_ai.request.model") == "offline-model" for s in chats)
        assert sum(s.attributes.get("gen_ai.usage.input_tokens", 0) for s in chats) >= usage["prompt_tokens"]
        streamed = [s for s in chats if "agent_api.time_to_first_token_s" in s.attributes]
        assert streamed and all(s.attributes["agent_api.time_to_first_token_s"] >= 0 for s in streamed)
        (tool,) = [s for s in inside if s.name == "execute_tool calculator"]
        assert tool.attributes["gen_ai.tool.name"] == "calculator" and tool.attributes["gen_ai.tool.call.id"]
        # no prompt, answer, tool argument or result leaves the service by default
        leaked = [(s.name, k) for s in spans for k in s.attributes if k in CONTENT_ATTRIBUTES]
        assert leaked == []
        assert "17*3" not in json.dumps([s.attributes for s in spans])

        api.terminate()
        worker.process.terminate()
        worker.process.wait(30)
    # log lines written inside the run carry its trace id
    lines = [json.loads(line) for line in worker.stderr.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("trace_id") == run_span.trace_id for line in lines), lines[-5:]


def test_trace_content_puts_the_conversation_in_the_spans(
    tmp_path: Path, offline: OfflineServer, redis_server: RedisServer, redis_client: Any, receiver: OtlpReceiver
) -> None:
    env = _env(offline, redis_server, receiver, TRACE_CONTENT="true")
    with serve_process(tmp_path, env) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        assert client.post("/chat", json={"message": "Tell me about tides."}).status_code == 200
        chat = receiver.wait_for("chat offline-model")[0]
        assert "Tell me about tides." in chat.attributes["gen_ai.input.messages"]
