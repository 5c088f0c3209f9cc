"""The demo page in headless Chromium, against a real server on the embedded model."""

import pytest
from sqlmodel import Session, select

from commerce.models import Order, Shipment
from shopdesk.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture
def live_settings(store_db) -> Settings:  # type: ignore[no-untyped-def]
    """The embedded model (SmolLM2 through transformers), not the scripted one."""
    return Settings(llm_backend="local", database_url=str(store_db.url))


@pytest.fixture
def backend() -> None:
    """No test backend: `live_server` builds the one the settings name."""
    return None


def test_signed_in_customer_sees_status_streamed_with_an_order_card(page, live_server, store_db):
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
    page.wait_for_function("document.getElementById('status').textContent.includes('Connected (customer)')")
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
