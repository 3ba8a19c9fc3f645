"""The AutoGen behaviours the service relies on, checked against the installed AutoGen.

Each relied-on behaviour lives in ``agent_api.agents.autogen_compat``; each test here names it
and where the service uses it. No model and no network: agents answer from a script
(``register_reply``) or from a fake model behind an ``httpx.MockTransport``, reached through the
very ``llm_config`` the service builds (``LLMProvider``). After an AutoGen upgrade, run this file
first: a failure names the behaviour that changed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any, cast

import autogen
import httpx
import openai
import pytest
from autogen.events.client_events import StreamEvent
from autogen.io.base import IOStream, IOStreamProtocol
from autogen.oai.client import OpenAIWrapper
from openai.types.chat import ChatCompletion

from agent_api.agents import autogen_compat as compat
from agent_api.agents.llm import LLMProvider, SharedHTTPClient
from agent_api.agents.messages import usage_of
from agent_api.agents.runner import translate_model_error
from agent_api.errors import ModelRateLimited, ModelTimeout
from agent_api.models.chat import Usage

MODEL = "fake-model"
Reply = str | dict[str, Any] | Exception | httpx.Response


class Cancelled(Exception):
    """Stands in for the service's RunCancelled."""


# --- A fake model, a scripted agent, a scripted person ----------------------------------------


class FakeModel:
    """An OpenAI-compatible chat completions endpoint answering from a script (text, a message
    dict, an exception to raise, or a whole response); records every request body."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        message = {"role": "assistant", "content": reply} if isinstance(reply, str) else reply
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            choice = {"index": 0, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}
            completion = {"id": "c1", "object": "chat.completion", "created": 0, "model": MODEL, "usage": usage}
            return httpx.Response(200, json={**completion, "choices": [{**choice, "message": message}]})
        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
        pieces: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "delta": {"content": p}}]} for p in message["content"].split("|")
        ]
        pieces += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, {"choices": [], "usage": usage}]
        events = "".join(f"data: {json.dumps({**chunk, **piece})}\n\n" for piece in pieces) + "data: [DONE]\n\n"
        return httpx.Response(200, content=events.encode(), headers={"content-type": "text/event-stream"})


class _Client(compat.SharedAcrossAgents, httpx.Client):
    """Like the service's SharedHTTPClient, over a mock transport."""


def llm_config(model: FakeModel, *, stream: bool = False, price: bool = True) -> dict[str, Any]:
    """The ``llm_config`` the service builds (LLMProvider), its HTTP client answered by ``model``."""
    entry: dict[str, Any] = {"model": MODEL, "api_key": "fake", "base_url": "http://model.test/v1", "max_retries": 0}
    if price:
        entry["price"] = [0, 0]
    client = _Client(transport=httpx.MockTransport(model))
    return LLMProvider([entry], cast(Any, client), MODEL, "offline").config(stream=stream)


def assistant(name: str, model: FakeModel, **config: Any) -> autogen.AssistantAgent:
    return autogen.AssistantAgent(name=name, system_message=f"You are {name}.", llm_config=llm_config(model, **config))


def scripted(name: str, *replies: str | dict[str, Any]) -> autogen.ConversableAgent:
    """An agent with no model that replies from ``replies``, in order (running out fails the test)."""
    agent = autogen.ConversableAgent(name, llm_config=False, human_input_mode="NEVER")
    script = list(replies)

    def reply(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None) -> tuple[bool, Any]:
        return True, script.pop(0)

    agent.register_reply([autogen.Agent, None], reply, position=0)
    return agent


def ends_with_terminate(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, str) and content.rstrip().endswith("TERMINATE")


def proxy(mode: compat.HumanInputMode = "NEVER", max_auto_replies: int = 10) -> autogen.UserProxyAgent:
    return compat.user_proxy_agent(
        "user",
        human_input_mode=mode,
        is_termination_msg=ends_with_terminate,
        default_auto_reply="CONTINUE",
        max_consecutive_auto_reply=max_auto_replies,
    )


class ScriptedIO(compat.AutoGenIO):
    """A run's IOStream: records what AutoGen prints and streams, answers from ``answers``."""

    def __init__(self, *answers: str, on_stream: Callable[[str], None] | None = None) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []
        self.printed: list[str] = []
        self.streamed: list[str] = []
        self._on_stream = on_stream

    def on_print(self, text: str) -> None:
        self.printed.append(text)

    def on_stream(self, text: str) -> None:
        self.streamed.append(text)
        if self._on_stream is not None:
            self._on_stream(text)

    def on_input(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)


@pytest.fixture
def io() -> Iterator[ScriptedIO]:
    """A run's IOStream installed for the test (nothing of AutoGen's reaches stdout)."""
    stream = ScriptedIO()
    with compat.install_io(stream):
        yield stream


def contents(messages: list[dict[str, Any]]) -> list[tuple[str | None, Any]]:
    return [(m.get("name"), m.get("content")) for m in messages]


