"""The orders REST (api/orders.py): the platform's door to the same order services the bot runs, the
store's clock its rules read, and the exchange's hold on the replacement's stock."""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from bot.llm.scripted import ScriptedBackend
from commerce import orders
from commerce.models import AddressChange, Order, OrderExchange, OrderItem, Payment, Variant
from commerce.seed import seed_store
from server import create_app
from shopdesk.db import make_engine, migrate
from shopdesk.settings import Settings

KEY = {"X-API-Key": "orders-key"}
KEYBOARD = "#W3181060"  # evelyn_lee_1924, delivered 2026-11-05: a Mechanical Keyboard, item 9025753381
OLD_KEYBOARD = "9025753381"
LINEAR = "1151293680"  # the same keyboard, linear switches: $272.33, 14 in stock (+$40.75, PayPal)
CLICKY_WHITE_80 = "4843487907"  # not available
OTHER_KEYBOARD = ("#W5490111", "1421289881")  # mia_garcia_4516, delivered this month: another keyboard
PENDING = "#W9300146"  # aarav_anderson_8794, pending, ships to 931 Maple Drive, PA 19031
OLD_DELIVERY = "#W4435622"  # delivered more than 30 days before the store's today


@pytest.fixture
def settings(store_db: Engine, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        llm_backend="scripted",
        database_url=str(store_db.url),
        var_dir=tmp_path,
        demo_mode=False,
        orders_api_key=SecretStr("orders-key"),
        forecast_warm_on_start=False,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, backend=ScriptedBackend())) as c:
        yield c


def stock(engine: Engine, variant_id: str) -> tuple[int, bool]:
    with Session(engine) as db:
        v = db.get(Variant, variant_id)
        assert v is not None
        return v.stock_on_hand, v.available


def set_stock(engine: Engine, variant_id: str, units: int, available: bool) -> None:
    with Session(engine) as db:
        v = db.get(Variant, variant_id)
        assert v is not None
        v.stock_on_hand, v.available = units, available
        db.add(v)
        db.commit()


def item_row(db: Session, order_id: str, variant_id: str) -> int:
    row = db.exec(
        select(OrderItem).where(OrderItem.order_id == order_id, OrderItem.variant_id == variant_id)
    ).first()
    assert row is not None and row.id is not None
    return row.id


# ---- who may call ----------------------------------------------------------------------------------


def test_only_services_with_the_key_are_answered(client: TestClient, settings: Settings) -> None:
    url = "/api/orders/W3181060"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
    assert (
        client.post("/api/orders/W9300146/cancel", json={"reason": "ordered by mistake"}).status_code == 401
    )
    assert client.get(url, headers=KEY).status_code == 200
    unkeyed = settings.model_copy(update={"orders_api_key": None})
    with TestClient(create_app(unkeyed, backend=ScriptedBackend())) as c:
        refused = c.get(url)
        assert refused.status_code == 403 and "SHOPDESK_ORDERS_API_KEY" in refused.json()["detail"]


# ---- reading ---------------------------------------------------------------------------------------


def test_an_order_reads_by_any_spelling_of_its_id(client: TestClient) -> None:
    views = [client.get(f"/api/orders/{oid}", headers=KEY) for oid in ("%23W3181060", "W3181060", "3181060")]
    assert all(r.status_code == 200 for r in views)
    view = views[0].json()
    assert all(r.json() == view for r in views)
    assert (
        view["id"] == KEYBOARD and view["status"] == "delivered" and view["customer_id"] == "evelyn_lee_1924"
    )
    assert view["items"][0]["item_id"] == OLD_KEYBOARD and view["shipments"][0]["delivered_at"]
    assert "ship_address1" not in view and "payment" not in str(view)


@pytest.mark.parametrize("oid", ["W0000000", "nope", "%23W12345678"])
def test_an_unknown_order_is_a_404_naming_it(client: TestClient, oid: str) -> None:
    r = client.get(f"/api/orders/{oid}", headers=KEY)
    assert r.status_code == 404 and r.json()["detail"].startswith("unknown order '")


def test_a_customers_orders_newest_first(client: TestClient, store_db: Engine) -> None:
    r = client.get("/api/customers/evelyn_lee_1924/orders", headers=KEY)
    assert r.status_code == 200
    body = r.json()
    with Session(store_db) as db:
        expected = [o.id for o in orders.list_orders(db, "evelyn_lee_1924")]
    assert [o["id"] for o in body["orders"]] == expected and body["count"] == len(expected) >= 1
    assert client.get("/api/customers/nobody_0000/orders", headers=KEY).status_code == 404


# ---- writes ----------------------------------------------------------------------------------------


