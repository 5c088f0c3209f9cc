"""Forecasting on the seeded store: purchasing data, stock outlooks, reorder maths and list, finding
variants from a shopper's words, the forecast cache, the REST endpoints and `shopdesk eval forecast`."""

import fcntl
import json
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from conftest import cheap_spec
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from bot.llm.scripted import ScriptedBackend
from commerce import demand
from commerce.demand import BacktestSummary, DemandForecast, ForecastPoint, UnknownVariant, forecast_variant
from commerce.inventory import (
    days_of_cover,
    find_variants,
    order_quantity,
    plan_variant,
    reorder_list,
    reorder_point,
    safety_stock,
    stock_outlook,
)
from commerce.models import DailySales, Product, PurchaseOrder, PurchaseOrderLine, SupplierItem, Variant
from commerce.purchasing_seed import add_purchasing
from commerce.sales_feed import SalesRow, record_sales
from server import create_app
from shopdesk import cli
from shopdesk.db import make_engine, migrate
from shopdesk.security import SessionClaims, StaffClaims, issue_staff_token, issue_token
from shopdesk.settings import Settings

TSHIRT = "9523456873"


@pytest.fixture
def db(seeded_engine: Engine):  # type: ignore[no-untyped-def]
    with Session(seeded_engine) as session:
        yield session
        session.rollback()


@pytest.fixture
def settings(store_settings: Settings, tmp_path: Path) -> Settings:
    """The seeded store's settings with a private forecast cache."""
    return store_settings.model_copy(update={"var_dir": tmp_path})


