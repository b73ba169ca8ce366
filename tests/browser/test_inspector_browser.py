"""The inspector in a real browser, fed by a real tunnel: the local relay, an agent session with
the inspector on its request hook, a real local app, and a visitor over loopback. What a user
sees: requests appear live, details show headers and bodies, replays reach the app and are
marked, edits are sent, captured markup stays text, and the page loads nothing from elsewhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from hatchway.serving.forward import Forwarder, Target
from hatchway.serving.session import Session
from hatchway.ui.inspector import Inspector
from hatchway_local.server import LocalServer, run_local
from support.browser_page import ARTIFACTS, PageWatch
from support.local_app import LocalApp, run_local_app
from support.visitor import Answer, visit

pytestmark = pytest.mark.e2e

TOKEN = "hw_browser-token-0123456789"
TUNNEL = "insp"
SCREENSHOT = ARTIFACTS / "inspector.png"


@dataclass
class Stack:
    relay: LocalServer
    app: LocalApp
    inspector: Inspector
    session: Session

    def visit(self, method: str, target: str, **kw: Any) -> Answer:
        """A visitor's request through the tunnel (path mode on the local relay)."""
        port = self.relay.port
        return visit(port, method, f"/t/{TUNNEL}{target}", f"127.0.0.1:{port}", **kw)


@pytest.fixture
def stack() -> Iterator[Stack]:
    with run_local(tokens=(TOKEN,), response_timeout=10.0) as relay, run_local_app() as app:
        forwarder = Forwarder(Target("127.0.0.1", app.port), timeout=10)
        session: Session | None = None

        def status() -> dict[str, Any]:
            welcome = session.welcome if session else None
            return {
                "status": "online" if session and session.connected else "connecting",
                "public_urls": [t.path_url for t in welcome.tunnels] if welcome else [],
                "target": forwarder.target.url,
                "relay": relay.agent_url,
            }

        with Inspector(forwarder, status) as inspector:
            session = Session(
                relay.agent_url, TOKEN, forwarder, (TUNNEL,), on_request_done=inspector.record
            )
            inspector.start("127.0.0.1:0")
            with session.start():
                yield Stack(relay, app, inspector, session)
        forwarder.close()


def row(page: Page, text: str) -> Any:
    return page.locator("#requests tbody tr", has_text=text)


def test_inspect_replay_and_edit_a_tunnelled_request(stack: Stack, page: Page) -> None:
    watch = PageWatch()
    watch.attach(page)
    assert stack.inspector.url is not None
    page.goto(stack.inspector.url)
    expect(page.locator("#live")).to_have_text("live")  # the event stream is open
    expect(page.locator("#status")).to_contain_text("online")
    page.evaluate("window.notReloaded = true")

    # A visitor's request through the tunnel appears in the list without a reload.
    sent = b'{"greeting": "hello", "n": [1, 2]}'
    answer = stack.visit(
        "POST",
        "/echo/hello?x=1",
        headers=[("Content-Type", "application/json"), ("X-Visitor", "browser-test")],
        body=sent,
    )
    assert answer.status == 200
    expect(row(page, "/echo/hello?x=1")).to_have_count(1)
    first = page.locator('#requests tbody tr[data-id="1"]')
    expect(first).to_contain_text("POST")
    expect(first.locator(".status")).to_have_text("200")
    assert page.evaluate("window.notReloaded") is True

    # Its detail shows the request and response headers and bodies.
    first.click()
    expect(page.locator("#detail-title")).to_have_text("#1 POST /echo/hello?x=1 → 200")
    request_view = page.locator("#request-view")
    expect(request_view.locator("table.headers")).to_contain_text("x-visitor")
    expect(request_view.locator("table.headers")).to_contain_text("browser-test")
    expect(request_view.locator("pre.json")).to_have_text(json.dumps(json.loads(sent), indent=2))
    response_view = page.locator("#response-view")
    expect(response_view.locator("table.headers")).to_contain_text("application/json")
    expect(response_view.locator("pre.json")).to_contain_text('"target": "/echo/hello?x=1"')

    # Replay: the app receives the same request again, and the list marks the replay.
    arrived = len(stack.app.requests)
    page.locator("#replay").click()
    expect(page.locator("#replay-result")).to_have_text("replayed as #2: 200")
    assert len(stack.app.requests) == arrived + 1
    original, replayed = stack.app.requests[arrived - 1], stack.app.requests[arrived]
    assert (replayed.method, replayed.target, replayed.body) == ("POST", "/echo/hello?x=1", sent)
    assert replayed.headers == original.headers
    replay_row = page.locator('#requests tbody tr[data-id="2"]')
    expect(replay_row).to_have_class("replay")
    expect(replay_row).to_contain_text("replay of #1")

    # Replay with edits: a changed path and body reach the app.
    first.click()
    expect(page.locator("#detail-title")).to_contain_text("#1 POST")
    page.locator("#edit summary").click()
    expect(page.locator("#edit-body")).to_have_value(sent.decode())
    page.locator("#edit-path").fill("/echo/edited")
    page.locator("#edit-body").fill('{"greeting": "edited"}')
    page.locator("#edit-send").click()
    expect(page.locator("#replay-result")).to_have_text("replayed with edits as #3: 200")
    edited = stack.app.wait_for_request("/echo/edited")
    assert (edited.method, edited.body) == ("POST", b'{"greeting": "edited"}')
    assert ("x-visitor", "browser-test") in edited.headers
    expect(page.locator("#detail-title")).to_have_text("#3 POST /echo/edited → 200")
    expect(page.locator("#requests tbody tr.replay")).to_have_count(2)

    # Filters narrow the list; clearing them brings every row back.
    page.locator("#filter-path").fill("edited")
    expect(page.locator("#requests tbody tr")).to_have_count(1)
    page.locator("#filter-path").fill("")
    page.locator("#filter-status").fill("2xx")
    expect(page.locator("#requests tbody tr")).to_have_count(3)
    page.locator("#filter-status").fill("4x")
    expect(page.locator("#filter-error")).to_contain_text("status filter")
    page.locator("#filter-status").fill("")
    expect(page.locator("#filter-error")).to_have_text("")
    expect(page.locator("#requests tbody tr")).to_have_count(3)
    expect(page.locator("#status")).to_contain_text("3 of 3")  # counts follow the events

    first.click()
    page.locator("#edit summary").click()  # fold the form: the picture shows both messages
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert SCREENSHOT.stat().st_size > 0

    assert all(url.startswith(stack.inspector.url) for url in watch.requests), watch.requests
    # The one error the page saw is the list's answer to the bad status filter above.
    assert watch.errors == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]


