"""Behaviour of rooms.calculator: exact results, messages for people, and no input that crashes;
percent, `mod`, the symbols and spellings people type, exact integers, `rounded`, and the room's
shared results (`ans`, `#N`, variables) through a resolver.

Pure Python: no Django, no database. The room's side (resolution under the row lock, replay) is in
tests/rooms/test_shared_results.py.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import pathlib
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rooms import calculator
from rooms.calculator import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_PLAIN_LENGTH,
    CalculatorError,
    Outcome,
    Resolved,
    Stored,
    Wanted,
    evaluate,
    prepare,
)

SQRT2 = "1.414213562373095048801688724"
PI = "3.141592653589793238462643383"
E = "2.718281828459045235360287471"


def ok(expression: str) -> str:
    outcome = evaluate(expression)
    assert outcome.error is None, f"{expression!r} -> {outcome.error}"
    assert outcome.result is not None
    return outcome.result


def err(expression: str) -> str:
    outcome = evaluate(expression)
    assert outcome.result is None, f"{expression!r} -> {outcome.result}"
    assert outcome.error is not None
    return outcome.error


def assert_one_of_result_or_error(outcome: object) -> None:
    assert isinstance(outcome, Outcome)
    assert (outcome.result is None) != (outcome.error is None)
    assert isinstance(outcome.result or outcome.error, str)


# --- results -----------------------------------------------------------------------------------

ARITHMETIC = [
    ("0.1 + 0.2", "0.3"),
    ("1/3", "0.3333333333333333333333333333"),
    ("2/3", "0.6666666666666666666666666667"),
    ("1/7", "0.1428571428571428571428571429"),
    ("2*3", "6"),
    ("10/4", "2.5"),
    ("10/5", "2"),
    ("1e3", "1000"),
    ("2.5E-4", "0.00025"),
    ("1E+3", "1000"),
    ("1e0000000002", "100"),
    ("2**0.5", SQRT2),
    ("2^0.5", SQRT2),
    ("12", "12"),
    ("3.5", "3.5"),
    (".5", "0.5"),
    ("5.", "5"),
    ("5.e1", "50"),
    ("007", "7"),
    ("1 - 0.9", "0.1"),
    ("0.1 * 3", "0.3"),
    ("1.10 + 2.20", "3.3"),
    ("100 - 100.5", "-0.5"),
    ("-7 // 2", "-4"),
    ("7 // 2", "3"),
    ("7 // -2", "-4"),
    ("-7 // -2", "3"),
    ("-7 mod 2", "1"),
    ("7 mod -2", "-1"),
    ("7 mod 2", "1"),
    ("-7 mod -2", "-1"),
    ("7.5 // 2", "3"),
    ("7.5 mod 2", "1.5"),
    ("-7.5 mod 2", "0.5"),
    ("1 mod 0.3", "0.1"),
    ("6 // 0.5", "12"),
    ("1e999 // 3", "3." + "3" * 998 + "E+998"),  # an integer: every digit
    ("1e999 mod 3", "1"),
    ("2**10", "1024"),
    ("2**-1", "0.5"),
    ("10**-2", "0.01"),
    ("0.1**3", "0.001"),
    ("(-2)**3", "-8"),
    ("(-2)**2", "4"),
    ("(-2)**2.0", "4"),
    ("4**0.5", "2"),
    ("0**0", "1"),
    ("0**5", "0"),
    ("1**1e100", "1"),
    ("0**1e100", "0"),
    ("(-1)**1e100", "1"),
    ("(-1)**(2*1e50 + 1)", "-1"),  # 2e50 + 1 is exact: odd
    ("(-1)**3", "-1"),
    ("0.5**10000", "0"),  # underflows to 0, as floats do
    ("2**-1e100", "0"),
    ("99999999999999999999999999999", "99999999999999999999999999999"),
    ("1234567890123456789012345678", "1234567890123456789012345678"),
    ("12345678901234567890123456789", "12345678901234567890123456789"),
    ("2**90", "1237940039285380274899124224"),
    ("2**100", "1267650600228229401496703205376"),
    ("1e-999999999", "0"),
    ("1e999 - 1e999", "0"),
]


@pytest.mark.parametrize(("expression", "expected"), ARITHMETIC)
def test_arithmetic_is_exact_decimal_with_28_significant_digits(expression, expected):
    assert ok(expression) == expected


FORMATTING = [
    ("2.50", "2.5"),
    ("4.0", "4"),
    ("4.000", "4"),
    ("100", "100"),
    ("1e2", "100"),
    ("-0", "0"),
    ("-0.0", "0"),
    ("0 * -1", "0"),
    ("-1 * 0", "0"),
    ("0.000", "0"),
    ("1e27", "1000000000000000000000000000"),
    ("1e28", "1" + "0" * 28),
    ("1.5e40", "15" + "0" * 39),
    ("-1.5e40", "-15" + "0" * 39),
    ("1e-27", "0.000000000000000000000000001"),
    ("1e-28", "0." + "0" * 27 + "1"),
    ("-2.5e-40", "-0." + "0" * 39 + "25"),
    ("1e59", "1" + "0" * 59),  # 60 characters: plain
    ("1e60", "1E+60"),  # 61: scientific
    ("-1e59", "-1E+59"),
    ("1e-58", "0." + "0" * 57 + "1"),
    ("1e-59", "1E-59"),
    ("1.5e-70", "1.5E-70"),
    ("123456789 * 1000", "123456789000"),
    ("1e999", "1E+999"),
    ("1000000 * 1000000", "1000000000000"),
]


@pytest.mark.parametrize(("expression", "expected"), FORMATTING)
def test_results_are_plain_decimals_without_trailing_zeros_or_negative_zero(expression, expected):
    assert ok(expression) == expected


def test_results_are_plain_up_to_60_characters_and_scientific_beyond():
    for exponent in range(-58, 60):
        result = ok(f"1e{exponent}")
        assert "E" not in result and len(result) <= MAX_PLAIN_LENGTH == 60
    for exponent in (-60, -59, 60, 61, 999):
        assert ok(f"1e{exponent}") == f"1E{exponent:+d}"
    assert ok("-1e58") == "-1" + "0" * 58  # the sign counts: 60 characters
    assert ok("2**200") == "1.606938044258990275541962092341162602522202993782792835301376E+60"


def test_results_never_contain_grouping_separators_or_spaces():
    for expression in ("1234567 * 1000", "1/3 * 1e20", "-987654321.5"):
        result = ok(expression)
        assert "," not in result and " " not in result and "_" not in result


PRECEDENCE = [
    ("1 + 2 * 3", "7"),
    ("(1 + 2) * 3", "9"),
    ("10 - 4 - 3", "3"),
    ("10 - (4 - 3)", "9"),
    ("100 / 10 / 5", "2"),
    ("100 / (10 / 5)", "50"),
    ("2 * 3 mod 4", "2"),
    ("2 + 7 // 2", "5"),
    ("17 mod 5 * 2", "4"),
    ("2 ** 3 ** 2", "512"),
    ("(2 ** 3) ** 2", "64"),
    ("2 ^ 3 ^ 2", "512"),
    ("2 ^ 3 ** 2", "512"),
    ("-2 ** 2", "-4"),
    ("-2 ^ 2", "-4"),
    ("(-2) ** 2", "4"),
    ("2 ** -1", "0.5"),
    ("2 ** -2 ** 2", "0.0625"),  # 2 ** (-(2 ** 2))
    ("-2 ** -2", "-0.25"),
    ("--2", "2"),
    ("---2", "-2"),
    ("+-+2", "-2"),
    ("2 - -2", "4"),
    ("2 * -3", "-6"),
    ("2 * -3 ** 2", "-18"),
    ("-3 * 2", "-6"),
    ("1 - 2 + 3", "2"),
    ("2 * 3 ** 2", "18"),
    ("(2 * 3) ** 2", "36"),
    ("-(2 + 3)", "-5"),
    ("2 ** 2 ** 2 ** 2", "65536"),
    ("4 ** 0.5 ** 2", "1.414213562373095048801688724"),  # 4 ** 0.25
    ("\t1\t+ \t2 ", "3"),
    ("1+2*3-4/2", "5"),
]


@pytest.mark.parametrize(("expression", "expected"), PRECEDENCE)
def test_precedence_and_associativity_follow_python(expression, expected):
    assert ok(expression) == expected


FUNCTIONS = [
    ("sqrt(2)", SQRT2),
    ("sqrt(4)", "2"),
    ("sqrt(2.25)", "1.5"),
    ("sqrt(0)", "0"),
    ("sqrt(-0)", "0"),
    ("abs(-3.5)", "3.5"),
    ("abs(3)", "3"),
    ("round(2.5)", "3"),
    ("round(3.5)", "4"),
    ("round(-2.5)", "-3"),
    ("round(2.4)", "2"),
    ("round(2.345, 2)", "2.35"),
    ("round(2.344, 2)", "2.34"),
    ("round(-2.345, 2)", "-2.35"),
    ("round(1.5, 0)", "2"),
    ("round(1/3, 28)", "0.3333333333333333333333333333"),
    ("round(pi, 4)", "3.1416"),
    ("round(1e20 + 0.5)", "100000000000000000001"),
    ("round(7, 2.0)", "7"),
    ("floor(-1.5)", "-2"),
    ("floor(1.5)", "1"),
    ("ceil(-1.5)", "-1"),
    ("ceil(1.2)", "2"),
    ("ceil(-0.5)", "0"),
    ("min(3, 1, 2)", "1"),
    ("max(3, 1, 2)", "3"),
    ("min(5)", "5"),
    ("max(-1, -0.5)", "-0.5"),
    ("ln(1)", "0"),
    ("ln(e)", "1"),
    ("ln(e ** 3)", "3"),
    ("ln(2)", "0.6931471805599453094172321215"),
    ("log(1000)", "3"),
    ("log(0.01)", "-2"),
    ("log(8, 2)", "3"),
    ("log(100, 10)", "2"),
    ("log(81, 3)", "4"),
    ("log(2)", "0.3010299956639811952137388947"),
    ("exp(0)", "1"),
    ("exp(1)", E),
    ("exp(ln(2))", "2"),
    ("exp(-1e10)", "0"),
    ("exp(2302)", "5.570540566930308508854215062E+999"),
    ("pi", PI),
    ("e", E),
    ("-pi", "-" + PI),
    ("2 * pi", "6.283185307179586476925286767"),  # pi carries extra digits
    ("sin(0)", "0"),
    ("cos(0)", "1"),
    ("tan(0)", "0"),
    ("sin(1)", "0.8414709848078965066525023216"),
    ("cos(1)", "0.5403023058681397174009366074"),
    ("tan(1)", "1.557407724654902230506974807"),
    ("sin(-1)", "-0.8414709848078965066525023216"),
    ("sin(pi)", "0"),
    ("sin(2 * pi)", "0"),
    ("sin(100 * pi)", "0"),
    ("cos(pi)", "-1"),
    ("sin(pi / 2)", "1"),
    ("cos(pi / 2)", "0"),
    ("sin(pi / 6)", "0.5"),
    ("tan(pi / 4)", "1"),
    ("tan(-pi / 4)", "-1"),
    ("tan(pi)", "0"),
    ("sin(1e-30)", "0." + "0" * 29 + "1"),
    ("sin(1e9)", "0.5458434494486995642443872709"),
    ("sin(-1e9)", "-0.5458434494486995642443872709"),
    ("sqrt(sqrt(16))", "2"),
    ("max(min(1, 2), min(3, 4))", "3"),
    ("round(sqrt(2), 3) * 1000", "1414"),
]


@pytest.mark.parametrize(("expression", "expected"), FUNCTIONS)
def test_functions_and_constants_give_28_digit_results(expression, expected):
    assert ok(expression) == expected


# --- errors ------------------------------------------------------------------------------------

ERRORS = [
    # division by zero, in every form
    ("1/0", "division by zero"),
    ("1/0.0", "division by zero"),
    ("0/0", "division by zero"),
    ("1//0", "division by zero"),
    ("1 mod 0", "division by zero"),
    ("0 mod 0", "division by zero"),
    ("50% / 0%", "division by zero"),
    ("1 // -0", "division by zero"),
    ("1/(1-1)", "division by zero"),
    ("0**-1", "division by zero"),
    ("0**-0.5", "division by zero"),
    ("1/3**-9999", "division by zero"),  # 3**-9999 underflows to 0, as floats do
    # unknown names
    ("x", "unknown name 'x'"),
    ("x + 1", "unknown name 'x'"),
    ("1 + foo(2)", "unknown name 'foo'"),
    ("pie", "unknown name 'pie'"),
    ("sqrt2", "unknown name 'sqrt2'"),
    ("0x10", "unknown name 'x10'"),  # 0 times x10: a number next to a name multiplies
    ("1j", "unknown name 'j'"),
    ("1e5e5", "unknown name 'e5'"),
    ("1 if 1 else 2", "unknown name 'if'"),
    ("_x", "unknown name '_x'"),
    ("__import__", "unknown name '__import__'"),
    ("abcdefghijklmnopqrstuvwxyz", "unknown name 'abcdefghijklmnopqrst'"),
    ("lambda", "unknown name 'lambda'"),
    ("factorial(5)", "unknown name 'factorial'"),
    # overflow
    ("1e1000", "result too large"),
    ("1e999 * 10", "result too large"),
    ("-1e999 * 10", "result too large"),
    ("9.999999999999999999999999999e999 + 1e972", "result too large"),
    ("1e999 // 1e-999", "result too large"),
    ("1e-999 / 1e999 / 1e999 * 0 + 1e1000", "result too large"),
    ("9**9**9", "result too large"),
    ("10**10**10", "result too large"),
    ("2**2**2**2**2", "result too large"),
    ("10**1000", "result too large"),
    ("1.0000001**1e30", "result too large"),
    ("(-2)**100001", "result too large"),
    ("exp(1e10)", "result too large"),
    ("exp(2303)", "result too large"),
    ("exp(exp(exp(10)))", "result too large"),
    ("1e999999999", "result too large"),
    ("1e10001", "result too large"),
    # math domain
    ("sqrt(-1)", "math domain error"),
    ("ln(0)", "math domain error"),
    ("ln(-1)", "math domain error"),
    ("log(0)", "math domain error"),
    ("log(-5)", "math domain error"),
    ("log(10, 1)", "math domain error"),
    ("log(10, 0)", "math domain error"),
    ("log(10, -2)", "math domain error"),
    ("(-8)**(1/3)", "math domain error"),
    ("(-1)**0.5", "math domain error"),
    ("sin(1e300)", "math domain error"),
    ("cos(-1e10)", "math domain error"),
    ("tan(1e9 + 1)", "math domain error"),
    ("tan(pi / 2)", "math domain error"),
    # arity and misuse of names
    ("sqrt()", "sqrt takes 1 argument"),
    ("sqrt(1, 2)", "sqrt takes 1 argument"),
    ("abs(1, 2)", "abs takes 1 argument"),
    ("sin(1, 2)", "sin takes 1 argument"),
    ("round()", "round takes 1 or 2 arguments"),
    ("round(1, 2, 3)", "round takes 1 or 2 arguments"),
    ("log(1, 2, 3)", "log takes 1 or 2 arguments"),
    ("min()", "min takes at least 1 argument"),
    ("max()", "max takes at least 1 argument"),
    ("round(1, 29)", "round digits must be a whole number from 0 to 28"),
    ("round(1, -1)", "round digits must be a whole number from 0 to 28"),
    ("round(1, 0.5)", "round digits must be a whole number from 0 to 28"),
    ("round(1, 1e100)", "round digits must be a whole number from 0 to 28"),
    ("pi(2)", "'pi' is not a function"),
    ("e(1)", "'e' is not a function"),
    ("sqrt", "function 'sqrt' needs parentheses, like sqrt(x)"),
    ("sqrt 4", "function 'sqrt' needs parentheses, like sqrt(x)"),
    ("2 * sin", "function 'sin' needs parentheses, like sin(x)"),
    # size
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("\t \t", "empty expression"),
    ("1" * (MAX_EXPRESSION_LENGTH + 1), "expression too long"),
    (" " * (MAX_EXPRESSION_LENGTH + 1), "expression too long"),
    ("(" * 10_000, "expression too long"),
    ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "too deeply nested"),
    ("-" * (MAX_DEPTH + 1) + "1", "too deeply nested"),
    ("sqrt(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "too deeply nested"),
    ("2**" + "-" * (MAX_DEPTH + 1) + "1", "too deeply nested"),
]


@pytest.mark.parametrize(("expression", "message"), ERRORS)
def test_errors_are_outcomes_with_exact_messages(expression, message):
    assert err(expression) == message


def test_division_by_zero_is_an_error_not_an_exception():
    outcome = evaluate("1/0")
    assert outcome == Outcome(result=None, error="division by zero")


SYNTAX = [
    ("1+", 3),
    ("1 +", 4),
    ("1 + ", 5),  # end of input is len + 1, trailing blanks included
    ("(", 2),
    ("()", 2),
    ("(1", 3),
    ("1)", 2),
    ("((1)", 5),
    ("1 2", 3),
    ("1, 2", 2),  # not touching both numbers: not taken for a decimal comma
    ("*1", 1),
    ("1 * * 2", 5),
    ("1 / / 2", 5),
    ("1 */ 2", 4),
    ("1.2.3", 4),
    ("1..2", 3),
    (".", 1),
    ("10_", 3),
    ("1__000", 2),
    ("1_e3", 2),
    ("5!", 2),
    ("(1).real", 4),
    ("(1).__class__", 4),
    ("[1]", 1),
    ("{1}", 1),
    ("'a'", 1),
    ('"a"', 1),
    ("1 == 1", 3),
    ("1 << 2", 3),
    ("1 & 2", 3),
    ("~1", 1),
    ("1;2", 2),
    ("1\n+1", 2),
    ("\n", 1),
    ("1 \x00", 3),
    ("\u0661\u0662", 1),
    ("\uff11", 1),
    ("1 + \uff12", 5),
    ("½", 1),
    ("2²", 2),
    ("π", 1),
    ("3 \u00d7\u00d7 2", 4),
    ("3 \u22c5 2", 3),  # a dot operator is not a times sign
    ("😀", 1),
    ("\u200f1", 1),
    ("max(1,)", 7),
    ("max(,1)", 5),
    ("sqrt(1", 7),
    ("2 ** ", 6),
    ("sin(1)(", 7),
    ("sqrt(4) 5", 9),
    ("1 + 'a' ) (", 5),  # leftmost problem wins
]


@pytest.mark.parametrize(("expression", "column"), SYNTAX)
def test_syntax_errors_name_the_one_based_column(expression, column):
    assert err(expression) == f"syntax error at column {column}"


def test_bad_character_after_a_syntax_error_does_not_hide_the_earlier_column():
    assert err("1 2 $") == "syntax error at column 3"
    assert err("1 + $ 2") == "syntax error at column 5"


def test_unknown_name_is_quoted_and_cut_to_20_characters():
    name = "n" * 100
    assert err(name) == f"unknown name '{'n' * 20}'"


def test_unknown_names_are_reported_even_after_an_earlier_arithmetic_error():
    assert err("1/0 + x") == "unknown name 'x'"


def test_syntax_error_wins_over_an_earlier_arithmetic_error():
    assert err("1/0 + (") == "syntax error at column 8"


def test_first_arithmetic_error_from_the_left_wins():
    assert err("sqrt(-1) + 1/0") == "math domain error"
    assert err("1/0 + sqrt(-1)") == "division by zero"


# --- limits ------------------------------------------------------------------------------------


def test_limits_are_exported():
    assert MAX_EXPRESSION_LENGTH == 500
    assert 10 <= MAX_DEPTH <= 100
    assert issubclass(CalculatorError, Exception)


def test_an_expression_of_exactly_the_maximum_length_is_evaluated():
    expression = "1+" * 249 + "1 "
    assert len(expression) == MAX_EXPRESSION_LENGTH
    assert ok(expression) == "250"
    padded = "1" + " " * (MAX_EXPRESSION_LENGTH - 1)
    assert len(padded) == MAX_EXPRESSION_LENGTH
    assert ok(padded) == "1"


def test_nesting_up_to_max_depth_is_allowed():
    assert ok("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == "1"
    assert ok("-" * MAX_DEPTH + "1") == "1"
    assert ok("abs(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == "1"
    assert ok("abs(" * (MAX_DEPTH - 1) + "-1" + ")" * (MAX_DEPTH - 1)) == "1"


def test_long_flat_chains_are_not_nesting():
    assert ok("+".join(["1"] * 250)) == "250"
    assert ok("**".join(["1"] * 166)) == "1"
    assert ok("^".join(["2"] * 4)) == "65536"
    assert ok(" - ".join(["1"] * 100)) == "-98"


def test_literals_beyond_the_exponent_range_are_too_large_or_flush_to_zero():
    assert err("1e10001") == "result too large"
    assert err("1e" + "9" * 400) == "result too large"
    assert ok("1e-10001") == "0"
    assert ok("1e-" + "9" * 400) == "0"
    assert ok("0e99999999999") == "0"


def test_modulo_is_exact_even_when_the_quotient_is_far_too_large():
    assert ok("1e999 mod 7") == str(pow(10, 999, 7))
    assert ok("-1e999 mod 7") == str(-(10**999) % 7)
    assert ok("1e999 mod 1e-999") == "0"
    assert ok("9.999999999999999999999999999e999 mod 1.25e-1000") == "0"
    assert ok("(10**40 + 7) mod (10**35 + 1)") == str((10**40 + 7) % (10**35 + 1))
    assert err("1e999 // 1e-999") == "result too large"


def test_long_integer_literals_are_exact_and_other_long_literals_are_rounded_to_28_digits():
    assert ok("1" * 400) == "1." + "1" * 399 + "E+399"
    assert evaluate("1" * 400).rounded is False
    outcome = evaluate("0." + "3" * 400)
    assert outcome.result == "0.3333333333333333333333333333"
    assert outcome.rounded is True


# --- safety ------------------------------------------------------------------------------------

HOSTILE = [
    ("9**9**9", "result too large"),
    ("9^9^9^9", "result too large"),
    ("9**9**9**9**9**9", "result too large"),
    ("10**10**10", "result too large"),
    ("1/3**-9999", "division by zero"),
    ("0**-1", "division by zero"),
    ("(-8)**(1/3)", "math domain error"),
    ("1**1e100", None),
    ("(-1)**1e100", None),
    ("0**1e100", None),
    ("1e999999999", "result too large"),
    ("1e-999999999", None),
    ("exp(1e10)", "result too large"),
    ("exp(exp(exp(exp(10))))", "result too large"),
    ("sin(1e300)", "math domain error"),
    ("cos(1e300)", "math domain error"),
    ("tan(-1e300)", "math domain error"),
    ("(" * 10_000, "expression too long"),
    ("(" * 5_000 + ")" * 5_000, "expression too long"),
    ("1+" * 5_000 + "1", "expression too long"),
    ("1" * 10_000, "expression too long"),
    ("(" * 250 + ")" * 250, "too deeply nested"),
    ("(" * 499 + "1", "too deeply nested"),
    ("-" * 499 + "1", "too deeply nested"),
    ("sqrt(" * 80 + "1" + ")" * 80, "too deeply nested"),
    ("1+" * 249 + "1", None),
    ("2" + "**2" * 166, "result too large"),
    ("*".join(str(n) for n in range(1, 200))[:499].rstrip("*"), None),
    ("1.0000001**1e30", "result too large"),
    ("(1).__class__", "syntax error at column 4"),
    ("(1).real", "syntax error at column 4"),
    ("__import__('os')", "unknown name '__import__'"),
    ("__import__('os').system('ls')", "unknown name '__import__'"),
    ("open('/etc/passwd').read()", "unknown name 'open'"),
    ("lambda: 1", "unknown name 'lambda'"),
    ("(lambda x: x)(1)", "unknown name 'lambda'"),
    ("[1]", "syntax error at column 1"),
    ("[x for x in ()]", "syntax error at column 1"),
    ("'a'", "syntax error at column 1"),
    ('"a" * 10**9', "syntax error at column 1"),
    ("1 if 1 else 2", "unknown name 'if'"),
    ("\x00", "syntax error at column 1"),
    ("1\x00", "syntax error at column 2"),
    ("😀", "syntax error at column 1"),
    ("1 + 😀", "syntax error at column 5"),
    ("\u202e1+1", "syntax error at column 1"),
    ("\u200f1\u200f", "syntax error at column 1"),
    ("1\n+1", "syntax error at column 2"),
    ("\r\n", "syntax error at column 1"),
    ("\u0661\u0662", "syntax error at column 1"),
    ("\uff11+\uff11", "syntax error at column 1"),
    ("\ud800", "syntax error at column 1"),
    ("\ufeff1", "syntax error at column 1"),
    ("1\u00a0+1", "syntax error at column 2"),
    ("__builtins__", "unknown name '__builtins__'"),
    ("os.system('ls')", "unknown name 'os'"),
    ("a = 1", None),
    ("a = b = 1", "unknown name 'b'"),
    ("a = 1 = 1", "syntax error at column 7"),
    ("#" + "9" * 499, "#99999999999999999999 does not exist yet"),
    ("+".join(f"#{n}" for n in range(1, 120)), "#1 does not exist yet"),
    ("ans" + "+ans" * 124, "no earlier result for ans"),
    ("+".join(f"v{n}" for n in range(120)), "unknown name 'v0'"),
    ("2pi^" * 100 + "2", "too deeply nested"),
    ("2(" * 120 + "1" + ")" * 120, "too deeply nested"),
    ("9" * 250 + "*" + "9" * 249, None),
    ("(10**999 - 1) // 7 * 7 + (10**999 - 1) mod 7", None),
    ("10_000" * 83, None),
    ("1,5" * 166, "use a point for decimals, not a comma: write 1.5"),
    ("1\u00a0000" * 100, "digits are grouped with _, not a space: write 1_000 or 1000"),
    ("10%" + " of 10%" * 70, None),
    ("1+10%" * 100, None),
    ("1 @ 1", "syntax error at column 3"),
    ("min(" + "1," * 200 + "1)", None),
    ("max(" + "9**9**9," * 50 + "1)", "result too large"),
    (" " * 10_000, "expression too long"),
    ("\t" * 600, "expression too long"),
    ("1e-10001 ** -1", "division by zero"),
    ("sin(" * 50 + "1" + ")" * 50, None),
    ("exp(" * 50 + "1" + ")" * 50, "result too large"),
    ("ln(" * 50 + "10" + ")" * 50, "math domain error"),
    ("1.000000000000000000000000001**1e29", None),
    ("0.9999999999999999999999999999**-1e30", None),
]


@pytest.mark.parametrize(("expression", "message"), HOSTILE)
def test_hostile_inputs_are_answered_with_an_outcome_not_an_exception(expression, message):
    outcome = evaluate(expression)
    assert_one_of_result_or_error(outcome)
    if message is not None:
        assert outcome.error == message


def test_there_are_at_least_40_hostile_inputs():
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize("value", [None, 1, 1.5, b"1+1", ["1"], object()])
def test_input_that_is_not_text_is_an_error_not_an_exception(value):
    assert evaluate(value) == Outcome(error="cannot evaluate")  # type: ignore[arg-type]


def test_an_unexpected_internal_failure_becomes_cannot_evaluate(monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(calculator, "_tokenize", explode)
    assert evaluate("1+1") == Outcome(error="cannot evaluate")


def test_outcome_is_frozen_and_holds_exactly_one_of_result_and_error():
    outcome = evaluate("1+1")
    assert outcome == Outcome(result="2")
    assert outcome.ok
    assert not evaluate("1/0").ok
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.result = "3"  # type: ignore[misc]
    with pytest.raises(ValueError):
        Outcome()
    with pytest.raises(ValueError):
        Outcome(result="1", error="no")


def test_the_global_decimal_context_is_neither_used_nor_changed():
    with decimal.localcontext() as ambient:
        ambient.prec = 5
        ambient.rounding = decimal.ROUND_DOWN
        ambient.traps[decimal.Inexact] = True
        ambient.Emax = 10
        before = (ambient.prec, ambient.rounding, ambient.Emax, dict(ambient.traps))
        assert ok("1/3") == "0.3333333333333333333333333333"
        assert ok("2/3") == "0.6666666666666666666666666667"
        assert ok("1e100 * 1e100") == "1E+200"
        current = decimal.getcontext()
        assert (current.prec, current.rounding, current.Emax, dict(current.traps)) == before


def test_the_module_runs_no_python_and_needs_no_django():
    source = pathlib.Path(calculator.__file__).read_text(encoding="utf-8")
    for forbidden in ("eval(", "exec(", "compile(", "import ast", "__import__(", "django"):
        assert forbidden not in source.replace("re.compile(", "")
    assert source.startswith('"""')
    assert "from __future__ import annotations" in source