def chat(initiator: autogen.ConversableAgent, recipient: autogen.ConversableAgent, max_turns: int = 10) -> None:
    compat.start_chat(initiator, recipient, "q", max_turns=max_turns, cache=None)


# --- The model client -------------------------------------------------------------------------


def test_openai_kwargs_is_a_property_that_never_reads_self() -> None:
    """cache_openai_kwargs (called at startup, engine.open_engine) replaces
    OpenAIWrapper.openai_kwargs, a property, with its value computed once: it must be a property
    of the class whose getter does not use ``self``, and name the OpenAI client's arguments the
    service's config entries use (so they go to the OpenAI client, the rest to AutoGen)."""
    prop = OpenAIWrapper.__dict__.get("openai_kwargs")
    assert isinstance(prop, property) and prop.fget is not None, "OpenAIWrapper.openai_kwargs is no longer a property"
    original = getattr(prop.fget, "__wrapped__", prop.fget)
    kwargs = original(None)
    assert {"api_key", "base_url", "http_client", "timeout", "max_retries"} <= set(kwargs)
    assert "price" not in kwargs and "cache_seed" not in kwargs
    compat.cache_openai_kwargs()
    cached = OpenAIWrapper.__dict__["openai_kwargs"]
    assert isinstance(cached, property) and cached.fget is not None and cached.fget(None) == frozenset(kwargs)
    compat.cache_openai_kwargs()
    assert OpenAIWrapper.__dict__["openai_kwargs"] is cached


def test_agents_built_with_the_same_arguments_share_one_openai_client(io: ScriptedIO) -> None:
    """share_openai_clients (startup, engine.open_engine) replaces the name ``OpenAI`` in
    autogen.oai.client, which AutoGen's model client calls to build an SDK client for each agent
    (OpenAIWrapper._register_default_client), by a subclass that builds one per distinct set of
    arguments. Agents built from one llm_config share one, which calls the model for each as
    before; other arguments, or arguments not comparable by value, get a client of their own;
    the constructor's signature (OpenAIWrapper.openai_kwargs) is the SDK's."""
    import inspect

    import autogen.oai.client as client_module

    register = OpenAIWrapper._register_default_client
    nested = [c for c in register.__code__.co_consts if inspect.iscode(c) and c.co_name == "create_openai_client"]
    assert nested and "OpenAI" in nested[0].co_names  # the name AutoGen builds its SDK clients by
    getter = OpenAIWrapper.__dict__["openai_kwargs"].fget
    openai_kwargs = getattr(getter, "__wrapped__", getter)  # uncached: it reads the constructor's signature
    kwargs_before = openai_kwargs(None)
    compat.share_openai_clients()
    shared = vars(client_module)["OpenAI"]
    assert issubclass(shared, openai.OpenAI) and shared is not openai.OpenAI
    assert inspect.getfullargspec(shared.__init__) == inspect.getfullargspec(openai.OpenAI.__init__)
    assert openai_kwargs(None) == kwargs_before

    def sdk_client(agent: autogen.ConversableAgent) -> Any:
        return cast(Any, agent.client)._clients[0]._oai_client

    model = FakeModel("one", "two", "three")
    config = llm_config(model)
    first = autogen.AssistantAgent("first", llm_config=config)
    second = autogen.AssistantAgent("second", llm_config=config)
    assert sdk_client(first) is sdk_client(second) and isinstance(sdk_client(first), openai.OpenAI)
    for agent, answer in ((first, "one"), (second, "two")):
        assert agent.generate_reply([{"role": "user", "content": "q"}]) == answer
    entry = config["config_list"][0]
    other_key = {**config, "config_list": [{**entry, "api_key": "another"}]}
    third = autogen.AssistantAgent("third", llm_config=other_key)
    assert sdk_client(third) is not sdk_client(first) and sdk_client(third).api_key == "another"
    headers = {**config, "config_list": [{**entry, "default_headers": {"x-team": "a"}}]}
    fourth, fifth = (autogen.AssistantAgent(name, llm_config=headers) for name in ("fourth", "fifth"))
    assert sdk_client(fourth) is not sdk_client(fifth)  # a dict of headers: a client each, as before
    assert sdk_client(fourth).default_headers["x-team"] == "a"
    assert fourth.generate_reply([{"role": "user", "content": "q"}]) == "three"
    compat.share_openai_clients()
    assert vars(client_module)["OpenAI"] is shared


def test_the_openai_clients_used_last_are_the_ones_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """share_openai_clients keeps SHARED_OPENAI_CLIENTS argument sets, the least recently used
    dropped first: a new set is always shared, whatever came before it."""
    import autogen.oai.client as client_module

    compat.share_openai_clients()
    monkeypatch.setattr(compat, "SHARED_OPENAI_CLIENTS", 2)
    config = llm_config(FakeModel())
    entry = config["config_list"][0]

    def sdk_client(key: str) -> Any:
        agent = autogen.AssistantAgent("a", llm_config={**config, "config_list": [{**entry, "api_key": key}]})
        return cast(Any, agent.client)._clients[0]._oai_client

    first = sdk_client("key-1")
    assert sdk_client("key-2") is sdk_client("key-2")
    assert sdk_client("key-1") is first  # used again: now the most recent
    third = sdk_client("key-3")  # key-2, the least recently used, is dropped
    assert sdk_client("key-3") is third and sdk_client("key-1") is first
    assert len(vars(client_module)["OpenAI"]._shared) == 2


