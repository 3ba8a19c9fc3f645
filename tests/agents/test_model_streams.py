"""A streamed model answer gives its connection back to the pool (agents/model_streams.py).

Through the real OpenAI clients: to the offline model (each request logs the connection it came
on), and to a raw HTTP/1.1 server on a loopback port that ends its messages as a test says.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import openai
import pytest

from agent_api.agents.llm import SharedHTTPClient
from agent_api.agents.model_streams import DRAIN_SECONDS, ModelAsyncClient
from agent_api.offline_llm import OfflineServer
from tests.utils.raw_http import CHUNK, DONE, STREAM_HEAD, Answer, RawServer, chunked, raw_server

HANG = 30.0  # what "hangs" means here: far past every budget, far short of a test's patience


def ask(client: openai.OpenAI, text: str) -> str:
    stream = client.chat.completions.create(
        model="offline-model", messages=[{"role": "user", "content": text}], stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


async def ask_async(client: openai.AsyncOpenAI, text: str) -> str:
    stream = await client.chat.completions.create(
        model="offline-model", messages=[{"role": "user", "content": text}], stream=True
    )
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])


@pytest.fixture(params=[True, False], ids=["model transport", "httpx's transport"])
def direct(request: pytest.FixtureRequest) -> bool:
    """The model client's pools: agents.model_http's transport (the default), or httpx's own (a proxy is set)."""
    return bool(request.param)


def test_streamed_answers_reuse_one_connection(offline: OfflineServer, direct: bool) -> None:
    http = SharedHTTPClient(timeout=30, direct=direct)
    client = openai.OpenAI(api_key="test", base_url=offline.base_url, http_client=http, max_retries=0)
    try:
        answers = [ask(client, f"question {i}") for i in range(5)]
    finally:
        http.close()
    assert all(f'"question {i}"' in answer for i, answer in enumerate(answers))
    peers = {request["peer"] for request in offline.model.requests}
    assert len(peers) == 1, peers  # before: a new connection for every streamed answer


async def test_streamed_answers_reuse_one_connection_async(offline: OfflineServer) -> None:
    http = ModelAsyncClient(timeout=30)
    client = openai.AsyncOpenAI(api_key="test", base_url=offline.base_url, http_client=http, max_retries=0)
    try:
        answers = [await ask_async(client, f"question {i}") for i in range(5)]
    finally:
        await http.aclose()
    assert all(f'"question {i}"' in answer for i, answer in enumerate(answers))
    assert len({request["peer"] for request in offline.model.requests}) == 1


def ending(after_done: str) -> Answer:
    """Answers with a streamed chat completion whose message ends as ``after_done`` says.

    "end", "end-later" (the terminator in a packet of its own, a little later), "hang",
    "keep-alive" (comments after [DONE], never the end), or "hang-before-done".
    """

    def answer(server: RawServer, conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
        conn.sendall(STREAM_HEAD + chunked(CHUNK))
        if after_done == "hang-before-done":
            server.stop.wait(HANG)
            raise OSError("hung up")  # closes the connection
        conn.sendall(chunked(DONE))
        if after_done == "end-later":
            server.stop.wait(DRAIN_SECONDS / 5)
        if after_done in ("end", "end-later"):
            conn.sendall(b"0\r\n\r\n")
            return
        while after_done == "keep-alive" and not server.stop.wait(DRAIN_SECONDS / 10):
            conn.sendall(chunked(b": keep-alive\n\n"))
        server.stop.wait(HANG)
        raise OSError("hung up")

    return answer


@contextmanager
def model_client(server: RawServer, direct: bool) -> Iterator[openai.OpenAI]:
    """The OpenAI client on the service's model HTTP client, to ``server``; its read timeout twice HANG."""
    http = SharedHTTPClient(timeout=HANG * 2, direct=direct)
    try:
        yield openai.OpenAI(api_key="test", base_url=server.url, http_client=http)
    finally:
        http.close()


def ask_within(client: openai.OpenAI, times: int, patience: float) -> list[str]:
    """ask() ``times`` in one thread (one pool), failing the test if they take ``patience`` seconds."""
    answers: list[str] = []
    worker = threading.Thread(target=lambda: answers.extend(ask(client, "hello") for _ in range(times)), daemon=True)
    worker.start()
    worker.join(patience)
    assert not worker.is_alive(), "a call waited for the server after [DONE]"
    return answers


@pytest.mark.parametrize("after_done", ["end", "end-later"])
def test_a_message_ended_after_done_keeps_its_connection(after_done: str, direct: bool) -> None:
    with raw_server(ending(after_done)) as server:
        with model_client(server, direct) as client:
            assert ask_within(client, 3, HANG / 2) == ["hi"] * 3
        assert server.connections == 1


@pytest.mark.parametrize("after_done", ["hang", "keep-alive"])
def test_a_message_not_ended_after_done_costs_the_budget_and_its_connection(after_done: str, direct: bool) -> None:
    """The read timeout is twice the test's patience: the answer comes back within the drain's budget."""
    with raw_server(ending(after_done)) as server:
        with model_client(server, direct) as client:
            assert ask_within(client, 2, HANG / 2) == ["hi"] * 2
        assert server.connections == 2  # each given up, a new one for the next request


async def test_a_message_not_ended_after_done_async() -> None:
    with raw_server(ending("hang")) as server:
        http = ModelAsyncClient(timeout=HANG * 2)
        client = openai.AsyncOpenAI(api_key="test", base_url=server.url, http_client=http)
        try:
            answers = [await asyncio.wait_for(ask_async(client, "hello"), HANG / 2) for _ in range(2)]
        finally:
            await http.aclose()
        assert answers == ["hi", "hi"] and server.connections == 2


def test_a_stream_closed_before_done_is_closed_at_once(direct: bool) -> None:
    """A consumer that stops early (a cancelled run) does not wait for the rest of the answer."""
    with raw_server(ending("hang-before-done")) as server, model_client(server, direct) as client:
        closed = threading.Event()

        def first_chunk_then_close() -> None:
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hello"}], stream=True
            )
            next(iter(stream))
            stream.close()
            closed.set()

        threading.Thread(target=first_chunk_then_close, daemon=True).start()
        assert closed.wait(HANG / 2), "closing the stream waited for the server"
