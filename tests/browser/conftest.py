"""Browser fixtures: a real uvicorn server on the test database, Debian's Chromium through
Playwright's sync API, and pages logged in as a persona.

These tests run in their own pytest process (`pytest -m browser -p no:asyncio tests/browser`):
Playwright's sync API drives its own event loop and clashes with pytest-asyncio. Playwright is
imported inside the fixtures only, so the async run (`-m "not browser"`) collects this file without
needing it.

While Playwright's sync API is active its event loop runs on the main thread, so Django takes
that thread for async code: the ORM is allowed there for this run (DJANGO_ALLOW_ASYNC_UNSAFE, see
`playwright_driver`), and anything that needs `async_to_sync` (services that broadcast, the
presence store) goes through `in_thread(...)`, which runs it on a worker thread and closes that
thread's database connections afterwards.

A test fails if one of its pages logged a JavaScript error (an uncaught exception or a
console.error); `pages.allow(pattern)` accepts the ones a test causes on purpose. On failure,
screenshots go to var/browser/ and each page's console is printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.db import connections

from tests.live import ServerProcess

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "var" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Console errors the browser itself logs when the network is down on purpose (the catch-up
# tests cut it): not JavaScript errors of the page. (An HTTP error status is not noise, except
# the browser's own favicon request: the app has no favicon.)
NETWORK_NOISE = [
    re.compile(r"WebSocket connection to .* failed"),
    re.compile(r"net::ERR_"),
]


def _is_noise(message: Any) -> bool:
    if any(p.search(message.text) for p in NETWORK_NOISE):
        return True
    url = (message.location or {}).get("url", "")
    return message.text.startswith("Failed to load resource") and url.endswith("/favicon.ico")


def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run Django work (ORM, services, async_to_sync) off the Playwright thread."""

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=60)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """The browser run gets a test database of its own (`test_<name>_browser`), so it can run
    while the async suite (which uses `test_<name>`) runs in another process."""
    for db in settings.DATABASES.values():
        test = db.setdefault("TEST", {})
        test["NAME"] = f"{test.get('NAME') or 'test_' + str(db['NAME'])}_browser"


@pytest.fixture(autouse=True)
def _fresh_stores() -> Iterator[None]:
    """Overrides the suite's fixture of that name: presence and throttles start empty in every
    test, cleared on a worker thread (Playwright's loop runs on this one)."""
    import asyncio

    from presence.store import get_presence_store, reset_presence_store
    from rooms.throttle import get_throttle, reset_throttle

    yield

    def clear() -> None:
        for getter in (get_presence_store, get_throttle):
            with contextlib.suppress(Exception):
                asyncio.run(getter().clear())
        reset_presence_store()
        reset_throttle()

    in_thread(clear)


@pytest.fixture(scope="session")
def server(django_db_setup: None) -> Iterator[ServerProcess]:
    """One uvicorn process for the whole browser run, on the test database and test Redis prefix.

    Session scope is safe with transactional tests: every test flushes the tables, the server
    keeps no state of its own (CONN_MAX_AGE=0, sessions in the database, presence in Redis keyed
    by room id, and room ids are never reused after a flush)."""
    process = ServerProcess()
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Any]:
    """Playwright's sync API runs an event loop on this thread, so Django would take every ORM
    call here for one made from async code; the tests are plain sync code, so allow it (only in
    this run; Django work that needs `async_to_sync` still goes through `in_thread`)."""
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as driver:
            yield driver
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="session")
def browser(playwright_driver: Any) -> Iterator[Any]:
    instance = playwright_driver.chromium.launch(
        executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
        args=CHROMIUM_ARGS,
    )
    yield instance
    instance.close()


@pytest.fixture(autouse=True)
def _expect_timeout() -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=5_000)


@dataclass
class PageLog:
    """What one page said: console messages and uncaught errors."""

    name: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console.error


@dataclass
class Pages:
    """The pages a test opened; `allow` whitelists console errors the test causes on purpose."""

    browser: Any
    base_url: str
    logs: list[tuple[Any, PageLog]] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, *patterns: str | re.Pattern[str]) -> None:
        self.allowed.extend(re.compile(p) if isinstance(p, str) else p for p in patterns)

    def unexpected_errors(self) -> list[str]:
        found = []
        for _page, log in self.logs:
            for error in log.errors:
                if not any(p.search(error) for p in self.allowed):
                    found.append(f"{log.name}: {error}")
        return found

    def context_for(self, user: Any, base_url: str | None = None, **options: Any) -> Any:
        """A new browser context (a separate device) holding `user`'s session cookie; `options`
        go to Playwright's `new_context` (e.g. `viewport={"width": 360, "height": 740}`)."""
        cookie = in_thread(_session_cookie, user)
        context = self.browser.new_context(base_url=base_url or self.base_url, **options)
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": cookie,
                    "domain": "127.0.0.1",
                    "path": "/",
                    "httpOnly": True,
                    "sameSite": "Lax",
                }
            ]
        )
        self.contexts.append(context)
        return context

    def open_page(self, context: Any, name: str, path: str | None = None) -> Any:
        """A new tab in `context` whose console and errors are recorded under `name`; when `path`
        is given, opened there and waited for until its socket is connected."""
        page = context.new_page()
        log = PageLog(name=name)

        def on_console(message: Any) -> None:
            line = f"[{message.type}] {message.text}"
            log.console.append(line)
            if message.type == "error" and not _is_noise(message):
                log.errors.append(line)

        def on_page_error(error: Any) -> None:
            log.console.append(f"[pageerror] {error}")
            log.errors.append(f"[pageerror] {error}")

        def on_response(response: Any) -> None:
            if response.status >= 400:  # for the failure report
                log.console.append(f"[http {response.status}] {response.url}")

        page.on("console", on_console)
        page.on("response", on_response)
        page.on("pageerror", on_page_error)
        self.logs.append((page, log))
        if path:
            goto_room(page, path)
        return page

    def page_for(self, user: Any, path: str | None = None, name: str | None = None) -> Any:
        return self.open_page(self.context_for(user), name or user.username, path)


