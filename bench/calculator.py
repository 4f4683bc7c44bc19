"""Benchmark for rooms.calculator: every input must be answered in well under 50 ms.

Runs a fixed list of hostile inputs, inputs built to be as costly as 500 characters allow, and a
few hundred seeded random ones (character soup and well-formed expressions); then inputs that read
their room (`ans`, hundreds of `#N` and variables, 1000-digit stored results) against an
in-memory room, so the evaluator's side of resolution is bounded too. Each input is timed
with time.perf_counter over several repeats; its time is the median of those repeats. Prints the
10 slowest inputs, the maximum and the median over all inputs, and how the maximum compares with
`evaluate("1+1")` timed in the same run. Exits 1 if any input takes 50 ms or more.

    .venv/bin/python bench/calculator.py [--repeats N] [--random N] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

LIMIT_SECONDS = 0.050
SEED = 20_240_601


def hostile_inputs() -> list[str]:
    """The fixed hostile list (it overlaps the one in tests/rooms/test_calculator.py)."""
    return [
        "9**9**9",
        "9^9^9^9",
        "9**9**9**9**9**9",
        "10**10**10",
        "1/3**-9999",
        "0**-1",
        "(-8)**(1/3)",
        "1**1e100",
        "(-1)**1e100",
        "0**1e100",
        "1e999999999",
        "1e-999999999",
        "exp(1e10)",
        "exp(exp(exp(exp(10))))",
        "sin(1e300)",
        "cos(1e300)",
        "tan(-1e300)",
        "(" * 10_000,
        "(" * 5_000 + ")" * 5_000,
        "1+" * 5_000 + "1",
        "1" * 10_000,
        "(" * 250 + ")" * 250,
        "(" * 499 + "1",
        "-" * 499 + "1",
        "sqrt(" * 80 + "1" + ")" * 80,
        "1+" * 249 + "1",
        "2" + "**2" * 166,
        "*".join(str(n) for n in range(1, 200))[:499].rstrip("*"),
        "1.0000001**1e30",
        "(1).__class__",
        "(1).real",
        "__import__('os')",
        "__import__('os').system('ls')",
        "open('/etc/passwd').read()",
        "lambda: 1",
        "(lambda x: x)(1)",
        "[1]",
        "[x for x in ()]",
        "'a'",
        '"a" * 10**9',
        "1 if 1 else 2",
        "\x00",
        "1\x00",
        "\U0001f600",
        "1 + \U0001f600",
        "\u202e1+1",
        "\u200f1\u200f",
        "1\n+1",
        "\r\n",
        "\u0661\u0662",
        "\uff11+\uff11",
        "\ud800",
        "\ufeff1",
        "1\u00a0+1",
        "__builtins__",
        "os.system('ls')",
        "a = 1",
        "1 @ 1",
        "min(" + "1," * 200 + "1)",
        "max(" + "9**9**9," * 50 + "1)",
        " " * 10_000,
        "\t" * 600,
        "1e-10001 ** -1",
        "sin(" * 50 + "1" + ")" * 50,
        "exp(" * 50 + "1" + ")" * 50,
        "ln(" * 50 + "10" + ")" * 50,
        "1.000000000000000000000000001**1e29",
        "0.9999999999999999999999999999**-1e30",
        "1e999 // 7",
        "1e999 % 7",
        "1e-1000 mod 1e999",
        "2**0.5**0.5**0.5",
        # the habits of round 2: percent, mod, signs, spellings, hints, implicit products
        "1e999 mod 7",
        "1+10%" * 100,
        "10%" + " of 10%" * 70,
        "200" + " + 10%" * 99,
        "2pi^" * 100 + "2",
        "2(" * 120 + "1" + ")" * 120,
        "1,5" * 166,
        "1\u00a0000" * 100,
        "1\u2009" * 250,
        "10_000" * 83,
        "\u00d7\u00f7\u2212" * 166,
        "SQRT(" * 50 + "2" + ")" * 50,
        "x = " + "x + " * 124 + "1",
        "#" + "9" * 499,
        "+".join(f"#{n}" for n in range(1, 120)),
        "ans" + "+ans" * 124,
        "+".join(f"v{n}" for n in range(120)),
        # exact integers up to the magnitude bound
        "9" * 250 + "*" + "9" * 249,
        "(10**999 - 1) // 7 * 7 + (10**999 - 1) mod 7",
        "3**2000 mod 1000000007 + 3**2000 // 3**1999",
        "*".join(str(n) for n in range(400, 500))[:499].rstrip("*"),
        "(10**500 + 1) * (10**498 + 3) - 10**998",
        "(10**999 - 1) / 9 / 3 / 37",
    ]


def _repeat(piece: str, joiner: str = "+", limit: int = 500) -> str:
    count = max(1, (limit + len(joiner)) // (len(piece) + len(joiner)))
    return joiner.join([piece] * count)


def heavy_inputs() -> list[str]:
    """Valid inputs that pack as much costly work as 500 characters allow."""
    return [
        _repeat("sin(1e9)"),
        _repeat("tan(999999999.5)"),
        _repeat("cos(123456789.123456789)"),
        _repeat("log(7,3)"),
        _repeat("ln(2)"),
        _repeat("exp(2302)", "-"),
        _repeat("1.5**7.123456789"),
        _repeat("2**0.5"),
        _repeat("(1/3)**(1/3)"),
        _repeat("1.000000000000000000000000001**1e29"),
        _repeat("0.9999999999999999999999999999**-9.999999999999999999999999999e29"),
        _repeat("1.0000000000000000005**-3e2"),
        _repeat("1e999//7%3"),
        _repeat("1e-1000%7"),
        _repeat("round(1/3,28)"),
        _repeat("sqrt(2)"),
        "sin(" * 50 + "1e9" + ")" * 50,
        "tan(" * 50 + "1" + ")" * 50,
        "sqrt(" * 50 + "2" + ")" * 50,
        "ln(" * 40 + "1e999" + ")" * 40,
        "min(" + _repeat("sin(1e9)", ",", 490) + ")",
        "max(" + _repeat("log(7,3)", ",", 490) + ")",
        "1.1" + "**1.1" * 99,
        "2**" * 160 + "0.5",
        _repeat("1/7", "*"),
        _repeat("9.999999999999999999999999999", "*"),
    ]


_SOUP = [
    *"0123456789+-*/%^().,eE \t",
    "**",
    "//",
    "sqrt(",
    "ln(",
    "log(",
    "exp(",
    "sin(",
    "tan(",
    "round(",
    "max(",
    "pi",
    "e",
    "e999",
    "e-999",
    "9**9",
    "x",
    "\u0661",
    "\uff11",
    "\U0001f600",
    "\x00",
    "\n",
]
_FUNCTIONS_1 = ["sqrt", "abs", "floor", "ceil", "ln", "exp", "sin", "cos", "tan", "round", "log"]
_FUNCTIONS_N = ["min", "max", "log", "round"]
_BINARY = ["+", "-", "*", "/", "//", "%", "**", "^"]


def _number(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randrange(1000))
    if kind == 1:
        return f"{rng.uniform(0, 1000):.{rng.randrange(1, 28)}f}"
    if kind == 2:
        return f"{rng.randrange(1, 10)}.{rng.randrange(10**6)}e{rng.randrange(-1200, 1200)}"
    if kind == 3:
        return rng.choice(["pi", "e", "0", "1", "0.5", "1e999", "1e-999", "9" * 28])
    return "1." + "0" * rng.randrange(28) + str(rng.randrange(1, 10))


def _expression(rng: random.Random, depth: int) -> str:
    if depth <= 0 or rng.random() < 0.3:
        return _number(rng)
    kind = rng.randrange(5)
    if kind == 0:
        return f"({_expression(rng, depth - 1)})"
    if kind == 1:
        return f"{rng.choice('-+')}{_expression(rng, depth - 1)}"
    if kind == 2:
        return f"{rng.choice(_FUNCTIONS_1)}({_expression(rng, depth - 1)})"
    if kind == 3:
        args = ", ".join(_expression(rng, depth - 1) for _ in range(rng.randrange(1, 4)))
        return f"{rng.choice(_FUNCTIONS_N)}({args})"
    op = rng.choice(_BINARY)
    return f"{_expression(rng, depth - 1)} {op} {_expression(rng, depth - 1)}"


def random_inputs(count: int, seed: int = SEED) -> list[str]:
    """Half character soup, half well-formed expressions; all at most 500 characters."""
    rng = random.Random(seed)
    inputs: list[str] = []
    while len(inputs) < count:
        if len(inputs) % 2:
            text = "".join(rng.choice(_SOUP) for _ in range(rng.randrange(1, 120)))
        else:
            text = _expression(rng, rng.randrange(1, 8))
        if len(text) <= 500:
            inputs.append(text)
    return inputs


def measure(evaluate: Callable[[str], object], expression: str, repeats: int) -> list[float]:
    """Wall-clock seconds of `repeats` calls of evaluate(expression)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate(expression)
        times.append(time.perf_counter() - start)
    return times


