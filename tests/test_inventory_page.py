"""The admin page's Inventory tab in headless Chromium against a real server: the reorder list, one
variant's forecast plot and restock outlook, an unknown variant. The forecasts use the cheap models
(`cheap_spec`): the page's plumbing, not the model search.

Screenshots go to var/test-artifacts/inventory_page/.
"""

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import cheap_spec, screenshot
from sqlmodel import Session, col, select

from bot.llm.scripted import ScriptedBackend
from commerce import demand
from commerce.models import Variant
from shopdesk.settings import Settings
from shopdesk.staff import create_staff

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery"
WAIT = 120_000  # the first reorder list of a store day forecasts every variant


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def live_settings(store_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(demand, "store_spec", cheap_spec)
    with Session(store_db) as db:
        create_staff(db, "root", "Root", "admin", PASSWORD)
    return Settings(llm_backend="scripted", database_url=str(store_db.url), var_dir=tmp_path, demo_mode=False)


def sold_out_variant(store_db: Any) -> str:
    with Session(store_db) as db:
        return db.exec(
            select(Variant.id).where(col(Variant.available).is_(False)).order_by(Variant.id)
        ).first()


def test_inventory_tab_shows_the_reorder_list_a_forecast_plot_and_the_restock_outlook(
    page: Any, live_server: str, store_db: Any
) -> None:
    page.goto(live_server + "/admin")
    page.fill("#login-user", "root")
    page.fill("#login-pass", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#tab-inventory", state="visible")
    page.click("#tab-inventory")
    page.wait_for_selector("#inv-reorder tbody tr[data-variant]", timeout=WAIT)
    rows = page.query_selector_all("#inv-reorder tbody tr[data-variant]")
    assert 0 < len(rows) <= 25
    status = page.inner_text("#inv-status")
    assert "to reorder as of" in status and "sales feed" not in status  # the demo's feed is current
    urgency = [float(r.query_selector("td:nth-child(10)").inner_text().split()[0]) for r in rows]
    assert urgency == sorted(urgency)

    rows[0].query_selector("button").click()
    page.wait_for_selector("#inv-detail:not([hidden])", timeout=WAIT)
    page.wait_for_function("() => document.querySelector('#inv-plot').naturalWidth > 300", timeout=WAIT)
    assert rows[0].get_attribute("data-variant") in page.inner_text("#inv-title")
    assert "backtest MASE" in page.inner_text("#inv-facts")
    screenshot(page, "inventory_page", "reorder-and-forecast")

    sold_out = sold_out_variant(store_db)  # a shopper's "when is it back?" as purchasing sees it
    page.fill("#inv-variant", sold_out)
    page.click("#inv-lookup button")
    page.wait_for_function(
        "id => document.querySelector('#inv-title').textContent.includes(id)", arg=sold_out, timeout=WAIT
    )
    outlook = page.inner_text("#inv-outlook")
    assert "is out of stock" in outlook, outlook
    screenshot(page, "inventory_page", "sold-out-outlook")

    page.fill("#inv-variant", "1234")
    page.click("#inv-lookup button")
    page.wait_for_function(
        "() => document.querySelector('#inv-status').textContent.includes('No variant 1234')"
    )
    assert page.is_hidden("#inv-detail")  # the previous variant's plot is not shown as 1234's


def test_inventory_tab_warns_when_the_sales_feed_lags(page: Any, live_server: str) -> None:
    """The list as the server sends it, but with sales recorded only through 5 days before its day."""

    sent: list[str] = []

    def lagging(route: Any) -> None:
        body = route.fetch().json()
        sent.append((date.fromisoformat(body["as_of"]) - timedelta(days=5)).isoformat())
        route.fulfill(json={**body, "sales_through": sent[-1]})

    page.goto(live_server + "/admin")
    page.fill("#login-user", "root")
    page.fill("#login-pass", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#tab-inventory", state="visible")
    page.route("**/api/inventory/reorder*", lagging)
    page.click("#tab-inventory")
    page.wait_for_selector("#inv-status.warn", timeout=WAIT)
    assert f"through {sent[0]} (4 day(s) missing): check the sales feed" in page.inner_text("#inv-status")
    page.unroute("**/api/inventory/reorder*")
    page.click("#inv-form button")
    page.wait_for_selector("#inv-status:not(.warn)", timeout=WAIT)
    page.wait_for_function(
        "() => document.querySelector('#inv-status').textContent.includes('to reorder as of')"
    )
