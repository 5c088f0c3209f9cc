"""The shopper widget on the demo storefront, in headless Chromium against a real server (scripted model).

Screenshots of each state go to var/test-artifacts/widget/ (gitignored; CI uploads them).
"""

import pytest
from conftest import screenshot
from sqlmodel import Session, select

from bot.llm.scripted import ScriptedBackend
from commerce.models import Message, Order

pytestmark = pytest.mark.slow
AARAV = "aarav_anderson_8794"  # has pending order #W9300146
JAMES = "james_li_5688"  # #W2611340 is processed, tracking 357962501027
WAIT = 30_000


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    screenshot(page, "widget", name)


def sign_in(page, base: str, customer_id: str, query: str = "") -> None:  # type: ignore[no-untyped-def]
    page.goto(base + "/" + query)
    page.wait_for_selector("#signin option:nth-child(2)", state="attached")
    page.evaluate("id => shopdeskDemo.signIn(id)", customer_id)  # the "sign in as" menu's action
    page.click(".sd-launcher")
    wait_online(page)


def wait_online(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function("document.querySelector('.sd-widget').dataset.status === 'online'", timeout=WAIT)


def send(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.fill(".sd-input", text)
    page.keyboard.press("Enter")


def bot_texts(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all(".sd-bot .sd-bubble", "ns => ns.map(n => n.textContent)")


def test_storefront_lists_products_and_product_pages(page, live_server):
    page.goto(live_server + "/")
    page.wait_for_selector(".product")
    assert page.locator(".product").count() > 5
    assert page.locator(".product .stock").first.inner_text()
    page.locator(".product a").first.click()
    page.wait_for_selector("table tbody tr")
    page.locator("button:has-text('Add to cart'):not([disabled])").first.click()
    assert page.inner_text("#cart-count") == "1"
    shot(page, "storefront-product")


def test_order_status_streams_with_an_order_card(page, live_server, backend):
    backend.delay_s = 0.02
    backend.push(
        {"action": "order_status", "order_id": "#W2611340"}, "Your order **#W2611340** is processed."
    )
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
    sign_in(page, live_server, JAMES)
    send(page, "where is my order #W2611340?")
    card = page.wait_for_selector(".sd-card-order", timeout=WAIT)
    page.wait_for_selector(".sd-bot[data-id] .sd-thumbs", timeout=WAIT)
    assert "#W2611340" in card.inner_text() and "357962501027" in card.inner_text()
    assert "processed" in card.inner_text()
    assert any("is processed" in t for t in bot_texts(page))
    assert sum('"token"' in f for f in frames) > 2  # streamed
    shot(page, "order-status")
    # Thumbs up is stored with the conversation.
    page.click(".sd-bot[data-id] .sd-up")
    page.wait_for_selector(".sd-up[aria-pressed='true']")
    # The chat ends with a 1-5 rating.
    page.click(".sd-end")
    page.click(".sd-star >> nth=3")
    page.click(".sd-rating button[type=submit]")
    page.wait_for_selector(".sd-rating-done")
    shot(page, "rating")


def test_cancel_a_pending_order_with_the_confirm_button(page, live_server, backend, store_db):
    backend.push({"action": "cancel_order", "order_id": "#W9300146", "reason": "no longer needed"})
    sign_in(page, live_server, AARAV)
    send(page, "please cancel #W9300146, I don't need it")
    page.wait_for_selector(".sd-confirm .sd-yes", timeout=WAIT)
    shot(page, "confirm")
    with Session(store_db) as db:
        assert db.get(Order, "#W9300146").status == "pending"
    assert page.evaluate("document.activeElement.className") == "sd-yes"  # focus moved to the choice
    page.keyboard.press("Enter")  # keyboard only
    page.wait_for_selector(".sd-card-order .sd-badge.sd-cancelled", timeout=WAIT)
    with Session(store_db) as db:
        assert db.get(Order, "#W9300146").status == "cancelled"
    shot(page, "cancelled")


def test_a_pending_confirm_is_redrawn_after_a_reload_and_still_works(page, live_server, backend, store_db):
    """The `confirm` event is sent once; a reload redraws its buttons from GET /api/conversation."""
    backend.push({"action": "cancel_order", "order_id": "#W9300146", "reason": "no longer needed"})
    sign_in(page, live_server, AARAV)
    send(page, "please cancel #W9300146, I don't need it")
    page.wait_for_selector(".sd-confirm .sd-yes", timeout=WAIT)
    page.reload()
    wait_online(page)
    page.wait_for_selector(".sd-confirm .sd-yes", timeout=WAIT)
    assert page.locator(".sd-confirm").count() == 1
    assert "#W9300146" in page.inner_text(".sd-confirm")
    assert page.locator(".sd-bot[data-id] .sd-confirm").count() == 1  # under the reply that proposed it
    shot(page, "confirm-reloaded")
    with Session(store_db) as db:
        assert db.get(Order, "#W9300146").status == "pending"
    page.click(".sd-confirm .sd-yes")
    page.wait_for_selector(".sd-card-order .sd-badge.sd-cancelled", timeout=WAIT)
    with Session(store_db) as db:
        assert db.get(Order, "#W9300146").status == "cancelled"
    # Nothing is pending any more: another reload draws no buttons.
    page.reload()
    wait_online(page)
    page.wait_for_selector(".sd-card-order .sd-badge.sd-cancelled", timeout=WAIT)
    page.wait_for_timeout(500)
    assert page.locator(".sd-confirm:not(.sd-answered)").count() == 0


def test_html_from_the_model_and_the_shopper_stays_text(page, live_server, backend):
    # The reply repeats the shopper's words, so the groundedness guard lets it through unchanged.
    asked = "what is <img src=x onerror=alert(1)>? <script>alert(1)</script>"
    evil = "You wrote <img src=x onerror=alert(1)> and [this](javascript:alert(1)); both stay **text**."
    backend.push({"action": "answer"}, evil)
    sign_in(page, live_server, JAMES)
    send(page, asked)
    page.wait_for_selector(".sd-bot[data-id]", timeout=WAIT)
    page.wait_for_timeout(300)
    assert page.locator(".sd-user .sd-bubble").last.inner_text() == asked
    reply = page.locator(".sd-bot .sd-bubble").last.inner_text()
    assert "<img src=x onerror=alert(1)>" in reply
    assert page.inner_text(".sd-bot .sd-bubble strong") == "text"  # Markdown, built as DOM nodes
    assert page.locator(".sd-widget img").count() == 0
    assert page.locator(".sd-widget script").count() == 0
    assert page.locator(".sd-widget a[href^='javascript']").count() == 0
    assert page.dialogs == []
    shot(page, "xss-as-text")


def test_a_replaced_draft_is_swapped_for_the_checked_text(page, live_server, backend):
    """The draft streams, the groundedness guard rejects its made-up price: `message` replaces it."""
    backend.delay_s = 0.02
    backend.push(
        {"action": "answer"}, "Good news: you get a refund of $987.65 today.", "I can check your orders."
    )
    sign_in(page, live_server, JAMES)
    send(page, "hello, how are you today?")
    page.wait_for_selector(".sd-bot.sd-replaced[data-id]", timeout=WAIT)
    bubble = page.inner_text(".sd-bot.sd-replaced .sd-bubble")
    assert "987.65" not in bubble and "I can check your orders." in bubble
    assert page.locator(".sd-bot:not(.sd-greeting)").count() == 1
    shot(page, "replaced")


def test_network_drop_mid_stream_resumes_without_loss_or_duplicates(page, live_server, backend, store_db):
    """The first socket goes through a proxy in the test: it is cut mid-stream on the page's side while the
    server finishes the reply; reconnects are refused for a while (offline), a message typed meanwhile is
    queued; then the network is back: the missed reply is fetched and the queued message sent once."""
    state = {"n": 0, "offline": False, "page_side": None}

    def handler(ws) -> None:  # type: ignore[no-untyped-def]
        state["n"] += 1
        if state["offline"]:
            ws.close()
            return
        server = ws.connect_to_server()
        if state["n"] == 1:
            state["page_side"] = ws
            ws.on_close(lambda code, reason: None)  # the server side stays up: it finishes the turn
            server.on_close(lambda code, reason: None)

    page.route_web_socket("**/ws/chat*", handler)
    backend.delay_s = 0.03
    long_reply = "Sure, " + "more words " * 60 + "THE END"
    backend.push({"action": "answer"}, long_reply, {"action": "answer"}, "Yes, I am still here: SECOND")
    sign_in(page, live_server, JAMES)
    send(page, "hello, how are you today?")
    page.wait_for_function(
        "[...document.querySelectorAll('.sd-bot .sd-bubble')].some(n => n.textContent.includes('words more words more'))",
        timeout=WAIT,
    )
    state["offline"] = True
    state["page_side"].close()  # the network drops mid-stream
    page.wait_for_function("document.querySelector('.sd-widget').dataset.status === 'offline'", timeout=WAIT)
    send(page, "hello again, are you still there?")
    page.wait_for_selector(".sd-user.sd-pending", timeout=WAIT)
    shot(page, "offline-queued")
    page.wait_for_timeout(800)  # at least one refused reconnect
    state["offline"] = False
    page.wait_for_function(
        "[...document.querySelectorAll('.sd-bot .sd-bubble')].some(n => n.textContent.includes('SECOND'))",
        timeout=WAIT,
    )
    # The first reply was finished and stored by the server during the drop: the widget fetches it.
    page.wait_for_function(
        "[...document.querySelectorAll('.sd-bot[data-id] .sd-bubble')].some(n => n.textContent.includes('THE END'))",
        timeout=WAIT,
    )
    page.wait_for_timeout(500)
    texts = bot_texts(page)
    assert sum("THE END" in t for t in texts) == 1, texts  # the reply missed in the drop
    assert sum("SECOND" in t for t in texts) == 1, texts
    assert long_reply.strip() in [t.strip() for t in texts]
    users = page.eval_on_selector_all(".sd-user .sd-bubble", "ns => ns.map(n => n.textContent)")
    assert users == ["hello, how are you today?", "hello again, are you still there?"]
    ids = page.eval_on_selector_all(".sd-msg[data-id]", "ns => ns.map(n => n.dataset.id)")
    assert len(ids) == len(set(ids)) == 4
    assert page.locator(".sd-pending").count() == 0
    # A reload shows the same conversation, in the server's order.
    page.reload()
    page.wait_for_selector(".sd-bot[data-id] >> nth=1", timeout=WAIT)
    assert page.eval_on_selector_all(".sd-msg[data-id]", "ns => ns.map(n => n.dataset.id)") == sorted(
        ids, key=int
    )
    with Session(store_db) as db:
        stored = db.exec(select(Message.content).where(Message.role == "user")).all()
    assert stored.count("hello again, are you still there?") == 1  # sent once
    shot(page, "resumed")


def test_reload_restores_history(page, live_server, backend):
    backend.push({"action": "order_status", "order_id": "#W2611340"}, "Your order #W2611340 is processed.")
    sign_in(page, live_server, JAMES)
    send(page, "where is #W2611340?")
    page.wait_for_selector(".sd-bot[data-id]", timeout=WAIT)
    before = page.eval_on_selector_all(".sd-msg[data-id]", "ns => ns.map(n => n.dataset.id + n.textContent)")
    page.reload()
    wait_online(page)
    page.wait_for_selector(".sd-card-order", timeout=WAIT)
    after = page.eval_on_selector_all(".sd-msg[data-id]", "ns => ns.map(n => n.dataset.id + n.textContent)")
    assert [a.split(":", 1)[0] for a in after] == [b.split(":", 1)[0] for b in before]
    assert len(after) == len(before) == 2
    assert page.input_value("#signin") == JAMES
    shot(page, "reloaded")


def test_chinese_ui_strings(page, live_server, backend):
    page.goto(live_server + "/?lang=zh")
    assert page.inner_text(".sd-launcher").strip().endswith("在线客服")
    page.click(".sd-launcher")
    wait_online(page)
    assert page.get_attribute(".sd-input", "placeholder") == "请输入消息…"
    assert page.inner_text(".sd-send") == "发送" and page.inner_text(".sd-head h2") == "客户服务"
    shot(page, "zh")


def test_narrow_screen_is_full_screen(browser, live_server):
    context = browser.new_context(viewport={"width": 375, "height": 700})
    page = context.new_page()
    page.goto(live_server + "/")
    page.keyboard.press("Tab")  # keyboard reaches the launcher
    page.click(".sd-launcher")
    box = page.locator(".sd-panel").bounding_box()
    assert box is not None and box["width"] == 375 and box["height"] == 700
    assert page.evaluate("document.activeElement.className") == "sd-input"
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.className") == "sd-launcher"
    shot(page, "narrow")
    context.close()
