"""The built-in tools: a calculator that never evals, the UTC clock, and the registry."""
from __future__ import annotations

import builtins
import re
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.errors import ToolError
from chalicelib.tools import CalculatorTool, ClockTool, ToolRegistry, default_tools


def calculate(expression: object) -> str:
    return CalculatorTool().run({"expression": expression})


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("17*23", "391"),
        ("1 + 2", "3"),
        ("10 - 12", "-2"),
        ("7/2", "3.5"),
        ("6/3", "2"),
        ("7//2", "3"),
        ("-7//2", "-4"),
        ("7 % 3", "1"),
        ("2**10", "1024"),
        ("2**-1", "0.5"),
        ("0.1 + 0.2", "0.3"),
        ("1.5e3", "1500"),
        ("+5", "5"),
        ("--3", "3"),
        ("  12  ", "12"),
        ("-0.0", "0"),
        ("9**1000 // 9**999", "9"),
    ],
)
def test_calculator_evaluates_arithmetic(expression: str, result: str) -> None:
    assert calculate(expression) == result


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("2 * 3 ** 2", "18"),
        ("2 ** 3 ** 2", "512"),
        ("-2 ** 2", "-4"),
        ("(-2) ** 2", "4"),
        ("10 - 4 - 3", "3"),
        ("100 / 10 / 5", "2"),
    ],
)
def test_calculator_follows_operator_precedence(expression: str, result: str) -> None:
    assert calculate(expression) == result


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("2^10", "1024"),
        ("6 × 7", "42"),
        ("8 ÷ 2", "4"),
        ("17 x 23", "391"),
        ("17x23", "391"),
        ("(2+3)x4", "20"),
    ],
)
def test_calculator_accepts_everyday_operator_spellings(expression: str, result: str) -> None:
    assert calculate(expression) == result


def test_calculator_keeps_big_integers_exact() -> None:
    assert calculate("2**100") == "1267650600228229401496703205376"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("a + 1", "the name 'a' is not allowed"),
        ("abs(-1)", "a function call is not allowed"),
        ("__import__('os')", "a function call is not allowed"),
        ("(1).real", "attribute access is not allowed"),
        ("lambda: 1", "a lambda is not allowed"),
        ("[1][0]", "indexing is not allowed"),
        ("1 < 2", "a comparison is not allowed"),
        ("1 << 2", "the LShift operator is not allowed"),
        ("True + 1", "True is not a number"),
        ("2j", "2j is not a number"),
        ("'a' * 3", "'a' is not a number"),
        ("1 +", "could not parse '1 +'"),
        ("import os", "could not parse"),
    ],
)
def test_calculator_rejects_anything_but_arithmetic(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=re.escape(message)):
        calculate(expression)


@pytest.mark.parametrize("expression", ["1/0", "1//0", "1 % 0", "0**-1", "1.5 / 0.0"])
def test_calculator_reports_division_by_zero(expression: str) -> None:
    with pytest.raises(ToolError, match="^division by zero$"):
        calculate(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9**9**9", "the exponent 387420489 is too large; the limit is 1000"),
        ("2**1001", "the exponent 1001 is too large"),
        ("(10**500)**1000", "too large (more than 1000 digits)"),
        ("9**1000 * 9**1000", "too large (more than 1000 digits)"),
        ("10.0**1000", "too large"),
        ("1e308 * 10", "too large for a decimal number"),
        ("1e400", "too large for a decimal number"),
    ],
)
def test_calculator_refuses_huge_numbers(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=re.escape(message)):
        calculate(expression)


def test_calculator_refuses_complex_results() -> None:
    with pytest.raises(ToolError, match="not a real number"):
        calculate("(-8) ** 0.5")


@pytest.mark.parametrize("expression", ["", "   "])
def test_calculator_rejects_empty_expression(expression: str) -> None:
    with pytest.raises(ToolError, match="the expression is empty"):
        calculate(expression)


def test_calculator_rejects_expressions_over_200_characters() -> None:
    calculate("+".join(["1"] * 100))
    with pytest.raises(ToolError, match="201 characters long; the limit is 200"):
        calculate("1" + "+1" * 100)


@pytest.mark.parametrize("input", [{"expression": 17}, {"expression": None}, {}])
def test_calculator_rejects_missing_or_non_string_expression(input: dict) -> None:
    with pytest.raises(ToolError, match='needs "expression" as a string'):
        CalculatorTool().run(input)


def test_calculator_never_calls_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("eval must not be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert calculate("(2+3)*4") == "20"


def test_clock_returns_utc_time_as_iso_text() -> None:
    clock = ClockTool(now=lambda: datetime(2026, 11, 24, 15, 40, 0, 123456, tzinfo=timezone.utc))
    assert clock.run({}) == "2026-11-24T15:40:00Z"


def test_clock_converts_other_time_zones_to_utc() -> None:
    moscow = timezone(timedelta(hours=3))
    clock = ClockTool(now=lambda: datetime(2026, 1, 1, 1, 30, tzinfo=moscow))
    assert clock.run({}) == "2025-12-31T22:30:00Z"


def test_clock_defaults_to_the_real_time() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    told = datetime.strptime(ClockTool().run({}), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= told <= datetime.now(timezone.utc)


def test_default_tools_offer_calculator_then_clock_with_schemas() -> None:
    specs = default_tools().specs()
    assert [spec.name for spec in specs] == ["calculator", "clock"]
    assert specs[0].input_schema["required"] == ["expression"]
    assert specs[0].input_schema["properties"]["expression"]["type"] == "string"
    assert specs[1].input_schema == {"type": "object", "properties": {}, "additionalProperties": False}
    assert all(spec.description for spec in specs)


def test_registry_runs_the_named_tool() -> None:
    assert default_tools().run("calculator", {"expression": "17*23"}) == "391"


def test_registry_rejects_unknown_tool_by_name() -> None:
    with pytest.raises(ToolError, match="unknown tool 'weather'; the tools are: calculator, clock"):
        default_tools().run("weather", {})


@pytest.mark.parametrize("input", [["17*23"], "17*23", None])
def test_registry_rejects_input_that_is_not_an_object(input: object) -> None:
    with pytest.raises(ToolError, match="the calculator tool needs a JSON object as input"):
        default_tools().run("calculator", input)


def test_registry_refuses_two_tools_with_one_name() -> None:
    with pytest.raises(ValueError, match="two tools are named 'clock'"):
        ToolRegistry([ClockTool(), ClockTool()])