def test_optional_import_checks_are_a_module_function_of_what_is_installed() -> None:
    """cache_import_checks (startup, engine.open_engine) replaces
    autogen.import_utils.get_missing_imports, which require_optional_import looks up as a module
    global each time a model client is built, by a version that remembers the checks that found
    nothing missing. The original must take a module name or names and return the missing ones;
    the cached version gives the same answers, checks a missing module again, and is installed once."""
    import autogen.import_utils as import_utils

    original = getattr(import_utils.get_missing_imports, "__wrapped__", import_utils.get_missing_imports)
    assert original("openai>=2.30.0") == {}
    assert original(["openai", "httpx"]) == {}
    assert "agent_api_no_such_module" in original("agent_api_no_such_module")
    assert "require_optional_import" in dir(import_utils)
    assert "get_missing_imports" in import_utils.require_optional_import.__code__.co_names
    compat.cache_import_checks()
    cached = import_utils.get_missing_imports
    assert cached("openai>=2.30.0") == {} and cached(["openai", "httpx"]) == {}
    assert "agent_api_no_such_module" in cached("agent_api_no_such_module")
    assert "agent_api_no_such_module" in cached("agent_api_no_such_module")  # a miss is not remembered
    compat.cache_import_checks()
    assert import_utils.get_missing_imports is cached


def test_reply_triggers_match_autogens_agents_as_autogen_matches_them() -> None:
    """fast_trigger_matching (startup, engine.open_engine) replaces
    ConversableAgent._match_trigger(trigger, sender), which generate_reply calls for each reply
    function: AutoGen's agents register theirs with the trigger [Agent, None], and a
    ConversableAgent sender matches Agent at once; every answer is the one AutoGen gives."""
    import inspect

    from autogen.agentchat.agent import Agent

    agent, other = proxy(), proxy()
    assert any(entry["trigger"] == [Agent, None] for entry in agent._reply_func_list)
    assert "_match_trigger" in autogen.ConversableAgent.generate_reply.__code__.co_names
    original = getattr(autogen.ConversableAgent._match_trigger, "__wrapped__", autogen.ConversableAgent._match_trigger)
    assert list(inspect.signature(original).parameters) == ["self", "trigger", "sender"]
    compat.fast_trigger_matching()
    patched = autogen.ConversableAgent._match_trigger
    assert patched.__wrapped__ is original  # type: ignore[attr-defined]
    triggers: list[Any] = [Agent, [Agent, None], None, "user", "nobody", autogen.UserProxyAgent, autogen.AssistantAgent]
    triggers += [lambda sender: sender is other, [None, "user"]]
    for trigger in triggers:
        for sender in (other, None):
            if sender is None and isinstance(trigger, str):
                continue  # AutoGen raises for a name trigger without a sender, both ways
            assert agent._match_trigger(trigger, sender) == original(agent, trigger, sender), (trigger, sender)
    compat.fast_trigger_matching()
    assert autogen.ConversableAgent._match_trigger is patched


def test_protocol_checks_give_the_answers_typing_gives() -> None:
    """fast_protocol_checks (startup, engine.open_engine) remembers, on Python 3.11, what typing
    works out for a runtime-checkable protocol on every isinstance (AutoGen's Agent in
    register_reply and reply matching): its members, and whether they are all methods. Every
    answer is the one typing gives, and a protocol class that is gone is not kept alive. On 3.12
    and later nothing is patched."""
    import gc
    import sys
    import typing
    import weakref

    from autogen.agentchat.agent import Agent

    names = ("_get_protocol_attrs", "_is_callable_members_only")
    before = {name: getattr(typing, name, None) for name in names}
    compat.fast_protocol_checks()
    if sys.version_info >= (3, 12):
        assert {name: getattr(typing, name, None) for name in names} == before
        return
    patched = {name: getattr(typing, name) for name in names}
    originals = {name: function.__wrapped__ for name, function in patched.items()}
    assert set(names) <= set(type(Agent).__instancecheck__.__code__.co_names)  # what is patched is used

    @typing.runtime_checkable
    class Named(typing.Protocol):
        name: str

        def describe(self) -> str: ...

    class Described:
        name = "x"

        def describe(self) -> str:
            return self.name

    for protocol in (Agent, Named, typing.SupportsInt):
        for name in names:
            assert patched[name](protocol) == originals[name](protocol)
        assert patched["_get_protocol_attrs"](protocol) is patched["_get_protocol_attrs"](protocol)  # remembered
    samples: list[Any] = [proxy(), Described(), [Agent, None], "user", 3, None, autogen.AssistantAgent]

    protocols = (Agent, Named, typing.SupportsInt)

    def answers(protocols: tuple[type, ...]) -> list[list[bool]]:
        return [[isinstance(x, protocol) for x in samples] for protocol in protocols]

    for name in names:
        setattr(typing, name, originals[name])
    try:
        expected = answers(protocols)
    finally:
        for name in names:
            setattr(typing, name, patched[name])
    assert answers(protocols) == expected
    assert expected[0][:3] == [True, False, False] and expected[1][:3] == [False, True, False]

    gone = weakref.ref(Named)
    del Named, protocols
    gc.collect()
    assert gone() is None
    compat.fast_protocol_checks()
    assert {name: getattr(typing, name) for name in names} == patched