def _load_evaluate() -> Callable[[str], object]:
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from rooms.calculator import evaluate

    return evaluate


def room_inputs() -> list[str]:
    """Inputs that read their room as much as 500 characters allow."""
    return [
        "+".join(f"#{n}" for n in range(1, 120)),
        "*".join(f"#{n}" for n in range(1, 120))[:499].rstrip("*"),
        "#1*#2*#3*#4*#5*#6*#7*#8*#9" * 10,
        "+".join(f"v{n}" for n in range(120))[:499].rstrip("+"),
        "*".join(f"v{n}" for n in range(120))[:499].rstrip("*"),
        "ans" + "*ans" * 124,
        "x = " + "+".join(f"v{n}" for n in range(110))[:490].rstrip("+"),
        "#200 * #200 * #200 * #200 * #200 * #200 * #200 * #200 * #200",  # 1000-digit results
        "#201 + " * 70 + "1",  # a rounded result, read 70 times
        "sqrt(" * 49 + "#1" + ")" * 49,
    ]


def room_evaluate() -> Callable[[str], object]:
    """`evaluate` in an in-memory room: #1..#199 small integers, #200 a 110-digit one, #201 a
    rounded result, ans, and variables v0..v249."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from rooms.calculator import Resolved, Stored, Wanted, evaluate

    seqs = {n: Stored(n, str(n)) for n in range(1, 200)}
    seqs[200] = Stored(200, "1" + "7" * 110)
    seqs[201] = Stored(201, "0.3333333333333333333333333333", rounded=True)
    names = {f"v{n}": Stored(300 + n, f"{n}.5") for n in range(250)}

    def resolve(wanted: Wanted) -> Resolved:
        return Resolved(
            answer=seqs[201] if wanted.answer else None,
            seqs={s: seqs[s] for s in wanted.seqs if s in seqs},
            names={n: names[n] for n in wanted.names if n in names},
        )

    return lambda expression: evaluate(expression, resolve)


def _shown(expression: str, width: int = 60) -> str:
    text = repr(expression)
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per input")
    parser.add_argument("--random", type=int, default=400, help="number of random inputs")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    evaluate = _load_evaluate()
    in_room = room_evaluate()
    inputs = [
        (evaluate, text)
        for text in hostile_inputs() + heavy_inputs() + random_inputs(args.random, args.seed)
    ] + [(in_room, text) for text in room_inputs()]
    for evaluator, expression in inputs:  # warm up: imports, caches, first-call costs
        evaluator(expression)

    baseline = statistics.median(measure(evaluate, "1+1", 200))
    timings = []
    for evaluator, expression in inputs:
        times = measure(evaluator, expression, args.repeats)
        timings.append((statistics.median(times), max(times), expression))
    timings.sort(key=lambda row: row[0], reverse=True)

    print(f"{len(inputs)} inputs, {args.repeats} repeats each; time = median of the repeats")
    print(f"{'median ms':>10} {'worst ms':>9}  input")
    for median, worst, expression in timings[:10]:
        print(f"{median * 1000:10.3f} {worst * 1000:9.3f}  {_shown(expression)}")
    slowest, _, slowest_input = timings[0]
    overall_median = statistics.median(row[0] for row in timings)
    print()
    print(f"max:      {slowest * 1000:.3f} ms  {_shown(slowest_input)}")
    print(f"median:   {overall_median * 1000:.3f} ms")
    print(f"baseline: {baseline * 1000:.3f} ms  evaluate('1+1')")
    print(f"max / baseline: {slowest / baseline:.0f}x")

    too_slow = [row for row in timings if row[0] >= LIMIT_SECONDS]
    if too_slow:
        print(f"FAIL: {len(too_slow)} input(s) took {LIMIT_SECONDS * 1000:.0f} ms or more")
        return 1
    print(f"OK: every input under {LIMIT_SECONDS * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
