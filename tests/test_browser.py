"""The chat page in a real browser: Debian's headless Chromium driven by Playwright, against the live app.

Needs ``pip install playwright`` (its driver ships in the wheel; ``playwright install`` is never
needed) and ``apt-get install chromium``. Screenshots of every scenario go to ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_api.offline_llm import OfflineServer

try:
    from playwright.sync_api import Browser, Page, Playwright, Route, ViewportSize, expect, sync_playwright
except ImportError:  # reported by the browser fixture, with what to install
    PLAYWRIGHT_INSTALLED = False
else:
    PLAYWRIGHT_INSTALLED = True
    expect.set_options(timeout=10_000)

Serve = Callable[..., AbstractContextManager[httpx.Client]]

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser downloads are not used
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium's own background connections get in the way of the page's
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}

AGENT_TEXT = ".bubble[data-agent] [data-testid=bubble-text]"
# The page's state in one read: nothing changes between its parts.
SNAPSHOT_JS = """() => {
  const texts = [...document.querySelectorAll('.bubble[data-agent] [data-testid=bubble-text]')];
  return {
    text: texts.length ? texts[texts.length - 1].textContent : '',
    stopEnabled: !document.querySelector('#stop').disabled,
    state: document.querySelector('#app').dataset.state,
    done: document.querySelectorAll('[data-testid=usage]').length,
  };
}"""
WORDS_AT_LEAST_JS = """(n) => {
  const texts = [...document.querySelectorAll('.bubble[data-agent] [data-testid=bubble-text]')];
  return texts.length > 0 && texts[texts.length - 1].textContent.trim().split(/\\s+/).length >= n;
}"""


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not PLAYWRIGHT_INSTALLED:
        pytest.fail(
            "Playwright for Python is not installed: pip install 'playwright>=1.40,<2' "
            "(only the pip package: never 'playwright install'; these tests use Debian's chromium)",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: install Debian's package: apt-get install chromium", pytrace=False
        )
    playwright: Playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=15_000
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (own sessionStorage) at desktop size; fails on uncaught page errors."""
    viewport: ViewportSize = getattr(request, "param", DESKTOP)
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


# -- helpers ------------------------------------------------------------------------------------
def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"))


def open_chat(page: Page, client: httpx.Client, *, teams: bool = True) -> None:
    page.goto(str(client.base_url).rstrip("/") + "/")
    if teams:  # the team list has loaded (the selector is enabled only then)
        expect(page.locator("#team")).to_be_enabled()
        expect(page.locator("#status")).to_have_text("Ready.")


def send(page: Page, text: str) -> None:
    page.locator("#message").fill(text)
    page.locator("#message").press("Enter")


def wait_done(page: Page, answers: int) -> None:
    """Wait until ``answers`` runs have ended with their usage shown and the page is idle again."""
    expect(page.get_by_test_id("usage")).to_have_count(answers)
    expect(page.locator("#app")).to_have_attribute("data-state", "idle")
    expect(page.locator("#stop")).to_be_disabled()


def agent_texts(page: Page) -> list[str]:
    return page.locator(AGENT_TEXT).all_text_contents()


def model_calls(offline: OfflineServer, marker: str) -> list[dict[str, Any]]:
    return [r for r in offline.model.requests if marker in json.dumps(r["messages"])]


# -- scenarios ----------------------------------------------------------------------------------
def test_tokens_appear_in_the_bubble_while_the_answer_is_written(serve: Serve, page: Page) -> None:
    with serve() as client:
        open_chat(page, client)
        expect(page.locator("#team")).to_have_value("research")  # the team marked default
        expect(page.locator("#message")).to_be_focused()
        expect(page.locator("#send")).to_be_disabled()  # nothing typed yet
        send(page, "Tell me about tides [[latency:0:0.3]] [[tokens:10]]")

        # Sample the page while the model writes: 10 words, one every 0.3 s.
        samples: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            sample = page.evaluate(SNAPSHOT_JS)
            samples.append(sample)
            if sample["done"]:
                break
            if len(samples) == 1 or sample["text"] != samples[-2]["text"]:
                if len(sample["text"].split()) == 3:
                    shot(page, "01-tokens-streaming")
            page.wait_for_timeout(100)
        assert samples[-1]["done"] == 1, "the run did not finish"

        # Partial text was on screen while the run was still going (Stop enabled, no usage yet) ...
        partial = [s for s in samples if s["stopEnabled"] and s["state"] == "busy" and not s["done"] and s["text"]]
        lengths = sorted({len(s["text"].split()) for s in partial})
        assert len(lengths) >= 3 and lengths[0] < 10, lengths
        # ... and it only grew, up to the whole answer.
        final = agent_texts(page)[-1]
        assert len(final.split()) == 10
        assert all(final.startswith(s["text"].strip()) for s in partial)
        wait_done(page, 1)
        expect(page.get_by_test_id("usage")).to_contain_text("tokens")
        expect(page.locator(".bubble[data-agent]").last).to_have_attribute("data-state", "complete")
        expect(page.locator("#message")).to_be_focused()
        shot(page, "02-tokens-done")