def test_autogens_console_loggers_and_its_cost_warning(io: ScriptedIO) -> None:
    """quiet_autogen_logging (llm.py, at startup) takes the console handlers off the loggers of
    the modules AUTOGEN_STDOUT_LOGGERS names, and drops the "The cost will be 0" warning the
    model client logs for every reply of a model it has no price for."""
    import autogen.oai.client
    import autogen.oai.cohere

    assert [autogen.oai.client.logger.name, autogen.oai.cohere.logger.name] == list(compat.AUTOGEN_STDOUT_LOGGERS)
    logger = logging.getLogger("autogen.oai.client")
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    capture = Capture()
    filters, logger.filters = logger.filters, []
    logger.addHandler(capture)
    try:
        assistant("assistant", FakeModel("hi"), price=False).generate_reply([{"role": "user", "content": "q"}])
    finally:
        logger.removeHandler(capture)
        logger.filters = filters
    warnings = [r for r in records if "The cost will be 0" in r.getMessage()]
    assert warnings, [r.getMessage() for r in records]
    compat.quiet_autogen_logging()
    assert logger.handlers == [] and logger.propagate
    assert not all(f.filter(warnings[0]) for f in logger.filters if isinstance(f, logging.Filter))


def test_an_llm_config_object_shared_across_agents_is_not_copied(io: ScriptedIO) -> None:
    """AutoGen deep-copies a dict llm_config for every agent (ConversableAgent.__init__); the
    service's HTTP client (llm.SharedHTTPClient, a SharedAcrossAgents) must come out as itself,
    and be the client the model is called through."""
    assert issubclass(SharedHTTPClient, compat.SharedAcrossAgents)
    model = FakeModel("one", "two")
    config = llm_config(model)
    client = config["config_list"][0]["http_client"]
    first = autogen.AssistantAgent("first", llm_config=config)
    second = autogen.AssistantAgent("second", llm_config=config)
    for agent, answer in ((first, "one"), (second, "two")):
        assert cast(Any, agent.llm_config)["config_list"][0]["http_client"] is client
        assert agent.generate_reply([{"role": "user", "content": "q"}]) == answer
    assert len(model.requests) == 2
    with pytest.raises(TypeError, match="__deepcopy__"):  # a plain client is copied, and cannot be
        plain = {**config, "config_list": [{**config["config_list"][0], "http_client": httpx.Client()}]}
        autogen.AssistantAgent("third", llm_config=plain)


def test_usage_by_model_sums_what_the_model_reported(io: ScriptedIO) -> None:
    """messages.usage_of (a run's ``usage``) reads gather_usage_summary's
    usage_excluding_cached_inference: counts per model, agents without a model skipped."""
    agent = assistant("assistant", FakeModel("hi"))
    agent.generate_reply([{"role": "user", "content": "q"}])
    usage = compat.usage_by_model([agent, proxy()])
    assert set(usage) == {MODEL}
    assert {k: usage[MODEL][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
    }
    assert usage_of([agent]) == Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)


def test_model_errors_come_out_of_the_chat(io: ScriptedIO) -> None:
    """runner.translate_model_error maps what comes out of a chat: AutoGen turns a timed-out model
    call into TimeoutError (MODEL_TIMEOUT_ERRORS) and lets the OpenAI client's other errors out as
    they are (a 429 with its response, for Retry-After)."""
    timing_out = assistant("assistant", FakeModel(httpx.ReadTimeout("slow")))
    with pytest.raises(compat.MODEL_TIMEOUT_ERRORS) as timed_out:
        timing_out.generate_reply([{"role": "user", "content": "q"}])
    assert isinstance(translate_model_error(timed_out.value), ModelTimeout)
    limited = httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "7"})
    rate_limited = assistant("assistant", FakeModel(limited))
    with pytest.raises(openai.RateLimitError) as refused:
        rate_limited.generate_reply([{"role": "user", "content": "q"}])
    mapped = translate_model_error(refused.value)
    assert isinstance(mapped, ModelRateLimited) and mapped.headers == {"Retry-After": "7"}


