"""A deterministic, OpenAI-compatible chat-completions server that needs no key and no network.

It is used three ways: the test suite and the benchmarks start it on a loopback port, and
``agent-api serve`` runs against it when no model is configured, so a new user gets a working
service before they have a key.

The reply is a pure function of the request, so tests can assert on it:

    Offline answer: you asked "<last user message>". I can see <k> earlier messages.

and it ends with ``TERMINATE`` when the system message asks for that word. "The last user
message" is the caller's: in AutoGen's chats, the last message named ``user``. It may carry
directives in double brackets that change the answer for that one request:

    [[say:TEXT]]            reply with exactly TEXT
    [[tokens:N]]            reply with exactly N words (padded or cut)
    [[latency:FIRST:EACH]]  wait FIRST seconds before the first token and EACH between tokens
    [[sleep:S]]             wait S seconds before answering at all (to provoke time-outs)
    [[fail:STATUS]]         answer with HTTP STATUS and an OpenAI-style error body
    [[cut:K]]               when streaming, send K tokens and then drop the connection
    [[tool:NAME {json}]]    ask for tool NAME with the JSON arguments (if the request offers
                            that tool and it has not been answered yet); once the tool result
                            is the last message, answer with a sentence that quotes it
    [[speaker:NAME]]        (group chats) the answer to a speaker-selection request is NAME
    [[malformed]]           answer 200 with a body (or, streaming, an event) that is not JSON

Server-wide behaviour (latency, failure rate, reply length) is set at start-up or through
``PUT /_offline/config``; every request is recorded and listed at ``GET /_offline/requests``,
marked ``abandoned`` if its client went away before the answer was whole (as a model server
does, the answer is then no longer worked on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent_api.serving import QuietServer, until_disconnected

DIRECTIVE = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")
FILLER = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@dataclass
class OfflineModelConfig:
    """Server-wide behaviour; per-request directives override it."""

    model: str = "offline-model"
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    reply_tokens: int | None = None
    fail_rate: float = 0.0
    fail_status: int = 500
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    stop_word: bool = True  # end replies with TERMINATE when the system message asks for it


@dataclass
class Reply:
    """What the model answers to one request."""

    words: list[str] = field(default_factory=list)
    tool_call: dict[str, Any] | None = None
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    sleep: float = 0.0
    fail_status: int | None = None
    cut_after: int | None = None
    malformed: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _content_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _directives(text: str) -> dict[str, str]:
    return {m.group(1): (m.group(2) or "") for m in DIRECTIVE.finditer(text)}


def _count_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(3 + len(_content_text(m).split()) for m in messages)


class OfflineModel:
    """The model: turns a chat-completions request into a deterministic :class:`Reply`."""

    def __init__(self, config: OfflineModelConfig | None = None) -> None:
        self.config = config or OfflineModelConfig()
        self._lock = threading.Lock()
        self._requests: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._counter = 0

    # -- bookkeeping -------------------------------------------------------------------------
    def record(self, body: dict[str, Any], peer: str = "") -> int:
        """Log a request: its body, its number, when it came and from which connection (``peer``)."""
        with self._lock:
            self._counter += 1
            self._requests.append({"n": self._counter, "time": time.time(), "peer": peer, **body})
            return self._counter

    def abandoned(self, n: int) -> None:
        """Note that request ``n``'s client went away before its answer was whole (``abandoned``: true)."""
        with self._lock:
            for request in reversed(self._requests):
                if request["n"] == n:
                    request["abandoned"] = True
                    return

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def configure(self, **changes: Any) -> None:
        names = {f.name for f in fields(OfflineModelConfig)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        with self._lock:
            for key, value in changes.items():
                setattr(self.config, key, value)

    # -- the reply ---------------------------------------------------------------------------
    def reply(self, body: dict[str, Any], n: int) -> Reply:
        cfg = self.config
        messages: list[dict[str, Any]] = body.get("messages") or []
        reply = Reply(first_token_delay=cfg.first_token_delay, token_delay=cfg.token_delay)
        if cfg.fail_rate and self._every(n, cfg.fail_rate):
            reply.fail_status = cfg.fail_status
        elif cfg.timeout_rate and self._every(n, cfg.timeout_rate, offset=1):
            reply.sleep = cfg.timeout_seconds

        user_index = self._question_index(messages)
        question = _content_text(messages[user_index]) if user_index >= 0 else ""
        found = _directives(question)
        system = " ".join(_content_text(m) for m in messages if m.get("role") == "system")

        if "fail" in found:
            reply.fail_status = int(found["fail"] or 500)
        if "sleep" in found:
            reply.sleep = float(found["sleep"])
        if "cut" in found:
            reply.cut_after = int(found["cut"])
        reply.malformed = "malformed" in found
        if "latency" in found:
            first, _, each = found["latency"].partition(":")
            reply.first_token_delay, reply.token_delay = float(first), float(each or 0)

        if self._is_speaker_selection(messages, system):
            return self._select_speaker(reply, messages, found)

        last = messages[-1] if messages else {}
        name, _, args = found.get("tool", "").strip().partition(" ")
        offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
        answered = any(m.get("role") == "tool" for m in messages[user_index + 1 :])
        if name and name in offered and not answered:
            reply.tool_call = {
                "id": f"call_{uuid.uuid5(uuid.NAMESPACE_OID, question).hex[:16]}",
                "type": "function",
                "function": {"name": name, "arguments": args.strip() or "{}"},
            }
            return reply

        if last.get("role") == "tool":
            text = f"The tool returned {_content_text(last).strip()}."
        elif "say" in found:
            text = found["say"]
        else:
            earlier = sum(1 for m in messages[:user_index] if m.get("role") != "system")
            asked = DIRECTIVE.sub("", question).strip()
            asked = asked if len(asked) <= 200 else asked[:200] + "..."
            text = f'Offline answer: you asked "{asked}". I can see {earlier} earlier messages.'
        words = text.split()
        length = int(found["tokens"]) if "tokens" in found else cfg.reply_tokens
        if length is not None:
            words = (words + FILLER * (length // len(FILLER) + 1))[:length]
        if cfg.stop_word and "TERMINATE" in system and "say" not in found:
            words.append("TERMINATE")
        reply.words = words
        return reply

    @staticmethod
    def _question_index(messages: list[dict[str, Any]]) -> int:
        """The caller's latest message: named "user" in AutoGen's chats, else the last user role."""
        named = [i for i, m in enumerate(messages) if m.get("role") == "user" and m.get("name") == "user"]
        if named:
            return named[-1]
        return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)

    @staticmethod
    def _every(n: int, rate: float, offset: int = 0) -> bool:
        """Deterministically pick ``rate`` of the requests (request n is picked or not)."""
        return int((n + offset) * rate) != int((n + offset - 1) * rate)

    @staticmethod
    def _is_speaker_selection(messages: list[dict[str, Any]], system: str) -> bool:
        # AutoGen's GroupChat asks "Read the above conversation. Then select the next role ..."
        tail = _content_text(messages[-1]) if messages else ""
        return "select the next role" in tail or "select the next role" in system

    def _select_speaker(self, reply: Reply, messages: list[dict[str, Any]], found: dict[str, str]) -> Reply:
        if "speaker" in found:
            reply.words = [found["speaker"]]
            return reply
        # Otherwise name the first role listed in the selection prompt that has not spoken yet.
        prompt = " ".join(_content_text(m) for m in messages)
        roles = re.findall(r"from \[([^\]]*)\]", prompt)
        names = [r.strip() for r in roles[-1].split(",")] if roles else []
        spoken = {m.get("name") for m in messages}
        choice = next((r for r in names if r not in spoken), names[0] if names else "")
        reply.words = [choice]
        return reply


# -- HTTP -------------------------------------------------------------------------------------
def _chunk(rid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    prompt = _count_tokens(body.get("messages") or [])
    completion = len(reply.words) or (8 if reply.tool_call else 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error(status: int) -> JSONResponse:
    kinds = {429: "rate_limit_exceeded", 401: "invalid_api_key", 400: "invalid_request_error"}
    body = {
        "error": {"message": f"offline model failure {status}", "type": kinds.get(status, "server_error"), "code": None}
    }
    headers = {"retry-after": "1"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _wait_unless_gone(request: Request, seconds: float) -> bool:
    """Wait ``seconds``, unless the client disconnects first: then False."""
    if seconds <= 0:
        return True
    try:
        await asyncio.wait_for(until_disconnected(request), seconds)
    except TimeoutError:
        return True
    return False


def create_offline_app(model: OfflineModel | None = None) -> Starlette:
    """Build the ASGI app of an offline model (``app.state.model`` is the :class:`OfflineModel`)."""
    model = model or OfflineModel()

    async def completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "body is not JSON", "type": "invalid_request_error"}}, 400)
        n = model.record(body, f"{request.client.host}:{request.client.port}" if request.client else "")
        reply = model.reply(body, n)
        if reply.sleep:
            await asyncio.sleep(reply.sleep)
        if reply.fail_status:
            return _error(reply.fail_status)
        if reply.malformed and not body.get("stream"):
            return Response('{"id": "chatcmpl-broken", "choices": [', media_type="application/json")
        rid = f"chatcmpl-offline-{n}"
        name = body.get("model") or model.config.model
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_stream(rid, name, body, reply, include_usage, n), media_type="text/event-stream")
        # As a model server does, the answer is not worked on for a client that went away.
        if not await _wait_unless_gone(
            request, reply.first_token_delay + reply.token_delay * max(len(reply.words) - 1, 0)
        ):
            model.abandoned(n)
            return Response(status_code=499)
        if reply.cut_after is not None:
            return _error(500)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text if reply.words else None}
        if reply.tool_call:
            message["tool_calls"] = [reply.tool_call]
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_call else "stop"}
                ],
                "usage": _usage(body, reply),
            }
        )

    async def _stream(
        rid: str, name: str, body: dict[str, Any], reply: Reply, include_usage: bool, n: int
    ) -> AsyncIterator[str]:
        try:
            async for piece in _pieces(rid, name, body, reply, include_usage):
                yield piece
        except (asyncio.CancelledError, GeneratorExit):  # the client went away: Starlette stops the stream
            model.abandoned(n)
            raise

    async def _pieces(
        rid: str, name: str, body: dict[str, Any], reply: Reply, include_usage: bool
    ) -> AsyncIterator[str]:
        await asyncio.sleep(reply.first_token_delay)
        yield _chunk(rid, name, {"role": "assistant", "content": ""})
        if reply.malformed:
            yield 'data: {"id": "chatcmpl-broken", "choices": [\n\n'
            return
        if reply.tool_call:
            call = {"index": 0, **reply.tool_call}
            yield _chunk(rid, name, {"tool_calls": [call]})
            yield _chunk(rid, name, {}, "tool_calls")
        else:
            for i, word in enumerate(reply.words):
                if reply.cut_after is not None and i >= reply.cut_after:
                    raise ConnectionAbortedError("offline model cut the stream as asked")
                if i:
                    await asyncio.sleep(reply.token_delay)
                yield _chunk(rid, name, {"content": word if i == 0 else " " + word})
            yield _chunk(rid, name, {}, "stop")
        if include_usage:
            usage = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": name,
                "choices": [],
                "usage": _usage(body, reply),
            }
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"

    async def list_models(request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": model.config.model, "object": "model", "owned_by": "offline"}]}
        )

    async def requests_(request: Request) -> Response:
        if request.method == "DELETE":
            model.reset()
            return Response(status_code=204)
        return JSONResponse(model.requests)

    async def config_(request: Request) -> Response:
        if request.method == "PUT":
            try:
                model.configure(**(await request.json()))
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(asdict(model.config))

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", list_models),
            Route("/_offline/requests", requests_, methods=["GET", "DELETE"]),
            Route("/_offline/config", config_, methods=["GET", "PUT"]),
        ]
    )
    app.state.model = model
    return app


