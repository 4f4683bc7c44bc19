"""Safe, exact-decimal arithmetic for calculator rooms, and the room's shared results.

`evaluate(expression, resolve)` turns one line of text into an `Outcome`: either a formatted
result or an error message for people. It never raises, never runs Python (no eval/exec/compile/
ast), imports nothing outside the standard library and answers any input of at most
`MAX_EXPRESSION_LENGTH` characters quickly: every construct whose cost could grow with the input
(powers, exponentials, trigonometry, floor division, deep nesting) is bounded before any work is
done.

An expression may read the room it is typed in: `ans`, `#12` and room variables. The calculator
does not know where a room's entries live; it reads the tokens first (`prepare`), tells the
caller everything it needs in one `Wanted`, and the caller's `resolve` callback answers with the
stored entries (`Resolved`). So the caller decides what "before this entry" means (the room
service answers under the room's row lock, with one index lookup per reference; a replay answers
from memory), and this module stays pure.

Integers are exact up to the magnitude bound (a 40-digit product keeps its 40 digits); every other
result is rounded to 28 significant digits, in a private `decimal.Context` (the process-wide
decimal context is never read or changed), and an outcome says when rounding happened
(`rounded`). The grammar, the formatting rule, the limits and every message are described in
docs/calculator.md.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_PLAIN_LENGTH",
    "MAX_SEQ",
    "NOTHING",
    "PRECISION",
    "RULES",
    "CalculatorError",
    "Outcome",
    "Prepared",
    "Resolved",
    "Resolver",
    "Stored",
    "Wanted",
    "evaluate",
    "prepare",
]

MAX_EXPRESSION_LENGTH = 500
"""Longer expressions are refused before they are read ("expression too long")."""

MAX_DEPTH = 50
"""Most nested parentheses, function calls, implicit products and unary signs in one expression."""

PRECISION = 28
"""Significant digits of every result that is not an integer."""

MAX_PLAIN_LENGTH = 60
"""Results are written in plain digits up to this many characters, in scientific notation beyond."""

MAX_SEQ = 2**63 - 1
"""No entry has a larger seq (the database's bigint): `#N` beyond it does not exist."""

RULES = 2
"""The rules this module evaluates by. 1: before shared results (`%` was the remainder, integers
were rounded to 28 digits, no `ans`, `#N` or variables). Stored entries keep the rules they were
evaluated by, so a replay recomputes only the entries of these rules."""

TRIG_LIMIT = Decimal("1e9")
"""sin, cos and tan refuse arguments larger than this in magnitude ("math domain error")."""

# |value| < 10**1000 always; smaller than about 1e-1026 flushes to 0.
_EMAX = 999
_EMIN = -999
_ETINY = _EMIN - PRECISION + 1
_EXACT_DIGITS = _EMAX + 1  # every integer below 10**1000 fits
_EXP_LIMIT = Decimal(2303)  # ln(10**1000) = 2302.58...
_EXP_FLOOR = Decimal(-2400)  # exp(-2400) < 1e-1042: flushes to 0
_LITERAL_EXPONENT_CLAMP = 10**9  # any literal exponent beyond this is far out of range
_GUARD_DIGITS = 12
_REDUCTION_PRECISION = PRECISION + 32
_SERIES_PRECISION = PRECISION + 14
_SERIES_TERMS = 60

_PI_TEXT = (
    "3.14159265358979323846264338327950288419716939937510"
    "58209749445923078164062862089986280348253421170679"
)

_TRAPS = [decimal.Overflow, decimal.InvalidOperation, decimal.DivisionByZero]

TOO_LARGE = "result too large"
DIVISION_BY_ZERO = "division by zero"
DOMAIN = "math domain error"
CANNOT = "cannot evaluate"
NO_ANSWER = "no earlier result for ans"


class CalculatorError(Exception):
    """An expression that has no result; str(error) is the message shown to people."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Exactly one of `result` (formatted number) and `error` (message for people) is set.

    `rounded`: the result had to be rounded (to 28 significant digits, or to 0 below the range),
    or it used a value that was (a constant, a rounded result). `refs`: the seqs of the entries it
    read through `ans`, `#N` and variables, in order of first use. `defines`: the variable a
    definition (`rate = 0.2`) set; only with a result.
    """

    result: str | None = None
    error: str | None = None
    rounded: bool = False
    refs: tuple[int, ...] = ()
    defines: str | None = None

    def __post_init__(self) -> None:
        if (self.result is None) == (self.error is None):
            raise ValueError("an Outcome has exactly one of result and error")
        if self.error is not None and (self.rounded or self.defines is not None):
            raise ValueError("a failed Outcome is neither rounded nor a definition")

    @property
    def ok(self) -> bool:
        return self.result is not None


# --- what an expression reads from its room ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored entry as an expression sees it: its seq and result (None when it failed)."""

    seq: int
    result: str | None
    rounded: bool = False


@dataclass(frozen=True, slots=True)
class Wanted:
    """Everything one expression may read, asked for at once.

    `answer`: it uses `ans` (the newest entry before this one that has a result). `seqs`: the
    entries it names as `#N` (ascending, each 1..MAX_SEQ). `names`: the variables it reads (in
    order of first appearance; each the newest definition before this entry).
    """

    answer: bool
    seqs: tuple[int, ...]
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resolved:
    """The caller's answer to a `Wanted`; anything missing does not exist (yet)."""

    answer: Stored | None = None
    seqs: Mapping[int, Stored] = field(default_factory=dict)
    names: Mapping[str, Stored] = field(default_factory=dict)


NOTHING = Resolved()
"""The answer of an empty room (and of `evaluate` without a resolver)."""

Resolver = Callable[[Wanted], Resolved]
"""Called at most once per evaluation, only when the expression reads its room. What it raises
propagates: a failure to read the room is not a property of the expression."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """An expression read into tokens: what it needs from its room (`wanted`, None when nothing),
    and `finish(resolved)` to evaluate it. `prepare` and `finish` never raise."""

    expression: str
    tokens: tuple[_Token, ...] = ()
    wanted: Wanted | None = None
    error: str | None = None

    def finish(self, resolved: Resolved | None = None) -> Outcome:
        if self.error is not None:
            return Outcome(error=self.error)
        parser: _Parser | None = None
        try:
            # localcontext() makes a copy current for this thread/task only and restores the
            # previous one on exit: any operation that reads the current context sees ours.
            with decimal.localcontext(_context()) as ctx:
                exact = _exact_context()
                parser = _Parser(self.tokens, ctx, exact, resolved or NOTHING)
                tree = parser.parse()
                value = _Evaluator(ctx, exact).value(tree)
                text = _format(value, ctx, exact)
                rounded = parser.tainted or bool(ctx.flags[decimal.Inexact])
                rounded = rounded or bool(exact.flags[decimal.Inexact])
                return Outcome(
                    result=text, rounded=rounded, refs=tuple(parser.refs), defines=parser.defines
                )
        except CalculatorError as exc:
            message = str(exc) or CANNOT
        except decimal.Overflow:
            message = TOO_LARGE
        except ZeroDivisionError:  # decimal.DivisionByZero and DivisionUndefined are subclasses
            message = DIVISION_BY_ZERO
        except decimal.InvalidOperation:
            message = DOMAIN
        except Exception:  # defensive: no input may crash a caller
            message = CANNOT
        return Outcome(error=message, refs=tuple(parser.refs) if parser is not None else ())


def prepare(expression: str) -> Prepared:
    """Read an expression into tokens and find what it needs from its room. Never raises."""
    try:
        if not isinstance(expression, str):
            return Prepared(expression="", error=CANNOT)
        if len(expression) > MAX_EXPRESSION_LENGTH:
            return Prepared(expression=expression, error="expression too long")
        if not expression.strip(" \t"):
            return Prepared(expression=expression, error="empty expression")
        tokens = tuple(_tokenize(expression))
        return Prepared(expression=expression, tokens=tokens, wanted=_wanted(tokens))
    except Exception:  # defensive, as in finish
        return Prepared(expression="", error=CANNOT)


def evaluate(expression: str, resolve: Resolver | None = None) -> Outcome:
    """Evaluate one expression. Never raises (except what `resolve` raises): every failure is an
    `Outcome` with an error. Without `resolve` the room is empty: `ans` and `#N` are errors."""
    prepared = prepare(expression)
    resolved = NOTHING
    if resolve is not None and prepared.wanted is not None:
        resolved = resolve(prepared.wanted)
    return prepared.finish(resolved)


def _context() -> decimal.Context:
    return decimal.Context(
        prec=PRECISION,
        rounding=decimal.ROUND_HALF_EVEN,
        Emax=_EMAX,
        Emin=_EMIN,
        capitals=1,
        clamp=0,
        flags=[],
        traps=_TRAPS,
    )


def _exact_context() -> decimal.Context:
    """Integer arithmetic: every integer within the magnitude bound fits, so nothing rounds."""
    context = _context()
    context.prec = _EXACT_DIGITS
    return context


def _is_integral(value: Decimal) -> bool:
    # to_integral_value neither rounds to the context's precision nor signals
    return value.is_zero() or value == value.to_integral_value()


def _mark_rounded(ctx: decimal.Context) -> None:
    """Record a rounding that no decimal operation signalled (a value flushed to 0)."""
    ctx.flags[decimal.Inexact] = True


# --- tokens ------------------------------------------------------------------------------------

_GROUPED = r"[0-9]+(?:_[0-9]+)*"  # `_` may group digits: 10_000
_NUMBER = re.compile(
    rf"(?P<mant>{_GROUPED}(?:\.(?:{_GROUPED})?)?|\.{_GROUPED})(?:[eE](?P<exp>[+-]?{_GROUPED}))?",
    re.ASCII,
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_REF = re.compile(r"#([0-9]+)", re.ASCII)
_DIGITS = frozenset("0123456789")
_OPERATORS = frozenset("+-*/%^(),=")
_ALIASES = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-"}  # times, division and minus signs
_BLANK = frozenset(" \t")
# People group digits with these; they are refused with a hint rather than read.
_GROUP_SPACES = frozenset("\u00a0\u2007\u2009\u202f")
_GROUP_SPACE_RE = re.compile("[\u00a0\u2007\u2009\u202f]")
_HINT_EXAMPLE_LIMIT = 40


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "name", "ref", "op", "end" or "bad" (a character no token starts with)
    text: str  # operators in their ASCII spelling (the times sign is "*")
    column: int  # 1-based
    end: int  # 0-based index just past the token
    value: int = 0  # a ref's seq
    message: str | None = None  # a bad token's hint, said instead of "syntax error"


def _tokenize(text: str) -> list[_Token]:
    """Tokens up to the end, or up to and including the first character that starts none."""
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _BLANK:
            i += 1
            continue
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            match = _NUMBER.match(text, i)
            assert match is not None  # a digit, or a point before a digit, always starts one
            tokens.append(_Token("num", match.group(), i + 1, match.end()))
            i = match.end()
            if i < n and text[i] == "_":  # 10_ or 1__000: `_` only between digits
                tokens.append(_Token("bad", "_", i + 1, i + 1))
                return tokens
            continue
        if ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ch == "_":
            match = _NAME.match(text, i)
            assert match is not None
            tokens.append(_Token("name", match.group(), i + 1, match.end()))
            i = match.end()
            continue
        if ch == "#" and (match := _REF.match(text, i)) is not None:
            tokens.append(_Token("ref", match.group(), i + 1, match.end(), int(match.group(1))))
            i = match.end()
            continue
        pair = text[i : i + 2]
        if pair in ("**", "//"):
            tokens.append(_Token("op", pair, i + 1, i + 2))
            i += 2
        elif ch in _OPERATORS or ch in _ALIASES:
            tokens.append(_Token("op", _ALIASES.get(ch, ch), i + 1, i + 1))
            i += 1
        else:
            message = None
            if ch in _GROUP_SPACES and 0 < i < n - 1 and text[i - 1] in _DIGITS:
                message = _space_hint(text, i) if text[i + 1] in _DIGITS else None
            tokens.append(_Token("bad", ch, i + 1, i + 1, message=message))
            return tokens
    tokens.append(_Token("end", "", n + 1, n))
    return tokens


def _space_hint(text: str, i: int) -> str:
    """`1 000` typed with a thin or no-break space: say how to write it."""
    start, stop = i, i
    while start > 0 and (text[start - 1] in _DIGITS or text[start - 1] in _GROUP_SPACES):
        start -= 1
    while stop < len(text) and (text[stop] in _DIGITS or text[stop] in _GROUP_SPACES):
        stop += 1
    groups = [group for group in _GROUP_SPACE_RE.split(text[start:stop]) if group]
    if stop - start > _HINT_EXAMPLE_LIMIT:
        groups = ["1", "000"]
    return f"digits are grouped with _, not a space: write {'_'.join(groups)} or {''.join(groups)}"


_KEYWORDS = frozenset({"mod", "of"})  # operators spelled as words
_RESERVED = frozenset({"ans", *_KEYWORDS})


def _wanted(tokens: Sequence[_Token]) -> Wanted | None:
    """What the expression reads from its room; None when it reads nothing."""
    answer = False
    seqs: set[int] = set()
    names: dict[str, None] = {}  # ordered
    skip = 1 if _is_definition(tokens) else 0  # the name being defined is not read
    for token in tokens[skip:]:
        if token.kind == "ref":
            if 1 <= token.value <= MAX_SEQ:
                seqs.add(token.value)
        elif token.kind == "name":
            lowered = token.text.lower()
            if lowered == "ans":
                answer = True
            elif lowered in _CONSTANTS or lowered in _FUNCTIONS or lowered in _KEYWORDS:
                continue
            elif token.text[0].isalpha():  # `_x` can never be a variable
                names[token.text] = None
    if not (answer or seqs or names):
        return None
    return Wanted(answer=answer, seqs=tuple(sorted(seqs)), names=tuple(names))


def _is_definition(tokens: Sequence[_Token]) -> bool:
    return (
        len(tokens) > 1
        and tokens[0].kind == "name"
        and tokens[1].kind == "op"
        and tokens[1].text == "="
    )


# --- functions and constants -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Function:
    min_args: int
    max_args: int | None  # None: no upper bound
    arity_message: str
    apply: Callable[..., Decimal]


def _arity(name: str, min_args: int, max_args: int | None) -> str:
    if max_args is None:
        return f"{name} takes at least {min_args} argument"
    if min_args == max_args:
        return f"{name} takes {min_args} argument"
    return f"{name} takes {min_args} or {max_args} arguments"


def _pi(precision: int) -> Decimal:
    return decimal.Context(prec=precision).create_decimal(_PI_TEXT)


# Carried with extra digits: the first operation rounds them to PRECISION, so ln(e) is 1 and
# sin(pi) is 0 after rounding; shown alone they read as their 28-digit roundings. Using one makes
# the outcome `rounded`.
_CONSTANT_DIGITS = 50
_CONSTANTS: dict[str, Decimal] = {
    "pi": _pi(_CONSTANT_DIGITS),
    "e": Decimal(1).exp(decimal.Context(prec=_CONSTANT_DIGITS)),
}


# --- parser ------------------------------------------------------------------------------------
# Nodes are tuples:
#   ("num", Decimal)
#   ("chain", first, ((op, node), ...))   left-associative; op is + - * / // mod, or +% -%
#                                         (add or take a percent of the value so far)
#   ("pow", (node, ...), (signs, ...))     P0 ** S1 P1 ** S2 P2 ... (right-associative)
#   ("neg", node)                          an odd number of minus signs
#   ("pct", node)                          node%
#   ("paren", node)                        a bracketed ("pct", ...), no longer a bare percent
#   ("call", name, (node, ...))
# Chains are flat, so long "1+1+1..." or "2**2**2..." inputs never recurse deeply.

_Node = tuple


class _Parser:
    """Recursive descent over:

    entry    := [NAME "="] expr
    expr     := term (("+" | "-") term)*            a term that is a bare percent (200 + 10%)
                                                    is a percent of the value before it
    term     := factor (("*" | "/" | "//" | "mod") factor | "of" factor)*   ("of" after a percent)
    factor   := sign* power ["%"]
    power    := operand (("**" | "^") sign* operand)*
    operand  := NUMBER [implicit] | NAME | FUNCTION "(" [expr ("," expr)*] ")" | REF
              | "(" expr ")"
    implicit := (NAME | FUNCTION "(" ... ")" | "(" expr ")") (("**" | "^") sign* operand)*

    Names are resolved while parsing, left to right, from the `Resolved` the caller gave.
    """

    def __init__(
        self,
        tokens: Sequence[_Token],
        ctx: decimal.Context,
        exact: decimal.Context,
        resolved: Resolved,
    ) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.ctx = ctx
        self.exact = exact
        self.resolved = resolved
        self.refs: list[int] = []
        self.tainted = False  # used a constant, a rounded result, or a literal that was rounded
        self.defines: str | None = None
        self.last_percent = False

    def parse(self) -> _Node:
        if _is_definition(self.tokens):
            name = self.tokens[0].text
            _check_variable_name(name)
            self.pos = 2
            self.defines = name
        node = self.expr()
        token = self.peek()
        if token.kind != "end":
            self.fail(token)
        return node

    # helpers

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind not in ("end", "bad"):
            self.pos += 1
        return token

    def at(self, *ops: str) -> bool:
        token = self.tokens[self.pos]
        return token.kind == "op" and token.text in ops

    def at_word(self, word: str) -> bool:
        token = self.tokens[self.pos]
        return token.kind == "name" and token.text.lower() == word

    def expect(self, op: str) -> None:
        token = self.take()
        if token.kind != "op" or token.text != op:
            self.fail(token)

    def fail(self, token: _Token) -> None:
        if token.message is not None:
            raise CalculatorError(token.message)
        if token.kind == "op" and token.text == ",":
            hint = _comma_hint(self.tokens, self.tokens.index(token))
            if hint is not None:
                raise CalculatorError(hint)
        raise CalculatorError(f"syntax error at column {token.column}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculatorError("too deeply nested")

    # grammar

    def expr(self) -> _Node:
        first = self.term()
        rest = []
        while self.at("+", "-"):
            op = self.take().text
            node = self.term()
            if node[0] == "pct":  # 200 + 10%: ten percent of what came before
                rest.append((op + "%", node[1]))
            else:
                rest.append((op, node))
        return ("chain", first, tuple(rest)) if rest else first

    def term(self) -> _Node:
        first = self.factor()
        rest = []
        while True:
            if self.at("*", "/", "//"):
                op = self.take().text
            elif self.at_word("mod"):
                self.take()
                op = "mod"
            elif self.last_percent and self.at_word("of"):  # 10% of 250
                self.take()
                op = "*"
            else:
                break
            rest.append((op, self.factor()))
        return ("chain", first, tuple(rest)) if rest else first

    def factor(self) -> _Node:
        outer = self.depth
        lead = self.signs()
        node = self.power(self.operand())
        self.depth = outer
        if lead.count("-") % 2:
            node = ("neg", node)
        self.last_percent = False
        if self.at("%"):
            self.take()
            node = ("pct", node)
            self.last_percent = True
        return node

    def power(self, first: _Node) -> _Node:
        operands = [first]
        signs = []
        while self.at("**", "^"):
            self.take()
            signs.append(self.signs())
            operands.append(self.operand())
        if len(operands) == 1:
            return first
        return ("pow", tuple(operands), tuple(signs))

    def signs(self) -> tuple[str, ...]:
        found = []
        while self.at("+", "-"):
            self.enter()
            found.append(self.take().text)
        return tuple(found)

    def operand(self) -> _Node:
        token = self.take()
        if token.kind == "num":
            number = ("num", self.literal(token.text))
            if not self.implicit_follows():
                return number
            self.enter()  # 2pi, 2(3+4), 2x^2: the number times what follows
            node = ("chain", number, (("*", self.power(self.operand())),))
            self.depth -= 1
            return node
        if token.kind == "name":
            return self.name(token)
        if token.kind == "ref":
            return self.reference(token)
        if token.kind == "op" and token.text == "(":
            self.enter()
            node = self.expr()
            self.expect(")")
            self.depth -= 1
            return ("paren", node) if node[0] == "pct" else node
        self.fail(token)
        raise AssertionError("unreachable")  # pragma: no cover

    def implicit_follows(self) -> bool:
        token = self.peek()
        if token.kind == "name":
            return token.text.lower() not in _KEYWORDS
        return token.kind == "op" and token.text == "("

    def literal(self, text: str) -> Decimal:
        match = _NUMBER.fullmatch(text)
        if match is None:  # pragma: no cover - the tokenizer only makes matching tokens
            raise CalculatorError(CANNOT)
        digits = match.group("mant").replace("_", "")
        mantissa = Decimal(digits)  # exact: the constructor does not round
        if mantissa.is_zero():
            return Decimal(0)
        exp_text = (match.group("exp") or "0").replace("_", "")
        exp_digits = exp_text.lstrip("+-").lstrip("0") or "0"
        exponent = int(exp_digits) if len(exp_digits) <= 9 else _LITERAL_EXPONENT_CLAMP
        if exp_text.startswith("-"):
            exponent = -exponent
        adjusted = mantissa.adjusted() + exponent
        if adjusted > _EMAX:
            raise CalculatorError(TOO_LARGE)
        if adjusted < _ETINY - 1:
            self.tainted = True
            return Decimal(0)  # underflow: far below the smallest representable magnitude
        value = Decimal(f"{digits}E{exponent}")
        if _is_integral(value):
            return value  # an integer literal is exact, however many digits
        return self.ctx.create_decimal(value)  # rounded to 28 digits (and flagged) if longer

    def name(self, token: _Token) -> _Node:
        name = token.text
        lowered = name.lower()
        shown = name[:20]
        is_call = self.at("(")
        if lowered in _CONSTANTS:
            if is_call:
                raise CalculatorError(f"'{shown}' is not a function")
            self.tainted = True
            return ("num", _CONSTANTS[lowered])
        function = _FUNCTIONS.get(lowered)
        if function is not None:
            return self.call(lowered, shown, function, is_call)
        if lowered in _KEYWORDS:  # an operator where a value belongs
            self.fail(token)
        if lowered == "ans":
            stored = self.resolved.answer
            if stored is None:
                raise CalculatorError(NO_ANSWER)
            node = self.stored(stored, "ans")
        else:
            stored = self.resolved.names.get(name) if name[0].isalpha() else None
            if stored is None:
                raise CalculatorError(f"unknown name '{shown}'")
            node = self.stored(stored, f"'{shown}'")
        if is_call:
            raise CalculatorError(f"'{shown}' is not a function")
        return node

    def call(self, name: str, shown: str, function: _Function, is_call: bool) -> _Node:
        if not is_call:
            raise CalculatorError(f"function '{shown}' needs parentheses, like {shown}(x)")
        self.take()
        self.enter()
        args = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.take()
                args.append(self.expr())
        self.expect(")")
        self.depth -= 1
        if len(args) < function.min_args or (
            function.max_args is not None and len(args) > function.max_args
        ):
            raise CalculatorError(function.arity_message)
        return ("call", name, tuple(args))

    def reference(self, token: _Token) -> _Node:
        seq = token.value
        shown = f"#{str(seq)[:20]}"
        if seq == 0:
            raise CalculatorError("#0 does not exist: entries start at #1")
        stored = self.resolved.seqs.get(seq) if seq <= MAX_SEQ else None
        if stored is None:
            raise CalculatorError(f"{shown} does not exist yet")
        return self.stored(stored, shown)

    def stored(self, stored: Stored, shown: str) -> _Node:
        """A stored result as a value: exactly the digits that were stored."""
        no_result = CalculatorError(f"{shown} has no result")
        if not isinstance(stored.result, str):
            raise no_result
        try:
            value = Decimal(stored.result)
        except (decimal.InvalidOperation, ValueError, TypeError):
            raise no_result from None
        if not value.is_finite():
            raise no_result
        if not value.is_zero() and value.adjusted() > _EMAX:
            raise CalculatorError(TOO_LARGE)
        if stored.seq not in self.refs:
            self.refs.append(stored.seq)
        if stored.rounded:
            self.tainted = True
        if not _is_integral(value):
            value = self.ctx.create_decimal(value)  # stored results have at most 28 digits
        return ("num", value)


def _check_variable_name(name: str) -> None:
    lowered = name.lower()
    shown = name[:20]
    if lowered in _FUNCTIONS:
        raise CalculatorError(f"'{shown}' is a function; choose another name")
    if lowered in _CONSTANTS:
        raise CalculatorError(f"'{shown}' is a constant; choose another name")
    if lowered in _RESERVED:
        raise CalculatorError(f"'{shown}' is reserved; choose another name")
    if not name[0].isalpha():
        raise CalculatorError(f"'{shown}' cannot be a name: names start with a letter")


def _adjacent(left: _Token, right: _Token) -> bool:
    return left.end == right.column - 1


def _comma_hint(tokens: Sequence[_Token], index: int) -> str | None:
    """`1,5` where no list of arguments is open: say what to type instead (None: not numbers)."""

    def joined(at: int) -> bool:  # tokens[at] is a comma between two numbers, touching both
        return (
            0 < at < len(tokens) - 1
            and tokens[at].kind == "op"
            and tokens[at].text == ","
            and tokens[at - 1].kind == "num"
            and tokens[at + 1].kind == "num"
            and _adjacent(tokens[at - 1], tokens[at])
            and _adjacent(tokens[at], tokens[at + 1])
        )

    if not joined(index):
        return None
    first, last = index - 1, index + 1
    while joined(first - 1):
        first -= 2
    while joined(last + 1):
        last += 2
    groups = [tokens[at].text for at in range(first, last + 1, 2)]
    typed = ",".join(groups)
    if len(typed) > _HINT_EXAMPLE_LIMIT or not all(group.isdigit() for group in groups):
        return "use a point for decimals, not a comma: write 1.5"
    if len(groups) > 2:
        return f"digits are grouped with _, not a comma: write {'_'.join(groups)}"
    whole, part = groups
    if len(part) == 3:  # 1,000: a decimal comma or a thousands separator
        return f"write {whole}.{part} for a decimal or {whole}_{part} to group digits, not {typed}"
    return f"use a point for decimals, not a comma: write {whole}.{part}"


# --- evaluation --------------------------------------------------------------------------------


class _Evaluator:
    """Integers go through the exact context; anything else through the 28-digit one."""

    def __init__(self, ctx: decimal.Context, exact: decimal.Context) -> None:
        self.ctx = ctx
        self.exact = exact

    def value(self, node: _Node) -> Decimal:
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "chain":
            acc = self.value(node[1])
            for op, operand in node[2]:
                if op in ("+%", "-%"):
                    part = self.percent(self.binary("*", acc, self.value(operand)))
                    acc = self.binary(op[0], acc, part)
                else:
                    acc = self.binary(op, acc, self.value(operand))
            return acc
        if kind == "pow":
            _, operands, signs = node
            values = [self.value(operand) for operand in operands]
            acc = values[-1]
            for i in range(len(values) - 1, 0, -1):
                if signs[i - 1].count("-") % 2:
                    acc = acc.copy_negate()
                acc = self.power(values[i - 1], acc)
            return acc
        if kind == "neg":
            return self.value(node[1]).copy_negate()  # exact, whatever the digits
        if kind == "pct":
            return self.percent(self.value(node[1]))
        if kind == "paren":
            return self.value(node[1])
        if kind == "call":
            args = [self.value(arg) for arg in node[2]]
            return _FUNCTIONS[node[1]].apply(self.ctx, *args)
        raise CalculatorError(CANNOT)  # pragma: no cover

    def percent(self, value: Decimal) -> Decimal:
        return value.scaleb(-2, context=self.exact)  # exact: moves the point two places

    def binary(self, op: str, a: Decimal, b: Decimal) -> Decimal:
        integers = _is_integral(a) and _is_integral(b)
        ctx = self.exact if integers else self.ctx
        if op == "+":
            return ctx.add(a, b)
        if op == "-":
            return ctx.subtract(a, b)
        if op == "*":
            return ctx.multiply(a, b)
        if b.is_zero():
            raise CalculatorError(DIVISION_BY_ZERO)
        if op == "/":
            if integers:  # an integer quotient stays exact: (10**40 + 2) / 2
                trial = self.exact.copy()
                trial.clear_flags()
                quotient = trial.divide(a, b)
                if not trial.flags[decimal.Inexact] and _is_integral(quotient):
                    return quotient
            return self.ctx.divide(a, b)
        if op == "//":
            quotient, _, _ = _exact_divmod(a, b)
            return self.exact.create_decimal(quotient)  # an integer: exact (or too large)
        _, rest, denominator = _exact_divmod(a, b)
        if integers:
            return self.exact.create_decimal(rest)
        return self.ctx.divide(Decimal(rest), Decimal(denominator))

    def power(self, base: Decimal, exponent: Decimal) -> Decimal:
        ctx = self.ctx
        if exponent.is_zero():
            return Decimal(1)
        if base.is_zero():
            if exponent < 0:
                raise CalculatorError(DIVISION_BY_ZERO)
            return Decimal(0)
        integral = _is_integral(exponent)
        if base < 0 and not integral:
            raise CalculatorError(DOMAIN)
        magnitude = base.copy_abs()
        if magnitude == 1:
            if base > 0 or int(exponent) % 2 == 0:
                return Decimal(1)
            return Decimal(-1)
        # Size of the result in decimal digits, before computing it: |exponent| * log10|base|.
        estimator = decimal.Context(prec=12, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
        digits = estimator.multiply(magnitude.log10(estimator), exponent)
        if digits > _EMAX + 2:
            raise CalculatorError(TOO_LARGE)
        if digits < _ETINY - 2:
            _mark_rounded(ctx)
            return Decimal(0)  # underflow
        if integral and exponent > 0 and _is_integral(base):
            return self.exact.power(base, exponent)  # 2**100: all 31 digits
        if not integral and _is_integral(self.exact.multiply(exponent, 2)):
            # x ** (n/2): exact when the square root is (4 ** 0.5 is 2, not about 2)
            trial = ctx.copy()
            trial.clear_flags()
            root = magnitude.sqrt(trial)
            if not trial.flags[decimal.Inexact]:
                return self.power(root, self.exact.multiply(exponent, 2))
        return ctx.power(base, exponent)


def _exact_divmod(a: Decimal, b: Decimal) -> tuple[int, int, int]:
    """Python's divmod of a by b, exactly: (floor quotient, remainder numerator, denominator).

    Both operands are p/q with q a product of 2s and 5s, and their exponents are bounded, so the
    integers involved have at most a few thousand digits.
    """
    pa, qa = a.as_integer_ratio()
    pb, qb = b.as_integer_ratio()
    quotient, rest = divmod(pa * qb, qa * pb)  # floor toward -inf; rest has the sign of b
    return quotient, rest, qa * qb


def _guarded(ctx: decimal.Context) -> decimal.Context:
    wide = ctx.copy()
    wide.prec = ctx.prec + _GUARD_DIGITS
    wide.clear_flags()
    return wide


def _quiet(ctx: decimal.Context) -> decimal.Context:
    """A copy whose flags do not count: rounding that was asked for (round, floor) is not the
    rounding an outcome reports."""
    copy = ctx.copy()
    copy.clear_flags()
    return copy


def _fn_sqrt(ctx: decimal.Context, x: Decimal) -> Decimal:
    if x < 0:
        raise CalculatorError(DOMAIN)
    return x.sqrt(ctx)


def _fn_abs(ctx: decimal.Context, x: Decimal) -> Decimal:
    return x.copy_abs()


def _fn_round(ctx: decimal.Context, x: Decimal, places: Decimal | None = None) -> Decimal:
    if places is None:
        places = Decimal(0)
    if places != places.to_integral_value(context=ctx) or not 0 <= places <= PRECISION:
        raise CalculatorError(f"round digits must be a whole number from 0 to {PRECISION}")
    if _is_integral(x):
        return x
    n = int(places)
    x = ctx.plus(x)  # at most PRECISION digits, so quantize never needs more
    if x.as_tuple().exponent >= -n:  # type: ignore[operator]  # finite: exponent is an int
        return x  # already has at most n decimals
    return x.quantize(Decimal(1).scaleb(-n), rounding=decimal.ROUND_HALF_UP, context=_quiet(ctx))


def _fn_floor(ctx: decimal.Context, x: Decimal) -> Decimal:
    return x.to_integral_value(rounding=decimal.ROUND_FLOOR, context=ctx)


def _fn_ceil(ctx: decimal.Context, x: Decimal) -> Decimal:
    return x.to_integral_value(rounding=decimal.ROUND_CEILING, context=ctx)


def _fn_min(ctx: decimal.Context, *xs: Decimal) -> Decimal:
    return min(xs)


def _fn_max(ctx: decimal.Context, *xs: Decimal) -> Decimal:
    return max(xs)


def _fn_ln(ctx: decimal.Context, x: Decimal) -> Decimal:
    if x <= 0:
        raise CalculatorError(DOMAIN)
    return x.ln(ctx)


def _fn_log(ctx: decimal.Context, x: Decimal, base: Decimal | None = None) -> Decimal:
    if x <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise CalculatorError(DOMAIN)
    if base is None or base == 10:
        return x.log10(ctx)  # exact for powers of ten
    wide = _guarded(ctx)  # so that log(8, 2) is 3 after rounding
    quiet = _quiet(ctx)
    result = quiet.plus(wide.divide(x.ln(wide), base.ln(wide)))
    if quiet.flags[decimal.Inexact] and not _is_exact_log(x, base, result):
        _mark_rounded(ctx)
    return result


def _is_exact_log(x: Decimal, base: Decimal, result: Decimal) -> bool:
    """Whether base ** result is exactly x, for an integral result (log(8, 2) is exactly 3)."""
    if not _is_integral(result) or result.copy_abs() > 4000:
        return False
    check = _exact_context()
    try:
        if result >= 0:
            return check.power(base, result) == x and not check.flags[decimal.Inexact]
        product = check.multiply(x, check.power(base, result.copy_negate()))
        return product == 1 and not check.flags[decimal.Inexact]
    except (decimal.Overflow, decimal.InvalidOperation):
        return False


def _fn_exp(ctx: decimal.Context, x: Decimal) -> Decimal:
    if x > _EXP_LIMIT:
        raise CalculatorError(TOO_LARGE)
    if x < _EXP_FLOOR:
        _mark_rounded(ctx)
        return Decimal(0)
    return x.exp(ctx)


_PI_TRIG = _pi(_REDUCTION_PRECISION + 10)


def _trig_context(precision: int) -> decimal.Context:
    return decimal.Context(prec=precision, Emax=_EMAX, Emin=_EMIN - precision, traps=_TRAPS)


def _sin_cos(ctx: decimal.Context, x: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """High-precision (sin x, cos x) and the noise floor under which a result means 0.

    |x| <= 1e9 is reduced modulo pi/2 at 60 digits (pi is known to 70), so the reduced argument
    r has |r| <= pi/4 and keeps more than 28 correct digits relative to the result; then both
    Taylor series run at 42 digits, for at most a couple of dozen terms.
    """
    if x.copy_abs() > TRIG_LIMIT:
        raise CalculatorError(DOMAIN)
    if x.is_zero():
        return Decimal(0), Decimal(1), Decimal(0)
    # x is only known to PRECISION digits: anything below its last digit is rounding noise
    # (sin(pi) with pi rounded to 28 digits is about 2.8E-28, and should read 0).
    noise = Decimal(1).scaleb(x.adjusted() - PRECISION + 1)
    wide = _trig_context(_REDUCTION_PRECISION)
    half_pi = wide.divide(_PI_TRIG, 2)
    quarter = wide.divide(x, half_pi).to_integral_value(decimal.ROUND_HALF_EVEN, context=wide)
    r = wide.subtract(x, wide.multiply(quarter, half_pi))  # -pi/4 <= r <= pi/4
    w = _trig_context(_SERIES_PRECISION)
    r = w.plus(r)
    r2 = w.multiply(r, r)
    sin_term, cos_term = r, Decimal(1)
    sin_sum, cos_sum = r, Decimal(1)
    tiny = Decimal(1).scaleb(-(_SERIES_PRECISION + 2))
    sin_tiny = max(tiny, w.multiply(r.copy_abs(), tiny))
    for k in range(1, _SERIES_TERMS):
        cos_term = w.minus(w.divide(w.multiply(cos_term, r2), (2 * k - 1) * (2 * k)))
        sin_term = w.minus(w.divide(w.multiply(sin_term, r2), (2 * k) * (2 * k + 1)))
        cos_sum = w.add(cos_sum, cos_term)
        sin_sum = w.add(sin_sum, sin_term)
        if cos_term.copy_abs() < tiny and sin_term.copy_abs() < sin_tiny:
            break
    turn = int(quarter) % 4  # x = r + turn * pi/2 (mod 2*pi)
    if turn == 0:
        return sin_sum, cos_sum, noise
    if turn == 1:
        return cos_sum, w.minus(sin_sum), noise
    if turn == 2:
        return w.minus(sin_sum), w.minus(cos_sum), noise
    return w.minus(cos_sum), sin_sum, noise


def _rounded_trig(ctx: decimal.Context, value: Decimal, noise: Decimal) -> Decimal:
    if value.copy_abs() < noise:
        if not value.is_zero():
            _mark_rounded(ctx)
        return Decimal(0)
    return ctx.plus(value)


def _fn_sin(ctx: decimal.Context, x: Decimal) -> Decimal:
    sin, _, noise = _sin_cos(ctx, x)
    return _rounded_trig(ctx, sin, noise)


def _fn_cos(ctx: decimal.Context, x: Decimal) -> Decimal:
    _, cos, noise = _sin_cos(ctx, x)
    return _rounded_trig(ctx, cos, noise)


def _fn_tan(ctx: decimal.Context, x: Decimal) -> Decimal:
    sin, cos, noise = _sin_cos(ctx, x)
    if cos.copy_abs() < noise:
        raise CalculatorError(DOMAIN)  # an odd multiple of pi/2, as far as x's digits tell
    if sin.copy_abs() < noise:
        return _rounded_trig(ctx, sin, noise)
    return ctx.plus(_trig_context(_SERIES_PRECISION).divide(sin, cos))


def _functions() -> dict[str, _Function]:
    table: dict[str, tuple[int, int | None, Callable[..., Decimal]]] = {
        "sqrt": (1, 1, _fn_sqrt),
        "abs": (1, 1, _fn_abs),
        "round": (1, 2, _fn_round),
        "floor": (1, 1, _fn_floor),
        "ceil": (1, 1, _fn_ceil),
        "min": (1, None, _fn_min),
        "max": (1, None, _fn_max),
        "ln": (1, 1, _fn_ln),
        "log": (1, 2, _fn_log),
        "exp": (1, 1, _fn_exp),
        "sin": (1, 1, _fn_sin),
        "cos": (1, 1, _fn_cos),
        "tan": (1, 1, _fn_tan),
    }
    return {
        name: _Function(low, high, _arity(name, low, high), apply)
        for name, (low, high, apply) in table.items()
    }


_FUNCTIONS = _functions()


# --- formatting --------------------------------------------------------------------------------


def _format(value: Decimal, ctx: decimal.Context, exact: decimal.Context) -> str:
    """All significant digits, no trailing zeros; plain up to 60 characters, else scientific."""
    if not value.is_finite():  # pragma: no cover - the traps make this impossible
        raise CalculatorError(TOO_LARGE)
    # An integer keeps every digit; anything else has 28 (constants carry more until here).
    value = value.normalize(exact) if _is_integral(value) else ctx.plus(value).normalize(ctx)
    if value.is_zero():
        return "0"  # also for -0
    plain = format(value, "f")
    if len(plain) <= MAX_PLAIN_LENGTH:
        return plain
    sign, digits, _ = value.as_tuple()
    adjusted = value.adjusted()
    mantissa = str(digits[0])
    if len(digits) > 1:
        mantissa += "." + "".join(map(str, digits[1:]))
    return f"{'-' if sign else ''}{mantissa}E{'+' if adjusted > 0 else '-'}{abs(adjusted)}"