# --- properties --------------------------------------------------------------------------------

NASTY_CHARACTERS = (
    list("0123456789+-*/%^().,eE _ \t")
    + list("abcdgilmnopqrstx")
    + [
        "**",
        "//",
        "sqrt(",
        "log(",
        "sin(",
        "round(",
        "pi",
        "e",
        "1e999",
        "9**9",
        "\u0661",
        "\uff11",
        "\u200f",
        "\u202e",
        "😀",
        "\x00",
        "\n",
        "π",
        "\u00d7",
        "[",
        "'",
        "\ud800",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(NASTY_CHARACTERS), max_size=40).map("".join))
def test_random_strings_never_raise_and_give_exactly_one_of_result_or_error(expression):
    outcome = evaluate(expression)
    assert_one_of_result_or_error(outcome)
    if outcome.result is not None and len(outcome.result) <= MAX_EXPRESSION_LENGTH:
        # Every result reads back as itself.
        assert evaluate(outcome.result).result == outcome.result


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_unicode_text_never_raises(expression):
    assert_one_of_result_or_error(evaluate(expression))


# Integer expression trees, rendered with as few parentheses as the grammar allows, evaluated
# independently with Python ints. Nodes: ("lit", n) ("neg", x) ("pow", x, k) ("bin", op, x, y).

