"""Every place the service relies on AutoGen beyond its plain public API.

The rest of the service builds agents with AutoGen's documented constructors; whatever goes
further (a patched property, a private-looking import, writes into an agent's conversation, the
shape of an event, hook names, the exact semantics of the user proxy and the group chat it
counts on) is here, each documented with what it relies on and who uses it. Every item is
checked against the installed AutoGen by ``tests/unit/test_autogen_contract.py``, which runs in
about a second with no model and no network: after an AutoGen upgrade, run it first; a failure
names the behaviour that changed.

Nothing here imports the service's other modules: it is the bottom of the engine.
"""

from __future__ import annotations

import logging
import sys
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Self

import autogen
from autogen.agentchat.utils import gather_usage_summary
from autogen.events.client_events import StreamEvent
from autogen.io.base import IOStream
from autogen.tools import get_function_schema
from autogen.tools.dependency_injection import _string_metadata_to_description_field

# --- The model client -------------------------------------------------------------------------


def cache_openai_kwargs() -> None:
    """Compute AutoGen's ``OpenAIWrapper.openai_kwargs`` once instead of on every lookup.

    In autogen 0.14 it is a property that calls ``inspect.getfullargspec`` on two OpenAI client
    constructors, and it is evaluated once per key inside dict comprehensions: about twenty
    times per agent built, a third of the CPU of a whole one-turn conversation. Its value
    depends only on the installed openai package (the property never reads ``self``), so it is
    computed once here. If AutoGen no longer has it as a property, nothing is patched.
    Called once at startup (``engine.open_engine``).
    """
    from autogen.oai.client import OpenAIWrapper

    prop = OpenAIWrapper.__dict__.get("openai_kwargs")
    if not isinstance(prop, property) or prop.fget is None:  # changed upstream: leave it alone
        return
    if hasattr(prop.fget, "__wrapped__"):  # cached already
        return
    value = frozenset(prop.fget(None))

    def cached(self: Any) -> frozenset[str]:
        return value

    cached.__wrapped__ = prop.fget  # type: ignore[attr-defined]  # the original, for the contract test
    OpenAIWrapper.openai_kwargs = property(cached)  # type: ignore[method-assign,assignment]


def cache_import_checks() -> None:
    """Remember AutoGen's optional-import checks that found nothing missing.

    In autogen 0.14 every model client an agent builds goes through ``require_optional_import``,
    which calls ``import_utils.get_missing_imports`` and so parses package version strings each
    time: about 5% of the CPU of a conversation under load. A check that found nothing missing
    stays true for the life of the process (an imported module stays imported), so only those
    results are kept; a module found missing is checked again next time. If AutoGen no longer has
    the function, nothing is patched. Called once at startup (``engine.open_engine``).
    """
    import autogen.import_utils as import_utils

    check = getattr(import_utils, "get_missing_imports", None)
    if check is None or hasattr(check, "__wrapped__"):  # changed upstream, or cached already
        return
    satisfied: set[str | tuple[str, ...]] = set()

    def cached(modules: str | Iterable[str]) -> dict[str, str]:
        key = modules if isinstance(modules, str) else tuple(modules)
        if key in satisfied:
            return {}
        missing: dict[str, str] = check(key)
        if not missing:
            satisfied.add(key)
        return missing

    cached.__wrapped__ = check  # type: ignore[attr-defined]  # the original, for the contract test
    import_utils.get_missing_imports = cached


