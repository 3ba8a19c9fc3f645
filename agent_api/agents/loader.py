"""Team files: teams described in YAML or JSON, validated when the service starts.

A team file::

    name: research_team                  # letters, digits, _ and -; unique
    description: What the team is for.
    pattern: group                       # pair (one assistant + user proxy) or group
    agents:
      - name: researcher
        system_message: You are ...
        description: Finds the facts.    # optional; used by `auto` speaker selection
        tools: [calculator]              # optional; names from agent_api.agents.tools
        model: {model: gpt-4o-mini, temperature: 0.2}   # optional model settings
    group:                               # group pattern only
      speaker_selection: round_robin     # or auto
      max_rounds: 6
    answer_from: writer                  # optional; default: the last agent
    human_input: never                   # optional: never, always or on_terminate (a person is asked)
    approve_tools: [calculator]          # optional: these tools' calls wait for a person's approval
    engine: ag2                          # optional: ag2 (the classic AutoGen API, the default) or agentchat

An ``agentchat`` team is described the same way (``group.speaker_selection``: round_robin, or
selector/auto: the model picks), or given as an AutoGen AgentChat component (the JSON AutoGen
Studio exports) under ``component:`` instead of ``pattern``/``agents``; a ``.json`` file that is a
component (it has a ``provider``) is such a team by itself, named after the file. Components are
read, never executed: see :mod:`agent_api.agents.agentchat.components`. AgentChat teams do not
ask a person (``human_input``, ``approve_tools``): such a file is refused.

Teams that need code are Python: a module named in ``TEAM_PLUGINS`` exposes ``teams()`` returning
:class:`~agent_api.agents.teams.Team` objects (and may register tools first).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent_api.agents.agentchat.components import check_component, is_component
from agent_api.agents.agentchat.team import AgentChatTeam
from agent_api.agents.teams import USER, AgentSpec, GroupTeam, PairTeam, Team
from agent_api.agents.tools import check_schemas, tool_names

BUILTIN_TEAMS_DIR = Path(__file__).resolve().parent.parent / "teams"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
TEAM_FILE_SUFFIXES = (".yaml", ".yml", ".json")


class TeamConfigError(ValueError):
    """A team file or plugin is invalid; the message names the file and the problem."""


class AgentFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    system_message: str = Field(min_length=1)
    description: str = ""
    tools: list[str] = Field(default_factory=list)
    model: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> AgentFile:
        if self.name == USER:
            raise ValueError(f"agent name {USER!r} is reserved for the user proxy")
        unknown = [t for t in self.tools if t not in tool_names()]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; available: {tool_names()}")
        return self


class GroupFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speaker_selection: Literal["round_robin", "auto", "selector"] = "round_robin"
    max_rounds: int | None = Field(default=None, ge=1, le=50)


class TeamFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1)
    engine: Literal["ag2", "agentchat"] = "ag2"
    pattern: Literal["pair", "group"] | None = None
    agents: list[AgentFile] = Field(default_factory=list)
    component: dict[str, Any] | None = None
    group: GroupFile | None = None
    answer_from: str | None = None
    human_input: Literal["never", "always", "on_terminate"] = "never"
    approve_tools: list[str] = Field(default_factory=list)

    @field_validator("agents")
    @classmethod
    def _some_agents(cls, agents: list[AgentFile]) -> list[AgentFile]:
        # Checked when given (omitted, the default: a team given as a component).
        if not agents:
            raise ValueError("List should have at least 1 item")
        return agents

    @model_validator(mode="after")
    def _check(self) -> TeamFile:
        if self.engine == "agentchat":
            if self.human_input != "never" or self.approve_tools:
                raise ValueError(
                    "human_input and approve_tools are not supported by the agentchat engine "
                    "(a person in the loop needs engine: ag2)"
                )
        if self.component is not None:
            if self.engine != "agentchat":
                raise ValueError("'component' is an AgentChat component: it needs engine: agentchat")
            if self.pattern is not None or self.agents or self.group is not None or self.answer_from is not None:
                raise ValueError("a team given as a component has no pattern, agents, group or answer_from")
            check_component(self.component)  # UnsafeComponent (a ValueError) names what is refused
            return self
        if self.pattern is None:
            raise ValueError("'pattern' is required (pair or group), or 'component' with engine: agentchat")
        if not self.agents:
            raise ValueError("'agents' must list at least one agent")
        if self.engine == "ag2" and self.group is not None and self.group.speaker_selection == "selector":
            raise ValueError("speaker_selection 'selector' is AgentChat's; the ag2 engine's is 'auto'")
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agent names must be unique")
        if self.pattern == "pair" and len(self.agents) != 1:
            raise ValueError("a pair team has exactly one agent (the user proxy is implicit)")
        if self.pattern == "group" and len(self.agents) < 2:
            raise ValueError("a group team needs at least two agents")
        if self.pattern == "pair" and self.group is not None:
            raise ValueError("'group' options apply to group teams only")
        if self.answer_from is not None and self.answer_from not in names:
            raise ValueError(f"answer_from {self.answer_from!r} is not one of the agents {names}")
        used = {tool for agent in self.agents for tool in agent.tools}
        unused = [tool for tool in self.approve_tools if tool not in used]
        if unused:
            raise ValueError(f"approve_tools {unused} are not tools of any agent of the team ({sorted(used)})")
        return self

    def build(self) -> Team:
        if self.component is not None:
            part = check_component(self.component)
            return AgentChatTeam(
                self.name,
                self.description,
                [AgentSpec(a.name, a.system_message, a.description, tuple(a.tools)) for a in part.agents],
                selection="single" if part.selection == "round_robin" and len(part.agents) == 1 else part.selection,  # type: ignore[arg-type]
                max_rounds=part.max_turns,
                termination=part.termination,
                allow_repeated_speaker=part.allow_repeated_speaker,
            )
        specs = [AgentSpec(a.name, a.system_message, a.description, tuple(a.tools), dict(a.model)) for a in self.agents]
        if self.engine == "agentchat":
            group = self.group or GroupFile()
            return AgentChatTeam(
                self.name,
                self.description,
                specs,
                selection="single"
                if self.pattern == "pair"
                else ("round_robin" if group.speaker_selection == "round_robin" else "selector"),
                max_rounds=group.max_rounds,
                answer_from=self.answer_from,
            )
        if self.pattern == "pair":
            return PairTeam(
                self.name,
                self.description,
                specs[0],
                human_input=self.human_input,
                approve_tools=self.approve_tools,
            )
        group = self.group or GroupFile()
        return GroupTeam(
            self.name,
            self.description,
            specs,
            speaker_selection="auto" if group.speaker_selection == "auto" else "round_robin",
            max_rounds=group.max_rounds,
            answer_from=self.answer_from,
            human_input=self.human_input,
            approve_tools=self.approve_tools,
        )


def _describe(error: ValidationError) -> str:
    problems = []
    for e in error.errors():
        where = ".".join(str(part) for part in e["loc"]) or "(file)"
        problems.append(f"{where}: {e['msg']}")
    return "; ".join(problems)


def load_team_file(path: Path) -> Team:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TeamConfigError(f"team file {path}: cannot be read as {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise TeamConfigError(f"team file {path}: expected a mapping of team fields at the top level")
    if path.suffix == ".json" and is_component(data):
        # An AgentChat component file (as AutoGen Studio exports it): a team named after the file.
        description = str(data.get("description") or "") or f"An AutoGen AgentChat team ({path.name})."
        data = {"name": path.stem, "description": description, "engine": "agentchat", "component": data}
    try:
        return TeamFile.model_validate(data).build()
    except ValidationError as exc:
        raise TeamConfigError(f"team file {path}: {_describe(exc)}") from exc


def load_team_dir(directory: Path) -> list[Team]:
    if not directory.is_dir():
        raise TeamConfigError(f"TEAMS_DIR {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix in TEAM_FILE_SUFFIXES and p.is_file())
    return [load_team_file(p) for p in files]


def load_plugins(specs: Iterable[str]) -> list[Team]:
    teams: list[Team] = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            factory = getattr(module, attribute or "teams")
            made = list(factory())
        except Exception as exc:
            raise TeamConfigError(f"team plugin {spec}: {type(exc).__name__}: {exc}") from exc
        bad = [t for t in made if not isinstance(t, Team)]
        if bad:
            raise TeamConfigError(f"team plugin {spec}: returned {bad!r}, expected Team objects")
        teams.extend(made)
    return teams


def load_teams(teams_dir: Path | None = None, plugins: Iterable[str] = ()) -> list[Team]:
    """The built-in teams, then those of ``teams_dir`` and the plugins (a later name replaces an earlier)."""
    teams = {t.name: t for t in load_team_dir(BUILTIN_TEAMS_DIR)}
    extra = (load_team_dir(teams_dir) if teams_dir is not None else []) + load_plugins(plugins)
    seen: set[str] = set()
    for team in extra:
        if team.name in seen:
            raise TeamConfigError(f"team {team.name!r} is defined twice")
        seen.add(team.name)
        teams[team.name] = team
    return list(teams.values())


def check_teams(teams_dir: Path | None = None, plugins: Sequence[str] = ()) -> str | None:
    """What is wrong with the teams and their tools, as a process that runs them would find it; None if nothing.

    Loads the teams (the plugins' tools register as they are imported) and builds every tool's
    schema, which loads AutoGen: ``agent-api serve`` calls it in a short-lived process of its own
    so that it holds no AutoGen itself.
    """
    try:
        load_teams(teams_dir, plugins)
        check_schemas()
    except ValueError as exc:  # TeamConfigError included
        return str(exc)
    return None
