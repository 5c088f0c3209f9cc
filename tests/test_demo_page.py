"""The demo page in headless Chromium, against a real server on the embedded model."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from sqlmodel import Session, select

from commerce.models import Order, Shipment
from server import create_app
from shopdesk.settings import Settings

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def live_server(store_db) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(llm_backend="local", database_url=str(store_db.url))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_signed_in_customer_sees_status_streamed_with_an_order_card(live_server, store_db):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        tokens: list[str] = []
        page.on(
            "websocket",
            lambda ws: ws.on(
                "framereceived", lambda payload: tokens.append(payload) if '"token"' in payload else None
            ),
        )
        page.goto(live_server + "/static/demo.html")  # the first demo page; / is the storefront
        # The page opens a guest conversation at once (the shopper may ask before signing in).
        page.wait_for_function("document.getElementById('status').textContent.includes('Connected (guest)')")
        page.wait_for_selector("#customer option:nth-child(2)", state="attached")
        customer_id = page.eval_on_selector("#customer option:nth-child(2)", "o => o.value")
        page.select_option("#customer", customer_id)
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('Connected (customer)')"
        )
        with Session(store_db) as db:
            order = db.exec(
                select(Order).where(Order.customer_id == customer_id, Order.status == "processed")
            ).first()
            assert order is not None
            tracking = db.exec(select(Shipment.tracking_id).where(Shipment.order_id == order.id)).first()
        page.click(f"#hints button:has-text('{order.id}')")  # fills "Where is my order #W...?"
        page.click("#composer button")
        card = page.wait_for_selector(".card", timeout=120_000)
        assert order.id in card.inner_text() and str(tracking) in card.inner_text()
        assert "processed" in card.inner_text()
        page.wait_for_function(
            "[...document.querySelectorAll('.msg.bot .text')].some(n => n.textContent.includes('is processed'))",
            timeout=120_000,
        )
        assert len(tokens) > 3  # the reply arrived as a stream of token events
        # Text from the shopper is shown as text, never run as HTML.
        page.fill("#text", "<img src=x onerror=\"document.title='pwned'\">")
        page.click("#composer button")
        page.wait_for_timeout(500)
        assert page.title() != "pwned"
        assert page.locator(".msg.user .text").last.inner_text().startswith("<img")
        browser.close()