def share_openai_clients() -> None:
    """Build one OpenAI SDK client per distinct set of arguments, shared by every agent built with it.

    AutoGen's model client (``OpenAIWrapper``) builds an ``openai.OpenAI`` for each agent it
    serves (``_register_default_client``, through the module's name ``OpenAI``), and the SDK's
    constructor parses and rebuilds its base URL and headers each time: about a third of the CPU
    of building an agent, two agents per one-turn conversation. An SDK client holds nothing but
    that configuration and the HTTP client it sends through (the service's shared one), and the
    SDK supports sharing one across threads; so agents built with the same arguments share one.
    Arguments that cannot be compared by value (a dict of headers, say) get a client of their
    own, as before; the :data:`SHARED_OPENAI_CLIENTS` sets used last are kept.
    The name is replaced by a subclass, so ``isinstance`` and the constructor's signature (which
    ``OpenAIWrapper.openai_kwargs`` reads) are the SDK's. Called once at startup
    (``engine.open_engine``).
    """
    import autogen.oai.client as client_module

    sdk_client = getattr(client_module, "OpenAI", None)
    if not isinstance(sdk_client, type) or isinstance(sdk_client, _SharedInstances):
        return  # changed upstream, or installed already
    shared = _SharedInstances("SharedOpenAI", (sdk_client,), {"__module__": __name__})
    client_module.OpenAI = shared  # type: ignore[attr-defined,assignment]


SHARED_OPENAI_CLIENTS = 64  # distinct argument sets kept, the least recently used dropped first


class _SharedInstances(type):
    """A metaclass: a class's instances made once per set of keyword arguments equal by value."""

    def __init__(cls, *args: Any) -> None:
        super().__init__(*args)
        cls._shared: OrderedDict[tuple[tuple[str, Any], ...], Any] = OrderedDict()
        cls._sharing = threading.Lock()

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            return super().__call__(*args, **kwargs)
        key = tuple(sorted(kwargs.items()))
        try:
            hash(key)
        except TypeError:  # an argument not comparable by value
            return super().__call__(**kwargs)
        with cls._sharing:
            instance = cls._shared.get(key)
            if instance is not None:
                cls._shared.move_to_end(key)
                return instance
        instance = super().__call__(**kwargs)
        with cls._sharing:
            instance = cls._shared.setdefault(key, instance)
            while len(cls._shared) > SHARED_OPENAI_CLIENTS:
                cls._shared.popitem(last=False)
        return instance


def fast_trigger_matching() -> None:
    """Match the reply functions' ``Agent`` trigger nominally for AutoGen's own agents.

    Every agent registers its reply functions with the trigger ``[Agent, None]``, and
    ``ConversableAgent.generate_reply`` checks each one against the sender with
    ``_match_trigger``, that is ``isinstance(sender, Agent)``: ``Agent`` is a runtime-checkable
    protocol, and on Python 3.11 each such check walks the protocol's members (about 12 µs), up
    to a fifth of a worker's CPU for a one-turn conversation. A ``ConversableAgent`` sender is an
    ``Agent`` (it derives from it), so that answer is given at once; every other case goes to
    AutoGen's own method. Called once at startup (``engine.open_engine``).
    """
    from autogen.agentchat.agent import Agent

    original = autogen.ConversableAgent.__dict__.get("_match_trigger")
    if original is None or hasattr(original, "__wrapped__"):  # changed upstream, or installed already
        return

    def match_trigger(self: autogen.ConversableAgent, trigger: Any, sender: Any) -> bool:
        if trigger is Agent and isinstance(sender, autogen.ConversableAgent):
            return True
        matched: bool = original(self, trigger, sender)
        return matched

    match_trigger.__wrapped__ = original  # type: ignore[attr-defined]  # the original, for the contract test
    autogen.ConversableAgent._match_trigger = match_trigger  # type: ignore[method-assign]


def fast_protocol_checks() -> None:
    """Compute each runtime-checkable protocol's members once, as Python 3.12 does, on Python 3.11.

    AutoGen's ``Agent`` is a runtime-checkable protocol, and ``isinstance(x, Agent)`` runs where
    agents are built and chat: ``ConversableAgent.register_reply`` checks every trigger against
    ``(type, str, Agent, Callable, list)``, and a list trigger (every agent registers about ten
    with ``[Agent, None]``) reaches the protocol. On Python 3.11 each such check collects the
    protocol's members again by walking its classes (``typing._get_protocol_attrs``): about
    30 µs, a tenth of a worker's CPU for a one-turn conversation; then whether they are all
    methods (``typing._is_callable_members_only``), a look-up of each. Python 3.12 works both out
    once per protocol; here they are remembered per class (weakly: a protocol class can be
    collected). On Python 3.12 and later nothing is patched. Called once at startup
    (``engine.open_engine``).
    """
    import typing

    if sys.version_info >= (3, 12):
        return
    for name in ("_get_protocol_attrs", "_is_callable_members_only"):
        found = getattr(typing, name, None)
        if found is not None and not hasattr(found, "__wrapped__"):
            setattr(typing, name, _remembered_per_class(found))


