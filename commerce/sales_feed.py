"""The platform's feed into forecasting: daily units sold per variant, and stock levels.

The forecast is only as current as these two. The seed fills them for the demo; a real store's order
system posts them (`POST /api/inventory/sales`, `PUT /api/inventory/stock`). A batch is checked whole
before anything is written, and written in one transaction: a rejected batch changes nothing, so the
sender can fix it and send it again. Sales are upserts (a day's total replaces what was recorded, so
a late correction is a resend). Nothing has to be invalidated: each forecast's cache key hashes its
history and whether the variant is sold out (commerce/demand.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from commerce.models import DailySales, Variant

MAX_ROWS = 50_000  # per request: a year of a 130-variant store's days
MAX_UNITS = 1_000_000  # a day's units of one variant above this is a unit mix-up, not a sale
MAX_PROBLEMS = 20  # listed in an error; the count says how many more
OLDEST_YEARS = 10  # a backfill reaches this far before today; older days are a mistyped year


class SalesRow(BaseModel):
    variant_id: str = Field(min_length=1, max_length=32)
    day: date
    units: int = Field(ge=0, le=MAX_UNITS, description="Units sold that day (returns are not negative sales)")


class StockLevel(BaseModel):
    variant_id: str = Field(min_length=1, max_length=32)
    stock_on_hand: int = Field(ge=0, le=MAX_UNITS * 100)
    available: bool | None = Field(
        default=None, description="false: not for sale even with stock; omitted: for sale while in stock"
    )


class FeedRejected(ValueError):
    """The batch has problems (listed); nothing was written."""

    def __init__(self, problems: list[str], total: int) -> None:
        more = total - len(problems)
        super().__init__("; ".join(problems) + (f"; and {more} more" if more > 0 else ""))
        self.problems = problems
        self.total = total


class SalesReport(BaseModel):
    received: int
    inserted: int
    updated: int
    first_day: date | None
    last_day: date | None


class StockReport(BaseModel):
    updated: int
    sold_out: int  # of the variants in this batch, how many are now not sellable


def _check(problems: list[str]) -> None:
    if problems:
        raise FeedRejected(problems[:MAX_PROBLEMS], len(problems))


def _unknown_ids(db: Session, ids: set[str]) -> list[str]:
    known: set[str] = set()
    listed = sorted(ids)
    for i in range(0, len(listed), 500):  # bounded IN lists
        known.update(db.execute(select(Variant.id).where(col(Variant.id).in_(listed[i : i + 500]))).scalars())
    return sorted(ids - known)


def record_sales(db: Session, rows: Sequence[SalesRow], today: date) -> SalesReport:
    """Upsert daily units; rejects (writing nothing) unknown variants, days after `today` or more than
    OLDEST_YEARS before it, and a variant-day listed twice."""
    problems: list[str] = []
    seen: set[tuple[str, date]] = set()
    oldest = today - timedelta(days=round(365.25 * OLDEST_YEARS))
    for i, r in enumerate(rows):
        if r.day > today:
            problems.append(f"rows[{i}]: {r.day} is after the store's today ({today})")
        elif r.day < oldest:
            problems.append(f"rows[{i}]: {r.day} is more than {OLDEST_YEARS} years before the store's today")
        if (r.variant_id, r.day) in seen:
            problems.append(f"rows[{i}]: {r.variant_id} on {r.day} is listed twice")
        seen.add((r.variant_id, r.day))
    problems += [f"unknown variant {v!r}" for v in _unknown_ids(db, {r.variant_id for r in rows})]
    _check(problems)
    if not rows:
        return SalesReport(received=0, inserted=0, updated=0, first_day=None, last_day=None)
    days = [r.day for r in rows]
    table = DailySales.__table__  # type: ignore[attr-defined]
    ids = sorted({r.variant_id for r in rows})
    existing: set[tuple[str, date]] = set()
    for i in range(0, len(ids), 500):
        existing.update(
            (v, d)
            for v, d in db.execute(
                select(table.c.variant_id, table.c.day).where(
                    table.c.variant_id.in_(ids[i : i + 500]), table.c.day.between(min(days), max(days))
                )
            )
        )
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    for i in range(0, len(rows), 5_000):
        stmt = insert(table).values([r.model_dump() for r in rows[i : i + 5_000]])
        db.execute(
            stmt.on_conflict_do_update(
                index_elements=["variant_id", "day"], set_={"units": stmt.excluded.units}
            )
        )
    updated = len(seen & existing)
    db.commit()
    return SalesReport(
        received=len(rows),
        inserted=len(rows) - updated,
        updated=updated,
        first_day=min(days),
        last_day=max(days),
    )


def set_stock(db: Session, levels: Sequence[StockLevel]) -> StockReport:
    """Stock on hand per variant (and whether it is sellable); rejects unknown or repeated variants."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, lv in enumerate(levels):
        if lv.variant_id in seen:
            problems.append(f"levels[{i}]: {lv.variant_id} is listed twice")
        seen.add(lv.variant_id)
    problems += [f"unknown variant {v!r}" for v in _unknown_ids(db, seen)]
    _check(problems)
    rows = [
        {
            "id": lv.variant_id,
            "stock_on_hand": lv.stock_on_hand,
            "available": lv.stock_on_hand > 0 and lv.available is not False,
        }
        for lv in levels
    ]
    if rows:  # one executemany by primary key, not a statement per variant
        db.execute(update(Variant), rows)
    db.commit()
    return StockReport(updated=len(rows), sold_out=sum(not r["available"] for r in rows))