def test_a_pending_order_is_cancelled_once_and_refunded_once(client: TestClient, store_db: Engine) -> None:
    assert (
        client.post(f"/api/orders/{PENDING[1:]}/cancel", json={"reason": "bored"}, headers=KEY).status_code
        == 422
    )
    assert client.get(f"/api/orders/{PENDING[1:]}", headers=KEY).json()["status"] == "pending"
    r = client.post(f"/api/orders/{PENDING[1:]}/cancel", json={"reason": "ordered by mistake"}, headers=KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["order"]["status"] == "cancelled" and body["order"]["cancel_reason"] == "ordered by mistake"
    assert round(sum(x["amount"] for x in body["refunds"]), 2) == body["order"]["total"]
    again = client.post(
        f"/api/orders/{PENDING[1:]}/cancel", json={"reason": "ordered by mistake"}, headers=KEY
    )
    assert again.status_code == 409 and "this order is cancelled" in again.json()["detail"]
    with Session(store_db) as db:
        refunds = db.exec(select(Payment).where(Payment.order_id == PENDING, Payment.kind == "refund")).all()
    assert len(refunds) == len(body["refunds"])
    shipped = client.post(
        f"/api/orders/{KEYBOARD[1:]}/cancel", json={"reason": "no longer needed"}, headers=KEY
    )
    assert shipped.status_code == 409 and "delivered" in shipped.json()["detail"]


def test_returns_follow_the_window(client: TestClient) -> None:
    late = client.post(f"/api/orders/{OLD_DELIVERY[1:]}/return", headers=KEY)
    assert late.status_code == 409 and "more than 30 days ago" in late.json()["detail"]
    r = client.post(f"/api/orders/{KEYBOARD[1:]}/return", headers=KEY)
    assert r.status_code == 200 and r.json()["order"]["status"] == "return requested"
    assert client.post(f"/api/orders/{KEYBOARD[1:]}/return", headers=KEY).status_code == 409


def test_the_windows_run_on_the_store_clock(settings: Settings) -> None:
    """A fixed store day is the rules' today however late the tests run; a later day closes the window."""
    assert settings.store_now() == datetime(2026, 11, 20, 12, tzinfo=UTC)
    live = settings.model_copy(update={"store_today": "live"})
    assert abs((live.store_now() - datetime.now(UTC)).total_seconds()) < 5
    later = settings.model_copy(update={"store_today": "2026-12-30"})
    with TestClient(create_app(later, backend=ScriptedBackend())) as c:
        late = c.post(f"/api/orders/{KEYBOARD[1:]}/return", headers=KEY)
        assert late.status_code == 409 and "more than 30 days ago" in late.json()["detail"]
        quote = c.post(
            f"/api/orders/{KEYBOARD[1:]}/exchange/quote",
            json={"items": [{"item_id": OLD_KEYBOARD, "new_item_id": LINEAR}]},
            headers=KEY,
        )
        assert quote.status_code == 409


def test_an_exchange_is_quoted_then_takes_its_unit(client: TestClient, store_db: Engine) -> None:
    body = {"items": [{"item_id": OLD_KEYBOARD, "new_item_id": LINEAR}]}
    before = stock(store_db, LINEAR)
    quote = client.post(f"/api/orders/{KEYBOARD[1:]}/exchange/quote", json=body, headers=KEY)
    assert quote.status_code == 200, quote.text
    q = quote.json()["exchange"]
    assert (
        q["difference"] == 40.75 and q["payment_method"] == "PayPal" and q["lines"][0]["new_price"] == 272.33
    )
    assert stock(store_db, LINEAR) == before  # a quote changes nothing
    assert client.get(f"/api/orders/{KEYBOARD[1:]}", headers=KEY).json()["status"] == "delivered"
    done = client.post(f"/api/orders/{KEYBOARD[1:]}/exchange", json=body, headers=KEY)
    assert done.status_code == 200, done.text
    assert done.json()["order"]["status"] == "exchange requested" and done.json()["exchange"] == q
    assert stock(store_db, LINEAR) == (before[0] - 1, True)
    with Session(store_db) as db:
        row = db.exec(select(OrderExchange).where(OrderExchange.order_id == KEYBOARD)).one()
    assert (row.new_variant_id, row.channel, row.price_difference) == (LINEAR, "api", 40.75)
    assert client.post(f"/api/orders/{KEYBOARD[1:]}/exchange", json=body, headers=KEY).status_code == 409


@pytest.mark.parametrize(
    ("items", "code", "detail"),
    [
        ([{"item_id": "1111111111", "new_item_id": LINEAR}], 422, "holds no"),
        ([{"item_id": OLD_KEYBOARD, "new_item_id": LINEAR}] * 2, 422, "holds no"),  # one keyboard, not two
        ([{"item_id": OLD_KEYBOARD, "new_item_id": CLICKY_WHITE_80}], 409, "is not available"),
        ([{"item_id": OLD_KEYBOARD, "new_item_id": "1646531091"}], 409, "another version"),  # earbuds
        ([{"item_id": OLD_KEYBOARD, "new_item_id": "12"}], 422, None),
        ([], 422, None),
    ],
)
def test_a_bad_exchange_is_refused_and_changes_nothing(
    client: TestClient, store_db: Engine, items: list[dict[str, str]], code: int, detail: str | None
) -> None:
    r = client.post(f"/api/orders/{KEYBOARD[1:]}/exchange", json={"items": items}, headers=KEY)
    assert r.status_code == code, r.text
    if detail:
        assert detail in r.json()["detail"]
    with Session(store_db) as db:
        assert db.get(Order, KEYBOARD).status == "delivered"  # type: ignore[union-attr]
        assert db.exec(select(func.count()).select_from(OrderExchange)).one() == 0


def test_the_last_unit_goes_out_of_stock_with_the_exchange(store_db: Engine) -> None:
    set_stock(store_db, LINEAR, 1, True)
    with Session(store_db) as db:
        orders.request_exchange(
            db, KEYBOARD, {item_row(db, KEYBOARD, OLD_KEYBOARD): LINEAR}, now=Settings().store_now()
        )
        db.commit()
    assert stock(store_db, LINEAR) == (0, False)
    other, other_item = OTHER_KEYBOARD
    with Session(store_db) as db, pytest.raises(orders.OrderNotExchangeable, match="not available"):
        orders.request_exchange(
            db, other, {item_row(db, other, other_item): LINEAR}, now=Settings().store_now()
        )


def test_an_exchange_that_lost_the_race_writes_nothing(store_db: Engine) -> None:
    """The flag still said available (another exchange took the unit after this one read it): the
    stock update finds nothing to take, and neither the swap nor the status is written."""
    set_stock(store_db, LINEAR, 0, True)
    with Session(store_db) as db:
        with pytest.raises(orders.OrderNotExchangeable, match="has just sold out"):
            orders.request_exchange(
                db, KEYBOARD, {item_row(db, KEYBOARD, OLD_KEYBOARD): LINEAR}, now=Settings().store_now()
            )
        db.commit()  # what the bot's session does after a refusal
    with Session(store_db) as db:
        assert db.get(Order, KEYBOARD).status == "delivered"  # type: ignore[union-attr]
        assert db.exec(select(OrderExchange).where(OrderExchange.order_id == KEYBOARD)).first() is None
    assert stock(store_db, LINEAR) == (0, True)


def test_an_address_change_is_validated_kept_and_not_logged(
    client: TestClient, store_db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {"address1": "Maple Drive", "city": "Fort Worth", "state": "Texas", "zip": "7616"}
    r = client.put(f"/api/orders/{PENDING[1:]}/address", json=bad, headers=KEY)
    assert r.status_code == 422 and set(r.json()["detail"]["invalid_fields"]) == {"street", "zip"}
    same = {"address1": "931 Maple Drive", "city": "x", "state": "PA", "zip": "19031"}
    with Session(store_db) as db:
        order = db.get(Order, PENDING)
        assert order is not None
        same |= {"city": order.ship_city, "address2": order.ship_address2}
    assert client.put(f"/api/orders/{PENDING[1:]}/address", json=same, headers=KEY).status_code == 409
    new = {
        "address1": "445 Maple Drive",
        "address2": "Suite 394",
        "city": "Fort Worth",
        "state": "tx",
        "zip": "76165",
    }
    with caplog.at_level(logging.DEBUG):
        r = client.put(f"/api/orders/{PENDING[1:]}/address", json=new, headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json()["shipping_address"] == {**new, "state": "TX", "country": "USA"}
    assert "Maple" not in caplog.text and "76165" not in caplog.text
    with Session(store_db) as db:
        change = db.exec(select(AddressChange).where(AddressChange.order_id == PENDING)).one()
        assert (change.channel, change.zip, db.get(Order, PENDING).ship_zip) == ("api", "76165", "76165")  # type: ignore[union-attr]
    delivered = client.put(f"/api/orders/{KEYBOARD[1:]}/address", json=new, headers=KEY)
    assert delivered.status_code == 409 and "pending" in delivered.json()["detail"]


# ---- two exchanges racing for the last unit, for real (PostgreSQL row locks) ----------------------


@pytest.mark.postgres
def test_two_exchanges_racing_for_the_last_unit_one_wins(
    pg_schema_url: Callable[[], str], store_settings: Settings
) -> None:
    engine = make_engine(pg_schema_url())
    try:
        migrate(engine)
        seed_store(engine, store_settings)
        set_stock(engine, LINEAR, 1, True)
        now = store_settings.store_now()
        start = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def exchange(order_id: str, item: str) -> None:
            with Session(engine) as db:
                row = item_row(db, order_id, item)
                start.wait()
                try:
                    orders.request_exchange(db, order_id, {row: LINEAR}, now=now)
                    time.sleep(0.3)  # hold the row lock: the other one must wait for this commit
                    db.commit()
                    outcomes[order_id] = "exchanged"
                except orders.OrderNotExchangeable as exc:
                    db.rollback()
                    outcomes[order_id] = exc.why

        threads = [
            threading.Thread(target=exchange, args=pair)
            for pair in ((KEYBOARD, OLD_KEYBOARD), OTHER_KEYBOARD)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes.values())[0] == "exchanged", outcomes
        assert "sold out" in sorted(outcomes.values())[1] or "not available" in sorted(outcomes.values())[1]
        assert stock(engine, LINEAR) == (0, False)
        with Session(engine) as db:
            swaps = db.exec(select(OrderExchange).where(col(OrderExchange.new_variant_id) == LINEAR)).all()
        assert len(swaps) == 1
    finally:
        engine.dispose()
