"""Behaviour of rooms.calculator: exact results, messages for people, and no input that crashes.

Pure Python: no Django, no database, so it runs with `-p no:django` as well as under pytest-django.
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
from rooms.calculator import MAX_DEPTH, MAX_EXPRESSION_LENGTH, CalculatorError, Outcome, evaluate

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
    ("-7 % 2", "1"),
    ("7 % -2", "-1"),
    ("7 % 2", "1"),
    ("-7 % -2", "-1"),
    ("7.5 // 2", "3"),
    ("7.5 % 2", "1.5"),
    ("-7.5 % 2", "0.5"),
    ("1 % 0.3", "0.1"),
    ("6 // 0.5", "12"),
    ("1e999 // 3", "3.333333333333333333333333333E+998"),
    ("1e999 % 3", "1"),
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
    ("(-1)**(2*1e50 + 1)", "1"),  # 2e50 + 1 rounds to 2e50 at 28 digits: even
    ("(-1)**3", "-1"),
    ("0.5**10000", "0"),  # underflows to 0, as floats do
    ("2**-1e100", "0"),
    ("99999999999999999999999999999", "1E+29"),
    ("1234567890123456789012345678", "1234567890123456789012345678"),
    ("12345678901234567890123456789", "1.234567890123456789012345679E+28"),
    ("2**90", "1237940039285380274899124224"),
    ("2**100", "1.267650600228229401496703205E+30"),
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
    ("1e28", "1E+28"),
    ("1.5e40", "1.5E+40"),
    ("-1.5e40", "-1.5E+40"),
    ("1e-27", "0.000000000000000000000000001"),
    ("1e-28", "1E-28"),
    ("-2.5e-40", "-2.5E-40"),
    ("123456789 * 1000", "123456789000"),
    ("1e999", "1E+999"),
    ("1000000 * 1000000", "1000000000000"),
]


@pytest.mark.parametrize(("expression", "expected"), FORMATTING)
def test_results_are_plain_decimals_without_trailing_zeros_or_negative_zero(expression, expected):
    assert ok(expression) == expected


def test_very_large_and_very_small_magnitudes_switch_to_scientific_notation():
    for exponent in range(-27, 28):
        assert "E" not in ok(f"1e{exponent}")
    assert ok("1e-28") == "1E-28"
    assert ok("1e28") == "1E+28"


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
    ("2 * 3 % 4", "2"),
    ("2 + 7 // 2", "5"),
    ("17 % 5 * 2", "4"),
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
    ("sin(1e-30)", "1E-30"),
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
    ("1%0", "division by zero"),
    ("0%0", "division by zero"),
    ("1 // -0", "division by zero"),
    ("1/(1-1)", "division by zero"),
    ("0**-1", "division by zero"),
    ("0**-0.5", "division by zero"),
    ("1/3**-9999", "division by zero"),  # 3**-9999 underflows to 0, as floats do
    # unknown names
    ("x", "unknown name 'x'"),
    ("x + 1", "unknown name 'x'"),
    ("1 + foo(2)", "unknown name 'foo'"),
    ("Pi", "unknown name 'Pi'"),
    ("SQRT(4)", "unknown name 'SQRT'"),
    ("E", "unknown name 'E'"),
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
    ("1,2", 2),
    ("*1", 1),
    ("1 * * 2", 5),
    ("1 / / 2", 5),
    ("1 */ 2", 4),
    ("1.2.3", 4),
    ("1..2", 3),
    (".", 1),
    ("2e", 2),
    ("1e5e5", 4),
    ("1_000", 2),
    ("0x10", 2),
    ("1j", 2),
    ("5!", 2),
    ("(1).real", 4),
    ("(1).__class__", 4),
    ("[1]", 1),
    ("{1}", 1),
    ("'a'", 1),
    ('"a"', 1),
    ("1 if 1 else 2", 3),
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
    ("3 \u00d7 2", 3),
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
    assert ok("1e999 % 7") == str(pow(10, 999, 7))
    assert ok("-1e999 % 7") == str(-(10**999) % 7)
    assert ok("1e999 % 1e-999") == "0"
    assert ok("9.999999999999999999999999999e999 % 1.25e-1000") == "0"
    assert err("1e999 // 1e-999") == "result too large"


def test_very_long_literals_are_rounded_to_28_digits():
    assert ok("1" * 400) == "1.111111111111111111111111111E+399"
    assert ok("0." + "3" * 400) == "0.3333333333333333333333333333"


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
    ("1 if 1 else 2", "syntax error at column 3"),
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
    ("a = 1", "unknown name 'a'"),
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
    if outcome.result is not None:
        # Every result reads back as itself.
        assert evaluate(outcome.result) == outcome


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_unicode_text_never_raises(expression):
    assert_one_of_result_or_error(evaluate(expression))


# Integer expression trees, rendered with as few parentheses as the grammar allows, evaluated
# independently with Python ints. Nodes: ("lit", n) ("neg", x) ("pow", x, k) ("bin", op, x, y).

BINARY_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}
INT_LIMIT = 10**27  # well inside 28 significant digits: exact


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


INT_TREES = st.recursive(st.tuples(st.just("lit"), st.integers(0, 999)), _extend, max_leaves=10)


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
    assert ok(text) == str(expected), text


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


@settings(max_examples=300, deadline=None)
@given(DECIMALS, DECIMALS, st.sampled_from(["+", "-", "*"]))
def test_decimal_sums_differences_and_products_agree_with_the_decimal_module(a, b, op):
    text = f"{a:f} {op} {b:f}"
    assume(len(text) <= MAX_EXPRESSION_LENGTH)
    x, y = CONTEXT.plus(a), CONTEXT.plus(b)
    expected = {"+": CONTEXT.add, "-": CONTEXT.subtract, "*": CONTEXT.multiply}[op](x, y)
    assert Decimal(ok(text)) == expected


@settings(max_examples=200, deadline=None)
@given(DECIMALS, DECIMALS)
def test_floor_division_and_modulo_agree_with_exact_rational_arithmetic(a, b):
    x, y = CONTEXT.plus(a), CONTEXT.plus(b)  # literals are read to 28 digits
    assume(y != 0)
    floor_quotient = math.floor(Fraction(x) / Fraction(y))
    remainder = Fraction(x) - floor_quotient * Fraction(y)
    assert Decimal(ok(f"({a:f}) // ({b:f})")) == CONTEXT.create_decimal(floor_quotient)
    expected = CONTEXT.divide(Decimal(remainder.numerator), Decimal(remainder.denominator))
    assert Decimal(ok(f"({a:f}) % ({b:f})")) == expected
