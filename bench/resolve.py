"""Benchmark: resolving `ans`, `#N` and room variables on a room with 100,000 entries.

Bulk-loads a big room (100,000 entries, 1,000 variables each defined several times, the newest
10% of the room a run of failures that `ans` must look past) and a baseline room (1,000 entries,
20 variables, the same pattern) into a throwaway PostgreSQL database, runs VACUUM ANALYZE, then
times, the two rooms taking turns call by call (median and p95):

- `selectors.entry_resolve` (what `_entry_store` asks under the room's row lock) for `ans` at the
  end and in the middle, one and twenty `#N`, one variable at the end and as of the middle,
  twenty variables, an unknown name, and all three kinds at once;
- `services._entry_store` (evaluate, lock, resolve, insert, broadcast after commit) of an
  expression that reads the room, against one that reads nothing;
- `services.room_replay` of each whole room (once; every entry evaluated again in seq order).

The ratio big / baseline is what to look at: ~1 when each reference is one index probe.
EXPLAIN (ANALYZE, BUFFERS) of each resolution query's own SQL is printed and checked on the big
room: `ans` must read one row of `entry_room_result_seq`, `#N` one row per seq of
`entry_room_seq_unique`, variables one row per name of `entry_room_defines_seq`, with no
sequential scan (exit status 1 otherwise). The replay must find no mismatch.

    .venv/bin/python bench/resolve.py [--entries 100000] [--variables 1000] [--repeats 200]

Uses its own database (`calcrooms_bench_resolve`, dropped and recreated at the start, dropped at
the end unless --keep-db) and its own Redis key prefix (`calcrooms-bench-<random>`, removed at the
end). Results: var/bench/resolve.json. Helpers come from bench/after_query.py (run this file as a
script, not as a module).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from after_query import (
    ROOT,
    bench_database,
    captured_sql,
    check_plan,
    explain,
    machine,
    pg_version,
    stage,
    summary_ms,
    time_interleaved,
    write_results,
)

DB_NAME = os.environ.get("BENCH_DB_NAME", "calcrooms_bench_resolve")

# Entry g of a room of n entries with v variables and a failing tail of t:
#   g > n - t:         `g / 0`, division by zero (what `ans` must look past)
#   g % 20 = 0:        `v<k> = g` with k = (g / 20) % v: defines v<k> (each name several times)
#   g % 50 = 0:        `g / 0`, division by zero
#   otherwise:         `a * b`, its exact product
LOAD_SQL = """
INSERT INTO rooms_entry (room_id, seq, author_id, client_id, expression, result, error, created,
                         refs, defines, rounded, rules)
SELECT %(room)s, g, %(author)s, NULL,
       CASE WHEN g > %(count)s - %(tail)s OR (g %% 20 <> 0 AND g %% 50 = 0) THEN g || ' / 0'
            WHEN g %% 20 = 0 THEN 'v' || ((g / 20) %% %(variables)s) || ' = ' || g
            ELSE (g %% 9973) || ' * ' || (g %% 97) END,
       CASE WHEN g > %(count)s - %(tail)s OR (g %% 20 <> 0 AND g %% 50 = 0) THEN NULL
            WHEN g %% 20 = 0 THEN g::text
            ELSE ((g %% 9973) * (g %% 97))::text END,
       CASE WHEN g > %(count)s - %(tail)s OR (g %% 20 <> 0 AND g %% 50 = 0)
            THEN 'division by zero' END,
       now() - make_interval(secs => %(count)s - g),
       '[]'::jsonb,
       CASE WHEN g <= %(count)s - %(tail)s AND g %% 20 = 0
            THEN 'v' || ((g / 20) %% %(variables)s) END,
       false, %(rules)s