def _session_cookie(user: Any) -> str:
    from tests.conftest import session_cookie

    return session_cookie(user)


@pytest.fixture
def pages(request: pytest.FixtureRequest, server: ServerProcess, browser: Any) -> Iterator[Pages]:
    state = Pages(browser=browser, base_url=server.url)
    yield state
    failed = any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for index, (page, log) in enumerate(state.logs):
            path = ARTIFACTS / f"{request.node.name}-{index}-{log.name}.png"
            try:
                if not page.is_closed():
                    page.screenshot(path=str(path), full_page=True)
                    print(f"screenshot: {path}")
            except Exception as exc:
                print(f"no screenshot of {log.name}: {exc}")
            print(f"--- console of {log.name} ---")
            for line in log.console:
                print(line)
    errors = state.unexpected_errors()
    for context in state.contexts:
        with contextlib.suppress(Exception):
            context.close()
    if errors and not failed:
        pytest.fail("the page logged JavaScript errors:\n" + "\n".join(errors))


@pytest.fixture
def page_for(pages: Pages) -> Callable[..., Any]:
    """`page_for(user, path=None, name=None)`: a new browser context logged in as `user` and a
    page in it (opened at `path` when given, waiting for the socket). Each call is a separate
    device; `pages.open_page(page.context, ...)` opens another tab of the same browser."""
    return pages.page_for


def goto_room(page: Any, path: str) -> None:
    """Open a room page and wait until its script ran and its socket is connected."""
    page.goto(path)
    expect(page.locator("#room")).to_have_attribute("data-ready", "true")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")


# --- Reading the page -------------------------------------------------------------------------


def expect(target: Any, message: str | None = None) -> Any:
    """Playwright's auto-waiting `expect`, imported only when a browser test runs."""
    from playwright.sync_api import expect as expect_

    return expect_(target, message)


def entry_rows(page: Any) -> list[tuple[int, str, str, str]]:
    """(seq, author, expression, result-or-error text) for every shown entry, in page order."""
    return [
        (int(seq), author, expression, outcome)
        for seq, author, expression, outcome in page.eval_on_selector_all(
            "#entries article[data-seq]",
            """articles => articles.map(a => [
                a.dataset.seq,
                a.querySelector('.author').textContent.trim(),
                a.querySelector('.expression').textContent,
                (a.querySelector('.result') || a.querySelector('.error-text')).textContent,
            ])""",
        )
    ]


def wait_for_seq(page: Any, seq: int, timeout: float = 5_000) -> None:
    expect(page.locator(f"#entries #entry-{seq}")).to_have_count(1, timeout=timeout)


def submit(page: Any, expression: str) -> None:
    """Type an expression into the input and press Enter, like a person."""
    field_ = page.locator("input[name=expression]")
    field_.fill(expression)
    field_.press("Enter")


def set_marker(page: Any) -> str:
    """Put a value on `window` that only survives if the page is never reloaded."""
    marker = f"marker-{threading.get_ident()}-{id(page)}"
    page.evaluate("m => { window.__calcroomsMarker = m; }", marker)
    return marker


def marker(page: Any) -> str | None:
    return page.evaluate("() => window.__calcroomsMarker || null")


# Why the element matching `selector` is not fully visible, or "" when it is: inside the log's
# visible area (when it is in the log) and the viewport, and the element at its centre and just
# inside its top and bottom edges is the element itself or a descendant (nothing covers it).
_NOT_FULLY_VISIBLE = """selector => {
  const elt = document.querySelector(selector);
  if (!elt) return "missing";
  const r = elt.getBoundingClientRect();
  if (!r.height) return "not rendered";
  const log = document.getElementById("entries");
  if (log && log.contains(elt)) {
    const box = log.getBoundingClientRect();
    const top = box.top + log.clientTop, bottom = top + log.clientHeight;
    if (r.top < top - 0.5 || r.bottom > bottom + 0.5) {
      return `outside the log's view: ${r.top}..${r.bottom} not in ${top}..${bottom}`;
    }
  }
  if (r.top < -0.5 || r.bottom > window.innerHeight + 0.5) {
    return `outside the viewport: ${r.top}..${r.bottom} not in 0..${window.innerHeight}`;
  }
  const x = r.left + r.width / 2;
  for (const y of [r.top + r.height / 2, r.top + 1, r.bottom - 1]) {
    const hit = document.elementFromPoint(x, y);
    if (!hit || !elt.contains(hit)) {
      return `covered at (${x}, ${y}) by ${hit ? hit.outerHTML.slice(0, 120) : "nothing"}`;
    }
  }
  return "";
}"""


def not_fully_visible(page: Any, selector: str) -> str:
    return page.evaluate(_NOT_FULLY_VISIBLE, selector)


def expect_fully_visible(page: Any, selector: str, timeout: float = 10_000) -> None:
    """Wait until `selector` is fully visible and uncovered (see `_NOT_FULLY_VISIBLE`)."""
    try:
        page.wait_for_function(f"s => !({_NOT_FULLY_VISIBLE})(s)", arg=selector, timeout=timeout)
    except Exception:
        why = not_fully_visible(page, selector)
        raise AssertionError(f"{selector} is not fully visible: {why}") from None


def newest_seq(page: Any) -> int:
    return page.evaluate(
        "() => Math.max(0, ...[...document.querySelectorAll('#entries article[data-seq]')]"
        ".map(a => +a.dataset.seq))"
    )