BINARY_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2, "mod": 2}
INT_LIMIT = 10**200  # far beyond 28 significant digits: integers are exact


class _OutOfRange(Exception):
    pass


def _render(node) -> tuple[str, int]:
    kind = node[0]
    if kind == "lit":
        return str(node[1]), 5
    if kind == "neg":
        text, prec = _render(node[1])
        return "-" + (text if prec >= 3 else f"({text})"), 3
    if kind == "pow":
        text, prec = _render(node[1])
        return (text if prec == 5 else f"({text})") + f" {node[3]} {node[2]}", 4
    op, left, right = node[1], node[2], node[3]
    mine = BINARY_PRECEDENCE[op]
    left_text, left_prec = _render(left)
    right_text, right_prec = _render(right)
    if left_prec < mine:
        left_text = f"({left_text})"
    if right_prec <= mine:
        right_text = f"({right_text})"
    return f"{left_text} {op} {right_text}", mine


def _value(node) -> int:
    kind = node[0]
    if kind == "lit":
        value = node[1]
    elif kind == "neg":
        value = -_value(node[1])
    elif kind == "pow":
        value = _value(node[1]) ** node[2]
    else:
        op, a, b = node[1], _value(node[2]), _value(node[3])
        if op == "+":
            value = a + b
        elif op == "-":
            value = a - b
        elif op == "*":
            value = a * b
        elif op == "//":
            value = a // b
        else:
            value = a % b
    if abs(value) >= INT_LIMIT:
        raise _OutOfRange
    return value


