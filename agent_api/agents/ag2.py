"""The AG2 engine: how the teams of :mod:`agent_api.agents.teams` build their agents and run a turn.

Imported by the processes that run agents (their engine opens at startup, ``engine.open_engine``,
and warms every team up) on a team's first run; the API processes, which only read team files,
never import it, nor AutoGen under it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection
from typing import Any

import autogen

from agent_api.agents.autogen_compat import (
    AUTO_SELECTION,
    HumanInputMode,
    SpeakerSelector,
    group_chat,
    group_messages_since,
    messages_since,
    register_tools,
    restore_history,
    start_chat,
    user_proxy_agent,
)
from agent_api.agents.events import RunOutcome
from agent_api.agents.messages import is_termination, to_autogen
from agent_api.agents.run import TeamRun, collect_outcome, instrument, run_io
from agent_api.agents.teams import USER, AgentSpec, GroupTeam, HumanInput, PairTeam
from agent_api.agents.tools import get_tool
from agent_api.models.chat import ChatMessage
from agent_api.telemetry import instrument_agents

CONTINUE = "Please continue. When your answer is complete, put TERMINATE at the end of it."

# AutoGen's human input modes, by the names team files use.
HUMAN_INPUT_MODES: dict[str, HumanInputMode] = {
    "never": "NEVER",
    "always": "ALWAYS",
    "on_terminate": "TERMINATE",
}


def refusal(name: str, reason: str) -> str:
    """What the agent reads instead of a tool's result when a person denies the call."""
    because = f" Their reason: {reason}" if reason else ""
    return f"The user denied this call of {name}; the tool was not run.{because}"


