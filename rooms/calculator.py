"""Safe, exact-decimal arithmetic for calculator rooms.

`evaluate(expression)` turns one line of text into an `Outcome`: either a formatted result or an
error message for people. It never raises, never runs Python (no eval/exec/compile/ast), imports
nothing from Django and answers any input of at most `MAX_EXPRESSION_LENGTH` characters quickly:
every construct whose cost could grow with the input (powers, exponentials, trigonometry, floor
division, deep nesting) is bounded before any work is done.

Arithmetic is decimal with 28 significant digits in a private `decimal.Context`; the process-wide
decimal context is never read or changed. The grammar, the formatting rule, the limits and every
error message are described in docs/calculator.md.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "PRECISION",
    "CalculatorError",
    "Outcome",
    "evaluate",
]

MAX_EXPRESSION_LENGTH = 500
"""Longer expressions are refused before they are read ("expression too long")."""

MAX_DEPTH = 50
"""Most nested parentheses, function calls and unary signs one expression may have."""

PRECISION = 28
"""Significant digits of every result and intermediate value."""

SCIENTIFIC_BEYOND = 27
"""Results whose adjusted exponent exceeds this (either way) are shown as 1.5E+40."""

TRIG_LIMIT = Decimal("1e9")
"""sin, cos and tan refuse arguments larger than this in magnitude ("math domain error")."""

# |value| < 10**1000 always; smaller than about 1e-1026 flushes to 0.
_EMAX = 999
_EMIN = -999
_ETINY = _EMIN - PRECISION + 1
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


class CalculatorError(Exception):
    """An expression that has no result; str(error) is the message shown to people."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Exactly one of `result` (formatted number) and `error` (message for people) is set."""

    result: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.result is None) == (self.error is None):
            raise ValueError("an Outcome has exactly one of result and error")

    @property
    def ok(self) -> bool:
        return self.result is not None


def evaluate(expression: str) -> Outcome:
    """Evaluate one expression. Never raises: every failure is an `Outcome` with an error."""
    try:
        return Outcome(result=_evaluate(expression))
    except CalculatorError as exc:
        return Outcome(error=str(exc) or CANNOT)
    except decimal.Overflow:
        return Outcome(error=TOO_LARGE)
    except ZeroDivisionError:  # decimal.DivisionByZero and DivisionUndefined are subclasses
        return Outcome(error=DIVISION_BY_ZERO)
    except decimal.InvalidOperation:
        return Outcome(error=DOMAIN)
    except Exception:  # defensive: no input may crash a caller
        return Outcome(error=CANNOT)


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


def _evaluate(expression: str) -> str:
    if not isinstance(expression, str):
        raise CalculatorError(CANNOT)
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CalculatorError("expression too long")
    if not expression.strip(" \t"):
        raise CalculatorError("empty expression")
    # localcontext() makes a copy current for this thread/task only and restores the previous
    # one on exit: any operation that reads the current context sees ours, the global is untouched.
    with decimal.localcontext(_context()) as ctx:
        tree = _Parser(_tokenize(expression), ctx).parse()
        return _format(_Evaluator(ctx).value(tree), ctx)


# --- tokens ------------------------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?P<mant>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE](?P<exp>[+-]?[0-9]+))?", re.ASCII
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_DIGITS = frozenset("0123456789")
_OPERATORS = frozenset("+-*/%^(),")
_BLANK = frozenset(" \t")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "name", "op", "end" or "bad" (a character no token starts with)
    text: str
    column: int  # 1-based


def _tokenize(text: str) -> list[_Token]:
    """Tokens up to the end, or up to and including the first character that starts none."""
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _BLANK:
            i += 1
            continue
        match = None
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            match = _NUMBER.match(text, i)
            kind = "num"
        elif ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ch == "_":
            match = _NAME.match(text, i)
            kind = "name"
        if match is not None:
            tokens.append(_Token(kind, match.group(), i + 1))
            i = match.end()
            continue
        pair = text[i : i + 2]
        if pair in ("**", "//"):
            tokens.append(_Token("op", pair, i + 1))
            i += 2
        elif ch in _OPERATORS:
            tokens.append(_Token("op", ch, i + 1))
            i += 1
        else:
            tokens.append(_Token("bad", ch, i + 1))
            return tokens
    tokens.append(_Token("end", "", n + 1))
    return tokens


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


# Carried with extra digits: the first operation rounds them to PRECISION, so ln(e) is exactly 1
# and sin(pi) is 0 after rounding; shown alone they read as their 28-digit roundings.
_CONSTANT_DIGITS = 50
_CONSTANTS: dict[str, Decimal] = {
    "pi": _pi(_CONSTANT_DIGITS),
    "e": Decimal(1).exp(decimal.Context(prec=_CONSTANT_DIGITS)),
}


