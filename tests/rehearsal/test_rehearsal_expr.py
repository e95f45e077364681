"""The expr-lang subset: one row per construct; errors must name the token and its position."""

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
    tokenize,
)

NAN = math.nan
INF = math.inf

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
    # vector indexing, negative index from the end (expr-lang)
    ("result[0] >= 0.99", [0.995, 0.5], True),
    ("result[1] >= 0.99", [0.995, 0.5], False),
    ("result[-1] == 0.5", [0.995, 0.5], True),
    # arithmetic and precedence
    ("result[0] / result[1] < 2", [3.0, 2.0], True),
    ("1 + 2 * 3 == 7", 0.0, True),
    ("(1 + 2) * 3 == 9", 0.0, True),
    ("10 - 2 - 3 == 5", 0.0, True),
    ("2 ** 3 ** 2 == 512", 0.0, True),
    ("-2 ** 2 == -4", 0.0, True),
    ("7 % 3 == 1", 0.0, True),
    ("-7 % 3 == -1", 0.0, True),
    ("3 / 2 == 1.5", 0.0, True),
    ("1 / 0 > 1e308", 0.0, True),
    ("result * 2 == 2.5", 1.25, True),
    ("+result == 1.25", 1.25, True),
    ("1_000 == 1000", 0.0, True),
    ("1e3 == 1000", 0.0, True),
    (".5 == 0.5", 0.0, True),
    # boolean operators, word forms, short-circuit
    ("result > 0 && result < 1", 0.5, True),
    ("result > 0 and result < 1", 1.5, False),
    ("result < 0 || result > 1", 1.5, True),
    ("result < 0 or result > 1", 0.5, False),
    ("!(result > 1)", 0.5, True),
    ("not (result > 1)", 0.5, True),
    ("!true == false", 0.0, True),
    ("true", 0.0, True),
    ("false || true && false", 0.0, False),
    ("len(result) > 0 && result[0] >= 0.99", [], False),
    ("len(result) == 0 || result[0] >= 0.99", [], True),
    # len and the no-data guard of docs/ROLLOUTS.md
    ("len(result) == 2", [1.0, 2.0], True),
    ("len(result) == 0", [], True),
    # NaN: ordered comparisons and == are false, != is true (IEEE, as in Go)
    ("result >= 0.99", NAN, False),
    ("result < 0.95", NAN, False),
    ("result == result", NAN, False),
    ("result != 0.5", NAN, True),
    ("result[0] >= 0.99", [NAN], False),
    ("isNaN(result)", NAN, True),
    ("isNaN(result[0])", [0.5], False),
    ("isNaN(1)", 0.0, False),
    ("isNaN(0 / 0)", 0.0, True),
    ("isInf(result)", INF, True),
    ("isInf(result)", -INF, True),
    ("isInf(result)", 1.0, False),
    # asInt / asFloat
    ('asInt("42") == 42', 0.0, True),
    ("asInt(result) == 2", 2.9, True),
    ("asInt(result) == -2", -2.9, True),
    ('asFloat("0.5") == 0.5', 0.0, True),
    ("asFloat(result) == 3", 3, True),
    # all / any, with and without braces, nested predicates
    ("all(result, # < 1)", [0.1, 0.9], True),
    ("all(result, {# < 1})", [0.1, 1.1], False),
    ("any(result, # > 1)", [0.1, 1.1], True),
    ("any(result, {# > 1})", [0.1, 0.9], False),
    ("all(result, # < 1)", [], True),
    ("any(result, # < 1)", [], False),
    ("all(result, any([1, 2], {# == 2}))", [0.0], True),
    ("all(result, # >= 0.99 || isNaN(#))", [1.0, NAN], True),
    # max / min / mean over arrays and arguments
    ("max(result) == 3", [1.0, 3.0, 2.0], True),
    ("min(result) == 1", [1.0, 3.0, 2.0], True),
    ("mean(result) == 2", [1.0, 3.0, 2.0], True),
    ("max(1, 5, 3) == 5", 0.0, True),
    ("min(result, 0.5) == 0.5", [1.0, 3.0], True),
    ("mean(result) == 0", [], True),
    ("max(result) > 1", [NAN, 5.0], False),
    ("max(result) == 5", [1.0, NAN, 5.0], True),
    # in / not in
    ("result in [1, 2]", 2.0, True),
    ("result not in [1, 2]", 3.0, True),
    ("1 in result", [0.0, 1.0], True),
    # strings
    ('"a" < "b"', 0.0, True),
    ('"a" + "b" == "ab"', 0.0, True),
    ("1 == 'x'", 0.0, False),
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
    ("result", 1.0, "returned float 1.0, not a bool"),
    ("result[0]", [0.5], "returned float 0.5, not a bool"),
    ("result + 1", 1.0, "not a bool"),
    ("len(result)", [1.0], "not a bool"),
    ("len(result) > 0", 1.0, "invalid argument for len (type float)"),
    ("result && true", 1.0, "expected a bool"),
    ("!result", 1.0, "expected a bool"),
    ("result < 'a'", 1.0, "invalid operation float < string"),
    ("-'a' == 1", 0.0, "expected a number"),
    ("1.5 % 1 == 0", 0.0, "needs integers"),
    ("1 % 0 == 0", 0.0, "integer divide by zero"),
    ("max(result) > 1", [], "max() of an empty array"),
    ("min(result) > 1", [], "min() of an empty array"),
    ("all(result, # < 1)", 0.5, "all() needs an array"),
    ("any(result, #)", [1.0], "expected a bool"),
    ('asInt("x") == 1', 0.0, "not an integer"),
    ('asInt(" 1") == 1', 0.0, "not an integer"),
    ("asInt(result) == 1", NAN, "not a finite number"),
    ('asFloat("1_0") == 1', 0.0, "not a number"),
    ("result in 1", 1.0, "needs an array"),
    ("result[0.5] > 1", [1.0], "index must be an int"),
]


