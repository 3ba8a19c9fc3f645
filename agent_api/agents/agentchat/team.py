"""AgentChat teams: AutoGen AgentChat (``autogen-agentchat``) as the service's second engine.

An :class:`AgentChatTeam` is a description, like the AG2 teams: each run builds fresh agents
(``AssistantAgent`` with the registered tools) and a fresh team (``RoundRobinGroupChat``, or
``SelectorGroupChat`` where the model picks the speakers), puts the session's history into
every agent's model context, and runs the turn natively in the event loop with ``run_stream``:
no thread per run. The stream's items become the service's run events (tokens from
``model_client_stream``, messages, tool calls and results), a cancel goes through AgentChat's
``CancellationToken``, and the usage is what the model reported on each message.

A person in the loop (``human_input``, ``approve_tools``) is not mapped: such a team file is
refused when it is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from agent_api.agents.agentchat import compat
from agent_api.agents.events import MessageEvent, RunOutcome, ToolCallEvent, ToolResultEvent
from agent_api.agents.messages import TERMINATE, is_termination, strip_termination
from agent_api.agents.run import USER, TeamRun
from agent_api.agents.teams import AgentSpec, OneAnswerTeam
from agent_api.agents.tokens import REPLY_SEPARATOR
from agent_api.agents.tools import get_tool
from agent_api.errors import AgentRunError, ModelError, ModelRateLimited, ModelTimeout, RunCancelled
from agent_api.models.chat import ChatMessage, Usage
from agent_api.telemetry import note_first_token

Selection = Literal["single", "round_robin", "selector"]

# What a failure inside a team (reported by its type name, see compat.inner_error_type) means to the caller.
_MODEL_TIMEOUTS = {"APITimeoutError", "TimeoutError", "ReadTimeout", "ConnectTimeout", "TimeoutException"}
_MODEL_ERRORS = {
    "APIError",
    "APIStatusError",
    "APIConnectionError",
    "InternalServerError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "UnprocessableEntityError",
    "RemoteProtocolError",
    "ReadError",
    "ConnectError",
    "JSONDecodeError",
    "ValidationError",
}
_CLIENTS_KEPT = 64

_tools: dict[str, Any] = {}
compat.quiet_agentchat_logging()


def _tool(name: str) -> Any:
    """The registered tool as AgentChat calls it, built once per process."""
    if name not in _tools:
        tool = get_tool(name)
        parameters = tool.schema["function"]["parameters"]
        _tools[name] = compat.function_tool(
            tool.function, name=tool.name, description=tool.description, parameters=parameters
        )
    return _tools[name]


def agent_history(history: Sequence[ChatMessage], agent: str) -> list[Any]:
    """The stored conversation as ``agent`` sees it: its own messages (and tool calls) as the
    assistant's, everybody else's text as user messages named by their writer."""
    out: list[Any] = []
    mine: dict[str, str] = {}  # the agent's tool call ids -> tool names
    for message in history:
        if message.role == "system":
            continue
        if message.role == "tool":
            call = message.tool_call_id or ""
            if call in mine:
                out.append(compat.tool_results_message([(call, mine[call], message.content)]))
            continue
        if message.role == "assistant" and message.tool_calls:
            if message.name == agent:
                calls = [
                    (str(c.get("id", "")), str(c["function"]["name"]), str(c["function"].get("arguments", "")))
                    for c in message.tool_calls
                    if isinstance(c.get("function"), dict)
                ]
                mine.update({i: n for i, n, _ in calls})
                out.append(compat.tool_calls_message(calls, agent))
            elif message.content:
                out.append(compat.user_message(message.content, message.name or USER))
            continue
        if not message.content:
            continue
        if message.role == "assistant" and message.name == agent:
            out.append(compat.assistant_message(message.content, agent))
        else:
            source = USER if message.role == "user" else (message.name or USER)
            out.append(compat.user_message(message.content, source))
    return out


class AgentChatTeam(OneAnswerTeam):
    """A team run by AutoGen AgentChat: one assistant (``single``) or a group of them."""

    engine = "agentchat"
    native_async = True

    def __init__(
        self,
        name: str,
        description: str,
        agents: Sequence[AgentSpec],
        *,
        selection: Selection = "round_robin",
        max_rounds: int | None = None,
        answer_from: str | None = None,
        termination: dict[str, Any] | None = None,
        allow_repeated_speaker: bool = False,
    ) -> None:
        super().__init__(name, description)
        if not agents:
            raise ValueError("a team needs at least one agent")
        if selection == "single" and len(agents) != 1:
            raise ValueError("a single-agent team has exactly one agent")
        self._agents = list(agents)
        self.selection: Selection = selection
        self.pattern = "pair" if selection == "single" else "group"
        self.max_rounds = max_rounds or (None if selection == "single" else len(agents))
        self.answer_from = answer_from or agents[-1].name
        self.termination = termination  # a termination component (from a component file), checked already
        self.allow_repeated_speaker = allow_repeated_speaker
        self._clients: dict[tuple[Any, ...], Any] = {}

    @property
    def speaks_in_order(self) -> bool:
        return self.selection == "round_robin"

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {}
        if self.selection != "single":
            described["speaker_selection"] = self.selection
            described["max_rounds"] = self.max_rounds
        return described

    def warm_up(self, llm_config: dict[str, Any]) -> None:
        for spec in self._agents:
            for tool in spec.tools:
                _tool(tool)

    # -- one run ------------------------------------------------------------------------------

    def _client(self, run: TeamRun, settings: dict[str, Any], *, stream: bool) -> Any:
        """The model client for ``settings`` (shared by runs: AgentChat's client keeps no per-run state)."""
        entry: dict[str, Any] = run.llm_config["config_list"][0]
        top = {k: v for k, v in run.llm_config.items() if k not in ("config_list", "cache_seed", "tools")}
        merged = {**top, **settings}
        model = str(merged.pop("model", entry["model"]))
        key = (model, stream, id(run.async_http_client), tuple(sorted((k, repr(v)) for k, v in merged.items())))
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= _CLIENTS_KEPT:
                self._clients.clear()
            assert run.async_http_client is not None
            client = compat.model_client(
                model=model,
                api_key=str(entry.get("api_key") or "not-needed"),
                base_url=entry.get("base_url"),
                http_client=run.async_http_client,
                stream=stream,
                timeout=entry.get("timeout"),
                max_retries=entry.get("max_retries"),
                settings=merged,
            )
            self._clients[key] = client
        return client

    def _build(self, run: TeamRun) -> Any:
        stream = bool(run.llm_config["config_list"][0].get("stream"))
        agents = [
            compat.assistant_agent(
                name=spec.name,
                system_message=spec.system_message,
                description=spec.description,
                client=self._client(run, spec.model_settings, stream=stream),
                tools=[_tool(t) for t in spec.tools],
                history=agent_history(run.history, spec.name),
                stream=stream,
            )
            for spec in self._agents
        ]
        loaded = compat.load_termination(self.termination) if self.termination else None
        # The answering agent's stop word ends the turn (as in the AG2 teams); so does the component's own condition.
        ends = compat.either(compat.text_mention(TERMINATE, [self.answer_from]), loaded)
        rounds = min(self.max_rounds or run.max_turns, run.max_turns)
        selector = self._client(run, {}, stream=False) if self.selection == "selector" else None
        return compat.group(
            "selector" if self.selection == "selector" else "round_robin",
            agents,
            termination=ends,
            max_turns=rounds,
            selector_client=selector,
            allow_repeated_speaker=self.allow_repeated_speaker,
        )

    async def run_async(self, run: TeamRun) -> RunOutcome:
        run.answerers = set(self.answering_agents)
        team = self._build(run)
        token = compat.CancellationToken()
        run.on_cancel(token.cancel)
        messages = [ChatMessage(role="user", content=run.message, name=USER, timestamp=datetime.now(UTC))]
        answers: list[tuple[str, ChatMessage]] = []
        prompt_tokens = completion_tokens = 0
        try:
            async for item in team.run_stream(task=run.message, cancellation_token=token):
                run.check_cancelled()
                prompt, completion = compat.usage_of(item)
                prompt_tokens += prompt
                completion_tokens += completion
                read = compat.read_item(item)
                if read is None or read.agent == USER:
                    continue
                for message in self._report(run, read):
                    messages.append(message)
                    if isinstance(read, compat.Text) and read.agent in run.answerers:
                        answers.append((read.text, message))
        except RuntimeError as exc:
            run.check_cancelled()
            raise _mapped(exc) from exc
        run.check_cancelled()
        return RunOutcome(
            messages=messages,
            response=REPLY_SEPARATOR.join(m.content for _, m in answers if m.content),
            turns_used=sum(1 for m in messages if m.role == "assistant"),
            finished=bool(answers) and is_termination({"content": answers[-1][0]}),
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    @staticmethod
    def _report(run: TeamRun, read: compat.StreamItem) -> list[ChatMessage]:
        """Emit the run events of one stream item; return the messages it adds to the session."""
        now = datetime.now(UTC)
        if isinstance(read, compat.Token):
            if read.text:
                note_first_token()
                run.speaker = read.agent
                run.on_token(read.text)
            return []
        if isinstance(read, compat.ToolCalls):
            run.end_reply(read.agent, "")
            calls = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in read.calls]
            for i, n, a in read.calls:
                run.emit(ToolCallEvent(read.agent, i, n, a))
            message = ChatMessage(role="assistant", content="", name=read.agent, timestamp=now, tool_calls=calls)
            run.emit(MessageEvent(message))
            return [message]
        if isinstance(read, compat.ToolResults):
            out = []
            for call_id, _, content in read.results:
                run.emit(ToolResultEvent(read.agent, call_id, content))
                message = ChatMessage(
                    role="tool", content=content, name=read.agent, timestamp=now, tool_call_id=call_id
                )
                run.emit(MessageEvent(message))
                out.append(message)
            return out
        run.end_reply(read.agent, read.text)
        message = ChatMessage(role="assistant", content=strip_termination(read.text), name=read.agent, timestamp=now)
        run.emit(MessageEvent(message))
        return [message]


def _mapped(exc: RuntimeError) -> Exception:
    """The caller's error for a failure inside the team (AgentChat reports it by type name)."""
    kind = compat.inner_error_type(exc)
    if kind in _MODEL_TIMEOUTS:
        return ModelTimeout()
    if kind == "RateLimitError":
        return ModelRateLimited(headers={"Retry-After": "5"})
    if kind in _MODEL_ERRORS:
        return ModelError()
    if kind == "CancelledError":
        return RunCancelled()
    return AgentRunError()