def test_the_response_cache_protocol(io: ScriptedIO) -> None:
    """cache.RunCache, passed as initiate_chat(cache=...) (start_chat): AutoGen enters it, calls
    get(key, None) and on a miss set(key, response) with the very same key object (RunCache
    hashes a key once); the key is the model request, a dict with ``stream`` in it
    (ResponseCache.key leaves that out), the response a ChatCompletion (all the cache stores);
    a hit is the reply."""

    class RecordingCache:
        def __init__(self) -> None:
            self.store: dict[str, Any] = {}
            self.calls: list[tuple[str, Any]] = []

        def get(self, key: Any, default: Any = None) -> Any:
            self.calls.append(("get", key))
            return self.store.get(json.dumps(key, sort_keys=True), default)

        def set(self, key: Any, value: Any) -> None:
            self.calls.append(("set", key))
            self.store[json.dumps(key, sort_keys=True)] = value

        def close(self) -> None: ...

        def __enter__(self) -> RecordingCache:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    cache = RecordingCache()
    model = FakeModel("cached answer TERMINATE")
    for _ in range(2):
        agent, user = assistant("assistant", model), proxy()
        compat.start_chat(user, agent, "q", max_turns=1, cache=cache)
        assert contents(user.chat_messages[agent])[-1] == ("assistant", "cached answer TERMINATE")
    assert len(model.requests) == 1
    assert [call for call, _ in cache.calls] == ["get", "set", "get"]
    key = cache.calls[0][1]
    assert cache.calls[1][1] is key and cache.calls[2][1] == key
    assert isinstance(key, dict) and key["stream"] is False and key["messages"][-1]["content"] == "q"
    assert all(isinstance(value, ChatCompletion) for value in cache.store.values())


# --- Tools --------------------------------------------------------------------------------------


def test_tool_schema_comes_from_the_signature_and_annotated_descriptions() -> None:
    """tools.register_tool builds each tool's schema with tool_schema: the OpenAI tool format,
    parameter descriptions from Annotated[T, "text"]."""

    def lookup(city: Annotated[str, "the city to look up"], limit: int = 3) -> str:
        return city

    assert compat.tool_schema(lookup, name="lookup", description="Look a city up.") == {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a city up.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city to look up"},
                    "limit": {"type": "integer", "default": 3, "description": "limit"},
                },
                "required": ["city"],
            },
        },
    }


def test_tools_in_llm_config_reach_the_model_and_run_with_keyword_arguments(io: ScriptedIO) -> None:
    """AgentSpec.llm_config puts the tool schemas in llm_config["tools"] (sent with every model
    call); AgentSpec.attach_tools registers the functions on the executor (register_tools), which
    AutoGen calls with keyword arguments (teams.approval_required relies on it) and answers with
    ``tool_responses``, which the model reads as tool messages."""
    calls: list[dict[str, int]] = []

    def add(*, a: int, b: int) -> str:
        calls.append({"a": a, "b": b})
        return str(a + b)

    schema = compat.tool_schema(add, name="add", description="Add.")
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    model = FakeModel({"role": "assistant", "content": None, "tool_calls": [call]}, "3 TERMINATE")
    config = {**llm_config(model), "tools": [schema]}
    agent, user = autogen.AssistantAgent("assistant", llm_config=config), proxy()
    compat.register_tools(user, {"add": add})
    chat(user, agent)
    assert calls == [{"a": 1, "b": 2}]
    assert [r["tools"] for r in model.requests] == [[schema], [schema]]
    responses = [m for m in compat.messages_since(agent, user, 0) if m.get("tool_responses")]
    assert [m["tool_responses"] for m in responses] == [[{"tool_call_id": "call_1", "role": "tool", "content": "3"}]]
    assert {"tool_call_id": "call_1", "role": "tool", "content": "3"} in model.requests[1]["messages"]


# --- Output and input -------------------------------------------------------------------------


def test_streamed_pieces_are_light_for_the_services_stream_and_events_for_any_other() -> None:
    """light_stream_events (startup, engine.open_engine) replaces the StreamEvent name that
    autogen.oai.client's OpenAIClient.create calls for each streamed piece: the service's own
    IOStream (an AutoGenIO) then gets StreamPieces with the same text, any other IOStream still
    gets AutoGen's StreamEvent."""
    from autogen.oai.client import OpenAIClient

    assert "StreamEvent" in OpenAIClient.create.__code__.co_names
    compat.light_stream_events()

    class Recording(ScriptedIO):
        def __init__(self) -> None:
            super().__init__()
            self.sent: list[object] = []

        def send(self, message: Any) -> None:
            self.sent.append(message)
            super().send(message)

    ours = Recording()
    with compat.install_io(ours):
        agent, user = assistant("assistant", FakeModel("Hel|lo TERMINATE"), stream=True), proxy()
        compat.start_chat(user, agent, "q", max_turns=2, cache=None)
    pieces = [m for m in ours.sent if isinstance(m, compat.StreamPiece)]
    assert [p.text for p in pieces] == ["Hel", "lo TERMINATE"] == ours.streamed
    assert not any(isinstance(m, StreamEvent) for m in ours.sent)

    class Other:  # an IOStream that is not the service's
        def __init__(self) -> None:
            self.sent: list[object] = []

        def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
            pass

        def send(self, message: Any) -> None:
            self.sent.append(message)

        def input(self, prompt: str = "", *, password: bool = False) -> str:
            return ""

    other = Other()
    with IOStream.set_default(other):
        agent, user = assistant("assistant", FakeModel("Hel|lo TERMINATE"), stream=True), proxy()
        compat.start_chat(user, agent, "q", max_turns=2, cache=None)
    events = [m for m in other.sent if isinstance(m, StreamEvent)]
    assert [compat.stream_text(e) for e in events] == ["Hel", "lo TERMINATE"]


