"""The calculator evaluates arithmetic and nothing else."""

from __future__ import annotations

import pytest

from agent_api.agents.tools import calculator, get_tool, tool_names, utc_now


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("2+3", "5"),
        ("(17 + 5) * 3 / 4", "16.5"),
        ("2**10", "1024"),
        ("-(3)", "-3"),
        ("7 // 2", "3"),
        ("sqrt(16)", "4"),
        ("round(pi, 2)", "3.14"),
        ("10 % 4", "2"),
    ],
)
def test_arithmetic(expression: str, result: str) -> None:
    assert calculator(expression) == result


@pytest.mark.parametrize(
    "expression",
    [
        '__import__("os").system("true")',
        "open('/etc/passwd')",
        "x",
        "2**100000",
        "9**9**9",
        "1/0",
        "[1, 2]",
        "lambda: 1",
        "a.b",
        "1" * 300,
        "10**99 * 10**99",
        "True + 1",
        "sqrt(-1)",
        "",
    ],
)
def test_anything_else_is_an_error_not_an_evaluation(expression: str) -> None:
    assert calculator(expression).startswith("error: ")


def test_registry() -> None:
    assert {"calculator", "utc_now"} <= set(tool_names())
    assert get_tool("utc_now").function is utc_now
    assert utc_now().endswith("+00:00")


def test_schemas_carry_the_parameter_descriptions() -> None:
    # tools.py has string annotations (from __future__ import annotations): the descriptions must
    # survive them (AutoGen's public Tool(...).tool_schema loses them there).
    schema = get_tool("calculator").schema
    assert schema["type"] == "function" and schema["function"]["name"] == "calculator"
    parameters = schema["function"]["parameters"]
    assert parameters["required"] == ["expression"]
    assert parameters["properties"]["expression"] == {
        "type": "string",
        "description": "the arithmetic expression to evaluate",
    }
    assert get_tool("utc_now").schema["function"]["parameters"] == {"type": "object", "properties": {}, "required": []}
