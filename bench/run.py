"""Run every benchmark in sequence and print one summary table (`make bench`).

    .venv/bin/python bench/run.py            # full sizes: a room of 1,000,000 entries, 200 calls
    .venv/bin/python bench/run.py --quick    # 100,000 entries, fewer repeats: a minute or so
    .venv/bin/python bench/run.py --only catchup

Each bench is its own process: bench/calculator.py (its output is parsed here),
bench/after_query.py, bench/resolve.py, bench/catchup.py, bench/fanout.py, bench/memory.py,
bench/render.py (these three print their own tables) and bench/live.py (the live path from
outside, Calcrooms beside the baselines B0 and B1; it also writes var/bench/live.md). Each writes
var/bench/<name>.json; this script writes var/bench/calculator.json from the calculator's output
and var/bench/summary.json.
Speed is read as ratios against baselines measured in the same run, never as absolute
thresholds. Exit status: 1 when a bench failed (the calculator's 50 ms bound, the catch-up
query's index plan, a resolution query that is not one probe per reference, a replay mismatch,
a catch-up that saw a gap or a duplicate, an acknowledged expression not in PostgreSQL exactly
once or a live entry delivered twice or out of order in bench/live.py).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "var" / "bench"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
BENCHES = (
    "calculator", "after_query", "resolve", "catchup", "fanout", "memory", "render", "live",
)  # fmt: skip


def bench_args(name: str, quick: bool) -> list[str]:
    if name == "calculator":
        return ["--random", "100", "--repeats", "3"] if quick else []
    if name == "after_query":
        return ["--entries", "100000", "--repeats", "50"] if quick else []
    if name == "resolve":
        return ["--entries", "20000", "--variables", "200", "--repeats", "50"] if quick else []
    if name == "fanout":
        return ["--sockets", "50", "--rounds", "5"] if quick else []
    if name == "render":
        return ["--repeats", "10"] if quick else []
    if name == "memory":
        return ["--sockets", "100", "--rounds", "1"] if quick else []
    return ["--quick"] if quick else []


def run_bench(name: str, quick: bool) -> tuple[int, float, str]:
    """Run one bench, streaming its output; return (exit status, seconds, output)."""
    command = [PYTHON, f"bench/{name}.py", *bench_args(name, quick)]
    print(f"\n{'=' * 100}\n$ {' '.join(command)}\n{'=' * 100}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    status = process.wait()
    return status, time.perf_counter() - started, "".join(lines)


def calculator_json(output: str, status: int, quick: bool) -> dict[str, Any]:
    """The calculator bench prints its numbers; keep them as JSON like the other benches."""

    def number(label: str) -> float | None:
        match = re.search(rf"^{re.escape(label)}\s+([0-9.]+) ms", output, re.MULTILINE)
        return float(match.group(1)) if match else None

    slowest = re.search(r"^max:\s+[0-9.]+ ms\s+(.*)$", output, re.MULTILINE)
    header = re.search(r"^(\d+) inputs, (\d+) repeats", output, re.MULTILINE)
    data = {
        "bench": "calculator",
        "command": " ".join(
            [".venv/bin/python", "bench/calculator.py", *bench_args("calculator", quick)]
        ),
        "inputs": int(header.group(1)) if header else None,
        "repeats": int(header.group(2)) if header else None,
        "max_ms": number("max:"),
        "slowest_input": slowest.group(1) if slowest else None,
        "median_ms": number("median:"),
        "baseline_ms": number("baseline:"),
        "exit_status": status,
        "ok": status == 0,
    }
    if data["max_ms"] and data["baseline_ms"]:
        data["ratio"] = round(data["max_ms"] / data["baseline_ms"], 1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "calculator.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def load(name: str) -> dict[str, Any] | None:
    path = OUT_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


Row = tuple[str, str, str, str, str, str]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary_rows(ran: dict[str, int]) -> list[Row]:
    rows: list[Row] = []
    calc = load("calculator") if "calculator" in ran else None
    if calc:
        rows.append(
            (
                "calculator",
                "slowest input (median of its repeats)",
                _ms(calc.get("max_ms")),
                "-",
                f"1+1: {_ms(calc.get('baseline_ms'))}",
                f"{calc.get('ratio', '-')}x",
            )
        )
        rows.append(
            ("calculator", "median over all inputs", _ms(calc.get("median_ms")), "-", "", "")
        )
    after = load("after_query") if "after_query" in ran else None
    if after:
        big = after["rooms"]["big"]
        base = after["rooms"]["baseline"]
        wanted = [
            "after middle limit=100",
            "after middle limit=500",
            "after tail (10 missed) limit=500",
            "before newest limit=50 (room page)",
            "before middle limit=100 (scroll back)",
            "history author=frequent newest limit=100",
            "history author=rare newest limit=100",
            "room_authors (history page)",
            "reference: after middle limit=500 as .values()",
        ]
        rows.append(
            (
                "after_query",
                f"bulk load of {big:,} entries (INSERT ... SELECT), seconds",
                f"{after['load']['big_seconds']:.1f} s",
                "",
                "",
                "",
            )
        )
        for ratio in after["ratios"]:
            if ratio["room"] == "big" and ratio["case"] in wanted:
                rows.append(
                    (
                        "after_query",
                        f"{ratio['case']} ({big:,} entries)",
                        _ms(ratio["median_ms"]),
                        _ms(ratio["p95_ms"]),
                        f"{base:,}: {_ms(ratio['baseline_median_ms'])}",
                        f"{ratio['ratio']:.2f}x",
                    )
                )
        http = {(r["variant"], r["room"], r["case"]): r for r in after.get("http", [])}
        for (variant, room, case), r in http.items():
            if room == "big":
                base_row = http[(variant, "baseline", case)]
                rows.append(
                    (
                        "after_query",
                        f"{case} [{variant}]",
                        _ms(r["median_ms"]),
                        _ms(r["p95_ms"]),
                        f"{base:,}: {_ms(base_row['median_ms'])}",
                        f"{r['median_ms'] / base_row['median_ms']:.2f}x",
                    )
                )
        rows.append(
            (
                "after_query",
                "plan: index range scan on entry_room_seq_unique (big room)",
                "ok" if after["plans_ok"] else "FAIL",
                "",
                "",
                "",
            )
        )
    resolve = load("resolve") if "resolve" in ran else None
    if resolve:
        big = resolve["load"]["big"]
        base = resolve["load"]["baseline"]["entries"]
        for ratio in resolve["ratios"]:
            rows.append(
                (
                    "resolve",
                    f"{ratio['case']} ({big['entries']:,} entries, {big['variables']:,} names)",
                    _ms(ratio["median_ms"]),
                    _ms(ratio["p95_ms"]),
                    f"{base:,}: {_ms(ratio['baseline_median_ms'])}",
                    f"{ratio['ratio']:.2f}x",
                )
            )
        replay = resolve["replay"]["big"]
        rows.append(
            (
                "resolve",
                f"replay of {replay['entries']:,} entries: {replay['mismatches']} mismatches",
                f"{replay['seconds'] * 1000:.0f}",
                "",
                f"{replay['entries_per_second']:,}/s",
                "ok" if not replay["mismatches"] else "FAIL",
            )
        )
        rows.append(
            (
                "resolve",
                "plans: one index probe per reference (big room)",
                "ok" if resolve["ok"] else "FAIL",
                "",
                "",
                "",
            )
        )
    catchup = load("catchup") if "catchup" in ran else None
    if catchup:
        for variant, result in catchup["variants"].items():
            k0 = next(c for c in result["catchup"] if c["missed"] == 0)
            for c in result["catchup"]:
                if c["missed"] == 0:
                    continue
                rows.append(
                    (
                        "catchup",
                        f"open socket -> caught up, {c['missed']} missed [{variant}]",
                        _ms(c["total"]["median_ms"]),
                        _ms(c["total"]["p95_ms"]),
                        f"0 missed: {_ms(k0['total']['median_ms'])}",
                        f"{c['ratio_to_k0']:.2f}x",
                    )
                )
            fan = {f["sockets"]: f for f in result["fanout"]}
            one = fan.get(1)
            for sockets, f in fan.items():
                if sockets == 1:
                    continue
                base_ms = one["slowest_socket"]["median_ms"] if one else None
                ratio = f"{f['slowest_socket']['median_ms'] / base_ms:.2f}x" if base_ms else ""
                rows.append(
                    (
                        "catchup",
                        f"fan-out to {sockets} sockets, slowest socket [{variant}]",
                        _ms(f["slowest_socket"]["median_ms"]),
                        _ms(f["slowest_socket"]["p95_ms"]),
                        f"1 socket: {_ms(base_ms)}",
                        ratio,
                    )
                )
                ghosts = f.get("online_1_5_s_after_all_closed")
                if ghosts:
                    rows.append(
                        (
                            "catchup",
                            f"  still online 1.5 s after {sockets} sockets closed: {ghosts}",
                            "",
                            "",
                            "",
                            "FAIL",
                        )
                    )
        merge = catchup.get("live_merge")
        if merge:
            rows.append(
                (
                    "catchup",
                    f"live merge while others submit ({merge['runs']} runs): no gap/dup/reorder",
                    _ms(merge["total"]["median_ms"]),
                    _ms(merge["total"]["p95_ms"]),
                    "",
                    "ok" if merge["ok"] else "FAIL",
                )
            )
    live = load("live") if "live" in ran else None
    if live:
        rows += live_rows(live)
    for name, data in (("after_query", after), ("catchup", catchup)):
        for server, problems in ((data or {}).get("server_logs") or {}).items():
            if problems["tracebacks"] or problems["messages"]:
                exceptions = ", ".join(f"{k} x{v}" for k, v in problems["exceptions"].items())
                rows.append(
                    (
                        name,
                        f"server log [{server}]: {problems['tracebacks']} tracebacks {exceptions}",
                        "",
                        "",
                        "",
                        "see log",
                    )
                )
    return rows


def live_rows(live: dict[str, Any]) -> list[Row]:
    """bench/live.py's headline figures: Calcrooms (A) with B0 and B1 beside it (its full
    tables are in var/bench/live.md)."""
    rows: list[Row] = []

    def beside(a: float | None, b0: float | None, b1: float | None) -> tuple[str, str]:
        ratio = "-" if a is None or not b0 else f"{a / b0:.1f}x B0"
        if a is not None and b1:
            ratio += f", {a / b1:.2f}x B1"
        return f"B0 {_ms(b0)}, B1 {_ms(b1)}", ratio

    for receivers, by in (live.get("fanout") or {}).items():
        a, b0, b1 = (by.get(k, {}).get("p99_ms") for k in ("A", "B0", "B1"))
        rows.append(
            ("live", f"fan-out to {receivers} receivers, p99 [A]", _ms(a), "", *beside(a, b0, b1))
        )
    for receivers, by in (live.get("saturation") or {}).items():
        a, b0, b1 = (by.get(k, {}).get("rate") for k in ("A", "B0", "B1"))
        rows.append(
            (
                "live",
                f"saturation at {receivers} receivers, messages/s [A]",
                _ms(a),
                "",
                *beside(a, b0, b1),
            )
        )
    for offered, a_row in (live.get("throughput") or {}).get("Ax1", {}).items():
        b0, b1 = (
            live["throughput"].get(k, {}).get(offered, {}).get("p99_ms") for k in ("B0", "B1")
        )
        rows.append(
            (
                "live",
                f"offered {offered}/s, 50 rooms: accepted {a_row.get('accepted_per_s')}/s, p99 [A]",
                _ms(a_row.get("p99_ms")),
                "",
                *beside(a_row.get("p99_ms"), b0, b1),
            )
        )
    for count, by in (live.get("idle") or {}).items():
        a, b0, b1 = (by.get(k, {}).get("kib_per_socket") for k in ("A", "B0", "B1"))
        rows.append(
            ("live", f"{count} idle sockets, KiB per socket [A]", _ms(a), "", *beside(a, b0, b1))
        )
    catchup = live.get("catchup")
    if catchup:
        single = catchup["missed_1000"]["after_open_ms"]["p50_ms"]
        storm = catchup["storm_200x100"]["all_caught_up_s_median"]
        rows.append(("live", "1,000 missed, socket open -> applied [A]", _ms(single), "", "", ""))
        rows.append(
            (
                "live",
                "200 reconnecting at once x 100 missed, all caught up [A]",
                _ms(storm and storm * 1000),
                "",
                "",
                "",
            )
        )
    for check in live.get("checks") or []:
        rows.append(("live", f"  {check}", "", "", "", "FAIL"))
    return rows


def print_summary(rows: list[Row], ran: dict[str, int], seconds: dict[str, float]) -> None:
    headers: Row = ("bench", "measure", "median ms", "p95 ms", "baseline ms", "ratio")
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    print(f"\n{'=' * 100}\nSUMMARY (ratios: against the baseline measured in the same run)")
    print(line.format(*headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))
    print()
    for name, status in ran.items():
        verdict = "ok" if status == 0 else f"FAILED (exit {status})"
        print(f"{name}: {verdict} in {seconds[name]:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a fast try")
    parser.add_argument(
        "--only", action="append", choices=BENCHES, help="run only this bench (repeatable)"
    )
    args = parser.parse_args(argv)

    ran: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for name in args.only or BENCHES:
        status, elapsed, output = run_bench(name, args.quick)
        ran[name] = status
        seconds[name] = elapsed
        if name == "calculator":
            calculator_json(output, status, args.quick)
    rows = summary_rows(ran)
    print_summary(rows, ran, seconds)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "summary.json").write_text(
        json.dumps(
            {
                "quick": args.quick,
                "exit_status": ran,
                "seconds": {k: round(v, 1) for k, v in seconds.items()},
                "rows": [
                    dict(
                        zip(
                            ("bench", "measure", "median_ms", "p95_ms", "baseline", "ratio"),
                            row,
                            strict=True,
                        )
                    )
                    for row in rows
                ],
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if all(status == 0 for status in ran.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