@pytest.fixture(scope="module")
def cheap_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One forecast cache for the tests that fill it for every variant with `cheap_spec`."""
    return tmp_path_factory.mktemp("cheap-forecasts")


def sold_out(db: Session, case: str) -> Variant:
    """A sold-out variant whose restock basis is `case` (po | lead | discontinued | no_supplier)."""
    open_po = set(
        db.exec(
            select(PurchaseOrderLine.variant_id)
            .join(PurchaseOrder, col(PurchaseOrder.id) == col(PurchaseOrderLine.purchase_order_id))
            .where(PurchaseOrder.status == "open")
        )
    )
    for v in db.exec(select(Variant).where(col(Variant.available).is_(False)).order_by(col(Variant.id))):
        sup = db.get(SupplierItem, v.id)
        kind = (
            "no_supplier"
            if sup is None
            else "discontinued"
            if sup.discontinued
            else "po"
            if v.id in open_po
            else "lead"
        )
        if kind == case:
            return v
    raise AssertionError(f"no sold-out variant of case {case}")


# ---- purchasing seed --------------------------------------------------------------------------------


def test_the_seed_gives_every_restock_case(db: Session, store_settings: Settings) -> None:
    today = date.fromisoformat(store_settings.store_today)
    now = datetime.combine(today, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    counts = {}
    for case in ("po", "lead", "discontinued", "no_supplier"):
        sold_out(db, case)  # each exists
    variants = db.exec(select(Variant).where(col(Variant.available).is_(False))).all()
    sups = {s.variant_id: s for s in db.exec(select(SupplierItem))}
    counts["no_supplier"] = sum(v.id not in sups for v in variants)
    counts["discontinued"] = sum(v.id in sups and sups[v.id].discontinued for v in variants)
    assert counts["no_supplier"] >= 5 and counts["discontinued"] >= 10
    for po in db.exec(select(PurchaseOrder)):
        expected = po.expected_arrival.astimezone(UTC)
        assert po.ordered_at.astimezone(UTC) < now
        if po.status == "open":
            assert expected > now and po.received_at is None
        else:
            assert po.status == "received" and po.received_at.astimezone(UTC) < now  # type: ignore[union-attr]
    for s in sups.values():
        assert 2 <= s.lead_time_min_days <= s.lead_time_max_days and s.min_order_qty >= 1
    for line in db.exec(select(PurchaseOrderLine)):
        assert line.quantity % sups[line.variant_id].min_order_qty == 0 and line.quantity > 0


def test_purchasing_generation_is_deterministic() -> None:
    def rows() -> dict:
        variants = [
            {"id": f"v{i}", "product_id": f"p{i % 2}", "price": 20.0 + 100 * i, "available": i % 3 != 0,
             "stock_on_hand": 0 if i % 3 == 0 else 5}
            for i in range(12)
        ]  # fmt: skip
        sales = [
            {"variant_id": f"v{i}", "day": d, "units": (i + d) % 4} for i in range(12) for d in range(120)
        ]
        return {"variant": variants, "dailysales": sales, "product": []}

    a, b, c = rows(), rows(), rows()
    today = date(2026, 11, 20)
    add_purchasing(a, 1, today)
    add_purchasing(b, 1, today)
    add_purchasing(c, 2, today)
    keys = ("supplieritem", "purchaseorder", "purchaseorderline")
    assert all(a[k] == b[k] for k in keys) and any(a[k] != c[k] for k in keys)
    assert a["supplieritem"] and a["purchaseorder"]


# ---- stock outlook (the bot tool's service) -------------------------------------------------------------


def test_outlook_of_a_sold_out_variant_with_an_open_purchase_order(db: Session, settings: Settings) -> None:
    v = sold_out(db, "po")
    out = stock_outlook(db, settings, v.id)
    po, line = db.exec(
        select(PurchaseOrder, PurchaseOrderLine)
        .join(PurchaseOrderLine, col(PurchaseOrder.id) == col(PurchaseOrderLine.purchase_order_id))
        .where(PurchaseOrderLine.variant_id == v.id, PurchaseOrder.status == "open")
        .order_by(col(PurchaseOrder.expected_arrival))
    ).first()  # type: ignore[misc]
    due = po.expected_arrival.astimezone(UTC).date()
    assert (out.in_stock, out.stock_on_hand, out.days_of_cover, out.basis) == (
        False,
        0,
        0.0,
        "purchase_order",
    )
    assert out.restock_earliest == due
    assert out.restock_latest == due + timedelta(days=settings.restock_receiving_days)
    assert (
        po.id in out.explanation
        and due.isoformat() in out.explanation
        and str(line.quantity) in out.explanation
    )
    assert out.product_name == db.get(Product, v.product_id).name and out.options == v.options  # type: ignore[union-attr]


def test_outlook_from_the_supplier_lead_time(db: Session, settings: Settings) -> None:
    v = sold_out(db, "lead")
    sup = db.get(SupplierItem, v.id)
    assert sup is not None
    out = stock_outlook(db, settings, v.id)
    today = date.fromisoformat(settings.store_today)
    assert out.basis == "lead_time" and out.as_of == today
    assert out.restock_earliest == today + timedelta(days=sup.lead_time_min_days)
    assert out.restock_latest == today + timedelta(
        days=sup.lead_time_max_days + settings.restock_receiving_days
    )
    assert (
        sup.supplier in out.explanation
        and f"{sup.lead_time_min_days}-{sup.lead_time_max_days} days" in out.explanation
    )


@pytest.mark.parametrize(
    ("case", "says"), [("discontinued", "discontinued"), ("no_supplier", "no restock date")]
)
def test_outlook_without_an_estimate_says_so(db: Session, settings: Settings, case: str, says: str) -> None:
    out = stock_outlook(db, settings, sold_out(db, case).id)
    assert out.basis == "none" and out.restock_earliest is None and out.restock_latest is None
    assert says in out.explanation and not out.in_stock


def test_outlook_of_an_in_stock_variant_has_days_of_cover(db: Session, settings: Settings) -> None:
    (v,) = find_variants(db, "When will the blue M t-shirt be back?")
    out = stock_outlook(db, settings, v.id)
    fc = forecast_variant(db.get_bind(), settings, v.id)  # type: ignore[arg-type]
    assert out.in_stock and out.stock_on_hand == v.stock_on_hand > 0 and out.basis == "none"
    assert out.days_of_cover == days_of_cover(v.stock_on_hand, [p.mean for p in fc.points])
    assert out.days_of_cover is not None and out.days_of_cover > 0
    assert (
        f"{v.stock_on_hand} units on hand" in out.explanation
        and f"{out.days_of_cover:.0f} days" in out.explanation
    )


def test_outlook_of_an_unknown_variant(db: Session, settings: Settings) -> None:
    with pytest.raises(UnknownVariant, match="0000000000"):
        stock_outlook(db, settings, "0000000000")


# ---- inventory maths ----------------------------------------------------------------------------------


def test_safety_stock_reorder_point_and_order_quantity() -> None:
    z95 = 1.6448536
    assert safety_stock(0.95, 9, 2.0, 3.0, 1.0) == pytest.approx(z95 * math.sqrt(9 * 4 + 9 * 1))
    assert safety_stock(0.5, 9, 2.0, 3.0, 1.0) == pytest.approx(0.0)
    assert reorder_point(18.0, 11.0) == 29.0
    assert order_quantity(20.0, 10.0, 5.0, 12) == 36  # 25 short, in cartons of 12
    assert order_quantity(20.0, 10.0, 5.0, 1) == 25
    assert order_quantity(20.0, 10.0, 40.0, 12) == 0


def test_days_of_cover() -> None:
    assert days_of_cover(5, [2.0, 2.0, 2.0]) == 2.5
    assert days_of_cover(10, [2.0, 2.0, 2.0]) == 5.0  # past the horizon at its mean rate
    assert days_of_cover(1, [0.0, 0.5, 1.0]) == 2.5
    assert days_of_cover(0, [1.0]) == 0.0
    assert days_of_cover(3, [0.0, 0.0]) is None  # nothing sells: it does not run out


def forecast_of(rate: float, rmse: float | None, days: int = 28) -> DemandForecast:
    start = date(2026, 11, 20)
    return DemandForecast(
        variant_id="x",
        as_of=start,
        model="auto_ets",
        demand_kind="smooth",
        history_days=364,
        censored_days=0,
        points=[ForecastPoint(ds=start + timedelta(days=i), mean=rate) for i in range(days)],
        backtest=BacktestSummary(windows=8, mae=rmse, rmse=rmse, mase=0.8, candidates_mae={}),
        notes=[],
    )


def test_plan_of_one_variant(settings: Settings) -> None:
    fc = forecast_of(2.0, 1.0)
    plan = plan_variant(fc, stock=10, on_order=0, lead=(6, 10), min_order_qty=6, settings=settings)
    safety = 1.6448536 * math.sqrt(8 * 1.0 + (2.0 * 1.0) ** 2)  # L = 8 days, sd of L = (10 - 6) / 4
    assert plan.safety == pytest.approx(safety, rel=1e-6)
    assert plan.rop == pytest.approx(16.0 + safety, rel=1e-6)
    assert plan.qty == math.ceil((16.0 + safety + 2.0 * settings.inventory_review_days - 10) / 6) * 6
    assert plan.cover == 5.0
    covered = plan_variant(fc, stock=10, on_order=20, lead=(6, 10), min_order_qty=6, settings=settings)
    assert covered.qty == 0  # on hand + on order is above the reorder point
    poisson = plan_variant(
        forecast_of(4.0, None), stock=0, on_order=0, lead=(5, 5), min_order_qty=1, settings=settings
    )
    assert poisson.safety == pytest.approx(
        1.6448536 * math.sqrt(5 * 4.0), rel=1e-6
    )  # no backtest: sd = sqrt(rate)


def test_reorder_list(
    db: Session, settings: Settings, cheap_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demand, "store_spec", cheap_spec)
    lines = reorder_list(db, settings.model_copy(update={"var_dir": cheap_cache}))
    assert len(lines) > 20
    urgency = [r.urgency_days for r in lines]
    assert urgency == sorted(urgency)
    sups = {s.variant_id: s for s in db.exec(select(SupplierItem))}
    for r in lines:
        assert r.order_qty > 0 and r.stock_on_hand + r.on_order <= r.reorder_point
        sup = sups.get(r.variant_id)
        assert sup is None or (not sup.discontinued and r.order_qty % sup.min_order_qty == 0)
        if r.days_of_cover is not None:
            assert r.urgency_days == pytest.approx(r.days_of_cover - r.lead_time_days[1], abs=0.11)
    sold_out_ids = {v.id for v in db.exec(select(Variant).where(col(Variant.available).is_(False)))}
    assert lines[0].variant_id in sold_out_ids  # nothing is more urgent than empty shelves
    assert sold_out(db, "discontinued").id not in {r.variant_id for r in lines}


# ---- finding variants -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("When will the blue M t-shirt be back?", [{"color": "blue", "size": "M"}]),
        ("a blue medium tee", [{"color": "blue", "size": "M"}]),
        ("extra large t-shirt in purple", [{"color": "purple", "size": "XL"}]),
        ("red XXL tshirts", [{"color": "red", "size": "XXL"}]),
        ("is the 1000ml glass water bottle in stock", [{"capacity": "1000ml", "material": "glass"}] * 2),
        (  # "not resistant" is itself a value: it excludes the IPX7 pair
            "when will the Wireless Earbuds black 6 hours not resistant be back in stock?",
            [{"color": "black", "battery life": "6 hours", "water resistance": "not resistant"}],
        ),
    ],
)
def test_find_variants_by_product_and_options(db: Session, text: str, expected: list[dict]) -> None:
    found = find_variants(db, text)
    assert len(found) == len(expected)
    for v, want in zip(found, expected, strict=True):
        assert want.items() <= v.options.items()


def test_find_variants_edge_cases(db: Session) -> None:
    assert len(find_variants(db, "I'm looking for a t-shirt")) == 12  # "I'm" is not size M
    assert find_variants(db, "the green t-shirt") == []  # green is a colour, but no T-shirt is green
    assert find_variants(db, "hello there") == [] and find_variants(db, "") == []
    assert {v.product_id for v in find_variants(db, "a kettle")} == {"1075968781", "9832717871"}
    boots = find_variants(db, "waterproof hiking boots")
    assert boots and all(v.options["waterproof"] == "yes" for v in boots)
    dry = find_variants(db, "hiking boots that are not waterproof")
    assert dry and all(v.options["waterproof"] == "no" for v in dry)
    assert all(v.options["size"] == "10" for v in find_variants(db, "size 10 hiking boots"))
    assert len(find_variants(db, "10 hiking boots")) == 19  # a bare number says nothing


# ---- forecast cache -------------------------------------------------------------------------------------


def test_forecasts_are_cached_until_the_sales_change(
    store_db: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.model_copy(update={"database_url": str(store_db.url)})
    first = forecast_variant(store_db, s, "9612497925")
    assert first.model and len(first.points) == s.forecast_horizon_days and first.points[0].ds == first.as_of
    assert first.backtest.windows == 8 and first.backtest.mase is not None

    def boom(*_a, **_k):  # type: ignore[no-untyped-def]
        raise AssertionError("recomputed a cached forecast")

    real = demand._compute
    monkeypatch.setattr(demand, "_compute", boom)
    assert forecast_variant(store_db, s, "9612497925") == first
    with Session(store_db) as session:  # a sale corrected: the key changes, the forecast is redone
        row = session.get(DailySales, ("9612497925", date.fromisoformat(s.store_today) - timedelta(days=1)))
        assert row is not None
        row.units += 40
        session.commit()
    with pytest.raises(AssertionError, match="recomputed"):
        forecast_variant(store_db, s, "9612497925")
    monkeypatch.setattr(demand, "_compute", real)
    assert forecast_variant(store_db, s, "9612497925") != first


def test_days_a_feed_leaves_out_are_days_without_sales(
    store_db: Engine, settings: Settings, tmp_path: Path
) -> None:
    """A feed that sends only the days something sold gives the same forecast as one that sends zeros."""
    vid, today = "9612497925", settings.store_day()
    last_days = [today - timedelta(days=d) for d in range(1, 11)]
    with Session(store_db) as db:
        for day in last_days:
            db.get(DailySales, (vid, day)).units = 0  # type: ignore[union-attr]
        db.commit()
    dense = forecast_variant(store_db, settings.model_copy(update={"var_dir": tmp_path / "dense"}), vid)
    with Session(store_db) as db:
        for day in last_days:
            db.delete(db.get(DailySales, (vid, day)))
        db.commit()
    sparse = forecast_variant(store_db, settings.model_copy(update={"var_dir": tmp_path / "sparse"}), vid)
    assert sparse == dense and sparse.points[0].ds == today and not sparse.notes


def test_a_lagging_feed_keeps_the_weekdays_in_phase(
    store_db: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sales recorded only through 5 days ago: the forecast still starts today, each weekday on its own
    weekday (seasonal naive, so each point is the last recorded value of the same weekday)."""
    monkeypatch.setattr(
        demand, "store_spec", lambda st, **kw: replace(cheap_spec(st, **kw), candidates=("seasonal_naive",))
    )
    vid, today = "9612497925", settings.store_day()
    through = today - timedelta(days=5)
    with Session(store_db) as db:
        for row in db.exec(select(DailySales).where(col(DailySales.day) > through)):
            db.delete(row)
        db.commit()
        units = {r.day: r.units for r in db.exec(select(DailySales).where(DailySales.variant_id == vid))}
    last_week = [units[through - timedelta(days=d)] for d in range(7)]
    assert len(set(last_week)) > 1  # a weekly pattern, or any alignment would pass
    fc = forecast_variant(store_db, settings, vid)
    assert fc.as_of == today and len(fc.points) == settings.forecast_horizon_days
    for p in fc.points[:14]:
        same_weekday = through - timedelta(days=(through - p.ds).days % 7)
        assert p.mean == pytest.approx(units[same_weekday]), p.ds
    assert any(f"recorded through {through}" in n for n in fc.notes)