def _remembered_per_class(function: Callable[[type], Any]) -> Callable[[type], Any]:
    """``function`` of a class, computed once per class (kept while the class lives)."""
    import weakref

    known: weakref.WeakKeyDictionary[type, Any] = weakref.WeakKeyDictionary()

    def remembered(cls: type) -> Any:
        try:
            return known[cls]
        except KeyError:
            value = known[cls] = function(cls)
            return value

    remembered.__wrapped__ = function  # type: ignore[attr-defined]  # the original, for the contract test
    return remembered


class _DropCostWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "The cost will be 0" not in record.getMessage()


AUTOGEN_STDOUT_LOGGERS = ("autogen.oai.client", "autogen.oai.cohere")


def quiet_autogen_logging() -> None:
    """Route AutoGen's loggers through the service's logging instead of straight to stdout.

    Relies on the modules named in :data:`AUTOGEN_STDOUT_LOGGERS` attaching a stdout handler to
    their own logger on import, and on the model client warning "The cost will be 0" for every
    reply of a model it has no price for (an offline or local model): dropped.
    """
    for name in AUTOGEN_STDOUT_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.addFilter(_DropCostWarnings())


class SharedAcrossAgents:
    """A mixin for objects in an ``llm_config`` that every agent must share rather than copy.

    AutoGen deep-copies a dict ``llm_config`` for every agent it builds
    (``ConversableAgent.__init__``); an object of this class survives that copy as itself. The
    service's HTTP client (``llm.SharedHTTPClient``) is one: a copy per agent would mean a new
    connection pool and SSL context per agent, most of the cost of building one.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self


# Raised out of a chat when the model call timed out: AutoGen turns the OpenAI client's
# APITimeoutError into a builtin TimeoutError (OpenAIWrapper.create); other OpenAI errors come out
# as they are. ``runner.translate_model_error`` maps them to the caller's errors.
MODEL_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError,)


def usage_by_model(agents: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The tokens the agents' model clients reported, per model, answers from a cache excluded.

    Relies on ``gather_usage_summary``'s ``usage_excluding_cached_inference``: a ``total_cost``
    entry and one dict of counts (``prompt_tokens``, ``completion_tokens``, ``total_tokens``) per
    model. Used by ``messages.usage_of``.
    """
    summary = gather_usage_summary(list(agents)).get("usage_excluding_cached_inference") or {}
    return {model: counts for model, counts in summary.items() if model != "total_cost" and isinstance(counts, dict)}


# --- Tools --------------------------------------------------------------------------------------


def tool_schema(function: Callable[..., Any], *, name: str, description: str) -> dict[str, Any]:
    """The OpenAI tool schema of ``function``, as AutoGen would send it to the model.

    Parameter descriptions come from ``Annotated[T, "text"]``: AutoGen's private
    ``_string_metadata_to_description_field`` rewrites the string into a pydantic ``Field`` on
    the function's annotations, which ``get_function_schema`` then reads. (The public
    ``autogen.tools.Tool(...).tool_schema`` goes through the same helper but reads the
    annotations again from a wrapper, and loses the descriptions of a module with ``from
    __future__ import annotations``, as ``tools.py`` is.) Used by ``tools.register_tool``; the
    schemas go into the agents' ``llm_config["tools"]``.
    """
    return get_function_schema(_string_metadata_to_description_field(function), name=name, description=description)