def test_the_session_continues_and_a_new_one_starts_afresh(serve: Serve, page: Page) -> None:
    with serve() as client:
        open_chat(page, client)
        expect(page.locator("#session-id")).to_have_text("new")
        message = page.locator("#message")
        message.fill("What is a coral polyp?")
        message.press("Shift+Enter")  # a new line, not a send
        message.press_sequentially("Answer briefly.")
        expect(page.locator(".bubble")).to_have_count(0)
        message.press("Enter")
        wait_done(page, 1)
        expect(page.locator(".bubble.user").first).to_have_text("YouWhat is a coral polyp?\nAnswer briefly.")
        sid = page.locator("#session-id").text_content() or ""
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", sid), sid

        send(page, "How does it feed?")
        wait_done(page, 2)
        expect(page.locator(AGENT_TEXT).last).to_contain_text("I can see 2 earlier messages")
        expect(page.locator("#session-id")).to_have_text(sid)
        history = client.get(f"/session/{sid}").json()["messages"]
        assert [m["content"] for m in history if m["role"] == "user"] == [
            "What is a coral polyp?\nAnswer briefly.",
            "How does it feed?",
        ]
        shot(page, "03-session-continued")

        # The session expires (here: deleted): the page says so and offers a new one.
        assert client.delete(f"/session/{sid}").status_code == 200
        send(page, "Are you still there?")
        error = page.get_by_test_id("error")
        expect(error).to_have_attribute("data-status", "404")
        expect(error).to_contain_text("expired")
        expect(page.locator("#message")).to_have_value("Are you still there?")  # kept, to send again
        expect(page.get_by_test_id("start-new-session")).to_be_focused()
        shot(page, "04-session-expired")
        page.get_by_test_id("start-new-session").click()
        expect(page.locator("#session-id")).to_have_text("new")
        expect(message).to_be_focused()
        message.press("Enter")
        wait_done(page, 1)
        expect(page.locator(AGENT_TEXT).last).to_contain_text("I can see 0 earlier messages")
        fresh = page.locator("#session-id").text_content()
        assert fresh and fresh != sid

        # "New session" forgets it and clears the conversation.
        page.locator("#new-session").click()
        expect(page.locator("#session-id")).to_have_text("new")
        expect(page.locator(".bubble")).to_have_count(0)
        expect(page.locator("#new-session")).to_be_disabled()
        send(page, "A new topic")
        wait_done(page, 1)
        expect(page.locator(AGENT_TEXT).last).to_contain_text("I can see 0 earlier messages")
        assert page.locator("#session-id").text_content() not in ("new", sid, fresh)


def test_research_team_shows_which_agent_is_speaking(serve: Serve, page: Page) -> None:
    with serve() as client:
        open_chat(page, client)
        page.locator("#team").select_option("research_team")
        expect(page.locator("#team-info")).to_contain_text("researcher, critic, writer")
        send(page, "Why is the sea salty? [[latency:0:0.05]]")
        expect(page.locator(".bubble[data-agent='critic']")).to_have_count(1)
        shot(page, "05-research-team-streaming")
        wait_done(page, 1)
        bubbles = page.locator(".bubble[data-agent]")
        assert bubbles.evaluate_all("els => els.map(e => e.dataset.agent)") == ["researcher", "critic", "writer"]
        assert page.locator(".bubble[data-agent] .who").all_text_contents() == ["researcher", "critic", "writer"]
        assert all(text.startswith("Offline answer") for text in agent_texts(page))  # separators trimmed
        shot(page, "06-research-team-done")

        # The next turn continues the group's session; switching team starts another.
        sid = page.locator("#session-id").text_content()
        send(page, "And why is it not sweet?")
        wait_done(page, 2)
        expect(page.locator("#session-id")).to_have_text(sid or "")
        expect(page.locator(AGENT_TEXT).last).to_contain_text("I can see 4 earlier messages")
        page.locator("#team").select_option("research")
        expect(page.locator("#session-id")).to_have_text("new")
        expect(page.get_by_test_id("notice").last).to_contain_text("new session")
        assert client.get(f"/session/{sid}").json()["agent"] == "research_team"