def test_captured_markup_is_shown_as_text_never_run(stack: Stack, page: Page) -> None:
    watch = PageWatch()
    watch.attach(page)
    assert stack.inspector.url is not None
    page.goto(stack.inspector.url)
    expect(page.locator("#live")).to_have_text("live")
    markup = '<img id="injected" src="x" onerror="window.pwned = 1">'
    answer = stack.visit(
        "POST",
        "/upload?q=%3Cscript%3E",
        headers=[("Content-Type", "text/html"), ("X-Html", markup)],
        body=markup.encode(),
    )
    assert answer.status == 200
    entry = row(page, "/upload?q=%3Cscript%3E")
    expect(entry).to_have_count(1)
    entry.click()
    expect(page.locator("#request-view table.headers")).to_contain_text(markup)
    expect(page.locator("#request-view pre.body-text")).to_have_text(markup)
    expect(page.locator("#injected")).to_have_count(0)
    assert page.evaluate("window.pwned") is None
    assert watch.errors == []


def test_a_binary_response_shows_size_and_hex(stack: Stack, page: Page) -> None:
    assert stack.inspector.url is not None
    page.goto(stack.inspector.url)
    expect(page.locator("#live")).to_have_text("live")
    assert stack.visit("GET", "/bytes?n=3000&seed=5").status == 200
    row(page, "/bytes?n=3000").click()
    body = page.locator("#response-view .body")
    expect(body).to_contain_text("2.9 KiB")
    expect(body).to_contain_text("binary: first 512 B as hex")
    first_bytes = " ".join(f"{b:02x}" for b in LocalApp.expected_bytes(3000, 5)[:16])
    expect(body.locator("pre.hex")).to_contain_text(f"00000000  {first_bytes}")


LAYOUT_SCREENSHOT = SCREENSHOT.with_name("inspector-1280x800.png")