def _extend(children):
    return st.one_of(
        st.tuples(st.just("bin"), st.sampled_from(sorted(BINARY_PRECEDENCE)), children, children),
        st.tuples(st.just("neg"), children),
        st.tuples(st.just("pow"), children, st.integers(0, 3), st.sampled_from(["**", "^"])),
    )


INT_LEAVES = st.one_of(st.integers(0, 999), st.integers(0, 10**40))
INT_TREES = st.recursive(st.tuples(st.just("lit"), INT_LEAVES), _extend, max_leaves=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(INT_TREES)
def test_integer_expressions_agree_exactly_with_python_int_arithmetic(tree):
    text, _ = _render(tree)
    try:
        expected = _value(tree)
    except ZeroDivisionError:
        assert err(text) == "division by zero"
        return
    except _OutOfRange:
        assume(False)
        return
    outcome = evaluate(text)
    assert outcome.error is None, text
    assert Decimal(outcome.result) == expected, text
    assert not outcome.rounded, text
    if len(str(expected)) <= MAX_PLAIN_LENGTH:
        assert outcome.result == str(expected), text


def test_rendered_integer_trees_really_depend_on_precedence():
    tree = ("bin", "-", ("lit", 10), ("bin", "-", ("lit", 4), ("lit", 3)))
    assert _render(tree)[0] == "10 - (4 - 3)"
    tree = ("neg", ("pow", ("lit", 2), 2, "**"))
    assert _render(tree)[0] == "-2 ** 2"
    assert ok("-2 ** 2") == str(_value(tree))
    tree = ("pow", ("neg", ("lit", 2)), 2, "^")
    assert _render(tree)[0] == "(-2) ^ 2"
    assert ok("(-2) ^ 2") == str(_value(tree))


DECIMALS = st.decimals(
    min_value=Decimal("-1e30"), max_value=Decimal("1e30"), allow_nan=False, allow_infinity=False
)
CONTEXT = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)