def test_stop_ends_the_stream_and_the_run(serve: Serve, offline: OfflineServer, page: Page) -> None:
    offline.model.configure(stop_word=False)  # left alone, the run would call the model again and again
    with serve() as client:
        open_chat(page, client)
        send(page, "marker-stop [[latency:0:0.4]] [[tokens:8]]")
        page.wait_for_function(WORDS_AT_LEAST_JS, arg=2, timeout=TIMEOUT_MS)
        page.locator("#stop").click()
        expect(page.locator("#app")).to_have_attribute("data-state", "idle")
        expect(page.locator("#stop")).to_be_disabled()
        expect(page.get_by_test_id("stopped")).to_be_visible()
        expect(page.locator(".bubble[data-agent]").last).to_have_attribute("data-state", "stopped")
        expect(page.locator("#message")).to_be_focused()
        at_stop = agent_texts(page)[-1]
        shot(page, "07-stopped")

        # One reply takes 7 x 0.4 s: by now the rest of it and the next model call would have come.
        time.sleep(3.5)
        assert agent_texts(page)[-1] == at_stop and 2 <= len(at_stop.split()) < 8
        assert len(model_calls(offline, "marker-stop")) == 1
        expect(page.get_by_test_id("usage")).to_have_count(0)
        sid = page.locator("#session-id").text_content()
        assert client.get(f"/session/{sid}").json()["messages"] == []  # the stopped turn was not saved
        # The page cancelled the run on the server (leaving alone would not: runs outlive pages).
        runs = client.get(f"/session/{sid}/runs").json()["runs"]
        assert [r["status"] for r in runs] == ["cancelled"]

        # Escape stops too.
        send(page, "marker-escape [[latency:0:0.4]] [[tokens:8]]")
        page.wait_for_function(WORDS_AT_LEAST_JS, arg=1, timeout=TIMEOUT_MS)
        page.locator("#message").press("Escape")
        expect(page.get_by_test_id("stopped")).to_have_count(2)

        # The page is idle and the session usable again.
        offline.model.configure(stop_word=True)
        send(page, "after the stop")
        wait_done(page, 1)
        expect(page.locator(AGENT_TEXT).last).to_contain_text("I can see 0 earlier messages")
        expect(page.locator("#session-id")).to_have_text(sid or "")


def test_a_reload_reattaches_to_the_answer_in_progress(serve: Serve, offline: OfflineServer, page: Page) -> None:
    with serve() as client:
        open_chat(page, client)
        send(page, "first question")
        wait_done(page, 1)
        send(page, "marker-reload [[latency:0:0.15]] [[tokens:40]]")
        page.wait_for_function(WORDS_AT_LEAST_JS, arg=5, timeout=TIMEOUT_MS)
        sid = page.locator("#session-id").text_content() or ""
        shot(page, "08-before-reload")
        page.reload()

        # The page shows the session and follows the same run to its end: the answer once, whole.
        expect(page.get_by_test_id("usage")).to_have_count(1, timeout=20_000)
        expect(page.locator("#app")).to_have_attribute("data-state", "idle")
        runs = client.get(f"/session/{sid}/runs").json()["runs"]
        assert [r["status"] for r in runs] == ["succeeded", "succeeded"]  # the reload cancelled nothing
        answer = runs[0]["result"]["response"]
        assert agent_texts(page)[-1] == answer and len(answer.split()) == 40
        assert len(model_calls(offline, "marker-reload")) == 1
        users = page.locator(".bubble.user .text").all_text_contents()
        assert users == ["first question", "marker-reload [[latency:0:0.15]] [[tokens:40]]"]
        assert len(agent_texts(page)) == 2 and "first question" in agent_texts(page)[0]
        expect(page.locator("#session-id")).to_have_text(sid)
        shot(page, "09-reattached")
        history = client.get(f"/session/{sid}").json()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]  # saved once

        # A reload after the end has no run to re-attach to: it redraws the conversation from the
        # session, and the next message continues it.
        page.reload()
        expect(page.locator("#status")).to_have_text("Conversation restored: your next message continues it.")
        expect(page.locator(".bubble")).to_have_count(4)
        expect(page.locator("#session-id")).to_have_text(sid)
        send(page, "and then?")
        wait_done(page, 1)
        assert agent_texts(page)[-1].endswith("I can see 4 earlier messages.")


