"""The offline model through the real OpenAI client: JSON, streaming, usage, tools, failures."""

from __future__ import annotations

import openai
import pytest

from agent_api.offline_llm import OfflineServer


@pytest.fixture
def client(offline: OfflineServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=offline.base_url, api_key="x", max_retries=0)


def test_reply_is_deterministic_and_reports_usage(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Say TERMINATE when done."}, {"role": "user", "content": "hi"}]
    first = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    second = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content == 'Offline answer: you asked "hi". I can see 0 earlier messages. TERMINATE'
    assert (
        first.usage is not None and first.usage.completion_tokens == len(first.choices[0].message.content.split()) == 12
    )


def test_streaming_sends_words_and_usage(client: openai.OpenAI, offline: OfflineServer) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi [[tokens:4]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Offline answer: you asked"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert offline.model.requests[-1]["stream"] is True


def test_tool_call_then_answer_from_the_result(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": 'add [[tool:calculator {"expression": "2+3"}]]'}]
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]
    call = client.chat.completions.create(model="m", messages=ask, tools=tools)  # type: ignore[arg-type]
    tool_calls = call.choices[0].message.tool_calls
    assert tool_calls and tool_calls[0].function.name == "calculator"  # type: ignore[union-attr]
    follow = ask + [
        {"role": "assistant", "content": None, "tool_calls": [tool_calls[0].model_dump()]},
        {"role": "tool", "tool_call_id": tool_calls[0].id, "content": "5"},
    ]
    answer = client.chat.completions.create(model="m", messages=follow, tools=tools)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "The tool returned 5."


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, openai.InternalServerError), (429, openai.RateLimitError), (401, openai.AuthenticationError)],
)
def test_failures_on_request(client: openai.OpenAI, status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"x [[fail:{status}]]"}])


def test_fail_rate_is_deterministic(client: openai.OpenAI, offline: OfflineServer) -> None:
    offline.model.configure(fail_rate=0.25)
    failures = 0
    for _ in range(8):
        try:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        except openai.InternalServerError:
            failures += 1
    assert failures == 2