def approval_required(run: TeamRun, agent: str, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, run only once a person approves the call; a denial answers with :func:`refusal`."""

    @functools.wraps(function)
    def guarded(**arguments: Any) -> Any:
        call = run.take_call(name, arguments)
        prompt = f"{agent} wants to run {name} with {call['arguments'] or json.dumps(arguments)}."
        reply = run.ask("approval", prompt, agent, tool_call=call)
        if not reply.approved:
            return refusal(name, reply.reason)
        return function(**arguments)

    return guarded


def build_assistant(spec: AgentSpec, base_llm_config: dict[str, Any]) -> autogen.AssistantAgent:
    return autogen.AssistantAgent(
        name=spec.name,
        system_message=spec.system_message,
        description=spec.description or None,
        llm_config=spec.llm_config(base_llm_config),
    )


def attach_tools(
    spec: AgentSpec, executor: autogen.ConversableAgent, run: TeamRun, approve: Collection[str] = ()
) -> None:
    """Let ``executor`` run ``spec``'s tool calls (the model learns of them from llm_config);
    calls of the tools named in ``approve`` wait for a person's approval first."""
    functions: dict[str, Callable[..., Any]] = {}
    for name in spec.tools:
        function = get_tool(name).function
        functions[name] = approval_required(run, spec.name, name, function) if name in approve else function
    if functions:
        register_tools(executor, functions)


def user_proxy(max_turns: int, human_input: HumanInput = "never") -> autogen.UserProxyAgent:
    """Stands in for the caller: asks a person as the team says (through the run), never runs
    code, nudges the assistant on when it stops before its answer is complete."""
    return user_proxy_agent(
        USER,
        human_input_mode=HUMAN_INPUT_MODES[human_input],
        is_termination_msg=is_termination,
        default_auto_reply=CONTINUE,
        max_consecutive_auto_reply=max_turns,
    )


def run_pair(team: PairTeam, run: TeamRun) -> RunOutcome:
    """One turn of an assistant and the user proxy that executes its tool calls."""
    run.answerers = set(team.answering_agents)
    assistant = build_assistant(team.assistant, run.llm_config)
    proxy = user_proxy(run.max_turns, team.human_input)
    attach_tools(team.assistant, proxy, run, team.approve_tools)
    instrument(run, [assistant, proxy])
    instrument_agents([assistant, proxy])
    restored = restore_history(assistant, proxy, [to_autogen(m) for m in run.history])
    restore_history(proxy, assistant, [to_autogen(m, flip=True) for m in run.history])
    with run_io(run):
        start_chat(proxy, assistant, run.message, max_turns=run.max_turns, cache=run.cache)
    return collect_outcome(run, messages_since(assistant, proxy, restored), [assistant, proxy])


def run_group(team: GroupTeam, run: TeamRun) -> RunOutcome:
    """One turn of a group of assistants in a GroupChat run by a GroupChatManager."""
    run.answerers = set(team.answering_agents)
    assistants: list[autogen.ConversableAgent] = [build_assistant(spec, run.llm_config) for spec in team.agents]
    for spec, agent in zip(team.agents, assistants, strict=True):
        attach_tools(spec, agent, run, team.approve_tools)
    proxy = user_proxy(1, team.human_input)
    # With a person in the loop the user's seat is in the group (after the answering agent),
    # and the person's turns do not count against the agents' rounds.
    asks = team.human_input != "never"
    members: list[autogen.Agent] = [*assistants, proxy] if asks else list(assistants)
    rounds = min(team.max_rounds, run.max_turns)
    history = [to_group_message(m) for m in run.history]
    answerers = set(team.answering_agents)

    def answered(message: dict[str, Any]) -> bool:
        # The answering agent ends the turn; a TERMINATE from another agent (or the caller) does not.
        # With a person in the loop the person ends it (the user's seat then gives no reply).
        return not asks and message.get("name") in answerers and is_termination(message)

    groupchat, manager = group_chat(
        members,
        history,
        max_round=1 + (2 * rounds if asks else rounds),
        select_speaker=_selector(team, assistants, proxy if asks else None),
        # The manager's own model calls (speaker selection) must not stream: their tokens are
        # not anybody's answer.
        selector_llm_config=run.quiet_llm_config,
        is_termination_msg=answered,
    )
    for agent in assistants:
        restore_history(agent, manager, [agent_view(m, agent.name) for m in run.history])
    instrument(run, [*assistants, proxy])
    instrument_agents([*assistants, proxy, manager])
    with run_io(run):
        start_chat(proxy, manager, run.message, max_turns=1, cache=run.cache)
    return collect_outcome(run, group_messages_since(groupchat, len(history)), [*assistants, manager])


def _selector(
    team: GroupTeam, assistants: list[autogen.ConversableAgent], person: autogen.Agent | None
) -> SpeakerSelector:
    method = team.speaker_selection
    order = {agent.name: i for i, agent in enumerate(assistants)}
    human_input = team.human_input
    answer_from = team.answer_from

    def select(last_speaker: autogen.Agent, groupchat: autogen.GroupChat) -> autogen.Agent | str:
        last = groupchat.messages[-1] if groupchat.messages else {}
        if last.get("tool_calls") or last.get("tool_responses") or last.get("role") == "tool":
            # The caller executes its own tool call, then speaks again with the result.
            return last_speaker if last_speaker in assistants else assistants[0]
        if person is not None and last_speaker.name == answer_from:
            if human_input == "always" or is_termination(last):
                return person  # the user's seat: the person answers the answering agent
        if method == "auto":
            return AUTO_SELECTION
        if last_speaker.name not in order:  # the caller just spoke: start from the first
            return assistants[0]
        return assistants[(order[last_speaker.name] + 1) % len(assistants)]

    return select


def to_group_message(message: ChatMessage) -> dict[str, Any]:
    """A stored message as a GroupChat keeps it: named, text as role user."""
    out = to_autogen(message)
    if out.get("role") == "assistant" and not out.get("tool_calls"):
        out["role"] = "user"
    out["name"] = message.name or USER
    return out


def agent_view(message: ChatMessage, agent_name: str) -> dict[str, Any]:
    """A stored message as one group member sees it: its own text as assistant, the rest as user."""
    out = to_autogen(message)
    if message.role in ("user", "assistant") and not message.tool_calls:
        out["role"] = "assistant" if message.name == agent_name else "user"
    return out