def test_a_wrong_api_key_is_reported_and_the_right_one_works(serve: Serve, page: Page) -> None:
    with serve(api_keys="k1") as client:
        # the page and its assets need no key; the API does
        assert client.get("/").status_code == 200
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/agents").status_code == 401

        open_chat(page, client, teams=False)
        expect(page.locator("#team-info")).to_contain_text("needs an API key")
        key = page.locator("#api-key")
        key.fill("wrong-key")
        key.press("Tab")  # change: the teams are asked for again, with the key
        expect(page.locator("#team-info")).to_contain_text("not accepted")
        send(page, "hello")
        error = page.get_by_test_id("error")
        expect(error).to_have_attribute("data-status", "401")
        expect(error).to_contain_text("valid API key")
        expect(key).to_have_attribute("aria-invalid", "true")
        expect(key).to_be_focused()
        expect(page.locator(".bubble.user .tag")).to_have_text("not sent")
        shot(page, "08-wrong-api-key")

        key.fill("k1")
        key.press("Tab")
        expect(page.locator("#team")).to_be_enabled()
        expect(key).not_to_have_attribute("aria-invalid", "true")
        assert page.evaluate("() => sessionStorage.getItem('agent-api.api-key')") == "k1"
        expect(page.locator("#message")).to_have_value("hello")
        page.locator("#send").click()
        wait_done(page, 1)
        expect(page.locator(AGENT_TEXT).last).to_contain_text('you asked "hello"')
        # the key stays for the tab (sessionStorage), not beyond
        page.reload()
        expect(page.locator("#api-key")).to_have_value("k1")
        expect(page.locator("#team")).to_be_enabled()


def test_rate_limit_shows_when_to_retry(serve: Serve, page: Page) -> None:
    with serve(api_keys="k1", rate_limit="3/minute") as client:
        page.goto(str(client.base_url).rstrip("/") + "/")
        page.locator("#api-key").fill("k1")
        page.locator("#api-key").press("Tab")  # GET /agents: 1
        expect(page.locator("#team")).to_be_enabled()
        for answers in (1, 2):  # 2, 3
            send(page, f"question {answers}")
            wait_done(page, answers)
        send(page, "one too many")  # 4
        error = page.get_by_test_id("error")
        expect(error).to_have_attribute("data-status", "429")
        expect(error).to_contain_text(re.compile(r"Rate limited.*Try again in \d+ s"))
        shot(page, "09-rate-limited")


def test_errors_before_the_stream_are_shown_readably(serve: Serve, offline: OfflineServer, page: Page) -> None:
    with serve() as client:
        open_chat(page, client)
        send(page, "first")
        wait_done(page, 1)
        sid = page.locator("#session-id").text_content()
        errors = page.get_by_test_id("error")

        # 409: another request (another tab) is running on the session
        other = threading.Thread(
            target=client.post, args=("/chat",), kwargs={"json": {"message": "busy [[sleep:2]]", "session_id": sid}}
        )
        other.start()
        try:
            deadline = time.monotonic() + 10
            while not model_calls(offline, "busy [[sleep:2]]") and time.monotonic() < deadline:
                time.sleep(0.05)
            send(page, "are you busy?")
            expect(errors.last).to_have_attribute("data-status", "409")
            expect(errors.last).to_contain_text("already running")
        finally:
            other.join(timeout=15)

        # 422: the server's detail, naming the field. The text box's maxlength keeps a person (and
        # Playwright's typing) to 4000 characters: set the value behind its back.
        page.locator("#message").evaluate(
            "(box, text) => { box.value = text; box.dispatchEvent(new Event('input')); }", "x" * 4001
        )
        page.locator("#message").press("Enter")
        expect(errors.last).to_have_attribute("data-status", "422")
        expect(errors.last).to_contain_text("message: String should have at most 4000 characters")
        shot(page, "10-invalid-request")

        # 5xx and a network failure, simulated in the browser
        def unavailable(route: Route) -> None:
            route.fulfill(status=503, json={"detail": "The session store is unavailable; try again shortly."})

        page.route("**/chat/stream", unavailable)
        page.locator("#message").fill("again")
        page.locator("#send").click()
        expect(errors.last).to_have_attribute("data-status", "503")
        expect(errors.last).to_contain_text("session store is unavailable")
        page.unroute("**/chat/stream")
        page.route("**/chat/stream", lambda route: route.abort("connectionrefused"))
        send(page, "again")
        expect(errors.last).to_have_attribute("data-status", "network")
        expect(errors.last).to_contain_text("Could not reach the server")
        expect(page.locator("#status")).to_have_text("Error: network")
        shot(page, "11-network-error")
        page.unroute("**/chat/stream")

        # and the session still works
        send(page, "still fine?")
        wait_done(page, 2)
        expect(page.locator("#session-id")).to_have_text(sid or "")