# --- parser ------------------------------------------------------------------------------------
# Nodes are tuples:
#   ("num", Decimal)
#   ("chain", first, ((op, node), ...))            left-associative + - or * / // %
#   ("pow", lead_signs, (node, ...), (signs, ...))  P0 ** S1 P1 ** S2 P2 ... (right-associative)
#   ("call", name, (node, ...))
# Chains are flat, so long "1+1+1..." or "2**2**2..." inputs never recurse deeply.

_Node = tuple


class _Parser:
    """Recursive descent over:

    expr    := term (("+" | "-") term)*
    term    := factor (("*" | "/" | "//" | "%") factor)*
    factor  := sign* primary (("**" | "^") sign* primary)*
    primary := NUMBER | CONSTANT | FUNCTION "(" [expr ("," expr)*] ")" | "(" expr ")"
    """

    def __init__(self, tokens: Sequence[_Token], ctx: decimal.Context) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.ctx = ctx

    def parse(self) -> _Node:
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

    def expect(self, op: str) -> None:
        token = self.take()
        if token.kind != "op" or token.text != op:
            self.fail(token)

    def fail(self, token: _Token) -> None:
        raise CalculatorError(f"syntax error at column {token.column}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculatorError("too deeply nested")

    # grammar

    def expr(self) -> _Node:
        return self.chain(self.term, ("+", "-"))

    def term(self) -> _Node:
        return self.chain(self.factor, ("*", "/", "//", "%"))

    def chain(self, operand: Callable[[], _Node], ops: tuple[str, ...]) -> _Node:
        first = operand()
        rest = []
        while self.at(*ops):
            op = self.take().text
            rest.append((op, operand()))
        return ("chain", first, tuple(rest)) if rest else first

    def factor(self) -> _Node:
        outer = self.depth
        lead = self.signs()
        operands = [self.primary()]
        signs = []
        while self.at("**", "^"):
            self.take()
            signs.append(self.signs())
            operands.append(self.primary())
        self.depth = outer
        if not lead and len(operands) == 1:
            return operands[0]
        return ("pow", lead, tuple(operands), tuple(signs))

    def signs(self) -> tuple[str, ...]:
        found = []
        while self.at("+", "-"):
            self.enter()
            found.append(self.take().text)
        return tuple(found)

    def primary(self) -> _Node:
        token = self.take()
        if token.kind == "num":
            return ("num", self.literal(token.text))
        if token.kind == "name":
            return self.name(token.text)
        if token.kind == "op" and token.text == "(":
            self.enter()
            node = self.expr()
            self.expect(")")
            self.depth -= 1
            return node
        self.fail(token)
        raise AssertionError("unreachable")  # pragma: no cover

    def literal(self, text: str) -> Decimal:
        match = _NUMBER.fullmatch(text)
        if match is None:  # pragma: no cover - the tokenizer only makes matching tokens
            raise CalculatorError(CANNOT)
        mantissa = Decimal(match.group("mant"))  # exact: the constructor does not round
        if mantissa.is_zero():
            return Decimal(0)
        exp_text = match.group("exp") or "0"
        exp_digits = exp_text.lstrip("+-").lstrip("0") or "0"
        exponent = int(exp_digits) if len(exp_digits) <= 9 else _LITERAL_EXPONENT_CLAMP
        if exp_text.startswith("-"):
            exponent = -exponent
        adjusted = mantissa.adjusted() + exponent
        if adjusted > _EMAX:
            raise CalculatorError(TOO_LARGE)
        if adjusted < _ETINY - 1:
            return Decimal(0)  # underflow: far below the smallest representable magnitude
        return self.ctx.create_decimal(f"{match.group('mant')}E{exponent}")

    def name(self, name: str) -> _Node:
        is_call = self.at("(")
        if name in _CONSTANTS:
            if is_call:
                raise CalculatorError(f"'{name}' is not a function")
            return ("num", _CONSTANTS[name])
        function = _FUNCTIONS.get(name)
        if function is None:
            raise CalculatorError(f"unknown name '{name[:20]}'")
        if not is_call:
            raise CalculatorError(f"function '{name}' needs parentheses, like {name}(x)")
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


# --- evaluation --------------------------------------------------------------------------------


class _Evaluator:
    def __init__(self, ctx: decimal.Context) -> None:
        self.ctx = ctx

    def value(self, node: _Node) -> Decimal:
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "chain":
            acc = self.value(node[1])
            for op, operand in node[2]:
                acc = self.binary(op, acc, self.value(operand))
            return acc
        if kind == "pow":
            _, lead, operands, signs = node
            values = [self.value(operand) for operand in operands]
            acc = values[-1]
            for i in range(len(values) - 1, 0, -1):
                acc = self.signed(signs[i - 1], acc)
                acc = _power(self.ctx, values[i - 1], acc)
            return self.signed(lead, acc)
        if kind == "call":
            args = [self.value(arg) for arg in node[2]]
            return _FUNCTIONS[node[1]].apply(self.ctx, *args)
        raise CalculatorError(CANNOT)  # pragma: no cover

    def signed(self, signs: tuple[str, ...], value: Decimal) -> Decimal:
        return self.ctx.minus(value) if signs.count("-") % 2 else value

    def binary(self, op: str, a: Decimal, b: Decimal) -> Decimal:
        ctx = self.ctx
        if op == "+":
            return ctx.add(a, b)
        if op == "-":
            return ctx.subtract(a, b)
        if op == "*":
            return ctx.multiply(a, b)
        if b.is_zero():
            raise CalculatorError(DIVISION_BY_ZERO)
        if op == "/":
            return ctx.divide(a, b)
        return _floor_division(ctx, a, b) if op == "//" else _modulo(ctx, a, b)


def _exact_divmod(a: Decimal, b: Decimal) -> tuple[int, int, int]:
    """Python's divmod of a by b, exactly: (floor quotient, remainder numerator, denominator).

    Both operands are p/q with q a product of 2s and 5s, and their exponents are bounded, so the
    integers involved have at most a few thousand digits.
    """
    pa, qa = a.as_integer_ratio()
    pb, qb = b.as_integer_ratio()
    quotient, rest = divmod(pa * qb, qa * pb)  # floor toward -inf; rest has the sign of b
    return quotient, rest, qa * qb


def _floor_division(ctx: decimal.Context, a: Decimal, b: Decimal) -> Decimal:
    quotient, _, _ = _exact_divmod(a, b)
    return ctx.create_decimal(quotient)  # rounded to PRECISION digits if longer


def _modulo(ctx: decimal.Context, a: Decimal, b: Decimal) -> Decimal:
    """Python-style modulo: the result has the sign of the divisor, |result| < |b|."""
    _, rest, denominator = _exact_divmod(a, b)
    return ctx.divide(Decimal(rest), Decimal(denominator))


def _power(ctx: decimal.Context, base: Decimal, exponent: Decimal) -> Decimal:
    if exponent.is_zero():
        return Decimal(1)
    if base.is_zero():
        if exponent < 0:
            raise CalculatorError(DIVISION_BY_ZERO)
        return Decimal(0)
    integral = exponent == exponent.to_integral_value(context=ctx)
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
        return Decimal(0)  # underflow
    return ctx.power(base, exponent)


def _guarded(ctx: decimal.Context) -> decimal.Context:
    wide = ctx.copy()
    wide.prec = ctx.prec + _GUARD_DIGITS
    wide.clear_flags()
    return wide


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
    n = int(places)
    x = ctx.plus(x)  # at most PRECISION digits, so quantize never needs more
    if x.as_tuple().exponent >= -n:  # type: ignore[operator]  # finite: exponent is an int
        return x  # already has at most n decimals
    return x.quantize(Decimal(1).scaleb(-n), rounding=decimal.ROUND_HALF_UP, context=ctx)


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
        return x.log10(ctx)
    wide = _guarded(ctx)  # so that log(8, 2) is exactly 3 after rounding
    return ctx.plus(wide.divide(x.ln(wide), base.ln(wide)))


def _fn_exp(ctx: decimal.Context, x: Decimal) -> Decimal:
    if x > _EXP_LIMIT:
        raise CalculatorError(TOO_LARGE)
    if x < _EXP_FLOOR:
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
    return Decimal(0) if value.copy_abs() < noise else ctx.plus(value)


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
        return Decimal(0)
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


def _format(value: Decimal, ctx: decimal.Context) -> str:
    """Plain decimal notation without trailing zeros; scientific beyond 10**+-27."""
    if not value.is_finite():  # pragma: no cover - the traps make this impossible
        raise CalculatorError(TOO_LARGE)
    value = ctx.plus(value).normalize(ctx)  # constants carry extra digits until rounded here
    if value.is_zero():
        return "0"  # also for -0
    adjusted = value.adjusted()
    if -SCIENTIFIC_BEYOND <= adjusted <= SCIENTIFIC_BEYOND:
        return format(value, "f")
    sign, digits, _ = value.as_tuple()
    mantissa = str(digits[0])
    if len(digits) > 1:
        mantissa += "." + "".join(map(str, digits[1:]))
    return f"{'-' if sign else ''}{mantissa}E{'+' if adjusted > 0 else '-'}{abs(adjusted)}"
