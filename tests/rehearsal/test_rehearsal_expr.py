"""The condition language: one row per construct; errors must name the token and its position.

The language is exactly what `make manifests` lets a template use (docs/ROLLOUTS.md); anything
else is refused, malformed text as ExprSyntaxError (Argo: every measurement Error), well-formed
expr-lang outside the language as UnsupportedExpression (the rehearsal stops).
"""

from __future__ import annotations

import math

import pytest

from scripts.rehearsal.expr import (
    ExprEvalError,
    ExprSyntaxError,
    UnsupportedExpression,
    Value,
    compile_condition,
    evaluate_condition,
    template_condition_problem,
    tokenize,
)

NAN = math.nan
GUARDED = "len(result) > 0 && !isNaN(result[0]) && result[0] >= 0.99"

# (condition, result, expected bool)
TRUTH_TABLE: list[tuple[str, Value, bool]] = [
    # comparisons on a scalar result
    ("result >= 0.99", 0.995, True),
    ("result >= 0.99", 0.98, False),
    ("result < 0.95", 0.94, True),
    ("result > 1", 1, False),
    ("result <= 1", 1.0, True),
    ("result == 1", 1.0, True),
    ("result != 1", 2.0, True),
    ("result > -1", 0.0, True),
    ("result < 1e-3", 0.0001, True),
    ("result < .5", 0.4, True),
    ("result < 1_000", 999.0, True),
    # vector indexing, negative index from the end (expr-lang)
    ("result[0] >= 0.99", [0.995, 0.5], True),
    ("result[1] >= 0.99", [0.995, 0.5], False),
    ("result[-1] == 0.5", [0.995, 0.5], True),
    # len and the no-data guard, && short-circuits
    ("len(result) == 2", [1.0, 2.0], True),
    ("len(result) == 0", [], True),
    ("len(result) > 0 && result[0] >= 0.99", [], False),
    ("len(result) == 3 && result[2] == 0.3", [0.1, 0.2, 0.3], True),
    (GUARDED, [], False),
    (GUARDED, [NAN], False),
    (GUARDED, [0.995], True),
    (GUARDED, [0.5], False),
    # NaN: ordered comparisons and == are false, != is true (IEEE, as in Go)
    ("result >= 0.99", NAN, False),
    ("result < 0.95", NAN, False),
    ("result != 0.5", NAN, True),
    ("result[0] >= 0.99", [NAN], False),
    ("isNaN(result)", NAN, True),
    ("isNaN(result[0])", [0.5], False),
    ("!isNaN(result[0])", [0.5], True),
]


@pytest.mark.parametrize(("condition", "result", "expected"), TRUTH_TABLE)
def test_condition_truth_table(condition: str, result: Value, expected: bool) -> None:
    assert evaluate_condition(condition, result) is expected


# Runtime failures: Argo marks the measurement Error, so these must raise ExprEvalError.
EVAL_ERRORS: list[tuple[str, Value, str]] = [
    ("result[0] >= 0.99", [], "index out of range: 0 (array of length 0)"),
    ("result[2] > 0", [1.0, 2.0], "index out of range: 2"),
    ("result[-3] > 0", [1.0, 2.0], "index out of range: -3"),
    ("result[0] > 1", 0.5, "cannot index float"),
    ("len(result) > 0", 1.0, "invalid argument for len (type float)"),
    ("result > 1", [1.0], "invalid operation"),
    ("isNaN(result)", [1.0], "isNaN() of array"),
]