def test_frames_the_offline_model_never_sends_are_read_correctly(serve: Serve, page: Page) -> None:
    """CRLF line ends, comments, an unknown event, text and a tool call in one message, a whole message."""

    def frame(number: int, event: str, **data: Any) -> str:
        body = json.dumps({"session_id": "s" * 22, "chunk": "", "done": False, **data})
        return f"id: {number}\r\nevent: {event}\r\ndata: {body}\r\n\r\n"

    stream = "".join(
        [
            ": ping\r\n\r\n",
            frame(1, "session", agent="research_team"),
            frame(2, "token", agent="researcher", text="Let me"),
            frame(3, "token", agent="researcher", text=" compute."),
            frame(4, "tool_call", agent="researcher", tool_call={"id": "c1", "name": "calculator", "arguments": "{}"}),
            frame(5, "message", agent="researcher", message={"role": "assistant", "content": "Let me compute."}),
            frame(6, "tool_result", agent="user", tool_result={"id": "c1", "content": "42"}),
            frame(7, "future_event", agent="researcher"),
            frame(8, "message", agent="writer", message={"role": "assistant", "content": "It is 42. TERMINATE"}),
            frame(9, "done", done=True, response="It is 42.", turns_used=2, finished=True),
        ]
    )

    def fake(route: Route) -> None:
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=stream)

    with serve() as client:
        open_chat(page, client)
        page.route("**/chat/stream", fake)
        send(page, "six times seven?")
        wait_done(page, 1)
        assert page.locator(".bubble[data-agent]").evaluate_all("els => els.map(e => e.dataset.agent)") == [
            "researcher",
            "writer",
        ]
        assert agent_texts(page) == ["Let me compute.", "It is 42."]
        expect(page.get_by_test_id("tool-call")).to_contain_text("researcher called calculator")
        expect(page.get_by_test_id("tool-result")).to_contain_text("42")
        expect(page.locator("#session-id")).to_have_text("s" * 22)
        shot(page, "12-tools-and-whole-messages")


def test_model_output_is_shown_as_text_never_run(serve: Serve, page: Page) -> None:
    payload = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
    with serve() as client:
        open_chat(page, client)
        send(page, f"[[say:{payload}]]")
        wait_done(page, 1)
        assert agent_texts(page)[0] == payload
        expect(page.locator(".bubble.user .text")).to_have_text(f"[[say:{payload}]]")
        page.wait_for_timeout(300)  # time for an injected image to fail and run its handler
        assert page.evaluate("() => typeof window.__xss") == "undefined"
        assert page.locator("#log script, #log img").count() == 0
        shot(page, "13-markup-as-text")


@pytest.mark.parametrize("page", [PHONE], indirect=True, ids=["phone"])
def test_the_page_fits_a_phone(serve: Serve, page: Page) -> None:
    with serve() as client:
        open_chat(page, client)
        page.locator("#team").select_option("research_team")
        send(page, "Why is the sky blue? Explain it as you would to a curious child who loves the sea.")
        wait_done(page, 1)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways: {width}px wide"
        for selector in ("#team", "#api-key", "#new-session", "#message", "#send", "#stop", "#session-id"):
            box = page.locator(selector).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], selector
        shot(page, "14-phone")


def test_the_api_docs_render_with_no_network_beyond_the_service(serve: Serve, page: Page) -> None:
    with serve() as client:
        base = str(client.base_url).rstrip("/")
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{base}/docs")
        expect(page.locator(".swagger-ui .information-container .title")).to_contain_text("agent-api")
        expect(page.locator(".swagger-ui .opblock-summary-path").first).to_be_visible()
        page.goto(f"{base}/redoc")
        expect(page.locator("h1").first).to_contain_text("agent-api")
        # Everything the pages need comes from the service; ReDoc's own "API docs by Redocly" logo
        # is the one image its bundle still names on its CDN (a broken image if unreachable).
        outside = [url for url in requested if not url.startswith((base, "blob:" + base))]
        assert requested and outside in ([], ["https://cdn.redoc.ly/redoc/logo-mini.svg"]), outside
        shot(page, "15-docs-offline")