EXACT = decimal.Context(prec=1000, Emax=999, Emin=-999)


def _read(literal: Decimal) -> Decimal:
    """How the calculator reads a literal: integers exactly, anything else to 28 digits."""
    return literal if literal == literal.to_integral_value() else CONTEXT.plus(literal)


@settings(max_examples=300, deadline=None)
@given(DECIMALS, DECIMALS, st.sampled_from(["+", "-", "*"]))
def test_decimal_sums_differences_and_products_agree_with_the_decimal_module(a, b, op):
    text = f"{a:f} {op} {b:f}"
    assume(len(text) <= MAX_EXPRESSION_LENGTH)
    x, y = _read(a), _read(b)
    integers = x == x.to_integral_value() and y == y.to_integral_value()
    context = EXACT if integers else CONTEXT
    expected = {"+": context.add, "-": context.subtract, "*": context.multiply}[op](x, y)
    assert Decimal(ok(text)) == expected


@settings(max_examples=200, deadline=None)
@given(DECIMALS, DECIMALS)
def test_floor_division_and_modulo_agree_with_exact_rational_arithmetic(a, b):
    x, y = _read(a), _read(b)
    assume(y != 0)
    floor_quotient = math.floor(Fraction(x) / Fraction(y))
    remainder = Fraction(x) - floor_quotient * Fraction(y)
    assert Decimal(ok(f"({a:f}) // ({b:f})")) == Decimal(floor_quotient)  # exact
    integers = x == x.to_integral_value() and y == y.to_integral_value()
    if integers:
        expected = Decimal(remainder.numerator)
    else:
        expected = CONTEXT.divide(Decimal(remainder.numerator), Decimal(remainder.denominator))
    assert Decimal(ok(f"({a:f}) mod ({b:f})")) == expected


