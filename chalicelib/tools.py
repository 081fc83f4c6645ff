"""Built-in tools the model may call: a calculator that never evals, and the UTC clock."""
from __future__ import annotations

import ast
import math
import operator
import re
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Union

from chalicelib.errors import ToolError
from chalicelib.providers.base import ToolSpec

Number = Union[int, float]

MAX_EXPRESSION_LENGTH = 200
MAX_EXPONENT = 1000
MAX_DIGITS = 1000
# Any result at or above this has more than MAX_DIGITS digits.
_TOO_LARGE = 10**MAX_DIGITS

_BINARY_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPERATORS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_SPELLINGS = str.maketrans({"^": "**", "×": "*", "÷": "/"})
# "17 x 23" and "17x23" mean multiplication; an x that is not between operands stays a name.
_TIMES_X = re.compile(r"([\d.)]\s*)[xX](?=\s*[-+\d.(])")
_DISALLOWED = {
    ast.Call: "a function call",
    ast.Attribute: "attribute access",
    ast.Lambda: "a lambda",
    ast.Subscript: "indexing",
    ast.Compare: "a comparison",
    ast.BoolOp: "and/or",
}
_HELP = "use numbers, + - * / // % ^ and parentheses"


class Tool(ABC):
    """A built-in tool: what the model is told about it, and how to run it."""

    spec: ToolSpec

    @abstractmethod
    def run(self, input: dict[str, Any]) -> str:
        """Return the tool's output as text; raise ToolError with a readable message on bad input."""


class CalculatorTool(Tool):
    """Evaluate arithmetic by walking the parsed syntax tree, never with eval."""

    spec = ToolSpec(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression exactly and return the resulting number as text. "
            "Supports integers and decimals, + - * / // (floor division) % (remainder), ** or ^ "
            "(power, exponent at most 1000), unary minus and parentheses; × and ÷ also work. "
            "No variables or functions. Use it for any arithmetic instead of working it out yourself."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "description": "The expression, e.g. \"17*23\" or \"(2+3)^4 / 7\".",
                    "maxLength": MAX_EXPRESSION_LENGTH,
                },
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
    )

    def run(self, input: dict[str, Any]) -> str:
        """Return the value of input["expression"], e.g. "391" for "17*23"."""
        expression = input.get("expression")
        if not isinstance(expression, str):
            raise ToolError('the calculator needs "expression" as a string, e.g. {"expression": "17*23"}')
        expression = expression.strip()
        if not expression:
            raise ToolError("the expression is empty")
        if len(expression) > MAX_EXPRESSION_LENGTH:
            raise ToolError(
                f"the expression is {len(expression)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
            )
        source = _TIMES_X.sub(r"\1*", expression).translate(_SPELLINGS)
        try:
            tree = ast.parse(source, mode="eval")
        except (SyntaxError, ValueError) as error:
            # ValueError: null bytes in the source.
            raise ToolError(f"could not parse {expression!r}: {getattr(error, 'msg', error)}") from None
        return _format(_evaluate(tree.body))


class ClockTool(Tool):
    """Tell the current time in UTC."""

    spec = ToolSpec(
        name="clock",
        description=(
            "Return the current date and time in UTC as ISO-8601 text, e.g. \"2026-11-24T15:40:00Z\". "
            "Takes no input."
        ),
        input_schema={"type": "object", "properties": {}, "additionalProperties": False},
    )

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._now = now

    def run(self, input: dict[str, Any]) -> str:
        """Return the current UTC time like "2026-11-24T15:40:00Z"; input keys are ignored."""
        return self._now().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ToolRegistry:
    """The tools a run may use, by name."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.spec.name in self._tools:
                raise ValueError(f"two tools are named {tool.spec.name!r}")
            self._tools[tool.spec.name] = tool

    def specs(self) -> tuple[ToolSpec, ...]:
        """Return the specs to tell the model about, in registration order."""
        return tuple(tool.spec for tool in self._tools.values())

    def run(self, name: str, input: object) -> str:
        """Return the named tool's output for input; raise ToolError for an unknown tool or bad input."""
        tool = self._tools.get(name)
        if tool is None:
            raise ToolError(f"unknown tool {name!r}; the tools are: {', '.join(self._tools)}")
        if not isinstance(input, dict):
            raise ToolError(f"the {name} tool needs a JSON object as input, not {type(input).__name__}")
        return tool.run(input)


def default_tools() -> ToolRegistry:
    """Return the built-in tools: calculator and clock."""
    return ToolRegistry([CalculatorTool(), ClockTool()])


def _evaluate(node: ast.expr) -> Number:
    """Return the value of one node of an arithmetic expression."""
    if isinstance(node, ast.Constant):
        return _checked(_literal(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPERATORS:
        return _checked(_UNARY_OPERATORS[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            return _checked(_BINARY_OPERATORS[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError(f"the result is too large (more than {MAX_DIGITS} digits)") from None
    raise ToolError(f"{_describe(node)} is not allowed in a calculator expression; {_HELP}")


def _literal(value: object) -> Number:
    """Return value if it is a real number; bools and complex numbers are not."""
    if type(value) not in (int, float):
        raise ToolError(f"{value!r} is not a number; {_HELP}")
    return value  # type: ignore[return-value]


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse a power before computing it when it would be huge, so 9**9**9 cannot hang."""
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"the exponent {_format(exponent)} is too large; the limit is {MAX_EXPONENT}")
    # An int power has at least (bits - 1) * exponent bits: refuse it without computing it.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if (abs(base).bit_length() - 1) * exponent > _TOO_LARGE.bit_length():
            raise ToolError(f"the result is too large (more than {MAX_DIGITS} digits)")


def _checked(value: object) -> Number:
    """Return value if it is a finite real number of at most MAX_DIGITS digits."""
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large for a decimal number")
    if isinstance(value, int) and abs(value) >= _TOO_LARGE:
        raise ToolError(f"the result is too large (more than {MAX_DIGITS} digits)")
    return value  # type: ignore[return-value]


def _describe(node: ast.expr) -> str:
    """Return a person's name for a construct the calculator refuses."""
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the {type(node.op).__name__} operator"
    return _DISALLOWED.get(type(node), f"{type(node).__name__} syntax")


def _format(value: Number) -> str:
    """Return the number as text: ints exactly, floats to 15 significant digits without float noise."""
    if isinstance(value, int):
        return str(value)
    # Adding 0.0 turns -0.0 into 0.0.
    return format(value + 0.0, ".15g")