def test_markdown_is_rendered_and_script_in_it_never_runs(serve: Serve, page: Page) -> None:
    # The offline model quotes the question in its answer: the answer carries this Markdown and HTML.
    question = (
        "**Tides** follow the `moon`: [details](https://example.com/tides) [bad](javascript:window.__xss=3) "
        '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
    )
    with serve() as client:
        open_chat(page, client)
        send(page, question)
        wait_done(page, 1)
        bubble = page.locator(AGENT_TEXT).first
        expect(bubble).to_have_attribute("data-format", "markdown")
        expect(bubble.locator("strong")).to_have_text("Tides")
        expect(bubble.locator("code")).to_have_text("moon")
        good = bubble.locator("a", has_text="details")
        expect(good).to_have_attribute("href", "https://example.com/tides")
        expect(good).to_have_attribute("rel", "noopener noreferrer")
        # the javascript: link loses its target; the HTML is shown as text, not parsed
        bad = bubble.locator("a", has_text="bad")
        assert bad.count() == 0 or not (bad.get_attribute("href") or "").startswith("javascript")
        expect(bubble).to_contain_text("<script>window.__xss=1</script>")
        expect(bubble).to_contain_text('<img src=x onerror="window.__xss=2">')
        assert page.locator("#log script, #log img, #log [onerror]").count() == 0
        if bad.count():
            bad.click(no_wait_after=True)
        page.wait_for_timeout(300)
        assert page.evaluate("() => typeof window.__xss") == "undefined"
        shot(page, "16-markdown")


def test_a_reload_between_turns_keeps_the_conversation(serve: Serve, page: Page) -> None:
    with serve() as client:
        open_chat(page, client)
        page.locator("#team").select_option("research_team")
        send(page, "What is a tide?")
        wait_done(page, 1)
        session = page.locator("#session-id").inner_text()
        before = agent_texts(page)
        page.reload()
        expect(page.locator("#session-id")).to_have_text(session)
        expect(page.locator("#team")).to_have_value("research_team")
        expect(page.locator(".bubble.user .text")).to_have_text(["What is a tide?"])
        expect(page.locator(AGENT_TEXT)).to_have_text(before)
        # the next message continues the same session: the model sees the first turn
        send(page, "And the moon?")
        wait_done(page, 1)  # the usage line of the first turn is not redrawn, only its messages
        assert "I can see 0 earlier messages" not in agent_texts(page)[-1]
        assert page.locator("#session-id").inner_text() == session
        # "New session" forgets it: a reload then starts afresh
        page.locator("#new-session").click()
        page.reload()
        expect(page.locator("#session-id")).to_have_text("new")
        expect(page.locator(".bubble")).to_have_count(0)
        shot(page, "17-reload-keeps-the-conversation")


# -- runs that wait for a person ----------------------------------------------------------------
EXAMPLE_TEAMS = Path(__file__).resolve().parent.parent / "examples" / "teams"
CALCULATE = '[[tool:calculator {"expression": "6*7"}]] what is 6*7?'


def run_of(page: Page) -> str:
    """The id of the run the page follows (kept in sessionStorage for a reload)."""
    return str(page.evaluate("() => JSON.parse(sessionStorage.getItem('agent-api.run')).runId"))


