"""A streamed model answer gives its connection back to the pool (agents/model_streams.py).

Through the real OpenAI clients: to the offline model (each request logs the connection it came
on), and to a raw HTTP/1.1 server on a loopback port that ends its messages as a test says.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import openai
import pytest

from agent_api.agents.llm import SharedHTTPClient
from agent_api.agents.model_streams import DRAIN_SECONDS, ModelAsyncClient
from agent_api.offline_llm import OfflineServer

LOOPBACK = "127.0.0.1"
CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
HANG = 30.0  # what "hangs" means here: far past every budget, far short of a test's patience


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


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


def test_streamed_answers_reuse_one_connection(offline: OfflineServer) -> None:
    http = SharedHTTPClient(timeout=30)
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


@dataclass
class RawServer:
    """Answers every request with a streamed chat completion ending as ``after_done`` says."""

    after_done: str  # "end", "end-later", "hang", "keep-alive", or "hang-before-done"
    port: int = 0
    connections: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def serve(self, listener: socket.socket) -> None:
        listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader, suppress(OSError):  # OSError: the client closed it
            while not self.stop.is_set():
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                lines = head.lower().split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
                reader.read(length)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    + _chunked(CHUNK)
                )
                if self.after_done == "hang-before-done":
                    self.stop.wait(HANG)
                    return
                conn.sendall(_chunked(DONE))
                if self.after_done == "end-later":  # the terminator in a packet of its own, a little later
                    self.stop.wait(DRAIN_SECONDS / 5)
                if self.after_done in ("end", "end-later"):
                    conn.sendall(b"0\r\n\r\n")
                    continue
                while self.after_done == "keep-alive" and not self.stop.wait(DRAIN_SECONDS / 10):
                    conn.sendall(_chunked(b": keep-alive\n\n"))
                self.stop.wait(HANG)
                return


@contextmanager
def raw_server(after_done: str) -> Iterator[RawServer]:
    server = RawServer(after_done)
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        server.port = listener.getsockname()[1]
        thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.stop.set()
            thread.join(5)


@contextmanager
def model_client(server: RawServer) -> Iterator[openai.OpenAI]:
    """The OpenAI client on the service's model HTTP client, to ``server``; its read timeout twice HANG."""
    http = SharedHTTPClient(timeout=HANG * 2)
    try:
        yield openai.OpenAI(api_key="test", base_url=f"http://{LOOPBACK}:{server.port}/v1", http_client=http)
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
def test_a_message_ended_after_done_keeps_its_connection(after_done: str) -> None:
    with raw_server(after_done) as server:
        with model_client(server) as client:
            assert ask_within(client, 3, HANG / 2) == ["hi"] * 3
        assert server.connections == 1


@pytest.mark.parametrize("after_done", ["hang", "keep-alive"])
def test_a_message_not_ended_after_done_costs_the_budget_and_its_connection(after_done: str) -> None:
    """The read timeout is twice the test's patience: the answer comes back within the drain's budget."""
    with raw_server(after_done) as server:
        with model_client(server) as client:
            assert ask_within(client, 2, HANG / 2) == ["hi"] * 2
        assert server.connections == 2  # each given up, a new one for the next request


async def test_a_message_not_ended_after_done_async() -> None:
    with raw_server("hang") as server:
        http = ModelAsyncClient(timeout=HANG * 2)
        client = openai.AsyncOpenAI(api_key="test", base_url=f"http://{LOOPBACK}:{server.port}/v1", http_client=http)
        try:
            answers = [await asyncio.wait_for(ask_async(client, "hello"), HANG / 2) for _ in range(2)]
        finally:
            await http.aclose()
        assert answers == ["hi", "hi"] and server.connections == 2


def test_a_stream_closed_before_done_is_closed_at_once() -> None:
    """A consumer that stops early (a cancelled run) does not wait for the rest of the answer."""
    with raw_server("hang-before-done") as server, model_client(server) as client:
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
