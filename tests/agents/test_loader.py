"""Team files: the built-ins load, and every malformed file is refused with its name and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_api.agents.loader import TeamConfigError, load_team_dir, load_team_file, load_teams
from agent_api.agents.teams import GroupTeam, PairTeam

PAIR = "name: t\ndescription: d\npattern: pair\nagents:\n  - {name: a, system_message: s}\n"


def test_builtin_teams() -> None:
    teams = {t.name: t for t in load_teams()}
    assert isinstance(teams["research"], PairTeam)
    group = teams["research_team"]
    assert isinstance(group, GroupTeam) and [a.name for a in group.agents] == ["researcher", "critic", "writer"]
    assert group.answering_agents == ["writer"]


def test_a_valid_file_with_model_settings(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(PAIR.replace("system_message: s}", "system_message: s, model: {model: small, temperature: 0}}"))
    team = load_team_file(path)
    spec = team.agents[0]
    config = spec.llm_config({"config_list": [{"model": "big", "api_key": "k"}], "cache_seed": None})
    assert config["config_list"][0]["model"] == "small" and config["temperature"] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed", "cannot be read"),
        ("- just\n- a list\n", "mapping"),
        (PAIR.replace("pattern: pair", "pattern: trio"), "pattern"),
        (PAIR.replace("system_message: s}", "system_message: s, tools: [rm_rf]}"), "rm_rf"),
        (PAIR.replace("{name: a,", "{name: user,"), "reserved"),
        (PAIR + "  - {name: b, system_message: s}\n", "exactly one agent"),
        (PAIR.replace("pattern: pair", "pattern: group") + "  - {name: a, system_message: s}\n", "unique"),
        (PAIR.replace("pattern: pair", "pattern: group"), "at least two"),
        (PAIR + "answer_from: nobody\n", "answer_from"),
        (PAIR + "colour: blue\n", "colour"),
        (PAIR.replace("name: t\n", "name: 'has space'\n"), "name"),
        (PAIR.replace("description: d\n", ""), "description"),
        (PAIR + "human_input: sometimes\n", "human_input"),
        (PAIR + "approve_tools: [calculator]\n", "not tools of any agent"),
    ],
)
def test_malformed_files_name_the_file_and_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "team.yaml"
    path.write_text(text)
    with pytest.raises(TeamConfigError) as raised:
        load_team_file(path)
    assert "team.yaml" in str(raised.value) and expected in str(raised.value)


def test_the_example_teams_say_where_a_person_is_asked() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "teams"
    teams = {t.name: t for t in load_team_dir(examples)}
    assert teams["concierge"].human_input == "always" and not teams["concierge"].approve_tools
    assert teams["careful_calculator"].approve_tools == {"calculator"}
    group = teams["reviewed_research"]
    assert isinstance(group, GroupTeam) and group.human_input == "on_terminate"
    assert group.describe() == {"speaker_selection": "round_robin", "max_rounds": 4, "human_input": "on_terminate"}


def test_the_same_name_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(PAIR)
    (tmp_path / "b.yaml").write_text(PAIR)
    with pytest.raises(TeamConfigError, match="defined twice"):
        load_teams(tmp_path)


def test_a_bad_plugin_is_refused() -> None:
    with pytest.raises(TeamConfigError, match="no_such_module"):
        load_teams(plugins=["no_such_module:teams"])