def test_a_person_answers_the_team_s_questions(serve: Serve, page: Page) -> None:
    with serve(teams_dir=EXAMPLE_TEAMS) as client:
        open_chat(page, client)
        page.locator("#team").select_option("concierge")
        send(page, "Book me a table for two")

        # The run waits: the question shows with the agent's name, and the page is busy with it.
        request = page.get_by_test_id("input-request")
        expect(request).to_have_attribute("data-kind", "message")
        expect(request.get_by_role("heading")).to_have_text("concierge asks you")
        expect(request.get_by_test_id("input-prompt")).to_have_text(
            'Offline answer: you asked "Book me a table for two". I can see 0 earlier messages.'
        )
        answer = page.get_by_label("Your answer to concierge")
        expect(answer).to_be_focused()
        expect(request.get_by_test_id("input-send")).to_be_disabled()  # nothing typed yet
        expect(page.locator("#message")).to_be_disabled()
        expect(page.locator("#message")).to_have_attribute("placeholder", re.compile("waiting for your answer"))
        expect(page.locator("#status")).to_have_text("concierge is waiting for your answer.")
        expect(page.locator("#stop")).to_be_enabled()
        run_id = run_of(page)
        assert client.get(f"/runs/{run_id}").json()["status"] == "requires_input"
        shot(page, "18-question-asked")

        # An answer the server refuses (longer than the box allows: set behind its back) is explained.
        answer.evaluate("(box, text) => { box.value = text; box.dispatchEvent(new Event('input')); }", "x" * 4001)
        answer.press("Enter")
        error = request.get_by_test_id("input-error")
        expect(error).to_have_attribute("data-status", "422")
        expect(error).to_contain_text("The server rejected the answer")
        expect(error).to_contain_text("content: String should have at most 4000 characters")
        expect(error).to_have_attribute("role", "alert")
        expect(answer).to_be_focused()
        shot(page, "19-answer-rejected")

        # The answer goes to the team, which replies and asks again.
        answer.fill("At 8 pm, please")
        answer.press("Enter")
        expect(page.get_by_test_id("input-answered")).to_have_text(["You answered concierge."])
        expect(page.locator(".bubble.user .text")).to_have_text(["Book me a table for two", "At 8 pm, please"])
        expect(page.locator(AGENT_TEXT)).to_have_count(2)
        expect(page.locator(AGENT_TEXT).last).to_have_text(
            'Offline answer: you asked "At 8 pm, please". I can see 2 earlier messages.'
        )
        expect(request).to_have_count(1)  # the next question; the answered one is gone
        expect(request.get_by_test_id("input-prompt")).to_contain_text('you asked "At 8 pm, please"')
        expect(request.get_by_test_id("input-error")).to_have_count(0)
        expect(answer).to_be_focused()
        shot(page, "20-answered-and-asked-again")

        # A reload while the run waits shows the conversation and the question still open, once.
        page.reload()
        expect(request).to_have_count(1)
        expect(request.get_by_test_id("input-prompt")).to_contain_text('you asked "At 8 pm, please"')
        expect(page.get_by_test_id("input-answered")).to_have_text(["You answered concierge."])
        expect(page.locator(".bubble.user .text")).to_have_text(["Book me a table for two", "At 8 pm, please"])
        expect(page.locator(AGENT_TEXT)).to_have_count(2)
        expect(page.locator("#message")).to_be_disabled()
        expect(answer).to_be_focused()
        shot(page, "21-question-after-reload")

        # "Continue" accepts the final answer: the run ends, the whole conversation on the page.
        answer.press("Tab")  # Send answer is disabled while the box is empty: skipped
        expect(request.get_by_role("button", name="Continue")).to_be_focused()
        page.keyboard.press("Enter")
        wait_done(page, 1)
        expect(request).to_have_count(0)
        expect(page.get_by_test_id("input-answered")).to_have_text(
            ["You answered concierge.", "You let the team go on by itself."]
        )
        expect(page.locator("#message")).to_be_enabled()
        expect(page.locator("#message")).to_be_focused()
        expect(page.locator("#status")).to_have_text("Done.")
        assert client.get(f"/runs/{run_id}").json()["status"] == "succeeded"
        sid = page.locator("#session-id").inner_text()
        history = client.get(f"/session/{sid}").json()["messages"]
        assert [(m["role"], m["content"]) for m in history if m["role"] == "user"] == [
            ("user", "Book me a table for two"),
            ("user", "At 8 pm, please"),
        ]
        assert [m["content"] for m in history if m["role"] == "assistant"] == agent_texts(page)

        # The next turn continues the session; "End" (from the keyboard) ends it at the question.
        send(page, "And a taxi?")
        expect(request.get_by_test_id("input-prompt")).to_contain_text("I can see 4 earlier messages")
        answer.press("Tab")
        page.keyboard.press("Tab")
        expect(request.get_by_role("button", name="End", exact=True)).to_be_focused()
        page.keyboard.press("Enter")
        wait_done(page, 2)
        expect(page.get_by_test_id("input-answered").last).to_have_text("You ended the conversation.")
        expect(page.locator(".bubble.user .text")).to_have_text(
            ["Book me a table for two", "At 8 pm, please", "And a taxi?"]
        )
        assert len(agent_texts(page)) == 3
        shot(page, "22-conversation-ended")