def test_at_1280_by_800_the_header_is_one_row_and_the_detail_offers_curl_and_raw(
    stack: Stack, browser: Browser
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    try:
        assert stack.inspector.url is not None
        page.goto(stack.inspector.url)
        expect(page.locator("#live")).to_have_text("live")
        # Until a request is picked, the detail pane says what it is for.
        expect(page.locator("#detail-hint")).to_be_visible()
        expect(page.locator("#detail-hint")).to_contain_text("Pick a request")
        expect(page.locator("#detail")).to_be_hidden()

        for i in range(11):
            assert stack.visit("GET", f"/echo/item-{i}").status == 200
        body = b"name=it's&n=1"
        answer = stack.visit(
            "POST",
            "/echo/form?x=1",
            headers=[("Content-Type", "application/x-www-form-urlencoded"), ("X-Test", "a b")],
            body=body,
        )
        assert answer.status == 200
        expect(page.locator("#requests tbody tr")).to_have_count(12)
        expect(page.locator("#status")).to_contain_text("12 of 12")

        # The header is one row: title, every status item and the live mark share a line, and
        # no label is parted from its value.
        boxes = page.evaluate(
            """() => [document.querySelector("header h1"), document.querySelector("#live"),
                ...document.querySelectorAll("#status > div, #status dt, #status dd")]
                .map((node) => { const r = node.getBoundingClientRect();
                                 return [node.textContent, r.top, r.height]; })"""
        )
        header_height = page.evaluate("document.querySelector('header').offsetHeight")
        line_height = boxes[0][2]
        assert header_height < 2.5 * line_height, (header_height, boxes)
        for text, top, height in boxes:
            assert height < 1.6 * line_height, (text, height, boxes)
            assert abs((top + height / 2) - (boxes[0][1] + line_height / 2)) < line_height / 2, (
                text,
                boxes,
            )
        kept = page.locator("#status > div", has_text="Kept")
        expect(kept).to_contain_text("12 of 12")
        # Short values are never cut: only the long URLs take the ellipsis.
        for term in ("Session", "Target", "Kept"):
            cut = page.evaluate(
                """(term) => { const item = [...document.querySelectorAll("#status > div")]
                    .find((div) => div.querySelector("dt").textContent === term);
                  const value = item.querySelector("dd");
                  return value.scrollWidth > value.clientWidth; }""",
                term,
            )
            assert not cut, term

        # Filters that hide every kept request say so, rather than "no requests yet".
        page.locator("#filter-path").fill("nothing-has-this-path")
        expect(page.locator("#empty")).to_be_visible()
        expect(page.locator("#empty")).to_have_text("No kept request matches these filters.")
        page.locator("#filter-path").fill("")
        expect(page.locator("#requests tbody tr")).to_have_count(12)

        row(page, "/echo/form?x=1").click()
        expect(page.locator("#detail-hint")).to_be_hidden()
        expect(page.locator("#detail-title")).to_contain_text("POST /echo/form?x=1")

        # Copy as curl: through the tunnel's public URL, with the headers and the exact body.
        page.locator("#copy-curl").click()
        expect(page.locator("#replay-result")).to_have_text("curl command copied")
        command = page.evaluate("navigator.clipboard.readText()")
        public = f"http://127.0.0.1:{stack.relay.port}/t/{TUNNEL}/echo/form?x=1"
        assert command.startswith(f"curl '{public}' ")
        assert "-H 'X-Test: a b'" in command or "-H 'x-test: a b'" in command
        assert "--data-binary 'name=it'\\''s&n=1'" in command
        assert "content-length" not in command.lower() and "'host:" not in command.lower()

        # Raw: both messages as they went over the wire.
        page.locator("#view-raw").click()
        expect(page.locator("#request-view")).to_be_hidden()
        request_raw = page.locator("#request-raw")
        expect(request_raw).to_contain_text("POST /echo/form?x=1 HTTP/1.1")
        expect(request_raw).to_contain_text("name=it's&n=1")
        expect(page.locator("#response-raw")).to_contain_text("HTTP/1.1 200")
        page.locator("#view-pretty").click()
        expect(page.locator("#request-view")).to_be_visible()
        page.locator("#view-raw").click()

        LAYOUT_SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=LAYOUT_SCREENSHOT)
        assert LAYOUT_SCREENSHOT.stat().st_size > 0
    finally:
        context.close()


def test_the_list_and_the_detail_show_one_time_in_the_browsers_own_zone(
    stack: Stack, browser: Browser
) -> None:
    """Away from UTC (India, +05:30, so hours and minutes both differ): the list's time and the
    detail's are the same local time, the one the user's clock shows."""
    zone = timezone(timedelta(hours=5, minutes=30))
    context = browser.new_context(timezone_id="Asia/Kolkata", locale="en-GB")
    page = context.new_page()
    try:
        assert stack.inspector.url is not None
        page.goto(stack.inspector.url)
        expect(page.locator("#live")).to_have_text("live")
        assert stack.visit("GET", "/echo/when").status == 200
        entry = row(page, "/echo/when")
        expect(entry).to_have_count(1)
        reply = page.request.get(stack.inspector.url + "api/requests")
        (summary,) = json.loads(reply.text())["requests"]
        captured = datetime.fromisoformat(summary["time"].replace("Z", "+00:00"))
        local = captured.astimezone(zone).strftime("%H:%M:%S")
        assert local != captured.strftime("%H:%M:%S")
        expect(entry.locator("td.time")).to_contain_text(local)
        entry.click()
        expect(page.locator("#detail-meta")).to_contain_text(local)
    finally:
        context.close()
