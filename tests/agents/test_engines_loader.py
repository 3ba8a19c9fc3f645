"""Team files choose their engine; AgentChat component files are read safely."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agent_api.agents.agentchat.team import AgentChatTeam
from agent_api.agents.loader import TeamConfigError, load_team_file, load_teams
from agent_api.agents.teams import GroupTeam, PairTeam

COMPONENT = Path(__file__).parents[2] / "examples" / "teams_agentchat" / "drafter_editor.json"
PAIR = "name: t\ndescription: d\npattern: pair\nagents:\n  - name: a\n    system_message: s\n"


def component() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(COMPONENT.read_text())
    return copy.deepcopy(data)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_engine_defaults_to_ag2(tmp_path: Path) -> None:
    team = load_team_file(write(tmp_path, "t.yaml", PAIR))
    assert isinstance(team, PairTeam) and team.engine == "ag2" and not team.native_async


def test_engine_agentchat_in_the_same_yaml_shape(tmp_path: Path) -> None:
    pair = load_team_file(write(tmp_path, "p.yaml", PAIR + "engine: agentchat\n"))
    assert isinstance(pair, AgentChatTeam) and pair.engine == "agentchat" and pair.native_async
    assert pair.pattern == "pair" and pair.selection == "single"
    group = load_team_file(
        write(
            tmp_path,
            "g.yaml",
            "name: g\ndescription: d\nengine: agentchat\npattern: group\nagents:\n"
            "  - {name: a, system_message: s, tools: [calculator], model: {temperature: 0.1}}\n"
            "  - {name: b, system_message: s}\ngroup: {speaker_selection: selector, max_rounds: 4}\n",
        )
    )
    assert isinstance(group, AgentChatTeam) and group.selection == "selector" and group.max_rounds == 4
    assert group.agents[0].tools == ("calculator",) and group.agents[0].model_settings == {"temperature": 0.1}
    assert group.describe() == {"speaker_selection": "selector", "max_rounds": 4}


def test_builtin_twins() -> None:
    teams = {t.name: t for t in load_teams()}
    assert isinstance(teams["research_team"], GroupTeam)
    for name in ("research", "research_team"):
        twin = teams[f"{name}_ac"]
        assert twin.engine == "agentchat" and twin.pattern == teams[name].pattern
        assert [a.name for a in twin.agents] == [a.name for a in teams[name].agents]
        assert twin.answering_agents == teams[name].answering_agents and twin.min_turns == teams[name].min_turns


def test_human_input_is_refused_for_agentchat(tmp_path: Path) -> None:
    with pytest.raises(TeamConfigError, match="not supported by the agentchat engine"):
        load_team_file(write(tmp_path, "h.yaml", PAIR + "engine: agentchat\nhuman_input: always\n"))
    with pytest.raises(TeamConfigError, match="selector"):
        load_team_file(
            write(
                tmp_path,
                "s.yaml",
                PAIR.replace("pair", "group")
                + "  - {name: b, system_message: s}\ngroup: {speaker_selection: selector}\n",
            )
        )


def test_component_json_file_is_an_agentchat_team(tmp_path: Path) -> None:
    path = write(tmp_path, "drafter_editor.json", COMPONENT.read_text())
    team = load_team_file(path)
    assert isinstance(team, AgentChatTeam) and team.name == "drafter_editor" and team.pattern == "group"
    assert [a.name for a in team.agents] == ["drafter", "editor"] and team.agents[0].tools == ("calculator",)
    assert team.termination is not None and team.answering_agents == ["editor"]


def test_component_under_the_component_key(tmp_path: Path) -> None:
    text = json.dumps({"name": "studio", "description": "d", "engine": "agentchat", "component": component()})
    team = load_team_file(write(tmp_path, "studio.yaml", text))  # JSON is YAML
    assert isinstance(team, AgentChatTeam) and team.name == "studio"
    text = json.dumps({"name": "studio", "description": "d", "component": component()})
    with pytest.raises(TeamConfigError, match="needs engine: agentchat"):
        load_team_file(write(tmp_path, "bad.yaml", text))


def _refused(tmp_path: Path, data: dict[str, Any], match: str) -> None:
    with pytest.raises(TeamConfigError, match=match):
        load_team_file(write(tmp_path, "x.json", json.dumps(data)))


def test_unsafe_components_are_refused(tmp_path: Path) -> None:
    # a function tool that is not one of the service's tools: its source would be executed
    data = component()
    tools = data["config"]["participants"][0]["config"]["workbench"][0]["config"]["tools"]
    tools[0]["config"]["name"] = "run_anything"
    _refused(tmp_path, data, "arbitrary function tools are never run")
    # a code executor agent
    data = component()
    data["config"]["participants"][1] = {
        "provider": "autogen_agentchat.agents.CodeExecutorAgent",
        "component_type": "agent",
        "config": {"name": "coder", "code_executor": {"provider": "autogen_ext.code_executors.local.X"}},
    }
    _refused(tmp_path, data, "executes code")
    # a user proxy, an MCP workbench, a Swarm, an unknown termination condition
    data = component()
    data["config"]["participants"][1]["provider"] = "autogen_agentchat.agents.UserProxyAgent"
    _refused(tmp_path, data, "only AssistantAgent")
    data = component()
    data["config"]["participants"][0]["config"]["workbench"][0]["provider"] = "autogen_ext.tools.mcp.McpWorkbench"
    _refused(tmp_path, data, "workbench")
    data = component()
    data["provider"] = "autogen_agentchat.teams.Swarm"
    _refused(tmp_path, data, "not supported")
    data = component()
    data["config"]["termination_condition"]["config"]["conditions"][0]["provider"] = "my.module.Evil"
    _refused(tmp_path, data, "termination condition my.module.Evil")