def register_tools(executor: autogen.ConversableAgent, functions: Mapping[str, Callable[..., Any]]) -> None:
    """Let ``executor`` run the model's calls of ``functions`` (by name).

    AutoGen calls each function with the model's JSON arguments as keyword arguments
    (``execute_function``: ``func(**arguments)``), which the approval guard
    (``teams.approval_required``) relies on, and answers the call with a message whose
    ``tool_responses`` hold ``tool_call_id`` and ``content``.
    """
    executor.register_function(dict(functions), silent_override=True)


# --- Output and input -------------------------------------------------------------------------


class StreamPiece:
    """A streamed piece of a model's reply as the service's own ``IOStream`` takes it: its text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def light_stream_events() -> None:
    """Let AutoGen's OpenAI model client send a :class:`StreamPiece` per streamed piece to the service.

    In autogen 0.14 ``OpenAIClient.create`` sends ``StreamEvent(content=...)`` to the default
    ``IOStream`` for every piece of a streamed reply: two pydantic models and a ``uuid4`` each;
    without them the service's CPU per streamed token fell from about 100 to 50 µs. When the
    default ``IOStream`` is the service's own (an :class:`AutoGenIO`, which reads only the text)
    it gets a :class:`StreamPiece` instead; any other ``IOStream`` still gets AutoGen's event.
    Replaces the ``StreamEvent`` name of ``autogen.oai.client``, which the client looks up when it
    sends. If the module no longer has it, nothing is patched. Called once at startup (``engine.open_engine``).
    """
    import autogen.oai.client as client

    original = client.__dict__.get("StreamEvent")
    if original is None or hasattr(original, "__wrapped__"):  # changed upstream, or installed already
        return

    def stream_event(*, content: str, **kwargs: Any) -> Any:
        if not kwargs and isinstance(IOStream.get_default(), AutoGenIO):
            return StreamPiece(content)
        return original(content=content, **kwargs)

    stream_event.__wrapped__ = original  # type: ignore[attr-defined]  # the original, for the contract test
    vars(client)["StreamEvent"] = stream_event


def stream_text(event: object) -> str | None:
    """The text of a model's streamed piece of reply; None if ``event`` is anything else.

    AutoGen's model client sends one ``StreamEvent`` per streamed piece to the default
    ``IOStream``; ``StreamEvent`` is wrapped by ``wrap_event``: the object sent has a
    ``content`` that is the event itself, whose ``content`` is the text. A piece with no text
    gives "".
    """
    if type(event) is StreamPiece:
        return event.text
    if not isinstance(event, StreamEvent):
        return None
    inner = getattr(event, "content", None)
    text = getattr(inner, "content", inner)
    return text if isinstance(text, str) else ""


class AutoGenIO(ABC):
    """One run's end of AutoGen's ``IOStream`` protocol (``print``, ``send``, ``input``).

    Everything AutoGen shows or asks goes through the default ``IOStream`` (see
    :func:`install_io`): its console prints through ``print``, events (the model's streamed
    text among them) through ``send``, and a human input mode's question through ``input``
    (``ConversableAgent.get_human_input`` calls ``IOStream.get_default().input(prompt)``).
    An exception raised by :meth:`on_stream` comes out of the model call unwrapped, aborting
    the model's stream. ``run.RunIOStream`` is the service's.
    """

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        self.on_print(sep.join(map(str, objects)))

    def send(self, message: Any) -> None:
        text = stream_text(message)
        if text is not None:
            self.on_stream(text)

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return self.on_input(prompt)

    @abstractmethod
    def on_print(self, text: str) -> None:
        """What AutoGen would print to the console."""

    @abstractmethod
    def on_stream(self, text: str) -> None:
        """A piece of the model's streamed reply (maybe empty)."""

    @abstractmethod
    def on_input(self, prompt: str) -> str:
        """A person's answer; AutoGen's ``prompt`` is written for a console. See :func:`user_proxy_agent`."""