# --- percent and mod -----------------------------------------------------------------------------

PERCENT = [
    ("50%", "0.5"),
    ("0.5%", "0.005"),
    ("-10%", "-0.1"),
    ("200 + 10%", "220"),  # ten percent of what comes before it
    ("200 - 10%", "180"),
    ("200 + -10%", "180"),
    ("100 + 10% + 10%", "121"),
    ("80 * 25%", "20"),  # a * b% is a·b/100
    ("200 * 10%", "20"),
    ("200 / 10%", "2000"),
    ("10% of 250", "25"),
    ("10 % of 250", "25"),
    ("10% OF 250", "25"),
    ("10% of 50% of 200", "10"),
    ("200 + 10% of 50", "205"),  # "10% of 50" is a term: 5
    ("10% + 5", "5.1"),  # a leading percent is just a number
    ("200 + (10%)", "200.1"),  # in brackets, a percent is just a number
    ("2 * 3%", "0.06"),
    ("2^3%", "0.08"),  # % applies to the whole factor before it
    ("(1 + 1)%", "0.02"),
    ("10**40 + 10%", "11" + "0" * 39),  # exact
    ("1e999%", "1E+997"),
]


@pytest.mark.parametrize(("expression", "expected"), PERCENT)
def test_percent_follows_calculator_habits(expression, expected):
    assert ok(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("10%%", "syntax error at column 4"),
        ("2 of 3", "syntax error at column 3"),  # "of" only after a percent
        ("(10%) of 3", "syntax error at column 7"),
        ("1%0", "syntax error at column 3"),  # % is no longer the remainder: that is mod
        ("7 % 2", "syntax error at column 5"),
        ("% 5", "syntax error at column 1"),
        ("10% of", "syntax error at column 7"),
        ("of", "syntax error at column 1"),
    ],
)
def test_percent_misuse_is_a_syntax_error(expression, message):
    assert err(expression) == message


MOD = [
    ("7 mod 2", "1"),
    ("7 MOD 2", "1"),
    ("7 Mod 2", "1"),
    ("-7 mod 2", "1"),  # the sign of the divisor, as in Python
    ("7 mod -2", "-1"),
    ("10 mod 3 mod 2", "1"),
    ("2 * 7 mod 4", "2"),  # same precedence as *, left to right
    ("7.5 mod 2", "1.5"),
    ("7mod 2", "1"),  # a keyword, not a name to multiply by
    ("10 mod 3 + 1", "2"),
]


@pytest.mark.parametrize(("expression", "expected"), MOD)
def test_mod_is_the_remainder(expression, expected):
    assert ok(expression) == expected


# --- symbols and spellings people type ------------------------------------------------------

SPELLINGS = [
    ("3 \u00d7 4", "12"),  # times sign
    ("8 \u00f7 2", "4"),  # division sign
    ("5 \u2212 2", "3"),  # minus sign
    ("\u22125", "-5"),
    ("2 \u00d7 \u22123", "-6"),
    ("2 \u00d7 3 \u00f7 4 \u2212 1", "0.5"),
    ("SQRT(4)", "2"),
    ("Sqrt(4)", "2"),
    ("sQrT(2.25)", "1.5"),
    ("ROUND(2.5)", "3"),
    ("MAX(1, 2)", "2"),
    ("LN(E)", "1"),
    ("Pi", PI),
    ("PI", PI),
    ("E", E),
    ("2 * PI", "6.283185307179586476925286767"),
    ("10_000", "10000"),
    ("1_000_000 + 1", "1000001"),
    ("1_000.000_1", "1000.0001"),
    ("1e1_0", "10000000000"),
    ("0.000_001", "0.000001"),
]


@pytest.mark.parametrize(("expression", "expected"), SPELLINGS)
def test_times_division_and_minus_signs_any_case_names_and_digit_groups(expression, expected):
    assert ok(expression) == expected


def test_messages_name_a_function_or_constant_as_typed():
    assert err("SQRT") == "function 'SQRT' needs parentheses, like SQRT(x)"
    assert err("PI(2)") == "'PI' is not a function"
    assert err("Sqrt()") == "sqrt takes 1 argument"


HINTS = [
    ("1\u00a0000", "digits are grouped with _, not a space: write 1_000 or 1000"),  # no-break
    ("1\u2009000", "digits are grouped with _, not a space: write 1_000 or 1000"),  # thin
    ("1\u202f000", "digits are grouped with _, not a space: write 1_000 or 1000"),  # narrow nb
    (
        "1\u2009000\u2009000 * 2",
        "digits are grouped with _, not a space: write 1_000_000 or 1000000",
    ),
    ("2 + 12\u00a0345", "digits are grouped with _, not a space: write 12_345 or 12345"),
    ("1,5", "use a point for decimals, not a comma: write 1.5"),
    ("3,14 * 2", "use a point for decimals, not a comma: write 3.14"),
    ("(0,25)", "use a point for decimals, not a comma: write 0.25"),
    ("1,000", "write 1.000 for a decimal or 1_000 to group digits, not 1,000"),
    ("1,000,000", "digits are grouped with _, not a comma: write 1_000_000"),
    ("1,5e3", "use a point for decimals, not a comma: write 1.5"),
    ("2 * 1,5", "use a point for decimals, not a comma: write 1.5"),
]


@pytest.mark.parametrize(("expression", "message"), HINTS)
def test_spaces_and_commas_in_numbers_are_refused_with_what_to_type(expression, message):
    assert err(expression) == message


def test_a_space_or_comma_that_is_not_inside_a_number_is_still_a_syntax_error():
    assert err("1\u00a0+1") == "syntax error at column 2"
    assert err("\u00a01") == "syntax error at column 1"
    assert err("1\u00a0") == "syntax error at column 2"
    assert err("1, 5") == "syntax error at column 2"
    assert ok("max(1,5)") == "5"  # inside a call a comma separates arguments
    assert ok("round(2.345,2)") == "2.35"


IMPLICIT = [
    ("2pi", "6.283185307179586476925286767"),
    ("2 pi", "6.283185307179586476925286767"),
    ("2(3+4)", "14"),
    ("2 (3)", "6"),
    ("3sqrt(4)", "6"),
    ("2e", "5.436563656918090470720574943"),  # 2 times e; 2e3 is still 2000
    ("2e3", "2000"),
    ("-2(3)", "-6"),
    ("2(3)^2", "18"),  # the power binds first: 2·3²
    ("2pi^0", "2"),
    ("1/2(4)", "0.125"),  # the product binds tighter than /: 1/(2·4)
    ("2(3)%", "0.06"),
]


@pytest.mark.parametrize(("expression", "expected"), IMPLICIT)
def test_a_number_next_to_a_name_or_a_bracket_multiplies(expression, expected):
    assert ok(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("(2)(3)", "syntax error at column 4"),  # only a number multiplies implicitly
        ("pi 2", "syntax error at column 4"),
        ("2 3", "syntax error at column 3"),
        ("2#1", "syntax error at column 2"),
        ("2 sqrt 4", "function 'sqrt' needs parentheses, like sqrt(x)"),
        ("2x", "unknown name 'x'"),
    ],
)
def test_other_juxtapositions_are_errors(expression, message):
    assert err(expression) == message


