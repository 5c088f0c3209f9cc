"""The store: migrations, deterministic seeding (SQLite == PostgreSQL), generated-data consistency,
and the customer/order services (cancellation with refunds)."""

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from commerce import customers, orders
from commerce.fraud_history import add_fraud_history
from commerce.models import (
    Address,
    Conversation,
    Customer,
    DailySales,
    Order,
    OrderItem,
    Payment,
    PaymentMethod,
    Product,
    Shipment,
    ShipmentEvent,
    Variant,
)
from commerce.seed import (
    HISTORY_DAYS,
    SeedReport,
    StoreNotEmpty,
    generate_store,
    load_seed_file,
    seed_store,
    store_fingerprint,
)
from shopdesk.db import make_engine, migrate
from shopdesk.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
JAMES_ORDER = "#W2611340"  # james_li_5688, processed, tau2 tracking id 357962501027
JAMES_TRACKING = "357962501027"


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def tau2(store_settings: Settings) -> dict:
    return load_seed_file(store_settings)


@pytest.fixture
def db(seeded_engine: Engine) -> Iterator[Session]:
    """Read-only session on the shared seeded store."""
    with Session(seeded_engine) as session:
        yield session
        session.rollback()


# ---- migrations -------------------------------------------------------------------------------------


def assert_schema_is_head(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= names, set(SQLModel.metadata.tables) - names
    assert "alembic_version" in names
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == [], f"models and migrations disagree (add a revision): {diff}"


def test_migrations_create_all_tables_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the script location must not depend on the working directory
    url = f"sqlite:///{tmp_path / 'new' / 'store.db'}"
    migrate(url)
    migrate(url)  # idempotent at head
    engine = make_engine(url)
    try:
        assert_schema_is_head(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_migrations_create_all_tables_postgres(pg_schema_url) -> None:  # type: ignore[no-untyped-def]
    url = pg_schema_url()
    migrate(url)
    engine = make_engine(url)
    try:
        assert_schema_is_head(engine)
        with engine.connect() as conn:
            kind = conn.exec_driver_sql(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = 'orders' AND column_name = 'created_at'"
            ).scalar_one()
        assert kind == "timestamp with time zone"
    finally:
        engine.dispose()


# ---- seeding ----------------------------------------------------------------------------------------


def test_seed_report_counts_the_tau2_store(
    seed_report: SeedReport, tau2: dict, store_settings: Settings
) -> None:
    # The labelled fraud history (commerce/fraud_history.py) only adds rows: the rest is tau2's.
    rows = generate_store(tau2, store_settings.seed, store_settings.store_day())
    added = add_fraud_history(rows, store_settings.seed, store_settings.store_day())
    c = {table: n - added.get(table, 0) for table, n in seed_report.counts.items()}
    assert c["addresschange"] == c["fraudlabel"] == 0 and added["fraudlabel"] > 0
    assert c["customer"] == c["address"] == len(tau2["users"]) == 500
    assert c["paymentmethod"] == sum(len(u["payment_methods"]) for u in tau2["users"].values())
    assert c["product"] == 50 and c["variant"] == 591
    assert c["orders"] == 1000
    assert c["orderitem"] == sum(len(o["items"]) for o in tau2["orders"].values())
    assert c["shipment"] == sum(
        len(f["tracking_id"]) for o in tau2["orders"].values() for f in o["fulfillments"]
    )
    assert c["payment"] == sum(len(o["payment_history"]) for o in tau2["orders"].values())
    assert c["dailysales"] == 591 * HISTORY_DAYS
    assert len(seed_report.fingerprint) == 64
    assert seed_report.seconds < 30


def test_seeding_twice_gives_the_same_store(store_db: Engine, store_settings: Settings, seed_report) -> None:
    with Session(store_db) as s:
        s.add(  # a conversation bound to a customer must survive a reseed
            Conversation(
                id="conv-1",
                customer_id="james_li_5688",
                created_at=datetime(2026, 11, 20, tzinfo=UTC),
                updated_at=datetime(2026, 11, 20, tzinfo=UTC),
            )
        )
        orders.cancel_order(s, "#W9300146", "ordered by mistake")
        s.commit()
        assert store_fingerprint(s) != seed_report.fingerprint  # the fingerprint sees a change
    again = seed_store(store_db, store_settings)  # reset=True
    assert again.fingerprint == seed_report.fingerprint
    assert again.counts == seed_report.counts
    with Session(store_db) as s:
        assert store_fingerprint(s) == seed_report.fingerprint
        assert s.get(Order, "#W9300146").status == "pending"  # type: ignore[union-attr]
        assert s.get(Conversation, "conv-1").customer_id == "james_li_5688"  # type: ignore[union-attr]


def test_seed_without_reset_refuses_a_full_store(store_db: Engine, store_settings: Settings) -> None:
    with pytest.raises(StoreNotEmpty):
        seed_store(store_db, store_settings, reset=False)


def test_seed_needs_the_schema(tmp_path: Path, store_settings: Settings) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(RuntimeError, match="migrat"):
            seed_store(engine, store_settings)
    finally:
        engine.dispose()


_DIGEST = """
import hashlib, json, sys
from datetime import date
from commerce.seed import generate_store, load_seed_file
from shopdesk.settings import Settings
data = load_seed_file(Settings(_env_file=None))
rows = generate_store(data, int(sys.argv[1]), date.fromisoformat(sys.argv[2]))
print(hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest())
"""


def test_generation_depends_on_the_seed_only(store_settings: Settings, tau2: dict) -> None:
    seed, today = store_settings.seed, store_settings.store_today
    # No hash(), set order or clock: two interpreters with different hash seeds agree...
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DIGEST, str(seed), today],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hash_seed in ("1", "4242")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert outs[0][0].strip() == outs[1][0].strip() != ""
    # ...and the seed matters.
    a = generate_store(tau2, seed, store_settings.store_day())
    b = generate_store(tau2, seed + 1, store_settings.store_day())
    assert [o["created_at"] for o in a["orders"]] != [o["created_at"] for o in b["orders"]]
    assert [o["id"] for o in a["orders"]] == [o["id"] for o in b["orders"]]


# ---- generated data is consistent -------------------------------------------------------------------


def test_order_dates_follow_status(db: Session, store_settings: Settings) -> None:
    now = store_settings.store_now()
    start = now - timedelta(days=HISTORY_DAYS + 1)
    by_status: dict[str, list[datetime]] = defaultdict(list)
    for o in db.exec(select(Order)):
        created, updated = utc(o.created_at), utc(o.updated_at)
        assert start <= created < now, o.id
        assert created <= updated <= now, o.id
        by_status[o.status].append(created)
    mean = {k: sum(d.timestamp() for d in v) / len(v) for k, v in by_status.items()}
    assert mean["pending"] > mean["processed"] > mean["delivered"]
    assert min(by_status["pending"]) >= now - timedelta(days=7)  # pending: the last few days
    assert min(by_status["processed"]) >= now - timedelta(days=14)  # processed: recent
    assert max(by_status["delivered"]) <= now - timedelta(days=7)  # delivered: older
    cancelled = by_status["cancelled"]  # any time in the window
    assert min(cancelled) < now - timedelta(days=365) and max(cancelled) > now - timedelta(days=120)


def _events(db: Session, shipment_id: int | None) -> list[ShipmentEvent]:
    stmt = (
        select(ShipmentEvent).where(ShipmentEvent.shipment_id == shipment_id).order_by(col(ShipmentEvent.id))
    )
    return list(db.exec(stmt))


def test_shipments_tell_the_order_story(db: Session, store_settings: Settings) -> None:
    now, today = store_settings.store_now(), store_settings.store_day()
    seen = Counter()
    for o in db.exec(select(Order)):
        ships = db.exec(select(Shipment).where(Shipment.order_id == o.id)).all()
        if o.status == "pending":
            assert ships == []
            continue
        assert ships, o.id
        for s in ships:
            seen[s.carrier] += 1
            ev = _events(db, s.id)
            times = [utc(e.at) for e in ev]
            assert times == sorted(times) and len(set(times)) == len(times), s.tracking_id
            assert times[0] >= utc(o.created_at) and times[-1] <= now
            assert ev[0].status == "label_created"
            if o.status == "delivered":
                assert s.status == "delivered" and s.delivered_at is not None
                assert ev[-1].status == "delivered" and times[-1] == utc(s.delivered_at)
                assert ev[-1].location == ev[-2].location == f"{o.ship_city}, {o.ship_state}"
                assert s.shipped_at is not None and utc(o.created_at) < utc(s.shipped_at) < times[-1]
                assert s.estimated_delivery > utc(s.shipped_at).date()
                assert abs((utc(s.delivered_at).date() - s.estimated_delivery).days) <= 7
                assert utc(o.updated_at) == times[-1]
            elif o.status == "processed":
                assert s.status in ("label_created", "in_transit") and s.delivered_at is None
                assert s.status == ev[-1].status
                assert (s.shipped_at is None) == (s.status == "label_created")
                assert s.estimated_delivery > today
            else:  # cancelled before pickup: the label was voided
                assert s.status == "cancelled" and s.shipped_at is None and s.delivered_at is None
                assert ev[-1].status == "cancelled" and times[-1] == utc(o.cancelled_at)
    assert set(seen) == {"UPS", "FedEx", "USPS", "DHL"}
    # The carriers' business-day transit times show in the estimates.
    transit = defaultdict(list)
    for s in db.exec(select(Shipment).where(Shipment.status == "delivered")):
        transit[s.carrier].append(s.estimated_delivery - utc(s.shipped_at).date())
    assert max(transit["FedEx"]) < min(transit["DHL"])


def test_cancelled_orders_have_reason_time_and_refund(db: Session) -> None:
    for o in db.exec(select(Order)):
        refunds = db.exec(select(Payment).where(Payment.order_id == o.id, Payment.kind == "refund")).all()
        paid = db.exec(select(Payment).where(Payment.order_id == o.id, Payment.kind == "payment")).all()
        assert paid and all(utc(p.created_at) > utc(o.created_at) for p in paid)
        if o.status == "cancelled":
            assert o.cancel_reason in ("no longer needed", "ordered by mistake")
            assert o.cancelled_at is not None and utc(o.cancelled_at) > utc(o.created_at)
            assert utc(o.updated_at) == utc(o.cancelled_at)
            assert refunds and all(utc(r.created_at) >= utc(o.cancelled_at) for r in refunds)
            assert round(sum(r.amount for r in refunds), 2) == round(sum(p.amount for p in paid), 2)
        else:
            assert o.cancel_reason is None and o.cancelled_at is None
            # Returns and claims (fraud history): delivered orders only, after delivery, at most what was paid.
            assert refunds == [] or (
                o.status == "delivered" and all(utc(r.created_at) > utc(o.updated_at) for r in refunds)
            )
            assert round(sum(r.amount for r in refunds), 2) <= round(sum(p.amount for p in paid), 2)


def test_stock_is_zero_iff_unavailable(db: Session) -> None:
    variants = db.exec(select(Variant)).all()
    assert len(variants) == 591
    for v in variants:
        assert (v.stock_on_hand == 0) == (not v.available), v.id
        assert v.stock_on_hand >= 0
    assert any(v.stock_on_hand > 20 for v in variants) and any(0 < v.stock_on_hand <= 3 for v in variants)


def test_customers_exist_before_their_orders_and_payment_methods(db: Session) -> None:
    first_order = dict(
        db.exec(select(Order.customer_id, func.min(Order.created_at)).group_by(Order.customer_id)).all()
    )
    first_use = dict(
        db.exec(
            select(Payment.payment_method_id, func.min(Payment.created_at)).group_by(
                Payment.payment_method_id
            )
        ).all()
    )
    custs = db.exec(select(Customer)).all()
    for c in custs:
        if c.id in first_order:
            assert utc(c.created_at) < utc(first_order[c.id]), c.id
        addr = customers.default_address(db, c.id)
        assert addr is not None and addr.is_default and utc(addr.created_at) == utc(c.created_at)
        for pm in customers.payment_methods(db, c.id):
            assert utc(pm.added_at) >= utc(c.created_at)
            if pm.id in first_use:
                assert utc(pm.added_at) < utc(first_use[pm.id]), pm.id
    assert len({c.created_at for c in custs}) > 400  # spread out, not one timestamp


def test_payment_methods_keep_tau2_details(db: Session, tau2: dict) -> None:
    tau2_methods = {m for u in tau2["users"].values() for m in u["payment_methods"]}
    seen = set()
    for pm in db.exec(select(PaymentMethod)):
        if pm.id not in tau2_methods:  # a card of the fraud history's accounts (commerce/fraud_history.py)
            continue
        seen.add(pm.id)
        src = tau2["users"][pm.customer_id]["payment_methods"][pm.id]
        assert pm.kind == src["source"]
        if pm.kind == "credit_card":
            assert (pm.brand, pm.last_four) == (src["brand"], src["last_four"]) and pm.balance is None
        elif pm.kind == "gift_card":
            assert pm.balance == round(src["balance"], 2) and pm.brand is None
        else:
            assert pm.brand is None and pm.last_four is None and pm.balance is None
    assert seen == tau2_methods


def _daily_totals(db: Session) -> dict[date, int]:
    return dict(db.exec(select(DailySales.day, func.sum(DailySales.units)).group_by(DailySales.day)).all())


def test_daily_sales_have_weekly_and_yearly_seasonality(db: Session, store_settings: Settings) -> None:
    totals = _daily_totals(db)
    today = store_settings.store_day()
    assert len(totals) == HISTORY_DAYS
    assert min(totals) == today - timedelta(days=HISTORY_DAYS) and max(totals) == today - timedelta(days=1)
    mean = sum(totals.values()) / len(totals)
    weekend = [v for d, v in totals.items() if d.weekday() >= 5]
    weekday = [v for d, v in totals.items() if d.weekday() < 5]
    holiday = [v for d, v in totals.items() if d.month in (11, 12)]
    spring = [v for d, v in totals.items() if d.month in (1, 2)]
    assert sum(weekend) / len(weekend) > 1.08 * mean > sum(weekday) / len(weekday)
    assert sum(holiday) / len(holiday) > 1.15 * mean
    assert sum(spring) / len(spring) < mean


def test_daily_sales_are_per_variant_and_popularity_varies(db: Session, tau2: dict) -> None:
    per_variant = dict(
        db.exec(
            select(DailySales.variant_id, func.sum(DailySales.units)).group_by(DailySales.variant_id)
        ).all()
    )
    zero_days = dict(
        db.exec(
            select(DailySales.variant_id, func.count())
            .where(DailySales.units == 0)
            .group_by(DailySales.variant_id)
        ).all()
    )
    assert len(per_variant) == 591
    intermittent = [v for v, z in zero_days.items() if z > 0.8 * HISTORY_DAYS]
    steady = [v for v in per_variant if zero_days.get(v, 0) < 0.1 * HISTORY_DAYS]
    assert len(intermittent) >= 30 and len(steady) >= 50
    # Products sold more in the tau2 orders sell more in the whole shop (popularity, in spirit).
    variant_product = dict(db.exec(select(Variant.id, Variant.product_id)).all())
    product_units: Counter[str] = Counter()
    for v, units in per_variant.items():
        product_units[variant_product[v]] += units
    in_orders = Counter(i["product_id"] for o in tau2["orders"].values() for i in o["items"])
    ranked = sorted(product_units, key=lambda p: in_orders[p])
    bottom, top = ranked[:10], ranked[-10:]
    assert sum(product_units[p] for p in top) > 1.5 * sum(product_units[p] for p in bottom)
    assert max(product_units.values()) > 3 * min(product_units.values())


def test_daily_sales_include_the_sampled_orders(db: Session, store_settings: Settings) -> None:
    first = store_settings.store_day() - timedelta(days=HISTORY_DAYS)
    sampled: Counter[tuple[str, date]] = Counter()
    rows = db.exec(
        select(OrderItem.variant_id, Order.created_at)
        .join(Order, col(Order.id) == col(OrderItem.order_id))
        .where(Order.status != "cancelled")
    )
    for vid, created in rows:
        day = utc(created).date()
        if first <= day < store_settings.store_day():
            sampled[(vid, day)] += 1
    assert len(sampled) > 1000
    units = {
        (v, d): u
        for v, d, u in db.exec(select(DailySales.variant_id, DailySales.day, DailySales.units))
        if (v, d) in sampled
    }
    short = {k: (n, units.get(k)) for k, n in sampled.items() if units.get(k, 0) < n}
    assert short == {}, list(short.items())[:5]
    # A sold-out variant sold nothing in the last days, except the sampled orders that emptied it.
    today = store_settings.store_day()
    last_sampled: dict[str, date] = {}
    for vid, day in sampled:
        last_sampled[vid] = max(last_sampled.get(vid, day), day)
    for v in db.exec(select(Variant).where(col(Variant.available).is_(False))):
        since = max(last_sampled.get(v.id, first), today - timedelta(days=4))
        late = db.exec(
            select(DailySales.units).where(DailySales.variant_id == v.id, DailySales.day > since)
        ).all()
        assert late == [0] * len(late), v.id


def test_product_descriptions_are_factual(db: Session, tau2: dict) -> None:
    for p in db.exec(select(Product)):
        src = tau2["products"][p.id]
        variants = list(src["variants"].values())
        assert p.description.startswith(f"{src['name']}. Comes in {len(variants)} variants")
        for v in variants:
            for key, value in v["options"].items():
                assert f"{key}: " in p.description and value in p.description
        prices = [v["price"] for v in variants]
        assert f"${min(prices):,.2f}" in p.description and f"${max(prices):,.2f}" in p.description
    tshirt = db.get(Product, "9523456873")
    assert tshirt is not None and "size: S, M, L, XL, XXL" in tshirt.description


# ---- services ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("W2611340", "#W2611340"),
        ("#w2611340", "#W2611340"),
        ("2611340", "#W2611340"),
        ("  #W2611340 ", "#W2611340"),
        ("#2611340", "#W2611340"),
        ("W261134", None),
        ("W26113400", None),
        ("#X2611340", None),
        ("order 2611340", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_order_id(text: str | None, expected: str | None) -> None:
    assert orders.normalize_order_id(text) == expected  # type: ignore[arg-type]


def test_get_and_list_orders(db: Session) -> None:
    assert orders.get_order(db, "w2611340").id == JAMES_ORDER  # type: ignore[union-attr]
    assert orders.get_order(db, "#W0000000") is None and orders.get_order(db, "nonsense") is None
    listed = orders.list_orders(db, "james_li_5688")
    assert JAMES_ORDER in [o.id for o in listed]
    stamps = [utc(o.created_at) for o in listed]
    assert stamps == sorted(stamps, reverse=True)
    multi = db.exec(
        select(Order.customer_id).group_by(Order.customer_id).having(func.count() >= 4).limit(1)
    ).first()
    stamps = [utc(o.created_at) for o in orders.list_orders(db, multi)]  # type: ignore[arg-type]
    assert len(stamps) >= 4 and stamps == sorted(stamps, reverse=True)
    assert orders.list_orders(db, "nobody") == []


def test_order_view_of_a_real_order(db: Session, tau2: dict) -> None:
    order = orders.get_order(db, JAMES_ORDER)
    assert order is not None
    view = orders.order_view(db, order)
    json.dumps(view)  # JSON-able
    assert view["id"] == JAMES_ORDER and view["status"] == "processed"
    assert view["created_at"].endswith("Z") and datetime.fromisoformat(view["created_at"])
    assert [(i["name"], i["price"]) for i in view["items"]] == [
        ("Water Bottle", 47.84),
        ("Office Chair", 488.81),
    ]
    assert view["items"][0]["options"] == {"capacity": "1000ml", "material": "glass", "color": "blue"}
    assert view["total"] == 536.65
    (ship,) = view["shipments"]
    assert ship["tracking_id"] == JAMES_TRACKING
    assert ship["carrier"] in ("UPS", "FedEx", "USPS", "DHL")
    assert ship["status"] in ("label_created", "in_transit") and ship["delivered_at"] is None
    assert date.fromisoformat(ship["estimated_delivery"])
    assert ship["last_event"]["status"] == ship["status"]
    assert view["cancel_reason"] is None
    dumped = json.dumps(view)
    src = tau2["orders"][JAMES_ORDER]
    for private in (src["address"]["address1"], src["address"]["zip"], "gift_card_1725971", "james_li_5688"):
        assert private not in dumped


def test_order_view_of_delivered_and_cancelled_orders(db: Session) -> None:
    delivered = db.exec(select(Order).where(Order.status == "delivered").order_by(Order.id)).first()
    view = orders.order_view(db, delivered)  # type: ignore[arg-type]
    assert view["shipments"][0]["status"] == "delivered"
    assert view["shipments"][0]["delivered_at"] == view["shipments"][0]["last_event"]["at"]
    cancelled = db.exec(select(Order).where(Order.status == "cancelled").order_by(Order.id)).first()
    view = orders.order_view(db, cancelled)  # type: ignore[arg-type]
    assert view["cancel_reason"] in orders.CANCEL_REASONS and view["cancelled_at"]


def _pending_paid_with(db: Session, kind: str) -> Order:
    stmt = (
        select(Order)
        .join(Payment, col(Payment.order_id) == col(Order.id))
        .join(PaymentMethod, col(PaymentMethod.id) == col(Payment.payment_method_id))
        .where(Order.status == "pending", PaymentMethod.kind == kind)
        .order_by(Order.id)
    )
    order = db.exec(stmt).first()
    assert order is not None
    return order


@pytest.mark.parametrize("kind", ["gift_card", "credit_card", "paypal"])
def test_cancel_pending_order_refunds_the_payment(store_db: Engine, kind: str) -> None:
    at = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    with Session(store_db) as s:
        order = _pending_paid_with(s, kind)
        oid = order.id
        paid = s.exec(select(Payment).where(Payment.order_id == oid)).all()
        ((method_id, amount),) = [(p.payment_method_id, p.amount) for p in paid]
        balance = s.get(PaymentMethod, method_id).balance  # type: ignore[union-attr]
        result = orders.cancel_order(s, oid.lower().lstrip("#"), "  No longer needed ", now=at)
        assert result.id == oid and result.status == "cancelled"
        s.commit()
    with Session(store_db) as s:  # persisted, seen from a new session
        order = s.get(Order, oid)
        assert order.status == "cancelled" and order.cancel_reason == "no longer needed"  # type: ignore[union-attr]
        assert utc(order.cancelled_at) == at and utc(order.updated_at) == at  # type: ignore[union-attr,arg-type]
        refunds = s.exec(select(Payment).where(Payment.order_id == oid, Payment.kind == "refund")).all()
        assert [(r.payment_method_id, r.amount, utc(r.created_at)) for r in refunds] == [
            (method_id, amount, at)
        ]
        method = s.get(PaymentMethod, method_id)
        if kind == "gift_card":
            assert method.balance == round(balance + amount, 2)  # type: ignore[union-attr,operator]
        else:
            assert method.balance is None  # type: ignore[union-attr]
        view = orders.order_view(s, order)  # type: ignore[arg-type]
        assert view["status"] == "cancelled" and view["cancel_reason"] == "no longer needed"
        with pytest.raises(orders.OrderNotCancellable):  # no second refund
            orders.cancel_order(s, oid, "no longer needed")


def test_cancel_does_not_commit(store_db: Engine) -> None:
    with Session(store_db) as s:
        oid = _pending_paid_with(s, "paypal").id
        orders.cancel_order(s, oid, "ordered by mistake")
        s.rollback()
    with Session(store_db) as s:
        assert s.get(Order, oid).status == "pending"  # type: ignore[union-attr]


@pytest.mark.parametrize("status", ["processed", "delivered", "cancelled"])
def test_cancel_refuses_orders_that_are_not_pending(store_session: Session, status: str) -> None:
    order = store_session.exec(select(Order).where(Order.status == status).order_by(Order.id)).first()
    assert order is not None
    before = store_session.exec(select(func.count()).select_from(Payment)).one()
    with pytest.raises(orders.OrderNotCancellable) as err:
        orders.cancel_order(store_session, order.id, "no longer needed")
    assert err.value.status == status
    assert store_session.get(Order, order.id).status == status  # type: ignore[union-attr]
    assert store_session.exec(select(func.count()).select_from(Payment)).one() == before


def test_cancel_refuses_a_bad_reason_or_unknown_order(store_session: Session) -> None:
    order = _pending_paid_with(store_session, "gift_card")
    for reason in ("changed my mind", "", "no longer"):
        with pytest.raises(ValueError):
            orders.cancel_order(store_session, order.id, reason)
    assert store_session.get(Order, order.id).status == "pending"  # type: ignore[union-attr]
    with pytest.raises(orders.OrderNotFound):
        orders.cancel_order(store_session, "#W0000000", "no longer needed")
    with pytest.raises(orders.OrderNotFound):
        orders.cancel_order(store_session, "not an id", "no longer needed")


def test_customer_lookups(db: Session, tau2: dict) -> None:
    u = tau2["users"]["james_li_5688"]
    assert customers.get_customer(db, "james_li_5688").email == u["email"]  # type: ignore[union-attr]
    assert customers.get_customer(db, "nobody") is None
    assert customers.find_by_email(db, f"  {u['email'].upper()} ").id == "james_li_5688"  # type: ignore[union-attr]
    assert (
        customers.find_by_email(db, "nobody@example.com") is None and customers.find_by_email(db, " ") is None
    )
    zip_code = u["address"]["zip"]
    found = customers.find_by_name_zip(db, " JAMES ", "li", zip_code)
    assert found is not None and found.id == "james_li_5688"
    assert customers.find_by_name_zip(db, "James", "Li", "00000") is None
    assert customers.find_by_name_zip(db, "James", "Smith", zip_code) is None
    addr = customers.default_address(db, "james_li_5688")
    assert addr is not None and (addr.address1, addr.zip) == (u["address"]["address1"], zip_code)
    methods = customers.payment_methods(db, "james_li_5688")
    assert {m.id for m in methods} == set(u["payment_methods"])
    assert customers.default_address(db, "nobody") is None and customers.payment_methods(db, "nobody") == []


def test_name_zip_matches_only_the_default_address(store_session: Session) -> None:
    store_session.add(
        Address(
            customer_id="james_li_5688",
            is_default=False,
            address1="1 Old Street",
            city="Boston",
            state="MA",
            zip="02101",
            created_at=datetime(2025, 1, 1, tzinfo=UTC),
        )
    )
    store_session.flush()
    assert customers.find_by_name_zip(store_session, "James", "Li", "02101") is None


# ---- PostgreSQL ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_seeded(pg_engine: Engine, store_settings: Settings) -> SeedReport:
    return seed_store(pg_engine, store_settings)


@pytest.mark.postgres
def test_sqlite_and_postgres_seed_identically(
    pg_seeded: SeedReport, seed_report: SeedReport, pg_engine
) -> None:
    assert pg_seeded.dialect == "postgresql" and seed_report.dialect == "sqlite"
    assert pg_seeded.counts == seed_report.counts
    assert pg_seeded.fingerprint == seed_report.fingerprint
    with Session(pg_engine) as s:
        assert store_fingerprint(s) == seed_report.fingerprint
    assert pg_seeded.seconds < 60


@pytest.mark.postgres
def test_postgres_store_round_trip(
    pg_seeded: SeedReport, pg_engine: Engine, store_settings: Settings
) -> None:
    at = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
    with Session(pg_engine) as s:
        order = _pending_paid_with(s, "gift_card")
        oid = order.id
        (paid,) = s.exec(select(Payment).where(Payment.order_id == oid)).all()
        method_id, amount = paid.payment_method_id, paid.amount
        balance = s.get(PaymentMethod, method_id).balance  # type: ignore[union-attr]
        max_id = s.exec(select(func.max(Payment.id))).one()
        orders.cancel_order(s, oid, "ordered by mistake", now=at)  # new rows need the sequences moved on
        s.commit()
    with Session(pg_engine) as s:
        (refund,) = s.exec(select(Payment).where(Payment.order_id == oid, Payment.kind == "refund")).all()
        assert refund.id > max_id and refund.amount == amount and utc(refund.created_at) == at
        assert s.get(PaymentMethod, method_id).balance == round(balance + amount, 2)  # type: ignore[union-attr,operator]
        order = s.get(Order, oid)
        assert order.status == "cancelled" and utc(order.cancelled_at) == at  # type: ignore[union-attr,arg-type]
        view = orders.order_view(s, orders.get_order(s, JAMES_ORDER))  # type: ignore[arg-type]
        assert view["shipments"][0]["tracking_id"] == JAMES_TRACKING and view["total"] == 536.65
        assert customers.find_by_email(s, " JAMES.LI4495@EXAMPLE.COM").id == "james_li_5688"  # type: ignore[union-attr]
        assert store_fingerprint(s) != pg_seeded.fingerprint
    with Session(pg_engine) as s:  # reseed inside a caller's session: reset restores the seeded store
        again = seed_store(s, store_settings)
        s.commit()
    assert again.fingerprint == pg_seeded.fingerprint
    with Session(pg_engine) as s:
        assert s.get(Order, oid).status == "pending"  # type: ignore[union-attr]
        s.add(
            Address(customer_id="james_li_5688", address1="x", city="y", state="NY", zip="1", created_at=at)
        )
        s.commit()  # serial ids still work after a reseed