@pytest.mark.parametrize(("condition", "result", "message"), EVAL_ERRORS)
def test_runtime_errors(condition: str, result: Value, message: str) -> None:
    with pytest.raises(ExprEvalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate_condition(condition, result)


# Malformed text: ExprSyntaxError naming the token and its position.
SYNTAX_ERRORS: list[tuple[str, str, int]] = [
    ("", "empty expression", 0),
    ("result >=", "unexpected token 'end of input'", 9),
    ("result", "unexpected token 'end of input'", 6),
    ("result >= 0.99)", "unexpected token ')'", 14),
    ("result @ 1", "unexpected character '@'", 7),
    ("1__0 > 1", "invalid number '1__0'", 0),
    ("result > 1x", "invalid number '1x'", 9),
    ("result[0 > 1", "unexpected token '>'", 9),
    ("result[0] >= 1 &&", "unexpected token 'end of input'", 17),
]


@pytest.mark.parametrize(("condition", "message", "position"), SYNTAX_ERRORS)
def test_syntax_errors_name_token_and_position(condition: str, message: str, position: int) -> None:
    with pytest.raises(ExprSyntaxError) as caught:
        compile_condition(condition)
    assert not isinstance(caught.value, UnsupportedExpression)
    assert message in str(caught.value)
    assert caught.value.position == position
    assert f"at position {position}" in str(caught.value)


# Valid expr-lang outside the language: refused, naming what and where.
UNSUPPORTED: list[tuple[str, str, int]] = [
    ("result > 1 ? true : false", "'?'", 11),
    ("result < 0 || result > 1", "'||'", 11),
    ("abs(result) < 1", "function 'abs'", 0),
    ("default(result, 0) > 1", "function 'default'", 0),
    ("max(result) > 1", "function 'max'", 0),
    ("all(result, # < 1)", "function 'all'", 0),
    ("result[0] / result[1] < 2", "'/'", 10),
    ("result[0] >= result[1]", "'result'", 13),
    ("!(result > 1)", "'!' before anything but isNaN", 0),
    ("true", "'true'", 0),
    ("result in [1, 2]", "'in'", 7),
    ("result[0.5] > 1", "'0.5'", 7),
    ("len(result) > 0.5", "'0.5'", 14),
]


@pytest.mark.parametrize(("condition", "what", "position"), UNSUPPORTED)
def test_unsupported_constructs_are_refused(condition: str, what: str, position: int) -> None:
    with pytest.raises(UnsupportedExpression) as caught:
        compile_condition(condition)
    assert what in str(caught.value)
    assert "not one of the condition shapes" in str(caught.value)
    assert caught.value.position == position


def test_compiled_condition_is_reusable() -> None:
    condition = compile_condition("len(result) > 0 && result[0] >= 0.99")
    assert condition.evaluate([1.0]) is True
    assert condition.evaluate([0.5]) is False
    assert condition.evaluate([]) is False


def test_tokenizer_reports_positions() -> None:
    tokens = tokenize("result[0] >= 0.99")
    assert [(t.kind, t.text, t.position) for t in tokens] == [
        ("name", "result", 0),
        ("op", "[", 6),
        ("num", "0", 7),
        ("op", "]", 8),
        ("op", ">=", 10),
        ("num", "0.99", 13),
        ("eof", "", 17),
    ]
    assert tokens[5].value == 0.99 and isinstance(tokens[2].value, int)


# What `make manifests` allows in a template, before its args are filled in.
TEMPLATE_CONDITIONS: list[tuple[str, str | None]] = [
    ("len(result) > 0 && !isNaN(result[0]) && result[0] >= {{args.min}}", None),
    ("len(result) > 0 && !isNaN(result[0]) && result[0] < {{ args.max-ratio }}", None),
    ("len(result) > 0 && !isNaN(result[0]) && result[0] <= 0", None),
    ("result[0] >= {{args.min}}", "no data"),
    ("len(result) > 0 && result[0] >= 0.99", "no data"),
    ("len(result) > 0 && !isNaN(result[0]) && result[0] >= {{secret}}", "'{'"),
    ("len(result) > 0 && !isNaN(result[0]) && max(result) >= 1", "function 'max'"),
    ("len(result) > 0 && !isNaN(result[0]) && result[0] >=", "end of input"),
]


@pytest.mark.parametrize(("condition", "problem"), TEMPLATE_CONDITIONS)
def test_template_conditions_allowed_by_make_manifests(condition: str, problem: str | None) -> None:
    found = template_condition_problem(condition)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