def test_a_person_approves_or_denies_a_tool_call(serve: Serve, page: Page) -> None:
    with serve(teams_dir=EXAMPLE_TEAMS) as client:
        open_chat(page, client)
        page.locator("#team").select_option("careful_calculator")
        send(page, CALCULATE)

        # The call waits for approval: tool and arguments shown as text; the tool has not run.
        request = page.get_by_test_id("input-request")
        expect(request).to_have_attribute("data-kind", "approval")
        expect(request.get_by_role("heading")).to_have_text("calculator_agent wants to run calculator")
        expect(request.get_by_test_id("input-tool")).to_have_text("calculator")
        expect(request.get_by_test_id("input-arguments")).to_have_text('{\n  "expression": "6*7"\n}')
        expect(request).to_be_focused()  # the question first; no button pressed by accident
        expect(page.get_by_test_id("tool-call")).to_contain_text("calculator_agent called calculator")
        expect(page.get_by_test_id("tool-result")).to_have_count(0)
        expect(page.locator("#message")).to_be_disabled()
        expect(page.locator("#status")).to_have_text("calculator_agent is waiting for your approval to run calculator.")
        shot(page, "23-approval-asked")

        # Deny, with a reason: the tool does not run and the agent answers with the refusal.
        page.get_by_label("Reason, if you deny (optional)").fill("Work it out without tools")
        request.get_by_role("button", name="Deny").click()
        wait_done(page, 1)
        refusal = (
            "The user denied this call of calculator; the tool was not run. Their reason: Work it out without tools"
        )
        expect(page.get_by_test_id("input-answered")).to_have_text(
            ["You denied the calculator call: Work it out without tools"]
        )
        expect(page.get_by_test_id("tool-result")).to_have_text(["tool result" + refusal])
        expect(page.locator(AGENT_TEXT).last).to_have_text(f"The tool returned {refusal}.")
        expect(request).to_have_count(0)
        shot(page, "24-approval-denied")

        # Approve (from the keyboard): the tool runs and the agent has its result.
        send(page, CALCULATE)
        expect(request).to_be_focused()
        page.keyboard.press("Tab")  # the reason field
        page.keyboard.press("Tab")
        expect(request.get_by_role("button", name="Approve")).to_be_focused()
        page.keyboard.press("Enter")
        wait_done(page, 2)
        expect(page.get_by_test_id("input-answered").last).to_have_text("You approved the calculator call.")
        expect(page.get_by_test_id("tool-result").last).to_contain_text("42")
        expect(page.locator(AGENT_TEXT).last).to_have_text("The tool returned 42.")
        sid = page.locator("#session-id").inner_text()
        assert [r["status"] for r in client.get(f"/session/{sid}/runs").json()["runs"]] == ["succeeded", "succeeded"]
        shot(page, "25-approval-approved")


@pytest.mark.parametrize("page", [PHONE], indirect=True, ids=["phone"])
def test_a_waiting_run_on_a_phone_markup_failures_and_stop(serve: Serve, page: Page) -> None:
    """The form fits a phone; arguments with markup are text; a failed post is explained; Stop still stops."""
    with serve(teams_dir=EXAMPLE_TEAMS) as client:
        open_chat(page, client)
        page.locator("#team").select_option("careful_calculator")
        markup = '<img src=x onerror=\\"window.__xss=1\\"><b>6</b>*7'
        send(page, f'[[tool:calculator {{"expression": "{markup}"}}]] and this?')
        request = page.get_by_test_id("input-request")
        expect(request.get_by_test_id("input-arguments")).to_have_text(
            '{\n  "expression": "<img src=x onerror=\\"window.__xss=1\\"><b>6</b>*7"\n}'
        )
        assert page.locator("#log img, #log b, #log [onerror]").count() == 0
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways: {width}px wide"
        for control in ("input-reason", "input-approve", "input-deny"):
            box = request.get_by_test_id(control).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], control

        # The server cannot be reached: the form says so and stays, to try again.
        page.route("**/runs/*/input", lambda route: route.abort("connectionrefused"))
        reason = page.get_by_label("Reason, if you deny (optional)")
        reason.fill("no markup, thanks")
        reason.press("Enter")  # Enter in the reason denies
        error = request.get_by_test_id("input-error")
        expect(error).to_have_attribute("data-status", "network")
        expect(error).to_contain_text("Could not reach the server")
        expect(error).to_be_in_viewport()
        expect(page.locator("#status")).to_have_text("Error: network; your answer was not sent")
        expect(reason).to_be_focused()
        shot(page, "26-question-on-a-phone")
        page.unroute("**/runs/*/input")

        reason.press("Enter")
        wait_done(page, 1)
        expect(page.get_by_test_id("input-answered")).to_have_text(
            ["You denied the calculator call: no markup, thanks"]
        )
        expect(page.locator(AGENT_TEXT).last).to_contain_text("Their reason: no markup, thanks")
        assert page.evaluate("() => typeof window.__xss") == "undefined"

        # Stop while the run waits: the question goes, and the run is cancelled on the server.
        send(page, CALCULATE)
        expect(request).to_be_visible()
        run_id = run_of(page)
        page.locator("#stop").click()
        expect(page.get_by_test_id("stopped")).to_be_visible()
        expect(request).to_have_count(0)
        expect(page.locator("#app")).to_have_attribute("data-state", "idle")
        expect(page.locator("#message")).to_be_enabled()
        expect(page.locator("#message")).to_be_focused()
        assert client.get(f"/runs/{run_id}").json()["status"] == "cancelled"
