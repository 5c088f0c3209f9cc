"""The support agents' console (/agent) and the shopper's widget side by side in headless Chromium,
against a real server (scripted model, a small policy retriever): the handoff seen from both sides.

Screenshots of each state go to var/test-artifacts/agent_page/ (gitignored; CI uploads them).
"""

from typing import Any

import pytest
from conftest import screenshot
from sqlmodel import Session, select
from test_widget import send, sign_in, wait_online

from bot.llm.scripted import ScriptedBackend
from commerce.models import Order, SuggestedReply
from shopdesk.settings import Settings
from shopdesk.staff import create_staff

pytestmark = pytest.mark.slow
AARAV, PENDING = "aarav_anderson_8794", "#W9300146"
PASSWORD = "correct horse battery"
WAIT = 30_000


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def live_settings(store_db, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    with Session(store_db) as db:
        create_staff(db, "alex", "Alex", "agent", PASSWORD)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=tmp_path,
        llm_backend="scripted",
        database_url=str(store_db.url),
        llm_answer_style="facts",
    )


@pytest.fixture(scope="module")
def policy_retriever() -> Any:
    from retrieval.knowledge import policy_documents
    from retrieval.search import Retriever

    return Retriever.from_documents(policy_documents()[0])


@pytest.fixture
def live_app_setup(policy_retriever: Any) -> Any:
    """Suggestions cite the store's policy pages without building the full store index."""

    def setup(app: Any) -> None:
        app.state.agent.retriever = lambda: policy_retriever

    return setup


