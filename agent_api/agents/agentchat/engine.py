"""The AgentChat engine: how an :class:`~agent_api.agents.agentchat.team.AgentChatTeam` runs a turn.

Each run builds fresh agents (``AssistantAgent`` with the registered tools) and a fresh team
(``RoundRobinGroupChat``, or ``SelectorGroupChat`` where the model picks the speakers), puts the
session's history into every agent's model context, and runs the turn natively in the event
loop with ``run_stream``: no thread per run. The stream's items become the service's run events
(tokens from ``model_client_stream``, messages, tool calls and results), a cancel goes through
AgentChat's ``CancellationToken``, and the usage is what the model reported on each message.

Imported by the processes that run agents, on a team's first run or warm-up; the API processes,
which only read team files, never import it, nor AgentChat under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from agent_api.agents.agentchat import compat
from agent_api.agents.agentchat.team import AgentChatTeam
from agent_api.agents.events import MessageEvent, RunOutcome, ToolCallEvent, ToolResultEvent
from agent_api.agents.messages import TERMINATE, is_termination, strip_termination
from agent_api.agents.run import TeamRun
from agent_api.agents.teams import USER
from agent_api.agents.tokens import REPLY_SEPARATOR
from agent_api.agents.tools import get_tool
from agent_api.errors import AgentRunError, ModelError, ModelRateLimited, ModelTimeout, RunCancelled
from agent_api.models.chat import ChatMessage, Usage
from agent_api.telemetry import note_first_token

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


def warm_up(team: AgentChatTeam) -> None:
    """Build the team's tools as AgentChat calls them (the model clients are built on first use)."""
    for spec in team.agents:
        for tool in spec.tools:
            _tool(tool)


def _client(team: AgentChatTeam, run: TeamRun, settings: dict[str, Any], *, stream: bool) -> Any:
    """The model client for ``settings`` (shared by runs: AgentChat's client keeps no per-run state)."""
    entry: dict[str, Any] = run.llm_config["config_list"][0]
    top = {k: v for k, v in run.llm_config.items() if k not in ("config_list", "cache_seed", "tools")}
    merged = {**top, **settings}
    model = str(merged.pop("model", entry["model"]))
    key = (model, stream, id(run.async_http_client), tuple(sorted((k, repr(v)) for k, v in merged.items())))
    client = team.model_clients.get(key)
    if client is None:
        if len(team.model_clients) >= _CLIENTS_KEPT:
            team.model_clients.clear()
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
        team.model_clients[key] = client
    return client


def _build(team: AgentChatTeam, run: TeamRun) -> Any:
    stream = bool(run.llm_config["config_list"][0].get("stream"))
    agents = [
        compat.assistant_agent(
            name=spec.name,
            system_message=spec.system_message,
            description=spec.description,
            client=_client(team, run, spec.model_settings, stream=stream),
            tools=[_tool(t) for t in spec.tools],
            history=agent_history(run.history, spec.name),
            stream=stream,
        )
        for spec in team.agents
    ]
    loaded = compat.load_termination(team.termination) if team.termination else None
    # The answering agent's stop word ends the turn (as in the AG2 teams); so does the component's own condition.
    ends = compat.either(compat.text_mention(TERMINATE, [team.answer_from]), loaded)
    rounds = min(team.max_rounds or run.max_turns, run.max_turns)
    selector = _client(team, run, {}, stream=False) if team.selection == "selector" else None
    return compat.group(
        "selector" if team.selection == "selector" else "round_robin",
        agents,
        termination=ends,
        max_turns=rounds,
        selector_client=selector,
        allow_repeated_speaker=team.allow_repeated_speaker,
    )


async def run_turn(team: AgentChatTeam, run: TeamRun) -> RunOutcome:
    """One turn of ``team``, natively in the event loop."""
    run.answerers = set(team.answering_agents)
    chat = _build(team, run)
    token = compat.CancellationToken()
    run.on_cancel(token.cancel)
    messages = [ChatMessage(role="user", content=run.message, name=USER, timestamp=datetime.now(UTC))]
    answers: list[tuple[str, ChatMessage]] = []
    prompt_tokens = completion_tokens = 0
    try:
        async for item in chat.run_stream(task=run.message, cancellation_token=token):
            run.check_cancelled()
            prompt, completion = compat.usage_of(item)
            prompt_tokens += prompt
            completion_tokens += completion
            read = compat.read_item(item)
            if read is None or read.agent == USER:
                continue
            for message in _report(run, read):
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
            message = ChatMessage(role="tool", content=content, name=read.agent, timestamp=now, tool_call_id=call_id)
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
