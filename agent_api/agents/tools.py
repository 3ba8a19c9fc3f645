"""Safe built-in tools that team files attach to agents by name.

Code execution stays disabled: a tool is a plain Python function that AutoGen calls with the
model's arguments. Add your own with :func:`register_tool` (for example from a module named in
``TEAM_PLUGINS``).
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any


@dataclass(frozen=True)
class Tool:
    """A function the model may call, and its OpenAI tool schema."""

    name: str
    description: str
    function: Callable[..., Any]

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        """The schema as AutoGen sends it to the model (parameter descriptions from
        ``Annotated[..., "text"]``), built once, on first use.

        Only the processes that run agents use it (their startup builds every team's agents
        once), so the API processes, which read team files and never run agents, do not load
        AutoGen.
        """
        from agent_api.agents.autogen_compat import tool_schema  # the engine: see the docstring

        return tool_schema(self.function, name=self.name, description=self.description)


_TOOLS: dict[str, Tool] = {}


def register_tool(name: str, description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make ``function`` available to team files as ``tools: [name]``."""

    def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
        _TOOLS[name] = Tool(name, description, function)
        return function

    return decorator


def get_tool(name: str) -> Tool:
    return _TOOLS[name]


def tool_names() -> list[str]:
    return sorted(_TOOLS)


def check_schemas() -> None:
    """Build every registered tool's schema now (this imports AutoGen); ``ValueError`` naming a tool
    whose schema cannot be built (a parameter without a type, a type with no JSON schema)."""
    for tool in _TOOLS.values():
        try:
            tool.schema  # noqa: B018  (building it is the check)
        except Exception as exc:  # what AutoGen and pydantic raise for a function they cannot describe
            raise ValueError(f"tool {tool.name!r}: its schema cannot be built: {type(exc).__name__}: {exc}") from exc


class CalculationError(ValueError):
    """The expression is not plain arithmetic, or is too large to evaluate."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {"sqrt": math.sqrt, "abs": abs, "round": round}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPRESSION = 200
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e100


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculationError("exponent too large")
        result = _BINARY[type(node.op)](left, right)
        if abs(result) > MAX_MAGNITUDE:
            raise CalculationError("result too large")
        return result  # type: ignore[no-any-return]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and len(node.args) <= 2
    ):
        return _FUNCTIONS[node.func.id](*(_evaluate(a) for a in node.args))
    raise CalculationError(f"unsupported element: {type(node).__name__}")


def calculate(expression: str) -> float | int:
    """Evaluate plain arithmetic (numbers, + - * / // % **, parentheses, sqrt/abs/round, pi, e)."""
    if len(expression) > MAX_EXPRESSION:
        raise CalculationError("expression too long")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculationError("not an arithmetic expression") from exc
    try:
        return _evaluate(tree)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        if isinstance(exc, CalculationError):
            raise
        raise CalculationError(type(exc).__name__) from exc


@register_tool("calculator", "Evaluate an arithmetic expression exactly, e.g. '(17 + 5) * 3 / 4' or 'sqrt(2)'.")
def calculator(expression: Annotated[str, "the arithmetic expression to evaluate"]) -> str:
    try:
        result = calculate(expression)
    except CalculationError as exc:
        return f"error: {exc}"
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        result = int(result)
    return str(result)


@register_tool("utc_now", "The current date and time in UTC, in ISO 8601 format.")
def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
