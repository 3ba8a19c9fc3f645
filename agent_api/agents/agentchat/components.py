"""AgentChat component files (the JSON AutoGen Studio exports), read safely.

A component is a tree of ``{"provider": ..., "component_type": ..., "config": {...}}``. AgentChat
can load any such tree itself, importing whatever class ``provider`` names and, for a
``FunctionTool``, executing the Python source in the file: a team file must not be able to run
code on the server. So the tree is *read*, never loaded whole: :func:`check_component` accepts
only the providers listed here and turns the team into the service's own description (agents,
speaker selection, termination), which :class:`~agent_api.agents.agentchat.team.AgentChatTeam`
builds with the service's model settings and registered tools.

- Teams: ``RoundRobinGroupChat``, ``SelectorGroupChat``. Agents: ``AssistantAgent``.
- Tools: by name only: a tool (``FunctionTool``, in ``tools`` or a static workbench) must be one
  of the service's registered tools, and its source code is ignored, never run.
- Model clients: replaced by the service's model (OPENAI_BASE_URL and key, or the offline model).
- Termination conditions: AgentChat's own, without code; loaded with AgentChat's loader per run.
- Refused: code executors (``CodeExecutorAgent``, any ``code_executor``), arbitrary function
  tools, MCP workbenches, user proxies (a person in the loop), ``Swarm`` and anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent_api.agents.tools import tool_names

TEAM_PROVIDERS = {
    "autogen_agentchat.teams.RoundRobinGroupChat": "round_robin",
    "autogen_agentchat.teams.SelectorGroupChat": "selector",
}
AGENT_PROVIDERS = {"autogen_agentchat.agents.AssistantAgent"}
TOOL_PROVIDERS = {"autogen_core.tools.FunctionTool"}
WORKBENCH_PROVIDERS = {"autogen_core.tools.StaticWorkbench", "autogen_core.tools.StaticStreamWorkbench"}
TERMINATION_PROVIDERS = {
    f"autogen_agentchat.conditions.{name}"
    for name in (
        "TextMentionTermination",
        "MaxMessageTermination",
        "StopMessageTermination",
        "TokenUsageTermination",
        "TimeoutTermination",
        "HandoffTermination",
        "SourceMatchTermination",
        "TextMessageTermination",
        "FunctionCallTermination",
    )
} | {"autogen_agentchat.base.OrTerminationCondition", "autogen_agentchat.base.AndTerminationCondition"}
_CODE = re.compile(r"code_?executor|CodeExecutor|PythonCodeExecution", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class UnsafeComponent(ValueError):
    """The component cannot be served: unsafe, or not supported; the message says which part and why."""


@dataclass
class AgentPart:
    name: str
    system_message: str
    description: str
    tools: list[str] = field(default_factory=list)


@dataclass
class TeamPart:
    selection: str
    agents: list[AgentPart]
    max_turns: int | None
    termination: dict[str, Any] | None
    allow_repeated_speaker: bool
    description: str
    label: str


def is_component(data: dict[str, Any]) -> bool:
    """A JSON document that is an AgentChat component (rather than a team file)."""
    return isinstance(data.get("provider"), str) and isinstance(data.get("config"), dict)


def _provider(component: Any, where: str) -> str:
    if not isinstance(component, dict) or not isinstance(component.get("provider"), str):
        raise UnsafeComponent(f"{where}: not a component (no provider)")
    provider: str = component["provider"]
    if _CODE.search(provider) or component.get("component_type") == "code_executor":
        raise UnsafeComponent(f"{where}: {provider} executes code, which this service never does")
    return provider


def _config(component: dict[str, Any], where: str) -> dict[str, Any]:
    config = component.get("config")
    if not isinstance(config, dict):
        raise UnsafeComponent(f"{where}: config must be an object")
    return config


def _check_termination(component: Any, where: str) -> None:
    provider = _provider(component, where)
    if provider not in TERMINATION_PROVIDERS:
        raise UnsafeComponent(f"{where}: termination condition {provider} is not supported")
    for i, inner in enumerate(_config(component, where).get("conditions") or []):
        _check_termination(inner, f"{where}.conditions[{i}]")


def _tools(config: dict[str, Any], where: str) -> list[str]:
    tools = list(config.get("tools") or [])
    for i, workbench in enumerate(config.get("workbench") or []):
        w_where = f"{where}.workbench[{i}]"
        provider = _provider(workbench, w_where)
        if provider not in WORKBENCH_PROVIDERS:
            raise UnsafeComponent(f"{w_where}: workbench {provider} is not supported (only static tools by name)")
        tools.extend(_config(workbench, w_where).get("tools") or [])
    names = []
    for i, tool in enumerate(tools):
        t_where = f"{where}.tools[{i}]"
        provider = _provider(tool, t_where)
        name = _config(tool, t_where).get("name")
        if provider not in TOOL_PROVIDERS or name not in tool_names():
            raise UnsafeComponent(
                f"{t_where}: tool {name or provider!r} refused: arbitrary function tools are never run; "
                f"name one of the service's tools {tool_names()} (its source code is ignored)"
            )
        names.append(str(name))
    return names


def _agent(component: Any, where: str) -> AgentPart:
    provider = _provider(component, where)
    if provider not in AGENT_PROVIDERS:
        raise UnsafeComponent(f"{where}: agent {provider} is not supported (only AssistantAgent)")
    config = _config(component, where)
    name = config.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or name == "user":
        raise UnsafeComponent(f"{where}: agent name {name!r} must match {_NAME.pattern} and not be 'user'")
    if config.get("model_context") is not None:
        _provider(config["model_context"], f"{where}.model_context")
    system_message = config.get("system_message") or "You are a helpful AI assistant."
    return AgentPart(
        name=name,
        system_message=str(system_message),
        description=str(config.get("description") or component.get("description") or ""),
        tools=_tools(config, where),
    )


def check_component(component: dict[str, Any]) -> TeamPart:
    """The team a component describes, or :class:`UnsafeComponent` naming what is refused."""
    provider = _provider(component, "component")
    if provider not in TEAM_PROVIDERS:
        raise UnsafeComponent(
            f"component: {provider} is not supported; a team component must be one of {sorted(TEAM_PROVIDERS)}"
        )
    config = _config(component, "component")
    participants = config.get("participants")
    if not isinstance(participants, list) or not participants:
        raise UnsafeComponent("component.config.participants: a team needs at least one agent")
    agents = [_agent(p, f"component.config.participants[{i}]") for i, p in enumerate(participants)]
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise UnsafeComponent("component.config.participants: agent names must be unique")
    termination = config.get("termination_condition")
    if termination is not None:
        _check_termination(termination, "component.config.termination_condition")
    max_turns = config.get("max_turns")
    if max_turns is not None and (not isinstance(max_turns, int) or max_turns < 1):
        raise UnsafeComponent("component.config.max_turns: must be a positive integer")
    return TeamPart(
        selection=TEAM_PROVIDERS[provider],
        agents=agents,
        max_turns=max_turns,
        termination=termination,
        allow_repeated_speaker=bool(config.get("allow_repeated_speaker", False)),
        description=str(component.get("description") or ""),
        label=str(component.get("label") or ""),
    )
