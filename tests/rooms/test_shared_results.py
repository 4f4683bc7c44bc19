"""Shared results in a room: `ans`, `#N` and variables resolved under the room's row lock, the
stored `refs` / `defines` / `rounded`, replay from seq 1, and the same rules on every transport.

The calculator's own rules are in test_calculator.py; here is what the room adds: an entry sees
exactly the entries with a smaller seq, whoever submits at the same moment, and what it read is
stored with it.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rooms import calculator, selectors, services
from rooms.models import Entry, Room
from tests.factories import MembershipFactory, RoomFactory, UserFactory


@pytest.fixture
def no_rate_limit(settings: Any) -> None:
    """These tests are about what entries read, not the per-person bucket."""
    settings.EXPRESSION_BUCKET_CAPACITY = 100_000
    settings.EXPRESSION_BUCKET_REFILL_PER_SECOND = 100_000


def submit(room: Room, author: Any, expression: str) -> Entry:
    return services.entry_submit_sync(
        room_id=room.pk, author=author, expression=expression, client_id=uuid.uuid4()
    ).entry


def stored(room: Room) -> list[tuple[Any, ...]]:
    return list(
        Entry.objects.filter(room=room)
        .order_by("seq")
        .values_list("seq", "result", "error", "refs", "defines", "rounded")
    )


# --- Resolution under the lock --------------------------------------------------------------------


@pytest.mark.django_db
def test_an_entry_reads_ans_and_hash_n_and_stores_what_it_read(alice, bob, lobby, no_rate_limit):
    submit(lobby, alice, "6*7")
    submit(lobby, bob, "1/0")
    submit(lobby, alice, "ans * 2")  # the newest with a result: #1
    submit(lobby, bob, "#1 + #3 + ans")  # 42 + 84 + 84
    submit(lobby, alice, "#2 + 1")
    submit(lobby, alice, "#9")
    submit(lobby, alice, "#7")  # itself: not yet
    submit(lobby, alice, "1/3")
    submit(lobby, alice, "#8 * 3")
    assert stored(lobby) == [
        (1, "42", None, [], None, False),
        (2, None, "division by zero", [], None, False),
        (3, "84", None, [1], None, False),
        (4, "210", None, [1, 3], None, False),
        (5, None, "#2 has no result", [], None, False),
        (6, None, "#9 does not exist yet", [], None, False),
        (7, None, "#7 does not exist yet", [], None, False),
        (8, "0.3333333333333333333333333333", None, [], None, True),
        (9, "0.9999999999999999999999999999", None, [8], None, True),
    ]


@pytest.mark.django_db
def test_variables_are_set_by_an_entry_and_shadowed_from_the_next_definition_on(
    alice, bob, lobby, no_rate_limit
):
    submit(lobby, alice, "rate = 0.2")
    submit(lobby, bob, "rate * 100")
    submit(lobby, bob, "Rate * 100")  # names are case-sensitive
    submit(lobby, alice, "rate = rate + 0.3")
    submit(lobby, bob, "rate * 100")
    submit(lobby, bob, "sqrt = 2")
    submit(lobby, bob, "rate = 1/0")  # a failed definition defines nothing
    submit(lobby, bob, "rate + #2")
    assert stored(lobby) == [
        (1, "0.2", None, [], "rate", False),
        (2, "20", None, [1], None, False),
        (3, None, "unknown name 'Rate'", [], None, False),
        (4, "0.5", None, [1], "rate", False),
        (5, "50", None, [4], None, False),
        (6, None, "'sqrt' is a function; choose another name", [], None, False),
        (7, None, "division by zero", [], None, False),
        (8, "20.5", None, [4, 2], None, False),
    ]
    # The stored history does not move: #2 still says 20 after rate changed.
    assert Entry.objects.get(room=lobby, seq=2).result == "20"


@pytest.mark.django_db
def test_variables_and_references_belong_to_their_room(alice, lobby, vault, no_rate_limit):
    submit(lobby, alice, "rate = 0.2")
    submit(vault, alice, "rate")
    submit(vault, alice, "ans")
    submit(vault, alice, "#1")
    assert [row[1:3] for row in stored(vault)] == [
        (None, "unknown name 'rate'"),
        (None, "no earlier result for ans"),
        (None, "#1 has no result"),
    ]


@pytest.mark.django_db
def test_each_kind_of_reference_costs_one_query_whatever_the_expression(
    alice, lobby, no_rate_limit, django_assert_num_queries
):
    for expression in ("a = 1", "b = 2", "c = 3", "1/0", "a + b"):
        submit(lobby, alice, expression)
    wanted = calculator.prepare("ans + #1 + #2 + #4 + a + b + c + d + a").wanted
    assert wanted is not None
    with django_assert_num_queries(3):
        found = selectors.entry_resolve(room_id=lobby.pk, before_seq=6, wanted=wanted)
    assert found.answer == calculator.Stored(5, "3", False)
    assert set(found.seqs) == {1, 2, 4}
    assert found.seqs[4] == calculator.Stored(4, None, False)
    assert {name: s.seq for name, s in found.names.items()} == {"a": 1, "b": 2, "c": 3}
    only_names = calculator.prepare("a + b + c").wanted
    with django_assert_num_queries(1):
        selectors.entry_resolve(room_id=lobby.pk, before_seq=6, wanted=only_names)
    # As the room stood before #3: c is not defined yet, and #4 is in its future.
    early = selectors.entry_resolve(room_id=lobby.pk, before_seq=3, wanted=wanted)
    assert early.answer == calculator.Stored(2, "2", False)
    assert set(early.seqs) == {1, 2}
    assert set(early.names) == {"a", "b"}


@pytest.mark.django_db
def test_an_expression_that_reads_nothing_is_evaluated_before_the_lock(
    alice, lobby, monkeypatch, no_rate_limit
):
    asked: list[Any] = []
    real = selectors.entry_resolve
    monkeypatch.setattr(
        selectors, "entry_resolve", lambda **kw: asked.append(kw["wanted"]) or real(**kw)
    )
    submit(lobby, alice, "2 * 21")
    submit(lobby, alice, "x = 5")
    assert asked == []
    submit(lobby, alice, "x + ans")
    assert [w.names for w in asked] == [("x",)]


@pytest.mark.django_db(transaction=True)
def test_two_submitters_racing_on_ans_each_get_the_entry_just_before_theirs(lobby, no_rate_limit):
    """Real concurrency: each thread has its own PostgreSQL connection and transaction. Every
    `ans + 1` reads the entry stored just before it, whoever stored that one, so the results
    count up by one with no repeat and no gap."""
    racers = []
    for n in range(2):
        user = UserFactory(username=f"racer{n}")
        MembershipFactory(room=lobby, user=user)
        racers.append(user)
    submit(lobby, racers[0], "0")
    per_racer = 25
    start = threading.Barrier(len(racers))

    def race(author: Any) -> list[int]:
        start.wait()
        try:
            return [submit(lobby, author, "ans + 1").seq for _ in range(per_racer)]
        finally:
            connection.close()

    with ThreadPoolExecutor(len(racers)) as pool:
        seqs_by_racer = list(pool.map(race, racers))
    rows = stored(lobby)
    total = 1 + per_racer * len(racers)
    assert [row[0] for row in rows] == list(range(1, total + 1))
    for seq, result, error, refs, _defines, _rounded in rows[1:]:
        assert error is None
        assert refs == [seq - 1]  # the entry just before it
        assert result == str(seq - 1)
    # Both wrote into the same stretch of seqs (the barrier starts them together); how often
    # they took turns is up to the scheduler, and the property above holds for any order.
    authors = list(
        Entry.objects.filter(room=lobby, seq__gt=1)
        .order_by("seq")
        .values_list("author__username", flat=True)
    )
    assert set(authors) == {"racer0", "racer1"}
    assert sum(a != b for a, b in itertools.pairwise(authors)) >= 1
    assert sorted(s for seqs in seqs_by_racer for s in seqs) == list(range(2, total + 1))


# --- Replay ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_replay_recomputes_a_room_from_seq_1_and_finds_what_was_stored(
    alice, bob, lobby, no_rate_limit
):
    for expression in ("rate = 0.2", "100 * (1 + rate)", "ans + #1", "rate = 2", "#2 * rate",
                       "1/3", "#6 * 3", "#99", "x", "200 + 10%"):  # fmt: skip
        submit(lobby, alice, expression)
    replay = services.room_replay(room_id=lobby.pk, batch=3)  # several batches
    assert (replay.entries, replay.recomputed, replay.kept) == (10, 10, 0)
    assert replay.mismatches == []


@pytest.mark.django_db
def test_replay_reports_an_entry_whose_stored_outcome_its_history_does_not_give(
    alice, lobby, no_rate_limit
):
    submit(lobby, alice, "rate = 0.2")
    submit(lobby, alice, "rate * 10")
    submit(lobby, alice, "ans + 1")
    Entry.objects.filter(room=lobby, seq=1).update(result="0.3")  # history rewritten behind it
    replay = services.room_replay(room_id=lobby.pk)
    # The replay carries on with what the history gives (0.2), so #2 and #3 agree with their
    # stored results: only the rewritten entry is reported.
    assert [m.seq for m in replay.mismatches] == [1]
    assert replay.mismatches[0].stored.result == "0.3"
    assert replay.mismatches[0].replayed.result == "0.2"


@pytest.mark.django_db
def test_entries_stored_before_shared_results_keep_their_results(alice, lobby, no_rate_limit):
    """Under the old rules `%` was the remainder and integers were rounded to 28 digits. Such
    entries stay as they were, later entries read them as stored, and a replay keeps them."""
    Entry.objects.create(room=lobby, seq=1, author=alice, expression="7 % 2", result="1", rules=1)
    Entry.objects.create(
        room=lobby, seq=2, author=alice, expression="2**100",
        result="1.267650600228229401496703205E+30", rules=1,
    )  # fmt: skip
    Room.objects.filter(pk=lobby.pk).update(last_seq=2)
    third = submit(lobby, alice, "#1 + ans")
    assert (third.result, third.refs) == ("1267650600228229401496703205001", [1, 2])
    assert calculator.evaluate("7 % 2").error == "syntax error at column 5"  # not today's rules
    replay = services.room_replay(room_id=lobby.pk)
    assert (replay.entries, replay.recomputed, replay.kept, replay.mismatches) == (3, 1, 2, [])
    assert Entry.objects.get(room=lobby, seq=1).result == "1"


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_earlier_entries_empty_refs_no_definition_and_the_old_rules(alice):
    executor = MigrationExecutor(connection)
    executor.migrate([("rooms", "0002_entry_room_no_own_index")])
    old = executor.loader.project_state([("rooms", "0002_entry_room_no_own_index")]).apps
    room = old.get_model("rooms", "Room").objects.create(
        slug="old", name="Old", owner_id=alice.pk, last_seq=1
    )
    old.get_model("rooms", "Entry").objects.create(
        room_id=room.pk, seq=1, author_id=alice.pk, expression="7 % 2", result="1"
    )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    entry = Entry.objects.get(room_id=room.pk, seq=1)
    assert (entry.result, entry.refs, entry.defines, entry.rounded, entry.rules) == (
        "1", [], None, False, 1,
    )  # fmt: skip
    assert Entry._meta.get_field("rules").default == calculator.RULES == 2


# A vocabulary that reads and writes the room in every way: references forwards and backwards,
# failures, definitions, shadowing, and plain arithmetic.
EXPRESSIONS = st.sampled_from(
    [
        "1", "2.5", "1/3", "1/0", "10**40 + 1", "pi", "50%", "200 + 10%",
        "ans", "ans + 1", "ans * 2", "2ans", "#1", "#2 + #1", "#3 * 3", "#5 - ans", "#9",
        "a = 2", "a = a + 1", "a = ans", "a * 10", "b = #1 * a", "b + a", "A", "b = 1/0",
        "x", "sqrt(ans)", "round(#2, 2)", "#4 mod 3", "10% of a",
    ]
)  # fmt: skip
ROOMS = st.lists(st.tuples(st.integers(0, 2), EXPRESSIONS), min_size=1, max_size=14)


def _submitters(count: int) -> list[Any]:
    return [UserFactory(username=f"writer{n}") for n in range(count)]


_room_numbers = iter(range(1, 1_000_000))


def _fresh_room(authors: list[Any]) -> Room:
    room = RoomFactory(slug=f"replay-{next(_room_numbers)}-{uuid.uuid4().hex[:6]}")
    for author in authors:
        MembershipFactory(room=room, user=author)
    return room


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=ROOMS)
def test_replaying_a_room_built_by_hypothesis_gives_every_stored_result(plan, no_rate_limit):
    authors = _submitters(3)
    room = _fresh_room(authors)
    for who, expression in plan:
        submit(room, authors[who], expression)
    replay = services.room_replay(room_id=room.pk)
    assert replay.recomputed == len(plan)
    assert replay.mismatches == []


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plans=st.lists(st.lists(EXPRESSIONS, min_size=1, max_size=6), min_size=2, max_size=3))
def test_replaying_a_room_built_by_concurrent_submitters_gives_every_stored_result(
    plans, no_rate_limit
):
    """Each plan is one person on their own connection, all starting at once: whatever order the
    room stored them in, each entry read exactly the entries before it."""
    authors = _submitters(len(plans))
    room = _fresh_room(authors)
    start = threading.Barrier(len(plans))

    def run(job: tuple[Any, list[str]]) -> None:
        author, expressions = job
        start.wait()
        try:
            for expression in expressions:
                submit(room, author, expression)
        finally:
            connection.close()

    with ThreadPoolExecutor(len(plans)) as pool:
        list(pool.map(run, zip(authors, plans, strict=True)))
    replay = services.room_replay(room_id=room.pk)
    assert replay.recomputed == sum(len(p) for p in plans)
    assert replay.mismatches == []


# --- Every transport ----------------------------------------------------------------------------

SHAPE = {"seq", "author", "expression", "result", "error", "client_id", "created", "refs",
         "defines", "rounded"}  # fmt: skip


@pytest.mark.django_db(transaction=True)
async def test_the_socket_entry_carries_refs_defines_and_rounded(connect, lobby, alice, bob):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    sent: list[tuple[Any, str]] = [(alice_ws, "rate = 1/3"), (bob_ws, "ans * 3 + #1")]
    entries = []
    for socket, expression in sent:
        await socket.send({"type": "expression", "expression": expression})
        entries.append((await bob_ws.receive_type("entry"))["entry"])
        await alice_ws.receive_type("entry")
    first, second = entries
    assert set(first) == set(second) == SHAPE
    assert (first["refs"], first["defines"], first["rounded"]) == ([], "rate", True)
    assert second["result"] == "1.333333333333333333333333333"
    assert (second["refs"], second["defines"], second["rounded"]) == ([1], None, True)


@pytest.mark.django_db(transaction=True)
async def test_the_html_socket_fragment_has_the_result_control_and_the_approximate_sign(
    connect, lobby, alice
):
    ws = await connect(alice, "lobby", html=True)
    await ws.send({"expression": "1/3"})
    await ws.send({"expression": "#1 * 3"})
    fragments = []
    while len(fragments) < 2:
        message = await ws.communicator.receive_output(3)
        if 'id="entries"' in message["text"]:
            fragments.append(message["text"])
    assert 'data-rounded="true"' in fragments[0]
    assert ">≈</span>" in fragments[0]
    assert '<button type="button" class="use" title="Insert #1 at the cursor">' in fragments[0]
    assert '<output class="result">0.3333333333333333333333333333</output>' in fragments[0]
    assert 'class="copy"' in fragments[0]
    assert '<a class="ref" href="#entry-1" data-ref="1">#1</a> * 3' in fragments[1]


@pytest.mark.django_db
def test_http_submit_follows_the_same_rules_and_answers_the_same_shape(
    alice, bob, lobby, no_rate_limit
):
    client = Client()
    client.force_login(alice)

    def post(expression: str) -> dict[str, Any]:
        response = client.post("/rooms/lobby/entries/?format=json", {"expression": expression})
        assert response.status_code == 201
        return response.json()["entry"]

    submit(lobby, bob, "rate = 0.25")  # the socket's way in, from another person
    entry = post("200 * rate + 10%")
    assert set(entry) == SHAPE
    assert (entry["result"], entry["refs"], entry["defines"], entry["rounded"]) == (
        "55", [1], None, False,
    )  # fmt: skip
    assert post("ans")["refs"] == [2]
    listed = client.get("/rooms/lobby/entries/?after=0&format=json").json()["entries"]
    assert [(e["seq"], e["refs"], e["defines"]) for e in listed] == [
        (1, [], "rate"),
        (2, [1], None),
        (3, [2], None),
    ]
    html = client.post("/rooms/lobby/entries/", {"expression": "#3 + #1 + #4"}).content.decode()
    assert '<a class="ref" href="#entry-3" data-ref="3">#3</a>' in html
    assert "#4</code>" in html  # itself: not a link
    assert "#4 does not exist yet" in html


def test_the_page_markup_of_an_entry_escapes_and_links_only_earlier_entries() -> None:
    from rooms.payloads import entry_html

    base: dict[str, Any] = {
        "author": "<b>", "result": "2", "error": None, "client_id": None,
        "created": "2026-01-01T00:00:00Z", "refs": [], "defines": None, "rounded": False,
    }  # fmt: skip
    html = entry_html({**base, "seq": 5, "expression": "#4+#05+#0<#9>&#1"})
    assert '<a class="ref" href="#entry-4" data-ref="4">#4</a>+' in html
    assert "#05+#0&lt;#9&gt;&amp;" in html  # itself, #0 and a later one are plain text
    assert '<a class="ref" href="#entry-1" data-ref="1">#1</a>' in html
    assert "<b>" not in html
    assert '<span class="equals">=</span>' in html
    assert "data-defines" not in html
    defined = entry_html({**base, "seq": 1, "expression": "x = 2", "defines": 'x"'})
    assert 'data-defines="x&quot;"' in defined
    failed = entry_html({**base, "seq": 2, "expression": "1/0", "result": None,
                         "error": "division by zero"})  # fmt: skip
    assert 'class="use"' not in failed and 'class="copy"' not in failed