@pytest.fixture
def shopper(browser) -> Any:  # type: ignore[no-untyped-def]
    """The shopper's own browser context (a second person, not a second tab of the agent)."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    context.close()
    assert not pg.errors, pg.errors


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    screenshot(page, "agent_page", name)


def order_status(store_db, order_id: str) -> str:  # type: ignore[no-untyped-def]
    with Session(store_db) as db:
        return db.get(Order, order_id).status  # type: ignore[union-attr]


def sign_in_agent(page, base: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(base + "/agent")
    page.fill("#login-user", "alex")
    page.fill("#login-pass", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#app:not([hidden])", timeout=WAIT)
    page.wait_for_selector("#conn[data-state=online]", timeout=WAIT)


def test_an_agent_takes_over_answers_with_suggestions_runs_a_cancel_and_hands_back(
    page, shopper, live_server, backend, store_db
):
    agent = page
    sign_in_agent(agent, live_server)
    assert agent.inner_text("#whoami").startswith("Signed in as Alex")

    # The shopper asks for a person: the widget says so, the console's queue shows it live.
    sign_in(shopper, live_server, AARAV)
    backend.push({"action": "handoff", "reason": "shopper asked for a person"})
    send(shopper, "I want to talk to a person")
    shopper.wait_for_selector(".sd-banner:not([hidden])", timeout=WAIT)
    assert shopper.inner_text(".sd-banner") == "Waiting for an agent…"
    shot(shopper, "shopper-waiting")
    row = agent.wait_for_selector("#queue li[data-state=waiting]", timeout=WAIT)
    assert "Aarav" in row.inner_text() and row.query_selector(".mood") is not None
    waited = agent.inner_text("#queue li[data-state=waiting] .wait")
    agent.wait_for_function(
        "w => document.querySelector('#queue li[data-state=waiting] .wait').textContent !== w",
        arg=waited,
        timeout=5_000,
    )  # the waiting time ticks
    shot(agent, "agent-queue")

    # The agent opens it (keyboard), sees the transcript with the bot's tool call, and takes over.
    agent.focus("#queue li[data-state=waiting] button")
    agent.keyboard.press("Enter")
    agent.wait_for_selector("#transcript .msg-user", timeout=WAIT)
    assert "I want to talk to a person" in agent.inner_text("#transcript .msg-user")
    assert agent.locator("#transcript .tool summary:has-text('handoff')").count() == 1
    assert agent.get_attribute("#transcript", "aria-live") == "polite"
    agent.click("#btn-take")
    agent.wait_for_selector("#conv-state.st-agent", timeout=WAIT)
    shopper.wait_for_function(
        "document.querySelector('.sd-banner').textContent === 'Alex joined the conversation'", timeout=WAIT
    )
    shot(shopper, "shopper-agent-joined")
    # Take-over drafts suggestions for the last message; wait for them before scripting the next draft.
    agent.wait_for_selector("#suggestions li", timeout=WAIT)

    # The shopper's next message appears live; the model's draft streams, then the suggestions.
    backend.delay_s = 0.05
    backend.push(f"I can help with cancelling order {PENDING}.")
    send(shopper, f"please cancel my order {PENDING}, I don't need it anymore")
    agent.wait_for_selector(f"#transcript .msg-user:has-text('{PENDING}')", timeout=WAIT)
    agent.wait_for_selector("#draft:not([hidden])", timeout=WAIT)
    shot(agent, "agent-draft-streaming")
    agent.wait_for_selector("#suggestions li .propose", timeout=WAIT)
    assert 1 <= agent.locator("#suggestions li").count() <= 3
    assert agent.locator("#draft").is_hidden()
    cited = agent.locator("#suggestions li:has(.cites a)").first
    assert cited.locator(".cites a").first.get_attribute("href").startswith("/policies/")
    shot(agent, "agent-suggestions")

    # Accept a suggestion: Use fills the reply box, Enter sends it; the shopper sees it with Alex's name.
    text = cited.locator(".text").inner_text()
    cited.locator("button.use").click()
    assert agent.input_value("#reply") == text
    assert agent.evaluate("document.activeElement.id") == "reply"
    agent.keyboard.press("Enter")
    shopper.wait_for_selector(".sd-agent", timeout=WAIT)
    assert shopper.inner_text(".sd-agent .sd-who").startswith("Alex")
    assert shopper.inner_text(".sd-agent .sd-bubble").strip() == text.strip()
    with Session(store_db) as db:
        assert "accepted" in db.exec(select(SuggestedReply.status)).all()
    shot(shopper, "shopper-agent-reply")

    # The proposed cancel: the first click only shows what would happen; Confirm runs it.
    agent.click("#suggestions .propose")
    agent.wait_for_selector("#suggestions .action .summary:not(:empty)", timeout=WAIT)
    assert PENDING in agent.inner_text("#suggestions .action .summary")
    assert order_status(store_db, PENDING) == "pending"
    shot(agent, "agent-action-proposed")
    agent.click("#suggestions .action .confirm")
    agent.wait_for_selector("#suggestions .action.done", timeout=WAIT)
    assert order_status(store_db, PENDING) == "cancelled"
    shopper.wait_for_selector(".sd-agent .sd-card-order .sd-badge.sd-cancelled", timeout=WAIT)
    agent.wait_for_selector("#transcript .msg-agent .card-order", timeout=WAIT)
    shot(agent, "agent-action-done")
    shot(shopper, "shopper-cancelled")

    # A reconnect and a reload show each agent message once, with the agent's name.
    shopper.evaluate("ShopDesk.widget.ws.close()")
    wait_online(shopper)
    shopper.wait_for_timeout(300)
    assert shopper.locator(".sd-agent").count() == 2
    shopper.reload()
    wait_online(shopper)
    shopper.wait_for_selector(".sd-agent >> nth=1", timeout=WAIT)
    assert shopper.locator(".sd-agent").count() == 2
    assert shopper.eval_on_selector_all(".sd-agent .sd-who", "ns => ns.map(n => n.textContent)") == [
        "Alex: ",
        "Alex: ",
    ]
    assert shopper.inner_text(".sd-banner") == "Alex joined the conversation"  # restored from `ready`

    # Hand back: the shopper is with the bot again, and the bot answers.
    agent.click("#btn-handback")
    agent.wait_for_selector("#conv-state.st-bot", timeout=WAIT)
    shopper.wait_for_selector(".sd-banner[hidden]", state="attached", timeout=WAIT)
    shopper.wait_for_selector(".sd-system:has-text('assistant again')", timeout=WAIT)
    backend.delay_s = 0.0
    backend.push({"action": "list_orders"})
    send(shopper, "what did I order?")
    shopper.wait_for_selector(".sd-bot .sd-card-orders", timeout=WAIT)
    shot(shopper, "shopper-back-with-bot")
    agent.wait_for_selector("#transcript .msg-assistant:has-text('order')", timeout=WAIT)
    assert agent.is_disabled("#reply")
    shot(agent, "agent-handed-back")


def test_sign_in_errors_reconnect_close_with_tags_and_html_stays_text(
    page, shopper, live_server, backend, store_db
):
    agent = page
    # The console's socket goes through the test, which can cut it and refuse reconnects (offline).
    net = {"offline": False, "page_sides": []}

    def route(ws) -> None:  # type: ignore[no-untyped-def]
        if net["offline"]:
            ws.close()
            return
        ws.connect_to_server()
        net["page_sides"].append(ws)

    agent.route_web_socket("**/ws/agent*", route)
    agent.goto(live_server + "/agent")
    agent.fill("#login-user", "alex")
    agent.fill("#login-pass", "wrong password!")
    agent.click("#login-submit")
    agent.wait_for_selector("#login-error:has-text('wrong username or password')", timeout=WAIT)
    sign_in_agent(agent, live_server)

    evil = "<img src=x onerror=\"document.title='pwned'\"> I want a person"
    sign_in(shopper, live_server, AARAV)
    backend.push({"action": "handoff", "reason": "shopper asked for a person"})
    send(shopper, evil)
    agent.click("#queue li[data-state=waiting] button", timeout=WAIT)
    agent.wait_for_selector("#transcript .msg-user", timeout=WAIT)
    assert agent.inner_text("#transcript .msg-user .text") == evil
    assert agent.locator("#transcript img").count() == 0 and agent.title() != "pwned"

    # The socket drops; a message the shopper writes meanwhile is there after the reconnect (reloaded).
    net["offline"] = True
    net["page_sides"][-1].close()
    agent.wait_for_selector("#conn[data-state=offline]", timeout=WAIT)
    send(shopper, "hello? anyone there?")
    shopper.wait_for_selector(".sd-user[data-id] >> nth=1", timeout=WAIT)
    agent.wait_for_timeout(700)  # at least one refused reconnect
    assert agent.locator("#transcript .msg-user:has-text('anyone there')").count() == 0
    shot(agent, "agent-offline")
    net["offline"] = False
    agent.wait_for_selector("#conn[data-state=online]", timeout=WAIT)
    agent.wait_for_selector("#transcript .msg-user:has-text('anyone there')", timeout=WAIT)

    # The token is kept for the tab: a reload stays signed in and reconnects.
    agent.reload()
    agent.wait_for_selector("#conn[data-state=online]", timeout=WAIT)
    agent.click("#queue li[data-state=waiting] button")
    agent.click("#btn-take")
    agent.wait_for_selector("#conv-state.st-agent", timeout=WAIT)
    agent.click("#btn-close")
    agent.fill("#close-tags", "Escalation, handoff")
    agent.fill("#close-note", "asked for a person")
    agent.click("#close-form button[type=submit]")
    agent.wait_for_selector("#conv-state.st-closed", timeout=WAIT)
    assert agent.eval_on_selector_all("#conv-tags .tag", "ns => ns.map(n => n.textContent)") == [
        "escalation",
        "handoff",
    ]
    shopper.wait_for_selector(".sd-system:has-text('closed')", timeout=WAIT)
    shot(agent, "agent-closed")