FROM generate_series(1, %(count)s) AS g
"""


def load_room(*, slug: str, count: int, variables: int, owner: Any) -> Any:
    from django.db import connection, transaction

    from rooms import calculator
    from rooms.models import Room

    with transaction.atomic():
        room = Room.objects.create(slug=slug, name=slug, owner=owner, last_seq=count)
        room.memberships.create(user=owner, role="owner")
        with connection.cursor() as cursor:
            cursor.execute(
                LOAD_SQL,
                {
                    "room": room.pk,
                    "author": owner.pk,
                    "count": count,
                    "tail": count // 10,
                    "variables": variables,
                    "rules": calculator.RULES,
                },
            )
    return room


_ANS_WITHOUT_ITS_INDEX = """
SELECT seq, result, rounded FROM rooms_entry
WHERE room_id = %s AND seq < %s AND (error IS NULL) IS TRUE
ORDER BY seq DESC LIMIT 1
"""


def _ans_without_its_index(room: Any, before: int) -> Callable[[], Any]:
    """Not product code: `ans` written so the planner cannot use `entry_room_result_seq` (it
    cannot prove the index's predicate from `IS TRUE`): the room's seq index, read backwards past
    every failure, which is what the partial index saves."""
    from django.db import connection

    def call() -> Any:
        with connection.cursor() as cursor:
            cursor.execute(_ANS_WITHOUT_ITS_INDEX, [room.pk, before])
            return cursor.fetchone()

    return call


def resolve_cases(room: Any, size: int) -> list[tuple[str, Callable[[], Any], str | None, int]]:
    """(name, call, index its query must probe or None, most index rows it may read) for one
    room; an index of "" is not checked (several queries), None is explained for information."""
    from rooms import selectors
    from rooms.calculator import Wanted

    end, mid = size + 1, size // 2 + 1
    spread = tuple(sorted({1 + (size - 1) * i // 19 for i in range(20)}))
    names = tuple(f"v{i}" for i in range(20))

    def resolve(before: int, answer: bool = False, seqs=(), names=()) -> Callable[[], Any]:
        wanted = Wanted(answer=answer, seqs=tuple(seqs), names=tuple(names))
        return lambda: selectors.entry_resolve(room_id=room.pk, before_seq=before, wanted=wanted)

    return [
        ("ans at the end (past the failing tail)", resolve(end, answer=True),
         "entry_room_result_seq", 1),
        ("ans in the middle", resolve(mid, answer=True), "entry_room_result_seq", 1),
        ("#N, one (middle)", resolve(end, seqs=(mid - 1,)), "entry_room_seq_unique", 1),
        ("#N, twenty", resolve(end, seqs=spread), "entry_room_seq_unique", len(spread)),
        ("variable, one (newest definition)", resolve(end, names=("v7",)),
         "entry_room_defines_seq", 1),
        ("variable, one, as of the middle", resolve(mid, names=("v7",)),
         "entry_room_defines_seq", 1),
        ("variables, twenty", resolve(end, names=names), "entry_room_defines_seq", len(names)),
        ("unknown name", resolve(end, names=("nope",)), "entry_room_defines_seq", 1),
        ("ans + #N + variable (3 queries)",
         resolve(end, answer=True, seqs=(mid - 1,), names=("v7",)), "", 0),
        ("reference: ans without entry_room_result_seq", _ans_without_its_index(room, end),
         None, 0),
    ]  # fmt: skip


def store_cases(room: Any, size: int, author: Any) -> list[tuple[str, Callable[[], Any]]]:
    from rooms import services

    def store(expression: str) -> Callable[[], Any]:
        def call() -> Any:
            return services._entry_store(
                room_id=room.pk, author=author, expression=expression, client_id=uuid.uuid4()
            )

        return call

    return [
        ("store `1 + 1` (reads nothing: evaluated before the lock)", store("1 + 1")),
        (f"store `ans + #{size // 2} + v7` (resolved under the lock)",
         store(f"ans + #{size // 2} + v7")),
    ]  # fmt: skip


def _ratio_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {r["case"]: r for r in results if r["room"] == "baseline"}
    rows = []
    for r in results:
        if r["room"] != "big":
            continue
        b = base[r["case"]]
        rows.append(
            {
                "case": r["case"],
                "median_ms": r["median_ms"],
                "p95_ms": r["p95_ms"],
                "baseline_median_ms": b["median_ms"],
                "ratio": round(r["median_ms"] / b["median_ms"], 2),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="entries in the big room")
    parser.add_argument("--variables", type=int, default=1_000, help="variables in the big room")
    parser.add_argument("--baseline", type=int, default=1_000, help="entries in the baseline room")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per case and room")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds per case at most")
    parser.add_argument("--keep-db", action="store_true", help=f"keep the {DB_NAME} database")
    args = parser.parse_args(argv)
    if not 1_000 <= args.baseline <= args.entries or args.variables < 20:
        parser.error("need --entries >= --baseline >= 1000 and --variables >= 20")
    with bench_database(DB_NAME, keep=args.keep_db):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from django.db import connection

    from accounts.models import User
    from rooms import services

    owner = User.objects.create(username="bench-owner", email="owner@example.com", password="!")
    sizes = {
        "big": (args.entries, args.variables),
        "baseline": (args.baseline, max(20, args.variables * args.baseline // args.entries)),
    }
    rooms: dict[str, tuple[Any, int]] = {}
    load: dict[str, Any] = {}
    for label, (count, variables) in sizes.items():
        with stage(f"load room {label}: {count:,} entries, {variables:,} variables"):
            started = time.perf_counter()
            rooms[label] = (
                load_room(slug=label, count=count, variables=variables, owner=owner),
                count,
            )
            load[f"{label}_seconds"] = round(time.perf_counter() - started, 2)
    with stage("VACUUM ANALYZE"), connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE rooms_entry")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT room_id, count(*), count(DISTINCT defines), count(defines),"
            " count(*) FILTER (WHERE error IS NOT NULL) FROM rooms_entry GROUP BY room_id"
        )
        shape = {row[0]: row[1:] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT indexrelname, pg_size_pretty(pg_relation_size(indexrelid))"
            " FROM pg_stat_user_indexes WHERE relname = 'rooms_entry' ORDER BY indexrelname"
        )
        load["indexes"] = dict(cursor.fetchall())
    for label, (room, _size) in rooms.items():
        entries, names, definitions, errors = shape[room.pk]
        load[label] = {
            "entries": entries, "variables": names, "definitions": definitions, "errors": errors,
        }  # fmt: skip
        print(f"{label}: {entries:,} entries, {names:,} variables ({definitions:,} definitions),"
              f" {errors:,} failures")  # fmt: skip

    results: list[dict[str, Any]] = []
    plans: dict[str, str] = {}
    failed = False
    per_room = {label: resolve_cases(room, size) for label, (room, size) in rooms.items()}
    print(f"\nresolution (median and p95 of up to {args.repeats} calls, rooms taking turns)")
    print(f"{'case':<44} {'room':>8} {'queries':>7} {'median ms':>10} {'p95 ms':>8}  plan")
    for position, (name, _call, _index, _rows) in enumerate(per_room["big"]):
        cases = {label: cases[position] for label, cases in per_room.items()}
        samples = time_interleaved(
            {label: case[1] for label, case in cases.items()}, args.repeats, args.budget
        )
        for label, (_name, call, index, max_rows) in cases.items():
            queries = captured_sql(call)
            verdict = "-"
            check: dict[str, Any] | None = None
            if index is None:
                text, plan = explain(queries[-1])
                plans[f"{label}: {name}"] = text
                check = check_plan(plan, "rooms_entry", "entry_room_seq_unique", 10**9)
                verdict = f"(info) {check['index_rows_read']} index rows read"
            elif index:
                text, plan = explain(queries[-1])
                check = check_plan(plan, "rooms_entry", index, max_rows)
                plans[f"{label}: {name}"] = text
                verdict = "ok" if check["ok"] else "; ".join(check["problems"])
                if label == "big" and not check["ok"]:
                    failed = True
            row = {
                "room": label, "room_entries": rooms[label][1], "case": name,
                "queries": len(queries), **summary_ms(samples[label]), "plan": check,
            }  # fmt: skip
            results.append(row)
            print(f"{name:<44} {label:>8} {len(queries):>7} {row['median_ms']:>10.3f}"
                  f" {row['p95_ms']:>8.3f}  {verdict}", flush=True)  # fmt: skip

    # The store path writes entries: after the read-only cases, so those saw the loaded rooms.
    print("\nstoring an entry (services._entry_store: lock, resolve, insert, broadcast)")
    store_results: list[dict[str, Any]] = []
    per_room_store = {
        label: store_cases(room, size, owner) for label, (room, size) in rooms.items()
    }
    for position, (name, _call) in enumerate(per_room_store["big"]):
        calls = {label: cases[position][1] for label, cases in per_room_store.items()}
        samples = time_interleaved(calls, min(args.repeats, 100), args.budget)
        for label in calls:
            row = {"room": label, "case": name, **summary_ms(samples[label])}
            store_results.append(row)
            print(f"{name:<62} {label:>8} {row['median_ms']:>10.3f} {row['p95_ms']:>8.3f}")

    print("\nreplay of each whole room (services.room_replay, once)")
    replays: dict[str, Any] = {}
    for label, (room, _size) in rooms.items():
        started = time.perf_counter()
        replay = services.room_replay(room_id=room.pk)
        seconds = time.perf_counter() - started
        replays[label] = {
            "entries": replay.entries, "recomputed": replay.recomputed,
            "mismatches": len(replay.mismatches), "seconds": round(seconds, 3),
            "entries_per_second": round(replay.entries / seconds),
        }  # fmt: skip
        rate = replays[label]["entries_per_second"]
        print(f"{label:>8}: {replay.entries:,} entries in {seconds:.2f} s ({rate:,}/s),"
              f" {len(replay.mismatches)} mismatches")  # fmt: skip
        if replay.mismatches:
            failed = True
            print(f"    first: {replay.mismatches[0]}")

    ratios = _ratio_rows(results) + _ratio_rows(store_results)
    print("\nratio = median on the big room / median on the baseline room, same run")
    print(f"{'case':<62} {'ms':>8} {'base ms':>8} {'ratio':>6}")
    for r in ratios:
        print(f"{r['case']:<62} {r['median_ms']:>8.3f} {r['baseline_median_ms']:>8.3f}"
              f" {r['ratio']:>6.2f}")  # fmt: skip

    print("\nEXPLAIN (ANALYZE, BUFFERS) of the resolution queries on the big room:")
    for key in ("ans at the end (past the failing tail)", "#N, twenty", "variables, twenty",
                "reference: ans without entry_room_result_seq"):  # fmt: skip
        print(f"\n-- big: {key}\n{plans.get(f'big: {key}', '(none)')}")

    path = write_results(
        "resolve",
        {
            "bench": "resolve",
            "command": " ".join([".venv/bin/python", "bench/resolve.py", *sys.argv[1:]]),
            "machine": machine(),
            "postgres": pg_version(),
            "load": load,
            "repeats": args.repeats,
            "results": results,
            "store": store_results,
            "replay": replays,
            "ratios": ratios,
            "plans": plans,
            "ok": not failed,
        },
    )
    print(f"\nresults: {path.relative_to(ROOT)}")
    if failed:
        print("FAIL: a resolution query on the big room is not one probe per reference,"
              " or a replay found a mismatch")  # fmt: skip
        return 1
    print("OK: on the big room every reference is one index probe, and replay finds every result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