def test_streamed_text_reaches_the_installed_iostream_as_stream_events(capsys: pytest.CaptureFixture[str]) -> None:
    """run.RunIOStream gets each streamed piece of a model's reply through send (stream_text): a
    StreamEvent wrapped so that ``.content`` is the event and ``.content.content`` the text;
    every other event and AutoGen's prints go through the stream too, none to stdout."""
    wrapped: Any = StreamEvent(content="piece")
    assert wrapped.content.content == "piece" and compat.stream_text(wrapped) == "piece"
    assert compat.stream_text("piece") is None and compat.stream_text(object()) is None
    assert isinstance(ScriptedIO(), IOStreamProtocol)
    stream = ScriptedIO()
    model = FakeModel("Hel|lo, |world TERMINATE")
    with compat.install_io(stream):
        agent, user = assistant("assistant", model, stream=True), proxy()
        compat.start_chat(user, agent, "q", max_turns=2, cache=None)
    assert model.requests[0]["stream"] is True
    assert stream.streamed == ["Hel", "lo, ", "world TERMINATE"]
    assert capsys.readouterr().out == ""


def test_an_exception_from_the_iostream_stops_the_model_call_unwrapped() -> None:
    """RunIOStream.on_stream raises RunCancelled to abort the model's stream of a cancelled run;
    it must come out of the chat as it is."""

    def cancel(text: str) -> None:
        raise Cancelled()

    stream = ScriptedIO(on_stream=cancel)
    with compat.install_io(stream), pytest.raises(Cancelled):
        agent, user = assistant("assistant", FakeModel("a|b|c"), stream=True), proxy()
        compat.start_chat(user, agent, "q", max_turns=2, cache=None)
    assert stream.streamed == ["a"]


def test_install_io_is_seen_by_its_own_thread_only() -> None:
    """run.run_io installs a run's stream per run thread (IOStream.set_default, a ContextVar):
    concurrent runs never see each other's stream."""
    stream = ScriptedIO()
    seen: list[object] = []
    with compat.install_io(stream):
        assert IOStream.get_default() is stream
        other = threading.Thread(target=lambda: seen.append(IOStream.get_default()))
        other.start()
        other.join()
    assert seen and seen[0] is not stream
    assert IOStream.get_default() is not stream


def test_a_human_input_question_goes_to_the_installed_iostream(io: ScriptedIO) -> None:
    """The human-in-the-loop feature (run.RunIOStream.on_input): AutoGen's get_human_input asks
    IOStream.get_default().input(prompt) and returns the answer as it is."""
    io.answers.append("my words")
    assert proxy("ALWAYS").get_human_input("Your turn: ") == "my words"
    assert io.prompts == ["Your turn: "]


# --- Hooks --------------------------------------------------------------------------------------


def test_hooks_run_before_each_reply_and_for_each_sent_message(io: ScriptedIO) -> None:
    """run.instrument (register_hooks): before_reply as an agent starts a reply, before_send for
    every message it sends (the first included), in the order of the conversation."""
    seen: list[tuple[str, ...]] = []
    agent, user = scripted("assistant", "one", "two TERMINATE"), proxy()
    for member in (agent, user):
        compat.register_hooks(
            member,
            before_reply=lambda member=member: seen.append(("reply", member.name)),  # type: ignore[misc]
            before_send=lambda sender, message: seen.append(("send", sender.name, str(message))),
        )
    chat(user, agent)
    assert seen == [
        ("send", "user", "q"),
        ("reply", "assistant"),
        ("send", "assistant", "one"),
        ("reply", "user"),
        ("send", "user", "CONTINUE"),
        ("reply", "assistant"),
        ("send", "assistant", "two TERMINATE"),
        ("reply", "user"),
    ]


def test_an_exception_from_a_hook_stops_the_chat_unwrapped(io: ScriptedIO) -> None:
    """A cancelled run stops between turns: run.instrument's before_reply raises RunCancelled,
    which must come out of the chat as it is, before the agent replies."""
    agent, user = scripted("assistant", "never said"), proxy()

    def cancel() -> None:
        raise Cancelled()

    compat.register_hooks(agent, before_reply=cancel, before_send=lambda sender, message: None)
    with pytest.raises(Cancelled):
        chat(user, agent)
    assert contents(agent.chat_messages[user]) == [("user", "q")]


