"""The subset of expr-lang that Argo Rollouts conditions use, parsed and evaluated without `eval`.

Argo Rollouts evaluates `successCondition` / `failureCondition` with expr-lang
(github.com/expr-lang/expr) against an environment holding `result`, `asInt`, `asFloat`, `isNaN`
and `isInf`. The rehearsal must reach the same verdict, so this module reproduces the parts of the
language conditions actually use, with expr-lang's precedence and Go's float semantics, and
refuses the rest instead of guessing:

- literals: ints (``1``, ``1_000``), floats (``0.99``, ``1e-3``), ``true``/``false``, quoted
  strings (for ``asInt("3")``), array literals (for ``in``);
- ``result``, ``result[i]`` (negative i counts from the end, as in expr-lang), ``#`` inside a
  predicate;
- ``+ - * / % **``, comparisons, ``&& || !`` (and their word forms ``and or not``), ``in`` and
  ``not in``, parentheses;
- ``len``, ``isNaN``, ``isInf``, ``asInt``, ``asFloat``, ``max``, ``min``, ``mean``, ``all``,
  ``any`` (predicate written ``# < 1`` or ``{# < 1}``).

Two kinds of rejection, because they mean different things for a rehearsal:

- :class:`ExprSyntaxError`: the text is not a valid expression at all. Argo fails to compile it on
  every measurement, so each measurement is **Error**; the rehearsal reproduces that.
- :class:`UnsupportedExpression`: valid expr-lang (a ternary, ``??``, a pipe, ``abs``...) that this
  subset does not implement. The rehearsal cannot predict Argo's answer and must stop rather than
  report a verdict it did not compute.

Runtime failures (index out of range, wrong operand types, non-bool result) raise
:class:`ExprEvalError`, which the analysis turns into a measurement **Error** like Argo does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

# What an expression can evaluate to. `list` holds numbers (Prometheus vectors) or literals.
Value = Union[bool, int, float, str, list["Value"]]


class ConditionError(Exception):
    """Base class: the condition could not produce a boolean."""


class ExprSyntaxError(ConditionError):
    """Malformed expression; names the offending token and its 0-based position."""

    def __init__(self, message: str, source: str, position: int) -> None:
        super().__init__(f"{message} at position {position} in {source!r}")
        self.position = position


class UnsupportedExpression(ExprSyntaxError):
    """Valid expr-lang outside the implemented subset (the rehearsal cannot judge it)."""


class ExprEvalError(ConditionError):
    """The expression parsed but failed at run time (Argo: measurement Error)."""


# ---------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True)
class Token:
    kind: str  # "num", "str", "name", "op", "eof"
    text: str
    position: int
    value: Union[int, float, str, None] = None


# Longest first, so "**" wins over "*" and "<=" over "<".
_OPERATORS = ("**", "==", "!=", "<=", ">=", "&&", "||", "??", "?.", "..", "|")
_SINGLE = "+-*/%<>!()[],{}#^?:."
# Operators that are valid expr-lang but not in our subset.
# ":" is absent: it only follows a "?" (already refused) or sits in a slice (refused by postfix).
_UNSUPPORTED_OPS = {"??", "?.", "..", "|", "?", ".", "^"}
_UNSUPPORTED_WORDS = {"matches", "contains", "startsWith", "endsWith", "let", "nil"}


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch.isspace():
            i += 1
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and source[i + 1].isdigit()):
            start = i
            while i < n and (source[i].isdigit() or source[i] == "_"):
                i += 1
            is_float = False
            # A "." followed by another "." is the range operator (1..3), not a decimal point.
            if i < n and source[i] == "." and not (i + 1 < n and source[i + 1] == "."):
                is_float = True
                i += 1
                while i < n and (source[i].isdigit() or source[i] == "_"):
                    i += 1
            if i < n and source[i] in "eE":
                j = i + 1
                if j < n and source[j] in "+-":
                    j += 1
                if j < n and source[j].isdigit():
                    is_float = True
                    i = j
                    while i < n and source[i].isdigit():
                        i += 1
            text = source[start:i]
            if text.endswith("_") or "__" in text:
                raise ExprSyntaxError(f"invalid number {text!r}", source, start)
            if i < n and (source[i].isalpha() or source[i] == "_"):
                raise ExprSyntaxError(f"invalid number {source[start:i + 1]!r}", source, start)
            clean = text.replace("_", "")
            number: Union[int, float] = float(clean) if is_float else int(clean)
            tokens.append(Token("num", text, start, number))
            continue
        if ch.isalpha() or ch == "_" or ch == "$":
            start = i
            while i < n and (source[i].isalnum() or source[i] in "_$"):
                i += 1
            tokens.append(Token("name", source[start:i], start))
            continue
        if ch in "\"'":
            start = i
            i += 1
            chars: list[str] = []
            while i < n and source[i] != ch:
                if source[i] == "\\" and i + 1 < n:
                    escaped = source[i + 1]
                    chars.append({"n": "\n", "t": "\t"}.get(escaped, escaped))
                    i += 2
                    continue
                chars.append(source[i])
                i += 1
            if i >= n:
                raise ExprSyntaxError("unterminated string", source, start)
            i += 1
            tokens.append(Token("str", source[start:i], start, "".join(chars)))
            continue
        if ch == "`":
            raise UnsupportedExpression(
                "raw strings (`...`) are valid expr-lang but not implemented by the rehearsal",
                source,
                i,
            )
        for op in _OPERATORS:
            if source.startswith(op, i):
                tokens.append(Token("op", op, i))
                i += len(op)
                break
        else:
            if ch in _SINGLE:
                tokens.append(Token("op", ch, i))
                i += 1
            else:
                raise ExprSyntaxError(f"unexpected character {ch!r}", source, i)
    tokens.append(Token("eof", "", n))
    return tokens


# ---------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class Node:
    position: int


@dataclass(frozen=True)
class Literal(Node):
    value: Value


@dataclass(frozen=True)
class Name(Node):
    name: str  # "result" or "#"


@dataclass(frozen=True)
class ArrayLit(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Index(Node):
    target: Node
    index: Node


@dataclass(frozen=True)
class Call(Node):
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Predicate(Node):
    body: Node


# expr-lang's binary precedences (parser/operator); "**" is right-associative.
_BINARY = {
    "||": 10,
    "or": 10,
    "&&": 15,
    "and": 15,
    "==": 20,
    "!=": 20,
    "<": 20,
    ">": 20,
    "<=": 20,
    ">=": 20,
    "in": 20,
    "not in": 20,
    "+": 30,
    "-": 30,
    "*": 60,
    "/": 60,
    "%": 60,
    "**": 100,
}
# Unary operands bind at these precedences: "!x == y" is "(!x) == y", "-x ** 2" is "-(x ** 2)".
_UNARY = {"!": 50, "not": 50, "-": 90, "+": 90}
_CANONICAL = {"or": "||", "and": "&&", "not": "!"}

_FUNCTIONS = {"len", "isNaN", "isInf", "asInt", "asFloat", "max", "min", "mean", "all", "any"}
_PREDICATE_FUNCTIONS = {"all", "any"}
# expr-lang builtins we do not implement: naming them is valid expr-lang, hence "unsupported".
_EXPR_BUILTINS = {
    "abs",
    "ceil",
    "floor",
    "round",
    "int",
    "float",
    "string",
    "sum",
    "median",
    "none",
    "one",
    "filter",
    "map",
    "count",
    "find",
    "findIndex",
    "findLast",
    "findLastIndex",
    "groupBy",
    "sortBy",
    "sort",
    "reduce",
    "first",
    "last",
    "keys",
    "values",
    "type",
    "toJSON",
    "fromJSON",
    "now",
    "duration",
    "date",
    "default",
    "isNil",
    "upper",
    "lower",
    "trim",
    "split",
    "join",
    "reverse",
    "uniq",
    "concat",
    "flatten",
    "get",
    "take",
    "bitand",
    "bitor",
}


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0
        self.predicate_depth = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def error(self, message: str, token: Token) -> ExprSyntaxError:
        return ExprSyntaxError(message, self.source, token.position)

    def unsupported(self, what: str, token: Token) -> UnsupportedExpression:
        return UnsupportedExpression(
            f"{what} is valid expr-lang but not implemented by the rehearsal",
            self.source,
            token.position,
        )

    def expect(self, text: str) -> Token:
        token = self.current
        if token.kind != "op" or token.text != text:
            shown = token.text or "end of input"
            raise self.error(f"expected {text!r}, found {shown!r}", token)
        return self.advance()

    def parse(self) -> Node:
        if self.current.kind == "eof":
            raise self.error("empty expression", self.current)
        node = self.expression(0)
        token = self.current
        if token.kind != "eof":
            self._reject_if_unsupported(token)
            raise self.error(f"unexpected token {token.text!r}", token)
        return node

    def _reject_if_unsupported(self, token: Token) -> None:
        if token.kind == "op" and token.text in _UNSUPPORTED_OPS:
            label = "the ternary operator" if token.text == "?" else f"operator {token.text!r}"
            raise self.unsupported(label, token)
        if token.kind == "name" and token.text in _UNSUPPORTED_WORDS:
            raise self.unsupported(f"operator {token.text!r}", token)

    def _binary_operator(self) -> tuple[str, Token] | None:
        token = self.current
        if token.kind == "op" and token.text in _BINARY:
            return token.text, token
        if token.kind == "name" and token.text in ("and", "or", "in"):
            return token.text, token
        if token.kind == "name" and token.text == "not":
            following = self.tokens[self.pos + 1]
            if following.kind == "name" and following.text == "in":
                return "not in", token
        return None

    def expression(self, min_precedence: int) -> Node:
        left = self.unary()
        while True:
            found = self._binary_operator()
            if found is None:
                self._reject_if_unsupported(self.current)
                return left
            op, token = found
            precedence = _BINARY[op]
            if precedence < min_precedence:
                return left
            self.advance()
            if op == "not in":
                self.advance()
            # Left-associative: the right side only takes tighter operators; "**" is right-assoc.
            next_min = precedence if op == "**" else precedence + 1
            right = self.expression(next_min)
            left = Binary(token.position, _CANONICAL.get(op, op), left, right)

    def unary(self) -> Node:
        token = self.current
        if (token.kind == "op" and token.text in ("!", "-", "+")) or (
            token.kind == "name" and token.text == "not"
        ):
            self.advance()
            operand = self.expression(_UNARY[token.text])
            return Unary(token.position, _CANONICAL.get(token.text, token.text), operand)
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            token = self.current
            if token.kind == "op" and token.text == "[":
                self.advance()
                if self.current.kind == "op" and self.current.text == ":":
                    raise self.unsupported("slicing", self.current)
                index = self.expression(0)
                if self.current.kind == "op" and self.current.text == ":":
                    raise self.unsupported("slicing", self.current)
                self.expect("]")
                node = Index(token.position, node, index)
            elif token.kind == "op" and token.text in (".", "?."):
                raise self.unsupported("member access", token)
            else:
                return node

    def primary(self) -> Node:
        token = self.current
        if token.kind == "num":
            self.advance()
            assert isinstance(token.value, (int, float))
            return Literal(token.position, token.value)
        if token.kind == "str":
            self.advance()
            assert isinstance(token.value, str)
            return Literal(token.position, token.value)
        if token.kind == "op" and token.text == "(":
            self.advance()
            node = self.expression(0)
            self.expect(")")
            return node
        if token.kind == "op" and token.text == "[":
            self.advance()
            items: list[Node] = []
            while not (self.current.kind == "op" and self.current.text == "]"):
                items.append(self.expression(0))
                if self.current.kind == "op" and self.current.text == ",":
                    self.advance()
                    continue
                break
            self.expect("]")
            return ArrayLit(token.position, tuple(items))
        if token.kind == "op" and token.text == "#":
            if self.predicate_depth == 0:
                raise self.error("'#' outside a predicate of all()/any()", token)
            self.advance()
            if self.current.kind == "name":
                raise self.unsupported("named predicate variables (#index, #acc)", token)
            return Name(token.position, "#")
        if token.kind == "name":
            return self.name(token)
        if token.kind == "op" and token.text == "{":
            raise self.unsupported("map literals", token)
        self._reject_if_unsupported(token)
        shown = token.text or "end of input"
        raise self.error(f"unexpected token {shown!r}", token)

    def name(self, token: Token) -> Node:
        self.advance()
        text = token.text
        if text == "true" or text == "false":
            return Literal(token.position, text == "true")
        if text == "result":
            return Name(token.position, "result")
        is_call = self.current.kind == "op" and self.current.text == "("
        if text in _FUNCTIONS:
            if not is_call:
                raise self.error(f"function {text!r} must be called", token)
            return self.call(token)
        if text in _EXPR_BUILTINS:
            raise self.unsupported(f"function {text!r}", token)
        if text in _UNSUPPORTED_WORDS:
            raise self.unsupported(f"{text!r}", token)
        if is_call:
            raise self.error(f"unknown function {text!r}", token)
        raise self.error(f"unknown name {text!r}", token)

    def call(self, token: Token) -> Node:
        self.expect("(")
        args: list[Node] = []
        predicate_call = token.text in _PREDICATE_FUNCTIONS
        while not (self.current.kind == "op" and self.current.text == ")"):
            if predicate_call and len(args) == 1:
                args.append(self.predicate())
            else:
                args.append(self.expression(0))
            if self.current.kind == "op" and self.current.text == ",":
                self.advance()
                continue
            break
        self.expect(")")
        _check_arity(token, tuple(args), self.source)
        return Call(token.position, token.text, tuple(args))

    def predicate(self) -> Node:
        # expr-lang accepts both `all(xs, # < 1)` and `all(xs, {# < 1})`.
        start = self.current
        self.predicate_depth += 1
        try:
            if start.kind == "op" and start.text == "{":
                self.advance()
                body = self.expression(0)
                self.expect("}")
            else:
                body = self.expression(0)
        finally:
            self.predicate_depth -= 1
        return Predicate(start.position, body)


_ARITY: dict[str, tuple[int, int | None]] = {
    "len": (1, 1),
    "isNaN": (1, 1),
    "isInf": (1, 1),
    "asInt": (1, 1),
    "asFloat": (1, 1),
    "all": (2, 2),
    "any": (2, 2),
    "max": (1, None),
    "min": (1, None),
    "mean": (1, None),
}


def _check_arity(token: Token, args: tuple[Node, ...], source: str) -> None:
    low, high = _ARITY[token.text]
    if len(args) < low or (high is not None and len(args) > high):
        expected = str(low) if low == high else f"at least {low}"
        raise ExprSyntaxError(
            f"{token.text}() takes {expected} argument(s), got {len(args)}", source, token.position
        )


# ---------------------------------------------------------------------------------------------
# Evaluation


def _type_name(value: Value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "array"


def _is_number(value: Value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Value, what: str) -> Union[int, float]:
    if not _is_number(value):
        raise ExprEvalError(f"{what}: expected a number, got {_type_name(value)} {value!r}")
    assert isinstance(value, (int, float))
    return value


def _bool(value: Value, what: str) -> bool:
    if not isinstance(value, bool):
        raise ExprEvalError(f"{what}: expected a bool, got {_type_name(value)} {value!r}")
    return value


def _equal(left: Value, right: Value) -> bool:
    # expr-lang: numbers compare across int/float; other types must match; NaN == NaN is false.
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if type(left) is not type(right):
        return False
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_equal(a, b) for a, b in zip(left, right))
    return bool(left == right)


def _order(op: str, left: Value, right: Value, position: int) -> bool:
    if _is_number(left) and _is_number(right):
        a, b = _number(left, op), _number(right, op)
    elif isinstance(left, str) and isinstance(right, str):
        # Python string comparison is bytewise on code points, like Go's.
        return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
    else:
        raise ExprEvalError(
            f"invalid operation {_type_name(left)} {op} {_type_name(right)} at position {position}"
        )
    # IEEE: every ordering with NaN is false, which Python floats already do.
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


def _arithmetic(op: str, left: Value, right: Value, position: int) -> Value:
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right
    a = _number(left, f"operator {op!r} at position {position}")
    b = _number(right, f"operator {op!r} at position {position}")
    both_int = isinstance(a, int) and isinstance(b, int)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        # expr-lang always divides as float64; Go gives ±Inf / NaN on zero, it does not panic.
        fa, fb = float(a), float(b)
        if fb == 0.0:
            if fa == 0.0 or math.isnan(fa):
                return math.nan
            return math.copysign(math.inf, fa) * math.copysign(1.0, fb)
        return fa / fb
    if op == "%":
        if not both_int:
            raise ExprEvalError(f"operator '%' needs integers at position {position}")
        assert isinstance(a, int) and isinstance(b, int)
        if b == 0:
            raise ExprEvalError(f"integer divide by zero at position {position}")
        # Go's % truncates toward zero (sign of the dividend), unlike Python's floor modulo.
        return int(math.fmod(a, b))
    if op == "**":
        try:
            return math.pow(float(a), float(b))
        except (OverflowError, ValueError):
            return math.inf if float(a) > 0 else math.nan
    raise ExprEvalError(f"unknown operator {op!r}")  # pragma: no cover - parser only emits known


def _flatten_numbers(args: list[Value], function: str) -> list[Union[int, float]]:
    numbers: list[Union[int, float]] = []
    for arg in args:
        if isinstance(arg, list):
            numbers.extend(_flatten_numbers(list(arg), function))
        else:
            numbers.append(_number(arg, f"{function}()"))
    return numbers


# Go's strconv.ParseInt / ParseFloat: no surrounding spaces, no underscores in base 10.
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_FLOAT = re.compile(
    r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)


def _as_int(value: Value) -> int:
    # Argo's asInt: strings are parsed (base 10), numbers are truncated toward zero.
    if isinstance(value, str):
        if not _GO_INT.fullmatch(value):
            raise ExprEvalError(f"asInt({value!r}): not an integer")
        return int(value)
    number = _number(value, "asInt()")
    if isinstance(number, float) and (math.isnan(number) or math.isinf(number)):
        raise ExprEvalError(f"asInt({number}): not a finite number")
    return int(number)


def _as_float(value: Value) -> float:
    if isinstance(value, str):
        if not _GO_FLOAT.fullmatch(value):
            raise ExprEvalError(f"asFloat({value!r}): not a number")
        return float(value)
    return float(_number(value, "asFloat()"))


def _extreme(name: str, numbers: list[Union[int, float]]) -> Union[int, float]:
    # expr-lang's minMax: keep the first value, replace it when `val < x` (max) / `val > x` (min).
    # So a leading NaN sticks and a later NaN is never picked, exactly as in Go.
    best = numbers[0]
    for x in numbers[1:]:
        if (name == "max" and best < x) or (name == "min" and best > x):
            best = x
    return best


class _Evaluator:
    def __init__(self, result: Value) -> None:
        self.result = result
        self.element: list[Value] = []  # stack of `#` bindings (predicates can nest)

    def eval(self, node: Node) -> Value:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Name):
            return self.result if node.name == "result" else self.element[-1]
        if isinstance(node, ArrayLit):
            return [self.eval(item) for item in node.items]
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Index):
            return self.index(node)
        if isinstance(node, Call):
            return self.call(node)
        raise ExprEvalError(f"cannot evaluate {type(node).__name__}")  # pragma: no cover

    def unary(self, node: Unary) -> Value:
        value = self.eval(node.operand)
        if node.op == "!":
            return not _bool(value, f"operator '!' at position {node.position}")
        number = _number(value, f"unary {node.op!r} at position {node.position}")
        return -number if node.op == "-" else number

    def binary(self, node: Binary) -> Value:
        op = node.op
        if op in ("&&", "||"):
            # Short-circuit like expr-lang: `len(result) > 0 && result[0] > 1` is safe.
            left = _bool(self.eval(node.left), f"operator {op!r} at position {node.position}")
            if (op == "&&" and not left) or (op == "||" and left):
                return left
            return _bool(self.eval(node.right), f"operator {op!r} at position {node.position}")
        left_value = self.eval(node.left)
        right_value = self.eval(node.right)
        if op == "==":
            return _equal(left_value, right_value)
        if op == "!=":
            # Go and IEEE: NaN != x is true (the only comparison with NaN that is).
            return not _equal(left_value, right_value)
        if op in ("<", ">", "<=", ">="):
            return _order(op, left_value, right_value, node.position)
        if op in ("in", "not in"):
            if not isinstance(right_value, list):
                raise ExprEvalError(
                    f"operator 'in' needs an array on the right at position {node.position}, "
                    f"got {_type_name(right_value)}"
                )
            found = any(_equal(left_value, item) for item in right_value)
            return found if op == "in" else not found
        return _arithmetic(op, left_value, right_value, node.position)

    def index(self, node: Index) -> Value:
        target = self.eval(node.target)
        index = self.eval(node.index)
        if not isinstance(target, list):
            raise ExprEvalError(
                f"cannot index {_type_name(target)} at position {node.position} "
                "(result is a scalar, not a vector)"
            )
        if not isinstance(index, int) or isinstance(index, bool):
            raise ExprEvalError(f"array index must be an int, got {_type_name(index)}")
        length = len(target)
        effective = index + length if index < 0 else index
        if not 0 <= effective < length:
            raise ExprEvalError(
                f"index out of range: {index} (array of length {length}) at position "
                f"{node.position}"
            )
        return target[effective]

    def call(self, node: Call) -> Value:
        name = node.function
        if name in _PREDICATE_FUNCTIONS:
            return self.predicate_call(node)
        args = [self.eval(arg) for arg in node.args]
        if name == "len":
            value = args[0]
            if not isinstance(value, (list, str)):
                raise ExprEvalError(f"invalid argument for len (type {_type_name(value)})")
            return len(value)
        if name == "isNaN":
            number = _number(args[0], "isNaN()")
            return isinstance(number, float) and math.isnan(number)
        if name == "isInf":
            number = _number(args[0], "isInf()")
            return isinstance(number, float) and math.isinf(number)
        if name == "asInt":
            return _as_int(args[0])
        if name == "asFloat":
            return _as_float(args[0])
        numbers = _flatten_numbers(args, name)
        if name == "mean":
            # expr-lang returns 0.0 for the mean of nothing [?]; guard no-data with len(result).
            return math.fsum(numbers) / len(numbers) if numbers else 0.0
        if not numbers:
            # expr-lang yields nil here and any comparison with nil then fails: an Error either way.
            raise ExprEvalError(f"{name}() of an empty array")
        return _extreme(name, numbers)

    def predicate_call(self, node: Call) -> Value:
        items = self.eval(node.args[0])
        if not isinstance(items, list):
            raise ExprEvalError(
                f"{node.function}() needs an array, got {_type_name(items)} at position "
                f"{node.position}"
            )
        predicate = node.args[1]
        body = predicate.body if isinstance(predicate, Predicate) else predicate
        want_all = node.function == "all"
        for item in items:
            self.element.append(item)
            try:
                matched = _bool(self.eval(body), f"{node.function}() predicate")
            finally:
                self.element.pop()
            if want_all and not matched:
                return False
            if not want_all and matched:
                return True
        return want_all


@dataclass(frozen=True)
class Condition:
    """A parsed condition; parse once, evaluate against every measurement's result."""

    source: str
    tree: Node

    def evaluate(self, result: Value) -> bool:
        value = _Evaluator(result).eval(self.tree)
        if not isinstance(value, bool):
            raise ExprEvalError(
                f"condition {self.source!r} returned {_type_name(value)} {value!r}, not a bool"
            )
        return value


def compile_condition(source: str) -> Condition:
    """Parse `source`; raises ExprSyntaxError / UnsupportedExpression naming token and position."""
    return Condition(source, _Parser(source).parse())


def evaluate_condition(source: str, result: Value) -> bool:
    """Parse and evaluate in one go (the analysis caches compiled conditions instead)."""
    return compile_condition(source).evaluate(result)