# --- exact where it can be, honest where it cannot ------------------------------------------


def test_integer_arithmetic_keeps_every_digit():
    outcome = evaluate("99999999999999999999*99999999999999999999")
    assert outcome == Outcome(result=str((10**20 - 1) ** 2))
    assert len(outcome.result) == 40
    assert ok("1234567890123456789012345678901234567890 + 1") == str(
        1234567890123456789012345678901234567891
    )
    assert ok("(10**40 + 2) / 2") == str(5 * 10**39 + 1)  # an integer quotient stays exact
    assert ok("2**150 - 1") == str(2**150 - 1)
    assert ok("-(10**45) - 1") == str(-(10**45) - 1)
    assert ok("abs(-(10**45) - 1)") == str(10**45 + 1)
    assert ok("floor(10**45 + 0)") == str(10**45)
    assert ok("max(10**45 + 1, 10**45)") == str(10**45 + 1)
    assert ok("round(10**45 + 1)") == str(10**45 + 1)
    product = "*".join(str(n) for n in range(1, 40))
    assert ok(product) == str(math.factorial(39))


ROUNDED = [
    ("1/3", True),
    ("2/3", True),
    ("0.1 + 0.2", False),
    ("10/4", False),
    ("10**40 / 3", True),
    ("10**40 + 0.5", True),  # 41 significant digits, not an integer: rounded to 28
    ("1.00000000000000000000000000001", True),  # a literal with 30 digits
    ("pi", True),
    ("e", True),
    ("sin(pi)", True),  # pi is not exact
    ("2**0.5", True),
    ("4**0.5", False),
    ("2.25**1.5", False),
    ("sqrt(16)", False),
    ("sqrt(2)", True),
    ("log(1000)", False),
    ("log(8, 2)", False),
    ("log(0.125, 2)", False),
    ("log(7, 3)", True),
    ("ln(1)", False),
    ("exp(0)", False),
    ("exp(1)", True),
    ("round(2.345, 2)", False),  # rounding that was asked for
    ("floor(2.5)", False),
    ("sin(1)", True),
    ("cos(0)", False),
    ("0.5**10000", True),  # flushed to 0
    ("exp(-1e10)", True),
    ("1e-10001", True),
    ("3.141592653589793238462643383 * 0 + sin(3.141592653589793238462643383)", True),
    ("2**-1", False),
    ("3**-1", True),
    ("1e999 // 7", False),
    ("50% of 3", False),
]


@pytest.mark.parametrize(("expression", "rounded"), ROUNDED)
def test_a_result_that_had_to_be_rounded_says_so(expression, rounded):
    outcome = evaluate(expression)
    assert outcome.ok, outcome
    assert outcome.rounded is rounded


def test_errors_are_never_rounded_and_define_nothing():
    assert evaluate("1/0") == Outcome(error="division by zero")
    with pytest.raises(ValueError):
        Outcome(error="x", rounded=True)
    with pytest.raises(ValueError):
        Outcome(error="x", defines="rate")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([*NASTY_CHARACTERS, "mod", " of ", "\u00d7"]), max_size=40).map(
        "".join
    )
)
def test_every_result_has_all_its_digits_plain_up_to_60_characters(expression):
    outcome = evaluate(expression)
    if outcome.result is None:
        return
    text = outcome.result
    if "E" in text:
        mantissa = text.split("E")[0]
        assert len(format(Decimal(text), "f")) > MAX_PLAIN_LENGTH
        assert mantissa.rstrip("0") == mantissa or "." not in mantissa
    else:
        assert len(text) <= MAX_PLAIN_LENGTH
        assert "." not in text or not text.endswith("0")  # no trailing fractional zeros
    if not outcome.rounded:  # a value that was not rounded has at most the digits it needs
        assert Decimal(text) == Decimal(text).normalize(decimal.Context(prec=1000))


# --- shared results: ans, #N and variables --------------------------------------------------------


def room(*entries: tuple[str | None, str | None, bool] | str | None) -> Resolved:
    """A resolver's answer for a room whose entries 1..n are given (result text, or None for a
    failed one; or (result, defines, rounded)). ans is the newest with a result."""
    seqs: dict[int, Stored] = {}
    names: dict[str, Stored] = {}
    answer = None
    for seq, entry in enumerate(entries, start=1):
        result, defines, rounded = entry if isinstance(entry, tuple) else (entry, None, False)
        stored = Stored(seq, result, rounded)
        seqs[seq] = stored
        if result is not None:
            answer = stored
        if defines:
            names[defines] = stored
    return Resolved(answer=answer, seqs=seqs, names=names)


def resolving(resolved: Resolved) -> calculator.Resolver:
    """A resolver that answers from `resolved`, as a room would, with only what was wanted."""

    def resolve(wanted: Wanted) -> Resolved:
        return Resolved(
            answer=resolved.answer if wanted.answer else None,
            seqs={s: resolved.seqs[s] for s in wanted.seqs if s in resolved.seqs},
            names={n: resolved.names[n] for n in wanted.names if n in resolved.names},
        )

    return resolve


def in_room(expression: str, resolved: Resolved) -> Outcome:
    return evaluate(expression, resolving(resolved))


def test_ans_is_the_newest_result_and_hash_n_is_entry_n():
    history = room("42", "7", None)  # entry 3 failed
    assert in_room("ans * 2", history) == Outcome(result="14", refs=(2,))
    assert in_room("ANS + 1", history) == Outcome(result="8", refs=(2,))
    assert in_room("#1 + #2", history) == Outcome(result="49", refs=(1, 2))
    assert in_room("2ans", history) == Outcome(result="14", refs=(2,))
    assert in_room("#001", history) == Outcome(result="42", refs=(1,))


def test_references_name_what_is_wrong():
    history = room("42", None)
    assert in_room("#99 + 1", history).error == "#99 does not exist yet"
    assert in_room("#2 * 3", history).error == "#2 has no result"
    assert in_room("#0", history).error == "#0 does not exist: entries start at #1"
    assert in_room("#" + "9" * 30, history).error == "#99999999999999999999 does not exist yet"
    assert in_room("ans", room()).error == "no earlier result for ans"
    assert in_room("ans", room(None, None)).error == "no earlier result for ans"
    assert evaluate("ans").error == "no earlier result for ans"  # no room at all
    assert evaluate("#1").error == "#1 does not exist yet"
    assert in_room("ans(2)", history).error == "'ans' is not a function"
    assert in_room("#1(2)", history).error == "syntax error at column 3"
    assert in_room("#", history).error == "syntax error at column 1"
    assert in_room("# 1", history).error == "syntax error at column 1"
    assert in_room("#1.5", history).error == "syntax error at column 3"


def test_refs_are_the_entries_read_in_order_of_first_use():
    history = room("1", "2", "3", "4")
    assert in_room("#3 + ans + #1 + #3 + ans", history).refs == (3, 4, 1)
    assert in_room("#4 + ans", history).refs == (4,)  # ans is #4: read once
    assert in_room("(#2 + #1) * 0", history).refs == (2, 1)
    assert in_room("#2 + 1/0", history) == Outcome(error="division by zero", refs=(2,))
    assert in_room("#2 + #9", history) == Outcome(error="#9 does not exist yet", refs=(2,))
    assert in_room("1 + 1", history).refs == ()


