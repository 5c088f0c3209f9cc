"""Forecast and purchasing REST for the admin pages (commerce.demand, commerce.inventory).

- `GET /api/forecast/{variant_id}`: daily units forecast with 80/95 % intervals, the model chosen
  for the variant and its backtest error.
- `GET /api/forecast/{variant_id}.png`: history, forecast and intervals as a PNG.
- `GET /api/inventory/reorder`: what to reorder now, most urgent first.
- `GET /api/inventory/outlook/{variant_id}`: stock, days of cover and, when sold out, the restock window
  (the same answer the bot's `stock_outlook` tool gives a shopper).
- `POST /api/inventory/sales`, `PUT /api/inventory/stock`: the order system's feed of daily units sold
  and stock levels (commerce/sales_feed.py); a batch with any problem is rejected whole (422).

Forecasts come from the per-variant cache under var_dir/forecast (see commerce/demand.py): a request
reads it, or computes the one variant it needs; the reorder list fills the cache for every variant in
one batch the first time each store day (or after `python -m commerce.demand`). Unknown variant: 404.
Callers: an admin's bearer token (the admin page's Inventory tab), or `X-API-Key` =
settings.inventory_api_key (other services); with no key set, a demo store answers anyone.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from api.deps import SessionDep, SettingsDep, require_admin_or_service
from commerce.demand import DemandForecast, UnknownVariant, forecast_png, forecast_variant, sales_through
from commerce.inventory import ReorderLine, StockOutlook, reorder_list, stock_outlook
from commerce.models import Product, Variant
from commerce.sales_feed import (
    MAX_ROWS,
    FeedRejected,
    SalesReport,
    SalesRow,
    StockLevel,
    StockReport,
    record_sales,
    set_stock,
)

# Sales history, stock and purchase quantities are the store's business: admins (the admin pages) and
# other services with the inventory key only.
router = APIRouter(
    prefix="/api", tags=["forecast"], dependencies=[Depends(require_admin_or_service("inventory_api_key"))]
)


class ForecastOut(DemandForecast):
    product_name: str
    options: dict[str, str]


class ReorderOut(BaseModel):
    as_of: date
    sales_through: date | None  # the last day the sales feed has recorded: the forecasts know no later
    count: int
    lines: list[ReorderLine]


def _engine(db: SessionDep) -> Engine:
    bind = db.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def _not_found(exc: LookupError) -> HTTPException:
    """The exception's own message: str() of a KeyError would wrap it in quotes."""
    return HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0]) if exc.args else "not found")


# Declared before /forecast/{variant_id}, which would otherwise take "123.png" for an id.
@router.get(
    "/forecast/{variant_id}.png", response_class=Response, responses={200: {"content": {"image/png": {}}}}
)
def forecast_plot(variant_id: str, db: SessionDep, settings: SettingsDep) -> Response:
    """The last 16 weeks of sales, the forecast and its 80/95 % intervals (PNG)."""
    try:
        png = forecast_png(_engine(db), settings, variant_id)
    except LookupError as exc:
        raise _not_found(exc) from exc
    return Response(content=png, media_type="image/png", headers={"Cache-Control": "private, no-cache"})


@router.get("/forecast/{variant_id}", response_model=ForecastOut)
def variant_forecast(variant_id: str, db: SessionDep, settings: SettingsDep) -> ForecastOut:
    """Daily units forecast of one variant: intervals, chosen model, backtest error, data notes."""
    variant = db.get(Variant, variant_id)
    if variant is None:
        raise _not_found(UnknownVariant(variant_id))
    try:
        fc = forecast_variant(_engine(db), settings, variant_id)
    except LookupError as exc:
        raise _not_found(exc) from exc
    product = db.get(Product, variant.product_id)
    return ForecastOut(
        **fc.model_dump(),
        product_name=product.name if product else variant.product_id,
        options=variant.options,
    )


@router.get("/inventory/reorder", response_model=ReorderOut)
def inventory_reorder(
    db: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="At most this many lines")] = None,
) -> ReorderOut:
    """Variants to reorder now (stock + open orders at or under the reorder point), most urgent first."""
    lines = reorder_list(db, settings)
    shown = lines[:limit] if limit else lines
    today = settings.store_day()
    through = sales_through(_engine(db), today)
    return ReorderOut(as_of=today, sales_through=through, count=len(lines), lines=shown)


@router.get("/inventory/outlook/{variant_id}", response_model=StockOutlook)
def inventory_outlook(variant_id: str, db: SessionDep, settings: SettingsDep) -> StockOutlook:
    """Stock on hand, days of cover and, when sold out, the restock window and what it rests on."""
    try:
        return stock_outlook(db, settings, variant_id)
    except LookupError as exc:
        raise _not_found(exc) from exc


class SalesBatch(BaseModel):
    rows: list[SalesRow] = Field(max_length=MAX_ROWS)


class StockBatch(BaseModel):
    levels: list[StockLevel] = Field(max_length=MAX_ROWS)


def _rejected(exc: FeedRejected) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"batch rejected, nothing was written: {exc}")


@router.post("/inventory/sales", response_model=SalesReport)
def post_sales(batch: SalesBatch, db: SessionDep, settings: SettingsDep) -> SalesReport:
    """Daily units sold per variant, upserted (a resent day replaces its total); forecasts pick them up."""
    try:
        return record_sales(db, batch.rows, settings.store_day())
    except FeedRejected as exc:
        raise _rejected(exc) from exc


@router.put("/inventory/stock", response_model=StockReport)
def put_stock(batch: StockBatch, db: SessionDep) -> StockReport:
    """Stock on hand per variant (and whether it is for sale): the outlook and reorder list use it."""
    try:
        return set_stock(db, batch.levels)
    except FeedRejected as exc:
        raise _rejected(exc) from exc