def test_stock_out_zeros_are_not_demand(db: Session, settings: Settings) -> None:
    v = sold_out(db, "lead")
    fc = forecast_variant(db.get_bind(), settings, v.id)  # type: ignore[arg-type]
    units = list(
        db.exec(select(DailySales.units).where(DailySales.variant_id == v.id).order_by(col(DailySales.day)))
    )
    zero_tail = len(units) - 1 - max(i for i, u in enumerate(units) if u > 0)
    assert fc.censored_days == (zero_tail // 7) * 7
    if fc.censored_days:
        assert any("stock-out" in n for n in fc.notes)
    assert fc.daily_mean > 0  # what it would sell once back, not the zeros of the empty shelf


def test_a_store_without_sales_has_nothing_to_forecast(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    migrate(engine)
    s = Settings(_env_file=None, var_dir=tmp_path)  # type: ignore[call-arg]
    assert demand._histories(demand.sales_frame(engine), s.store_day()) == {}
    assert demand.forecast_all(engine, s).forecasts == {}
    with Session(engine) as db:
        assert reorder_list(db, s) == []


def test_histories_read_the_same_from_postgres(
    db: Session, pg_schema_url: Callable[[], str], store_settings: Settings
) -> None:
    """The sales are read as the driver's raw rows (the day as text): both databases give the same
    frame, so the same cache keys."""
    ids = [sold_out(db, "lead").id, sold_out(db, "po").id, "9612497925"]
    pg = make_engine(pg_schema_url())
    migrate(pg)
    try:
        with Session(pg) as target:
            variants = [db.get(Variant, i) for i in ids]
            products = {v.product_id: db.get(Product, v.product_id) for v in variants if v}
            rows = db.exec(select(DailySales).where(col(DailySales.variant_id).in_(ids))).all()
            for group in (products.values(), variants, rows):
                target.add_all([type(r).model_validate(r.model_dump()) for r in group if r])
                target.flush()
            target.commit()
        lite, post = demand.sales_frame(db.get_bind(), ids), demand.sales_frame(pg, ids)  # type: ignore[arg-type]
        pd.testing.assert_frame_equal(lite, post)
        assert len(lite) == len(rows) > 3 * 700 and str(lite["ds"].dtype).startswith("datetime64")
        today = date.fromisoformat(store_settings.store_today)
        spec = demand.store_spec(store_settings)
        keys = [
            {vid: demand._cache_key(h, spec, today) for vid, h in demand._histories(frame, today).items()}
            for frame in (lite, post)
        ]
        assert keys[0] == keys[1] and set(keys[0]) == set(ids)
        assert (
            demand.sales_through(pg, today)
            == demand.sales_through(db.get_bind(), today)
            == today - timedelta(days=1)
        )  # type: ignore[arg-type]
        with Session(pg) as target:  # the feed's upsert in PostgreSQL's dialect
            rows = [SalesRow(variant_id=ids[0], day=today - timedelta(days=1), units=77)]
            rows.append(SalesRow(variant_id=ids[0], day=today, units=2))
            report = record_sales(target, rows, today)
            assert (report.inserted, report.updated) == (1, 1)
            assert target.get(DailySales, (ids[0], today - timedelta(days=1))).units == 77  # type: ignore[union-attr]
    finally:
        pg.dispose()


# ---- REST ----------------------------------------------------------------------------------------------


@pytest.fixture
def client(store_db: Engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Settings(llm_backend="scripted", database_url=str(store_db.url), var_dir=tmp_path)
    with TestClient(create_app(s, backend=ScriptedBackend())) as c:
        yield c


def test_forecast_endpoint(client: TestClient) -> None:
    r = client.get("/api/forecast/9612497925")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["variant_id"] == "9612497925" and body["product_name"] == "T-Shirt"
    assert body["options"]["color"] == "blue" and len(body["points"]) == 28
    p = body["points"][0]
    assert p["lo_95"] <= p["lo_80"] <= p["mean"] <= p["hi_80"] <= p["hi_95"]
    assert body["model"] in body["backtest"]["candidates_mae"] or body["model"] == "ensemble"
    assert body["backtest"]["mase"] > 0
    for path in (
        "/api/forecast/0000000000",
        "/api/forecast/0000000000.png",
        "/api/inventory/outlook/0000000000",
    ):
        missing = client.get(path)
        assert missing.status_code == 404 and missing.json()["detail"] == "unknown variant '0000000000'", path


def test_outlook_endpoint_gives_the_bots_restock_answer(client: TestClient, store_db: Engine) -> None:
    with Session(store_db) as db:
        variant = sold_out(db, "po")
        expected = stock_outlook(db, client.app.state.settings, variant.id)
    r = client.get(f"/api/inventory/outlook/{variant.id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["basis"] == "purchase_order" and body["in_stock"] is False
    assert body["restock_earliest"] == expected.restock_earliest.isoformat()  # type: ignore[union-attr]
    assert body["explanation"] == expected.explanation
    for bad in ("0000000000", "x" * 300, "%F0%9F%92%A5"):
        missing = client.get(f"/api/inventory/outlook/{bad}")
        assert missing.status_code == 404 and "unknown variant" in missing.json()["detail"], bad
    assert client.get("/api/inventory/outlook/..%2F..%2Fetc").status_code == 404  # no such route
    assert client.get("/api/inventory/outlook/%00").status_code == 400  # api/nul_guard.py


def _units(engine: Engine, variant_id: str, day: date) -> int | None:
    with Session(engine) as db:
        row = db.get(DailySales, (variant_id, day))
        return row.units if row else None


def test_sales_feed_upserts_and_the_forecast_follows(client: TestClient, store_db: Engine) -> None:
    today = client.app.state.settings.store_day()  # type: ignore[attr-defined]
    vid, yesterday = "9612497925", today - timedelta(days=1)
    before, recorded = client.get(f"/api/forecast/{vid}").json(), _units(store_db, vid, yesterday)
    assert recorded is not None and _units(store_db, vid, today) is None
    rows = [
        {"variant_id": vid, "day": yesterday.isoformat(), "units": recorded + 60},  # a corrected total
        {"variant_id": vid, "day": today.isoformat(), "units": 3},  # today so far
    ]
    r = client.post("/api/inventory/sales", json={"rows": rows})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "received": 2,
        "inserted": 1,
        "updated": 1,
        "first_day": yesterday.isoformat(),
        "last_day": today.isoformat(),
    }
    assert (_units(store_db, vid, yesterday), _units(store_db, vid, today)) == (recorded + 60, 3)
    after = client.get(f"/api/forecast/{vid}").json()  # the cache key changed with the history
    assert sum(p["mean"] for p in after["points"]) > sum(p["mean"] for p in before["points"])
    empty = client.post("/api/inventory/sales", json={"rows": []})
    assert empty.status_code == 200 and empty.json()["received"] == 0


def test_sales_feed_rejects_a_bad_batch_whole(client: TestClient, store_db: Engine) -> None:
    today = client.app.state.settings.store_day()  # type: ignore[attr-defined]
    vid, day = "9612497925", today - timedelta(days=2)
    recorded = _units(store_db, vid, day)
    good = {"variant_id": vid, "day": day.isoformat(), "units": 999}
    r = client.post(
        "/api/inventory/sales",
        json={
            "rows": [
                good,
                {"variant_id": "0000000000", "day": day.isoformat(), "units": 1},
                {"variant_id": vid, "day": (today + timedelta(days=1)).isoformat(), "units": 1},
                good,
                {"variant_id": vid, "day": "0001-01-01", "units": 3},  # a mistyped year
            ]
        },
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("batch rejected, nothing was written")
    for said in (
        "unknown variant '0000000000'",
        "rows[2]",
        "after the store's today",
        "rows[3]",
        "twice",
        "rows[4]: 0001-01-01 is more than 10 years before",
    ):
        assert said in detail, said
    assert _units(store_db, vid, day) == recorded  # the good row was not written either
    for body in (
        {"rows": [{**good, "units": -1}]},  # returns are not negative sales
        {"rows": [{**good, "day": "2026-02-30"}]},
        {"rows": [{**good, "variant_id": ""}]},
        {"rows": {"variant_id": vid}},
        {"rows": [good] * 50_001},
        [],
    ):
        assert client.post("/api/inventory/sales", json=body).status_code == 422
    assert (
        client.post(
            "/api/inventory/sales", content=b"\xff\xfe", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert _units(store_db, vid, day) == recorded


def test_a_day_pandas_cannot_hold_does_not_take_the_store_down(client: TestClient, store_db: Engine) -> None:
    """Written around the feed's check (by hand, an old import): left out, not a 500 for every variant."""
    vid = "9612497925"
    before = client.get(f"/api/forecast/{vid}").json()
    with Session(store_db) as db:
        db.add(DailySales(variant_id=vid, day=date(1, 1, 1), units=3))
        db.commit()
    r = client.get(f"/api/forecast/{vid}")
    assert r.status_code == 200 and r.json()["points"] == before["points"]
    assert client.get(f"/api/forecast/{vid}.png").status_code == 200
    assert client.get("/api/inventory/reorder?limit=3").status_code == 200


def test_stock_feed_moves_the_outlook(client: TestClient, store_db: Engine) -> None:
    with Session(store_db) as db:
        back, in_stock = (
            sold_out(db, "lead").id,
            db.exec(select(Variant).where(Variant.stock_on_hand > 5)).first(),
        )
        assert in_stock is not None
    r = client.put(
        "/api/inventory/stock",
        json={
            "levels": [
                {"variant_id": back, "stock_on_hand": 12},
                {"variant_id": in_stock.id, "stock_on_hand": 0},
            ]
        },
    )
    assert r.status_code == 200 and r.json() == {"updated": 2, "sold_out": 1}, r.text
    restocked, emptied = (client.get(f"/api/inventory/outlook/{v}").json() for v in (back, in_stock.id))
    assert restocked["in_stock"] is True and restocked["stock_on_hand"] == 12
    assert emptied["in_stock"] is False and emptied["stock_on_hand"] == 0 and emptied["restock_earliest"]
    delisted = client.put(
        "/api/inventory/stock",
        json={"levels": [{"variant_id": back, "stock_on_hand": 5, "available": False}]},
    )
    assert delisted.json() == {"updated": 1, "sold_out": 1}
    assert client.get(f"/api/inventory/outlook/{back}").json()["in_stock"] is False
    bad = client.put(
        "/api/inventory/stock",
        json={
            "levels": [
                {"variant_id": in_stock.id, "stock_on_hand": 40},
                {"variant_id": "nope", "stock_on_hand": 1},
            ]
        },
    )
    assert bad.status_code == 422 and "unknown variant 'nope'" in bad.json()["detail"]
    assert client.get(f"/api/inventory/outlook/{in_stock.id}").json()["stock_on_hand"] == 0  # unchanged
    for body in ({"levels": [{"variant_id": back, "stock_on_hand": -3}]}, {"levels": [{"variant_id": back}]}):
        assert client.put("/api/inventory/stock", json=body).status_code == 422


def test_forecast_plot_endpoint(client: TestClient) -> None:
    r = client.get("/api/forecast/9612497925.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "private, no-cache"  # a feed update shows on the next look
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 10_000
    assert client.get("/api/forecast/0000000000.png").status_code == 404


def test_reorder_endpoint(store_db: Engine, cheap_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demand, "store_spec", cheap_spec)
    s = Settings(llm_backend="scripted", database_url=str(store_db.url), var_dir=cheap_cache)
    with TestClient(create_app(s, backend=ScriptedBackend())) as client:
        r = client.get("/api/inventory/reorder", params={"limit": 15})
        assert client.get("/api/inventory/reorder", params={"limit": 0}).status_code == 422
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] > 15 and len(body["lines"]) == 15
    assert body["sales_through"] == (s.store_day() - timedelta(days=1)).isoformat()
    urgency = [line["urgency_days"] for line in body["lines"]]
    assert urgency == sorted(urgency)


def test_server_start_fills_the_forecast_cache_at_low_priority(
    store_db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first reorder list reads what the start-up batch left; the batch ran niced, off the loop."""
    monkeypatch.setattr(demand, "store_spec", cheap_spec)
    real, seen = demand._compute, []

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        tid = threading.get_native_id()
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, tid)))
        return real(*args, **kwargs)

    monkeypatch.setattr(demand, "_compute", watched)
    s = Settings(llm_backend="scripted", database_url=str(store_db.url), var_dir=tmp_path)  # type: ignore[call-arg]
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with TestClient(create_app(s, backend=ScriptedBackend(), warm_up=True)) as client:
        client.app.state.forecast_warming.join(timeout=120)  # type: ignore[attr-defined]
        assert seen == [("forecast-warm", min(base + demand.WARM_NICENESS, 19))]
        with Session(store_db) as db:
            with_sales = set(db.exec(select(DailySales.variant_id).distinct()))
        assert {p.stem for p in (tmp_path / "forecast").glob("*.json")} == with_sales
        monkeypatch.setattr(demand, "_compute", lambda *_a, **_k: pytest.fail("recomputed on request"))
        r = client.get("/api/inventory/reorder")
        assert r.status_code == 200 and r.json()["count"] > 20
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the server's own threads keep their priority


@pytest.mark.parametrize(("day", "warms", "waits_for_the_day"), [("2026-11-20", 1, 0), ("live", 3, 3)])
def test_the_forecast_thread_rewarms_when_a_live_day_turns(
    day: str, warms: int, waits_for_the_day: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fixed (demo) day is warmed once; a live one again at each turn of the day, until stopped."""
    stop, calls, waits = threading.Event(), [], []
    monkeypatch.setattr(demand, "warm_cache", lambda *_a: calls.append(1) or (len(calls) == 3 and stop.set()))
    s = Settings(_env_file=None, store_today=day)  # type: ignore[call-arg]
    demand.keep_warm(None, s, stop, until_next_day=lambda: waits.append(1) or 0.01)  # type: ignore[arg-type]
    assert len(calls) == warms and len(waits) == waits_for_the_day  # the last wait ends on `stop`


@pytest.mark.parametrize(
    ("zone", "now_utc", "seconds"),
    [
        ("UTC", datetime(2026, 11, 22, 23, 0, tzinfo=UTC), 61 * 60),
        ("Pacific/Auckland", datetime(2026, 11, 22, 10, 59, tzinfo=UTC), 120),  # 23:59 NZDT
        ("America/New_York", datetime(2026, 11, 23, 3, 0, tzinfo=UTC), 2 * 3600 + 60),  # 22:00 EST
        # Berlin leaves summer time on 2026-10-25: that day is 25 hours long, the spring one 23.
        ("Europe/Berlin", datetime(2026, 10, 24, 22, 1, tzinfo=UTC), 25 * 3600),
        ("Europe/Berlin", datetime(2026, 3, 28, 23, 1, tzinfo=UTC), 23 * 3600),
    ],
)
def test_a_live_day_turns_at_the_store_midnight(zone: str, now_utc: datetime, seconds: int) -> None:
    assert demand.seconds_to_next_day(ZoneInfo(zone), now_utc) == seconds


def test_a_live_store_day_is_the_date_where_the_store_is(store_db: Engine, tmp_path: Path) -> None:
    """UTC+14 and UTC-12 are 26 hours apart, so their dates differ at every moment; the sales feed
    takes the store's own today."""
    ahead, behind = (
        Settings(_env_file=None, store_today="live", store_timezone=zone)  # type: ignore[call-arg]
        for zone in ("Pacific/Kiritimati", "Etc/GMT+12")
    )
    assert ahead.store_day() > behind.store_day()
    assert ahead.store_day() == datetime.now(ZoneInfo("Pacific/Kiritimati")).date()
    with pytest.raises(ValueError, match="IANA time zone"):
        Settings(_env_file=None, store_timezone="Mars/Olympus")  # type: ignore[call-arg]
    s = ahead.model_copy(
        update={"llm_backend": "scripted", "database_url": str(store_db.url), "var_dir": tmp_path}
    )
    row = {"variant_id": "9612497925", "day": ahead.store_day().isoformat(), "units": 2}
    with TestClient(create_app(s, backend=ScriptedBackend())) as c:
        r = c.post("/api/inventory/sales", json={"rows": [row]})
        assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
        late = {**row, "day": (ahead.store_day() + timedelta(days=1)).isoformat()}
        assert c.post("/api/inventory/sales", json={"rows": [late]}).status_code == 422


def test_a_live_store_day_forecasts_from_the_current_date(store_db: Engine, tmp_path: Path) -> None:
    fixed = Settings(_env_file=None, var_dir=tmp_path, database_url=str(store_db.url))  # type: ignore[call-arg]
    live = fixed.model_copy(update={"store_today": "live"})
    today = datetime.now(UTC).date()
    assert live.store_day() == today and fixed.store_day() == date(2026, 11, 20)
    a, b = forecast_variant(store_db, fixed, "9612497925"), forecast_variant(store_db, live, "9612497925")
    assert (a.as_of, b.as_of) == (fixed.store_day(), today) and b.points[0].ds == today
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        Settings(_env_file=None, store_today="yesterday")  # type: ignore[call-arg]


def test_batches_wait_for_the_one_holding_the_cache_and_read_what_it_wrote(
    store_db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas sharing var_dir: while another process holds the batch lock (an flock taken on a file
    of our own, which conflicts exactly as another process's would) nothing is fitted; then one batch
    fits and the next reads its files."""
    monkeypatch.setattr(demand, "store_spec", cheap_spec)
    entered: list[float] = []
    read_sales = demand.sales_frame
    monkeypatch.setattr(demand, "sales_frame", lambda *a: entered.append(time.monotonic()) or read_sales(*a))
    s = Settings(llm_backend="scripted", var_dir=tmp_path)  # type: ignore[call-arg]
    (tmp_path / "forecast").mkdir()
    with open(tmp_path / "forecast" / ".batch.lock", "a") as other_process, ThreadPoolExecutor(2) as pool:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        batches = [pool.submit(demand.forecast_all, store_db, s) for _ in range(2)]
        time.sleep(1.0)
        assert not entered and not any(b.done() for b in batches)  # neither got in
        fcntl.flock(other_process, fcntl.LOCK_UN)
        reports = [b.result(timeout=120) for b in batches]
    assert len(entered) == 2 and sorted(r.computed for r in reports) == [0, len(reports[0].forecasts)]
    assert len(reports[0].forecasts) > 500 and reports[0].forecasts == reports[1].forecasts


def test_forecast_routes_are_for_admins_and_keyed_services(store_db: Engine, tmp_path: Path) -> None:
    """Sales, stock and order quantities are the store's business: an admin's token or the service key."""
    s = Settings(
        llm_backend="scripted",
        database_url=str(store_db.url),
        var_dir=tmp_path,
        demo_mode=False,
        inventory_api_key=SecretStr("inv-key"),
    )

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    admin = bearer(issue_staff_token(StaffClaims(staff_id=1, role="admin", name="Ada"), s))
    agent = bearer(issue_staff_token(StaffClaims(staff_id=2, role="agent", name="Alex"), s))
    shopper = bearer(issue_token(SessionClaims(conversation_id="x", customer_id="c1"), s))
    url = "/api/forecast/9612497925"
    with TestClient(create_app(s, backend=ScriptedBackend())) as c:
        assert c.get(url).status_code == 401
        assert c.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get(url, headers=agent).status_code == 403
        assert c.get(url, headers=shopper).status_code == 403
        assert c.get(url, headers=bearer("garbage")).status_code == 401
        assert c.get("/api/forecast/9612497925.png").status_code == 401
        assert c.get("/api/inventory/reorder").status_code == 401
        feed = {"rows": [{"variant_id": "9612497925", "day": "2026-11-19", "units": 1}]}
        assert c.post("/api/inventory/sales", json=feed).status_code == 401
        assert c.post("/api/inventory/sales", json=feed, headers=shopper).status_code == 403
        assert c.put("/api/inventory/stock", json={"levels": []}, headers=agent).status_code == 403
        assert c.post("/api/inventory/sales", json=feed, headers={"X-API-Key": "inv-key"}).status_code == 200
        assert c.get(url, headers=admin).status_code == 200
        assert c.get(url, headers={"X-API-Key": "inv-key"}).status_code == 200
        assert c.get("/api/forecast/0000000000", headers=admin).status_code == 404
    unkeyed = s.model_copy(update={"inventory_api_key": None})
    with TestClient(create_app(unkeyed, backend=ScriptedBackend())) as c:
        refused = c.get(url)
        assert refused.status_code == 403 and "SHOPDESK_INVENTORY_API_KEY" in refused.json()["detail"]
        assert c.get(url, headers=admin).status_code == 200


# ---- eval command and migration -----------------------------------------------------------------------------


def test_eval_forecast_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for uid in ("a", "b", "c"):
        y = 20 + 5 * np.sin(np.arange(84) * 2 * np.pi / 7) + rng.normal(0, 1, 84)
        rows.append(pd.DataFrame({"unique_id": uid, "ds": pd.date_range("2025-01-01", periods=84), "y": y}))
    path = tmp_path / "series.csv"
    pd.concat(rows).to_csv(path, index=False)
    result = CliRunner().invoke(
        cli.app, ["eval", "forecast", "--csv", str(path), "--horizon", "7", "--freq", "D", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out) == {"models", "n_series", "horizon"} and out["n_series"] == 3 and out["horizon"] == 7
    assert list(out["models"])[0] == "seasonal_naive" and list(out["models"])[-1] == "selected"
    assert {"auto_ets", "auto_arima", "auto_theta", "croston_optimized", "tsb", "adida"} <= set(out["models"])
    for scores in out["models"].values():
        assert set(scores) == {"mase", "smape"} and scores["mase"] > 0 and 0 <= scores["smape"] <= 200
    assert out["models"]["selected"]["mase"] < out["models"]["seasonal_naive"]["mase"]


def test_eval_forecast_rejects_a_malformed_csv(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("series,when,value\na,2025-01-01,1\n")
    result = CliRunner().invoke(
        cli.app, ["eval", "forecast", "--csv", str(path), "--horizon", "7", "--freq", "D"]
    )
    assert result.exit_code == 2 and "unique_id,ds,y" in result.output


def test_purchasing_migration_up_and_down(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url, "0002")
    engine = make_engine(url)
    try:
        assert {"supplieritem", "purchaseorder", "purchaseorderline"} <= set(
            inspect(engine).get_table_names()
        )
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
        cfg.attributes["programmatic"] = True
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        names = set(inspect(engine).get_table_names())
        assert not names & {"supplieritem", "purchaseorder", "purchaseorderline"} and "variant" in names
    finally:
        engine.dispose()