def test_a_reference_reads_exactly_the_stored_digits():
    big = str(3**80)  # 39 digits, exact
    history = room(big, "0.3333333333333333333333333333", "1E+800", "-2.5E-70")
    assert in_room("#1 + 1", history).result == str(3**80 + 1)
    assert in_room("#1 * 0 + #3 // 1e799", history).result == "10"
    assert in_room("#4 * 2", history).result == "-5E-70"
    assert in_room("#2 * 3", history).result == "0.9999999999999999999999999999"


def test_using_a_rounded_result_makes_the_result_rounded():
    history = room(("0.3333333333333333333333333333", None, True), "2")
    assert in_room("#1 * 3", history).rounded is True
    assert in_room("#2 * 3", history).rounded is False
    assert in_room("round(#1, 2)", history).rounded is True  # what it rounded was not exact


def test_a_stored_result_that_does_not_read_as_a_number_has_no_result():
    for text in ("", "abc", "NaN", "Infinity", "1e99999"):
        outcome = in_room("#1", room(text))
        assert outcome.error in ("#1 has no result", "result too large"), text


def test_variables_are_defined_read_and_shadowed():
    assert evaluate("rate = 0.2") == Outcome(result="0.2", defines="rate")
    assert evaluate("x=1/3") == Outcome(
        result="0.3333333333333333333333333333", rounded=True, defines="x"
    )
    history = room(("0.2", "rate", False), "100", ("0.25", "Rate", False))
    assert in_room("ans * rate", history) == Outcome(result="0.05", refs=(3, 1))
    assert in_room("rate * 100", history).result == "20"
    assert in_room("Rate * 100", history).result == "25"  # names are case-sensitive
    assert in_room("RATE", history).error == "unknown name 'RATE'"
    assert in_room("2rate", history).result == "0.4"
    assert in_room("rate = rate * 2", history) == Outcome(result="0.4", refs=(1,), defines="rate")
    assert in_room("total = #2 + 10%", history) == Outcome(result="110", refs=(2,), defines="total")
    assert in_room("rate(2)", history).error == "'rate' is not a function"
    assert in_room("a1_b2 = 5", history).defines == "a1_b2"


def test_a_failed_definition_defines_nothing():
    assert evaluate("rate = 1/0") == Outcome(error="division by zero")
    assert evaluate("rate = x").error == "unknown name 'x'"
    assert evaluate("rate =").error == "syntax error at column 7"
    assert evaluate("rate = 1 = 2").error == "syntax error at column 10"
    assert evaluate("2 = 3").error == "syntax error at column 3"
    assert evaluate("= 3").error == "syntax error at column 1"
    assert evaluate("rate == 3").error == "syntax error at column 7"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("sqrt = 2", "'sqrt' is a function; choose another name"),
        ("SQRT = 2", "'SQRT' is a function; choose another name"),
        ("Sin = 2", "'Sin' is a function; choose another name"),
        ("pi = 3", "'pi' is a constant; choose another name"),
        ("PI = 3", "'PI' is a constant; choose another name"),
        ("E = 3", "'E' is a constant; choose another name"),
        ("ans = 1", "'ans' is reserved; choose another name"),
        ("Ans = 1", "'Ans' is reserved; choose another name"),
        ("mod = 1", "'mod' is reserved; choose another name"),
        ("OF = 1", "'OF' is reserved; choose another name"),
        ("_rate = 1", "'_rate' cannot be a name: names start with a letter"),
        ("1rate = 1", "unknown name 'rate'"),  # 1 times rate, then = is out of place
    ],
)
def test_variable_names_cannot_be_functions_constants_or_keywords_in_any_case(expression, message):
    assert err(expression) == message


def test_an_unknown_name_is_still_a_clear_error():
    assert in_room("rate * 2", room("1")).error == "unknown name 'rate'"
    assert in_room("x", room(("5", "y", False))).error == "unknown name 'x'"


def test_prepare_says_what_an_expression_reads_from_its_room():
    assert prepare("1 + 2").wanted is None
    assert prepare("rate = 0.2").wanted is None  # the name being defined is not read
    assert prepare("sqrt(pi) * E mod 2 + 10% of 3").wanted is None
    assert prepare("#3 + ans + rate + Rate + rate + #1 + #3 + _x").wanted == Wanted(
        answer=True, seqs=(1, 3), names=("rate", "Rate")
    )
    assert prepare("x = x + 1").wanted == Wanted(answer=False, seqs=(), names=("x",))
    assert prepare("#0 + #" + "9" * 30).wanted is None  # no entry can have those seqs
    assert prepare("1/0").wanted is None
    assert prepare("").wanted is None
    assert prepare(None).wanted is None  # type: ignore[arg-type]


def test_the_resolver_is_asked_once_and_only_when_the_room_is_read():
    calls: list[Wanted] = []

    def resolve(wanted: Wanted) -> Resolved:
        calls.append(wanted)
        return room("2", "3")

    assert evaluate("1 + 1", resolve).result == "2"
    assert calls == []
    assert evaluate("#1 * #2 + ans + #1", resolve).result == "11"
    assert calls == [Wanted(answer=True, seqs=(1, 2), names=())]


def test_a_resolver_that_fails_is_not_an_error_of_the_expression():
    def broken(wanted: Wanted) -> Resolved:
        raise ConnectionError("the database went away")

    with pytest.raises(ConnectionError):
        evaluate("ans + 1", broken)
    assert evaluate("1 + 1", broken).result == "2"


def test_references_are_found_left_to_right_with_the_other_errors():
    history = room("1")
    assert in_room("#5 + (", history).error == "#5 does not exist yet"
    assert in_room("(* #5", history).error == "syntax error at column 2"
    assert in_room("1/0 + #5", history).error == "#5 does not exist yet"  # names before arithmetic


SHARED = st.builds(
    Stored,
    seq=st.integers(1, 50),
    result=st.one_of(
        st.none(),
        st.sampled_from(["0", "1", "-2.5", "1E+999", "9" * 60, "0.3333333333333333333333333333"]),
        st.text(max_size=8),
    ),
    rounded=st.booleans(),
)
RESOLVED = st.builds(
    Resolved,
    answer=st.one_of(st.none(), SHARED),
    seqs=st.dictionaries(st.integers(1, 9), SHARED, max_size=5),
    names=st.dictionaries(st.sampled_from(["x", "y", "rate", "X"]), SHARED, max_size=4),
)
ROOM_PIECES = [*NASTY_CHARACTERS, "#1", "#2", "#9", "#0", "ans", "x", "y", "rate", "X", " = ",
               "mod", "%", " of ", "\u00d7", "\u2212", "2(", "\u00a0"]  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ROOM_PIECES), max_size=30).map("".join), RESOLVED)
def test_evaluation_in_any_room_never_raises(expression, resolved):
    outcome = evaluate(expression, lambda wanted: resolved)
    assert_one_of_result_or_error(outcome)
    assert all(isinstance(seq, int) for seq in outcome.refs)
    assert len(set(outcome.refs)) == len(outcome.refs)
    if outcome.defines is not None:
        assert outcome.result is not None