@pytest.mark.parametrize(("condition", "result", "message"), EVAL_ERRORS)
def test_runtime_errors(condition: str, result: Value, message: str) -> None:
    with pytest.raises(ExprEvalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate_condition(condition, result)


# Malformed text: ExprSyntaxError naming the token and its position.
SYNTAX_ERRORS: list[tuple[str, str, int]] = [
    ("", "empty expression", 0),
    ("result >=", "unexpected token 'end of input'", 9),
    ("result >= 0.99)", "unexpected token ')'", 14),
    ("(result > 1", "expected ')', found 'end of input'", 11),
    ("result @ 1", "unexpected character '@'", 7),
    ("foo > 1", "unknown name 'foo'", 0),
    ("bar(result)", "unknown function 'bar'", 0),
    ("len > 1", "function 'len' must be called", 0),
    ("len(result, 1) > 0", "len() takes 1 argument(s), got 2", 0),
    ("all(result) ", "all() takes 2 argument(s), got 1", 0),
    ("# > 1", "'#' outside a predicate", 0),
    ('"abc', "unterminated string", 0),
    ("1__0 > 1", "invalid number '1__0'", 0),
    ("1x > 1", "invalid number '1x'", 0),
    ("result[0 > 1", "expected ']'", 12),
    ("all(result, {# < 1) ", "expected '}'", 18),
]


@pytest.mark.parametrize(("condition", "message", "position"), SYNTAX_ERRORS)
def test_syntax_errors_name_token_and_position(condition: str, message: str, position: int) -> None:
    with pytest.raises(ExprSyntaxError) as caught:
        compile_condition(condition)
    assert not isinstance(caught.value, UnsupportedExpression)
    assert message in str(caught.value)
    assert caught.value.position == position
    assert f"at position {position}" in str(caught.value)


# Valid expr-lang the subset refuses: the rehearsal must stop, not guess.
UNSUPPORTED: list[tuple[str, str, int]] = [
    ("result > 1 ? true : false", "the ternary operator", 11),
    ("result ?? 1 > 0", "operator '??'", 7),
    ("abs(result) < 1", "function 'abs'", 0),
    ("sum(result) < 1", "function 'sum'", 0),
    ("default(result, 0) > 1", "function 'default'", 0),
    ("result | len() > 0", "operator '|'", 7),
    ("result.value > 1", "member access", 6),
    ("result[0:1] == 1", "slicing", 8),
    ("1..3 == 1", "operator '..'", 1),
    ("'ab' matches 'a'", "operator 'matches'", 5),
    ("result == nil", "'nil'", 10),
    ("{a: 1} == 1", "map literals", 0),
    ("`raw` == 'raw'", "raw strings", 0),
    ("all(result, #index > 0)", "named predicate variables", 12),
]


@pytest.mark.parametrize(("condition", "what", "position"), UNSUPPORTED)
def test_unsupported_constructs_are_refused(condition: str, what: str, position: int) -> None:
    with pytest.raises(UnsupportedExpression) as caught:
        compile_condition(condition)
    assert what in str(caught.value)
    assert "not implemented by the rehearsal" in str(caught.value)
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


def test_string_escapes() -> None:
    assert evaluate_condition(r'"a\"b" == ' + "'a\"b'", 0.0) is True