# --- Conversations ------------------------------------------------------------------------------


def test_restored_history_is_what_the_model_sees_and_the_chat_keeps_it(io: ScriptedIO) -> None:
    """teams.PairTeam: history restored into both agents (restore_history) is sent to the model
    before the new message, start_chat (clear_history=False) keeps it, and messages_since gives
    only the turn's messages, each named by its sender."""
    model = FakeModel("new answer TERMINATE")
    agent, user = assistant("assistant", model), proxy()
    earlier = [{"role": "user", "content": "old q", "name": "user"}, {"role": "assistant", "content": "old a"}]
    restored = compat.restore_history(agent, user, earlier)
    compat.restore_history(user, agent, [{**earlier[0], "role": "assistant"}, {**earlier[1], "role": "user"}])
    assert restored == 2
    chat(user, agent)
    sent = [(m["role"], m["content"]) for m in model.requests[0]["messages"]]
    assert sent == [("system", "You are assistant."), ("user", "old q"), ("assistant", "old a"), ("user", "q")]
    assert contents(compat.messages_since(agent, user, restored)) == [
        ("user", "q"),
        ("assistant", "new answer TERMINATE"),
    ]
    assert len(user.chat_messages[agent]) == 4


def test_never_mode_nudges_with_the_default_reply_until_max_turns(io: ScriptedIO) -> None:
    """teams.user_proxy in NEVER mode: a reply that is not a termination message gets the
    default auto reply (CONTINUE), and max_turns bounds the round trips."""
    agent, user = scripted("assistant", "part 1", "part 2", "part 3"), proxy()
    chat(user, agent, max_turns=2)
    assert contents(agent.chat_messages[user]) == [
        ("user", "q"),
        ("assistant", "part 1"),
        ("user", "CONTINUE"),
        ("assistant", "part 2"),
    ]
    assert io.prompts == []


def test_always_mode_asks_after_each_reply_and_exit_ends(io: ScriptedIO) -> None:
    """human_input: always (ALWAYS): the person is asked after every reply; their words go to the
    assistant as the user's; "exit" (END_CONVERSATION) ends the chat at once."""
    io.answers.extend(["more please", compat.END_CONVERSATION])
    agent, user = scripted("assistant", "a1", "a2"), proxy("ALWAYS")
    chat(user, agent)
    assert contents(agent.chat_messages[user]) == [
        ("user", "q"),
        ("assistant", "a1"),
        ("user", "more please"),
        ("assistant", "a2"),
    ]
    assert len(io.prompts) == 2


def test_always_mode_empty_answer_goes_on_or_ends_after_a_final_answer(io: ScriptedIO) -> None:
    """ALWAYS: an empty answer lets the chat go on by itself (the default auto reply), and ends
    it when the message answered is a termination message."""
    io.answers.extend(["", ""])
    agent, user = scripted("assistant", "a1", "a2 TERMINATE"), proxy("ALWAYS")
    chat(user, agent)
    assert contents(agent.chat_messages[user]) == [
        ("user", "q"),
        ("assistant", "a1"),
        ("user", "CONTINUE"),
        ("assistant", "a2 TERMINATE"),
    ]
    assert io.answers == []


def test_always_mode_words_in_reply_to_tool_calls_interrupt_them(io: ScriptedIO) -> None:
    """ALWAYS: a person who writes instead of letting tool calls run answers each call
    "USER INTERRUPTED" along with their words (the calls never run)."""
    io.answers.append("do not")
    ran: list[str] = []
    user = proxy("ALWAYS")
    compat.register_tools(user, {"add": lambda **arguments: ran.append("add")})
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    sender = scripted("assistant")
    reply = user.generate_reply([{"role": "assistant", "content": None, "tool_calls": [call]}], sender=sender)
    assert reply == {
        "role": "user",
        "content": "do not",
        "tool_responses": [{"role": "tool", "tool_call_id": "call_1", "content": "USER INTERRUPTED"}],
    }
    assert ran == []


def test_terminate_mode_asks_only_about_a_final_answer(io: ScriptedIO) -> None:
    """human_input: on_terminate (TERMINATE): the person is asked only about a termination
    message; words start another round, an empty answer ends the chat."""
    io.answers.extend(["try again", ""])
    agent, user = scripted("assistant", "a1", "a2 TERMINATE", "a3 TERMINATE"), proxy("TERMINATE")
    chat(user, agent)
    assert contents(agent.chat_messages[user]) == [
        ("user", "q"),
        ("assistant", "a1"),
        ("user", "CONTINUE"),
        ("assistant", "a2 TERMINATE"),
        ("user", "try again"),
        ("assistant", "a3 TERMINATE"),
    ]
    assert len(io.prompts) == 2


# --- Group chats --------------------------------------------------------------------------------


