"""Analysis conditions: the few expr-lang shapes our templates may use, parsed and evaluated.

Argo Rollouts evaluates `successCondition` / `failureCondition` with expr-lang against `result`
(docs/ROLLOUTS.md). Our templates need one shape, and this module accepts only the small
language that shape is written in, so the rehearsal never has to guess what a richer expression
would do. `make manifests` (scripts/manifests/analysis.py) refuses any condition this module
refuses, and additionally demands the no-data guard of CONDITION_SHAPE.

The language (CONDITION_GRAMMAR): atoms joined by ``&&``, each atom one of

- ``<operand> <op> <number>`` with operand ``result`` or ``result[i]`` (negative i counts from
  the end, as in expr-lang) and op one of ``< <= > >= == !=``;
- ``len(result) <op> <integer>``;
- ``isNaN(<operand>)`` or ``!isNaN(<operand>)``.

Two kinds of rejection, because they mean different things for a rehearsal:

- :class:`ExprSyntaxError`: the text is malformed (it ends or closes where an operand is due, an
  unknown character). Argo fails to compile it on every measurement, so each measurement is
  **Error**; the rehearsal reproduces that.
- :class:`UnsupportedExpression`: anything else outside the language (other functions, ``||``,
  arithmetic, ...). The rehearsal cannot predict Argo's answer and stops; `make manifests` has
  already refused it with the same message.

Runtime failures (index out of range, indexing a scalar, ``len`` of a scalar) raise
:class:`ExprEvalError`, which the analysis turns into a measurement **Error** like Argo does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

# What `result` can be: a float (Prometheus scalar) or a list of floats (a vector).
Value = Union[bool, int, float, str, list["Value"]]

CONDITION_GRAMMAR = (
    "atoms joined by '&&', each `result[i] <op> <number>`, `result <op> <number>`, "
    "`len(result) <op> <integer>`, `isNaN(result[i])` or `!isNaN(result[i])`"
)
# The one shape templates use: no data and NaN (0/0 without traffic) make it false, never Error.
_PLACEHOLDER = r"\{\{\s*args\.[A-Za-z0-9_.-]+\s*\}\}"
CONDITION_SHAPE = re.compile(
    r"len\(result\) > 0 && !isNaN\(result\[0\]\) && result\[0\] (<|<=|>|>=) "
    rf"(?P<threshold>-?[0-9][0-9_.eE+-]*|{_PLACEHOLDER})"
)


class ConditionError(Exception):
    """Base class: the condition could not produce a boolean."""


class ExprSyntaxError(ConditionError):
    """Malformed expression; names the offending token and its 0-based position."""

    def __init__(self, message: str, source: str, position: int) -> None:
        super().__init__(f"{message} at position {position} in {source!r}")
        self.position = position


class UnsupportedExpression(ExprSyntaxError):
    """An expression outside the condition language (the rehearsal cannot judge it)."""


class ExprEvalError(ConditionError):
    """The expression parsed but failed at run time (Argo: measurement Error)."""


# ---------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class Token:
    kind: str  # "num", "name", "op", "eof"
    text: str
    position: int
    value: Union[int, float, None] = None


_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z_]?)"
    r"|(?P<name>[A-Za-z_$][A-Za-z0-9_$]*)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||\?\?|[-+*/%<>!()\[\],{}#^?:.|'\"`]))"
)
_COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(source):
        if source[position:].strip() == "":
            break
        match = _TOKEN.match(source, position)
        if match is None:
            at = len(source) - len(source[position:].lstrip())
            raise ExprSyntaxError(f"unexpected character {source[at]!r}", source, at)
        kind = str(match.lastgroup)
        text = match.group(kind)
        start = match.start(kind)
        value: Union[int, float, None] = None
        if kind == "num":
            if text[-1].isalpha() or text[-1] == "_" or "__" in text:
                raise ExprSyntaxError(f"invalid number {text!r}", source, start)
            clean = text.replace("_", "")
            value = float(clean) if any(c in clean for c in ".eE") else int(clean)
        tokens.append(Token(kind, text, start, value))
        position = match.end()
    tokens.append(Token("eof", "", len(source)))
    return tokens


# ---------------------------------------------------------------------------------------------
# Parsed form: a conjunction of atoms


@dataclass(frozen=True)
class Operand:
    index: int | None  # None: `result` itself
    position: int


@dataclass(frozen=True)
class Compare:
    operand: Operand | None  # None: len(result)
    op: str
    number: Union[int, float]


@dataclass(frozen=True)
class NaNTest:
    operand: Operand
    negated: bool


Atom = Union[Compare, NaNTest]


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def unsupported(self, token: Token, what: str) -> UnsupportedExpression:
        return UnsupportedExpression(
            f"{what} is not one of the condition shapes ({CONDITION_GRAMMAR}); "
            "not implemented by the rehearsal",
            self.source,
            token.position,
        )

    def malformed_or_unsupported(self, expected: str) -> ExprSyntaxError:
        """Where the text stops or closes early it is malformed (Argo: Error every measurement);
        any other token is well-formed expr-lang we do not accept."""
        token = self.token
        if token.kind == "eof":
            return ExprSyntaxError("unexpected token 'end of input'", self.source, token.position)
        if token.text in (")", "]", "}", ",") or token.text in _COMPARISONS + ("&&",):
            return ExprSyntaxError(f"unexpected token {token.text!r}", self.source, token.position)
        if token.kind == "name" and self.tokens[self.i + 1].text == "(":
            return self.unsupported(token, f"function {token.text!r}")
        return self.unsupported(token, f"{token.text!r} where {expected} is due")

    def expect(self, text: str) -> Token:
        if self.token.text != text:
            raise self.malformed_or_unsupported(f"{text!r}")
        return self.advance()

    def parse(self) -> tuple[Atom, ...]:
        if self.token.kind == "eof":
            raise ExprSyntaxError("empty expression", self.source, 0)
        atoms = [self.atom()]
        while self.token.text == "&&":
            self.advance()
            atoms.append(self.atom())
        if self.token.kind != "eof":
            raise self.malformed_or_unsupported("'&&' or the end")
        return tuple(atoms)

    def operand(self) -> Operand:
        token = self.expect("result")
        if self.token.text != "[":
            return Operand(None, token.position)
        self.advance()
        index = self.number(integer=True)
        self.expect("]")
        return Operand(int(index), token.position)

    def number(self, integer: bool) -> Union[int, float]:
        sign = 1
        if self.token.text == "-":
            self.advance()
            sign = -1
        value = self.token.value
        if self.token.kind != "num" or value is None or (integer and isinstance(value, float)):
            raise self.malformed_or_unsupported("an integer" if integer else "a number")
        self.advance()
        return sign * value

    def comparison(self) -> str:
        if self.token.text not in _COMPARISONS:
            raise self.malformed_or_unsupported("a comparison")
        return self.advance().text

    def atom(self) -> Atom:
        token = self.token
        negated = token.text == "!"
        if negated:
            self.advance()
            if self.token.text != "isNaN":
                raise self.unsupported(token, "'!' before anything but isNaN")
        if self.token.text == "isNaN":
            self.advance()
            self.expect("(")
            operand = self.operand()
            self.expect(")")
            return NaNTest(operand, negated)
        if self.token.text == "len":
            self.advance()
            self.expect("(")
            self.expect("result")
            self.expect(")")
            op = self.comparison()
            return Compare(None, op, self.number(integer=True))
        operand = self.operand()
        op = self.comparison()
        return Compare(operand, op, self.number(integer=False))


# ---------------------------------------------------------------------------------------------
# Evaluation, with Go's float semantics (NaN compares false, != true)


def _type_name(value: Value) -> str:
    return "array" if isinstance(value, list) else type(value).__name__


def _lookup(result: Value, operand: Operand) -> Value:
    if operand.index is None:
        return result
    if not isinstance(result, list):
        raise ExprEvalError(f"cannot index {_type_name(result)}")
    index = operand.index + len(result) if operand.index < 0 else operand.index
    if not 0 <= index < len(result):
        raise ExprEvalError(f"index out of range: {operand.index} (array of length {len(result)})")
    return result[index]


def _number(value: Value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExprEvalError(f"invalid operation: {what} of {_type_name(value)}")
    return float(value)


def _compare(op: str, left: float, right: float) -> bool:
    return {
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
        "==": left == right,
        "!=": left != right,
    }[op]


@dataclass(frozen=True)
class Condition:
    """A parsed condition; parse once, evaluate against every measurement's result."""

    source: str
    atoms: tuple[Atom, ...]

    def evaluate(self, result: Value) -> bool:
        for atom in self.atoms:  # `&&` short-circuits: the len guard protects result[0]
            if isinstance(atom, NaNTest):
                value = _number(_lookup(result, atom.operand), "isNaN()")
                holds = math.isnan(value) != atom.negated
            elif atom.operand is None:
                if not isinstance(result, list):
                    raise ExprEvalError(f"invalid argument for len (type {_type_name(result)})")
                holds = _compare(atom.op, len(result), atom.number)
            else:
                left = _number(_lookup(result, atom.operand), f"{atom.op}")
                holds = _compare(atom.op, left, atom.number)
            if not holds:
                return False
        return True


def compile_condition(source: str) -> Condition:
    """Parse `source`; raises ExprSyntaxError / UnsupportedExpression naming token and position."""
    return Condition(source, _Parser(source).parse())


def evaluate_condition(source: str, result: Value) -> bool:
    """Parse and evaluate in one go (the analysis caches compiled conditions instead)."""
    return compile_condition(source).evaluate(result)


def template_condition_problem(source: str) -> str | None:
    """Why a condition of a template (before templating) is not allowed, or None.

    Used by `make manifests`: the text with each `{{args.x}}` read as a number must parse in
    the condition language, and must be CONDITION_SHAPE so no data is never an Error.
    """
    concrete = re.sub(_PLACEHOLDER, "0", source)
    try:
        compile_condition(concrete)
    except ExprSyntaxError as exc:
        return str(exc).replace(repr(concrete), repr(source))
    if not CONDITION_SHAPE.fullmatch(source.strip()):
        return (
            "is not `len(result) > 0 && !isNaN(result[0]) && result[0] <op> <threshold>`: "
            "an empty Prometheus vector (no data) must not make the measurement Error, and NaN "
            "(0/0 without traffic) makes every comparison false"
        )
    return None