def install_io(stream: AutoGenIO) -> AbstractContextManager[None]:
    """Make ``stream`` AutoGen's default ``IOStream`` inside the ``with`` block.

    ``IOStream.set_default`` sets a ContextVar: a run thread sees only its own stream, so
    concurrent runs never see each other's tokens, and nothing reaches the server's stdout.
    """
    return IOStream.set_default(stream)


# --- Hooks --------------------------------------------------------------------------------------

MessageBeforeSend = Callable[[autogen.ConversableAgent, dict[str, Any] | str], None]


def register_hooks(
    agent: autogen.ConversableAgent, *, before_reply: Callable[[], None], before_send: MessageBeforeSend
) -> None:
    """Call ``before_reply()`` as ``agent`` starts each reply, ``before_send(sender, message)`` for
    every message it sends, before the recipient has it.

    AutoGen's hookable methods ``process_all_messages_before_reply`` (called with the messages
    at the start of ``generate_reply``, before any reply function or model call) and
    ``process_message_before_send`` (called with keyword arguments ``sender``, ``message``,
    ``recipient``, ``silent`` in ``send``, the chat's first message included); both hooks
    return what they got, unchanged. An exception raised by either comes out of the chat
    unwrapped: that is how a cancelled run stops between turns. Used by ``run.instrument``.
    """

    def reply_hook(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        before_reply()
        return messages

    def send_hook(
        sender: autogen.ConversableAgent, message: dict[str, Any] | str, recipient: autogen.Agent, silent: bool
    ) -> dict[str, Any] | str:
        before_send(sender, message)
        return message

    agent.register_hook("process_all_messages_before_reply", reply_hook)
    agent.register_hook("process_message_before_send", send_hook)


# --- Conversations ------------------------------------------------------------------------------


def restore_history(agent: autogen.ConversableAgent, peer: autogen.Agent, messages: Iterable[dict[str, Any]]) -> int:
    """Put earlier messages into ``agent``'s conversation with ``peer``; return its length.

    ``chat_messages`` is the agent's own dict of conversations (not a copy): what is added here
    is what the agent's model is sent, from ``agent``'s point of view (its own messages as
    ``assistant``, the others' as ``user``, tool results as ``{"role": "tool", "tool_responses":
    [...]}``). New messages are appended after the returned length (:func:`messages_since`).
    Used by ``teams.PairTeam`` and ``teams.GroupTeam``.
    """
    conversation = agent.chat_messages[peer]
    conversation.extend(messages)
    return len(conversation)


def messages_since(agent: autogen.ConversableAgent, peer: autogen.Agent, start: int) -> list[dict[str, Any]]:
    """The messages of ``agent``'s conversation with ``peer`` from ``start`` on, each named by its sender."""
    return list(agent.chat_messages[peer][start:])


def start_chat(
    initiator: autogen.ConversableAgent,
    recipient: autogen.ConversableAgent,
    message: str,
    *,
    max_turns: int,
    cache: Any | None,
) -> None:
    """Run one turn: ``initiator`` sends ``message`` to ``recipient`` and the chat goes on.

    ``clear_history=False``: the default would wipe the history put back by
    :func:`restore_history`. ``max_turns`` bounds the round trips (the user proxy's automatic
    replies between them, see :func:`user_proxy_agent`). No summary (it would cost a model
    call), nothing printed. ``cache`` is the run's response cache (``cache.RunCache``): AutoGen
    enters it (``with cache``) and calls ``get(key, None)`` and, on a miss, ``set(key,
    response)`` with the same key object, the model request (a dict, ``stream`` in it); the
    response is the OpenAI client's ``ChatCompletion``.
    """
    initiator.initiate_chat(
        recipient,
        message=message,
        clear_history=False,
        max_turns=max_turns,
        silent=True,
        summary_method=None,
        cache=cache,
    )


HumanInputMode = Literal["NEVER", "ALWAYS", "TERMINATE"]
END_CONVERSATION = "exit"  # a person's answer that ends the conversation


def user_proxy_agent(
    name: str,
    *,
    human_input_mode: HumanInputMode,
    is_termination_msg: Callable[[dict[str, Any]], bool],
    default_auto_reply: str,
    max_consecutive_auto_reply: int,
) -> autogen.UserProxyAgent:
    """The caller's seat in a chat: never runs code, has no model, asks a person as told.

    The semantics of ``check_termination_and_human_reply`` the service counts on (the human
    input feature of ``run.RunIOStream.input`` and the team files' ``human_input``):

    - ``NEVER``: a message for which ``is_termination_msg`` holds ends the chat; otherwise
      ``default_auto_reply`` answers, until ``max_consecutive_auto_reply`` ends it.
    - ``ALWAYS``: a person is asked after every message. An empty answer lets the chat go on
      by itself (``default_auto_reply``), or ends it if the message was a termination message;
      :data:`END_CONVERSATION` ends it; other words are sent as the user's message, and when
      the message had tool calls, each call is answered ``"USER INTERRUPTED"``.
    - ``TERMINATE``: a person is asked only about a termination message (or when the automatic
      replies run out); an empty answer or :data:`END_CONVERSATION` ends the chat.

    A chat ended this way makes the proxy's reply None: a group chat ends on it.
    """
    return autogen.UserProxyAgent(
        name=name,
        human_input_mode=human_input_mode,
        code_execution_config=False,
        llm_config=False,
        is_termination_msg=is_termination_msg,
        default_auto_reply=default_auto_reply,
        max_consecutive_auto_reply=max_consecutive_auto_reply,
    )


# --- Group chats --------------------------------------------------------------------------------

# A group's speaker selection: called with the last speaker and the group chat, returns the next
# speaker, or the name of one of AutoGen's methods (AUTO_SELECTION: the model picks).
SpeakerSelector = Callable[[autogen.Agent, autogen.GroupChat], autogen.Agent | str]
AUTO_SELECTION = "auto"
# GroupChat.append stores a message's content as a string: a missing content (a message of tool
# calls) becomes "None".
MISSING_GROUP_CONTENT = "None"


def group_chat(
    members: Sequence[autogen.Agent],
    history: Iterable[dict[str, Any]],
    *,
    max_round: int,
    select_speaker: SpeakerSelector,
    selector_llm_config: dict[str, Any],
    is_termination_msg: Callable[[dict[str, Any]], bool],
) -> tuple[autogen.GroupChat, autogen.GroupChatManager]:
    """A group chat of ``members`` that continues ``history``, and the manager that runs it.

    The behaviours ``teams.GroupTeam`` counts on: ``messages`` holds the history and then every
    new message, named by its speaker (:data:`MISSING_GROUP_CONTENT`); the manager passes each
    message to every other member; ``select_speaker`` is called as described at
    :data:`SpeakerSelector`, and an agent it returns speaks even if it spoke last; the chat ends
    when ``is_termination_msg`` holds for a message (checked by the manager, whoever sent it),
    when a speaker's reply is None, or after ``max_round`` messages (the opening one included).
    ``selector_llm_config`` is for the manager's own model calls (``auto`` selection).
    """
    groupchat = autogen.GroupChat(
        agents=list(members),
        messages=list(history),
        max_round=max_round,
        speaker_selection_method=select_speaker,
        select_speaker_auto_llm_config=selector_llm_config,
        allow_repeat_speaker=True,
    )
    manager = autogen.GroupChatManager(
        groupchat=groupchat, llm_config=selector_llm_config, is_termination_msg=is_termination_msg, silent=True
    )
    return groupchat, manager


def group_messages_since(groupchat: autogen.GroupChat, start: int) -> list[dict[str, Any]]:
    """The group's messages from ``start`` on, after (or during) a chat.

    The manager runs a shallow copy of ``groupchat`` (``register_reply`` copies its config), and
    the selection function is given that copy: the ``messages`` list is the one object both
    share, so the group chat built by :func:`group_chat` sees every message of the run.
    """
    return list(groupchat.messages[start:])