class ThreadedServer:
    """An ASGI app served by uvicorn on a loopback port in a background thread."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, lifespan: Literal["auto", "on", "off"] = "off"
    ) -> None:
        # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only on connections whose
        # socket says TCP, and with it on a response written in two parts (uvicorn writes the head, then
        # the body) waited for the client's delayed ACK, about 40 ms on every model call.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            backlog=4096,
            timeout_keep_alive=60,
            lifespan=lifespan,
            loop="asyncio",
        )
        self._server = QuietServer(config)  # stop() wakes it at once; at rest it wakes once a second
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=f"server-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OfflineServer(ThreadedServer):
    """The offline model on a loopback port in a background thread."""

    def __init__(self, model: OfflineModel | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.model = model or OfflineModel()
        super().__init__(create_offline_app(self.model), host, port)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agent-api offline-llm", description="Run the offline model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--reply-tokens", type=int, default=None, help="words per reply (default: a sentence)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of requests answered with --fail-status")
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="fraction of requests that hang")
    parser.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", default=None, help="... and this private key (PEM; default: in the certfile)")
    args = parser.parse_args(argv)
    model = OfflineModel(
        OfflineModelConfig(
            first_token_delay=args.first_token_delay,
            token_delay=args.token_delay,
            reply_tokens=args.reply_tokens,
            fail_rate=args.fail_rate,
            fail_status=args.fail_status,
            timeout_rate=args.timeout_rate,
        )
    )
    uvicorn.run(
        create_offline_app(model),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=60,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile or args.ssl_certfile,
    )


if __name__ == "__main__":
    main()