def _group(
    members: list[autogen.ConversableAgent],
    order: list[str],
    *,
    max_round: int = 10,
    ends: Callable[[dict[str, Any]], bool] = lambda message: False,
    history: list[dict[str, Any]] | None = None,
) -> tuple[autogen.GroupChat, autogen.GroupChatManager, list[tuple[Any, Any]]]:
    """A group whose speakers are picked from ``order`` by name (or AUTO_SELECTION)."""
    by_name = {member.name: member for member in members}
    picks = list(order)
    calls: list[tuple[Any, Any]] = []

    def select(last_speaker: autogen.Agent, groupchat: autogen.GroupChat) -> autogen.Agent | str:
        calls.append((last_speaker, groupchat))
        pick = picks.pop(0)
        return by_name.get(pick, pick)

    groupchat, manager = compat.group_chat(
        members,
        history or [],
        max_round=max_round,
        select_speaker=select,
        selector_llm_config=llm_config(FakeModel()),
        is_termination_msg=ends,
    )
    return groupchat, manager, calls


def test_group_chat_keeps_its_history_picks_speakers_and_ends_on_the_managers_test(io: ScriptedIO) -> None:
    """teams.GroupTeam: the group's messages continue the restored history, named by speaker, in
    the group chat built (group_messages_since: the manager runs a shallow copy of it, sharing
    its messages); the selection function is called with (last speaker, group chat) and the
    agent it returns speaks, even twice in a row; only the manager's is_termination_msg ends the
    chat (a TERMINATE from another agent does not)."""
    researcher = scripted("researcher", "facts TERMINATE", "more facts")
    writer = scripted("writer", "answer TERMINATE")
    history = [{"role": "user", "content": "old q", "name": "user"}]
    groupchat, manager, calls = _group(
        [researcher, writer],
        ["researcher", "researcher", "writer"],
        ends=lambda m: m.get("name") == "writer" and ends_with_terminate(m),
        history=history,
    )
    chat(proxy(), manager, max_turns=1)
    assert contents(compat.group_messages_since(groupchat, 1)) == [
        ("user", "q"),
        ("researcher", "facts TERMINATE"),
        ("researcher", "more facts"),
        ("writer", "answer TERMINATE"),
    ]
    assert [last.name for last, _ in calls] == ["user", "researcher", "researcher"]
    assert all(isinstance(chat, autogen.GroupChat) and chat.messages is groupchat.messages for _, chat in calls)
    assert contents(groupchat.messages[:1]) == [("user", "old q")]


def test_group_chat_ends_after_max_round_messages(io: ScriptedIO) -> None:
    """GroupTeam's rounds: max_round counts the messages, the opening one included."""
    researcher, writer = scripted("researcher", "r1", "r2"), scripted("writer", "w1")
    groupchat, manager, _ = _group([researcher, writer], ["researcher", "writer", "researcher"], max_round=4)
    chat(proxy(), manager, max_turns=1)
    assert [name for name, _ in contents(groupchat.messages)] == ["user", "researcher", "writer", "researcher"]


def test_a_group_member_that_gives_no_reply_ends_the_group_chat(io: ScriptedIO) -> None:
    """GroupTeam with a person in the loop: the user's seat is a member; when the person ends
    the conversation ("exit") the proxy's reply is None, and the group chat ends on it."""
    io.answers.append(compat.END_CONVERSATION)
    researcher, writer, user = scripted("researcher", "facts"), scripted("writer", "answer"), proxy("ALWAYS", 1)
    groupchat, manager, _ = _group([researcher, writer, user], ["researcher", "writer", "user", "researcher"])
    chat(user, manager, max_turns=1)
    assert [name for name, _ in contents(groupchat.messages)] == ["user", "researcher", "writer"]
    assert len(io.prompts) == 1


def test_auto_selection_lets_the_managers_model_pick(io: ScriptedIO) -> None:
    """GroupTeam with speaker_selection auto: the selection function returns AUTO_SELECTION and
    the model of selector_llm_config names the next speaker."""
    researcher, writer = scripted("researcher", "facts"), scripted("writer", "answer")
    model = FakeModel("writer")
    groupchat, manager = compat.group_chat(
        [researcher, writer],
        [],
        max_round=2,
        select_speaker=lambda last_speaker, groupchat: compat.AUTO_SELECTION,
        selector_llm_config=llm_config(model),
        is_termination_msg=lambda message: False,
    )
    chat(proxy(), manager, max_turns=1)
    assert [name for name, _ in contents(groupchat.messages)] == ["user", "writer"]
    assert len(model.requests) == 1


def test_a_group_message_without_content_is_stored_as_none_text() -> None:
    """messages.from_autogen drops MISSING_GROUP_CONTENT from a message of tool calls: GroupChat
    stores a missing content as str(None)."""
    agent = scripted("researcher")
    groupchat, _, _ = _group([agent, scripted("writer")], [])
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    groupchat.append({"role": "assistant", "content": None, "tool_calls": [call]}, agent)
    assert groupchat.messages[-1]["content"] == compat.MISSING_GROUP_CONTENT
    assert groupchat.messages[-1]["name"] == "researcher"
