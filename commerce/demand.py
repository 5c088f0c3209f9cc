"""The store's demand forecast per variant: daily units from `dailysales`, forecast by
`commerce.forecast` (model chosen per variant by backtest), cached per store day.

Censored demand: a sold-out variant sells nothing however many shoppers want it, so the zeros at the
end of its history are not demand. Whole weeks of that zero tail are dropped before fitting (whole
weeks keep the weekday pattern in phase); the forecast then says what it would sell once back.

Cache (the choice behind fast endpoints): a forecast is a pure function of the variant's cleaned
history, the forecasting settings and the store day, so each one is stored under
`var_dir/forecast/<variant>.json` with a key hashing exactly those. A request reads the file when the
key matches and recomputes only that variant otherwise: new sales, another day or other settings
invalidate it by themselves, and nothing has to be purged by hand. `forecast_all` fills the cache for
every variant in one parallel batch (the reorder list needs them all): the server runs it in the
background when it starts and, for a live store day, after each midnight in the store's time zone (`keep_warm`); `python -m
commerce.demand` does the same from cron; otherwise the first reorder request of the day pays for it. Single variants
(the bot's `stock_outlook`, `GET /api/forecast/{id}`) compute alone in ~0.1-1 s when not cached.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dt_time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sqlalchemy import String, cast, func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from commerce.forecast import ForecastSpec, Issue, SeriesForecast, prepare, select_and_forecast
from commerce.models import DailySales, Product, Variant
from shopdesk.settings import Settings

log = logging.getLogger(__name__)
LEVELS = (80, 95)
CACHE_VERSION = 3  # bump when the forecast logic changes: old files stop matching


class UnknownVariant(LookupError):
    """No variant has this id."""

    def __init__(self, variant_id: str) -> None:
        super().__init__(f"unknown variant {variant_id!r}")
        self.variant_id = variant_id


class ForecastPoint(BaseModel):
    ds: date
    mean: float
    lo_80: float | None = None
    hi_80: float | None = None
    lo_95: float | None = None
    hi_95: float | None = None


class BacktestSummary(BaseModel):
    """The chosen model's rolling-origin backtest (None when the history was too short for one)."""

    windows: int
    mae: float | None
    rmse: float | None
    mase: float | None
    candidates_mae: dict[str, float | None]


class DemandForecast(BaseModel):
    """Daily units forecast for one variant, with intervals, the model chosen and its backtest error."""

    variant_id: str
    as_of: date  # the store day the forecast starts on
    model: str
    demand_kind: str  # smooth | intermittent | zero
    history_days: int  # days of history the model saw (after trimming pre-launch and stock-out days)
    censored_days: int  # days of zero sales at the end dropped as a stock-out
    points: list[ForecastPoint]
    backtest: BacktestSummary
    notes: list[str]  # data problems and what was done about them

    @property
    def daily_mean(self) -> float:
        return float(np.mean([p.mean for p in self.points])) if self.points else 0.0

    def cumulative(self, days: float) -> float:
        """Units expected over the next `days` days (the horizon's average rate beyond it)."""
        means = [p.mean for p in self.points]
        full = int(days)
        total = sum(means[: min(full, len(means))])
        if full > len(means):
            total += (full - len(means)) * self.daily_mean
        if days > full:
            total += (days - full) * (means[full] if full < len(means) else self.daily_mean)
        return float(total)


def store_spec(settings: Settings, *, n_jobs: int | None = None) -> ForecastSpec:
    """Daily units: weekly season, zero-filled gaps, summed duplicates, no negative demand, no trend."""
    return ForecastSpec(
        freq="D",
        season_length=7,
        horizon=settings.forecast_horizon_days,
        levels=LEVELS,
        max_input=settings.forecast_history_days,
        n_jobs=n_jobs or settings.forecast_n_jobs,
        fill="zero",
        duplicates="sum",
        negative="clip",
        trim_leading_zeros=True,
        trend=False,  # 4 weeks of daily units: trends overfit (store backtest MASE 1.085 vs 1.093, 8x faster)
    )


# ---- data -----------------------------------------------------------------------------------------


def sales_frame(engine: Engine, variant_ids: list[str] | None = None) -> pd.DataFrame:
    """Long frame of daily units: unique_id (variant id), ds, y, available, stock_on_hand."""
    ds_t = DailySales.__table__  # type: ignore[attr-defined]
    v_t = Variant.__table__  # type: ignore[attr-defined]
    # The day as ISO text, read as the driver's raw tuples: SQLAlchemy's Row objects and date parsing
    # for the ~430k rows of the demo store were 60 % of a reorder list served from the cache.
    q = select(ds_t.c.variant_id, cast(ds_t.c.day, String), ds_t.c.units)
    vq = select(v_t.c.id, v_t.c.available, v_t.c.stock_on_hand)
    if variant_ids is not None:
        q, vq = q.where(ds_t.c.variant_id.in_(variant_ids)), vq.where(v_t.c.id.in_(variant_ids))
    with engine.connect() as conn:
        sales = pd.DataFrame(conn.execute(q).cursor.fetchall(), columns=["unique_id", "ds", "y"])
        variants = pd.DataFrame(conn.execute(vq).all(), columns=["unique_id", "available", "stock_on_hand"])
    # A day pandas cannot hold (before 1677: the feed refuses those, but a row written around it must
    # not take the whole reorder list down) is left out, and said once.
    sales["ds"] = pd.to_datetime(sales["ds"], format="%Y-%m-%d", errors="coerce")
    if bad := int(sales["ds"].isna().sum()):
        log.warning("left out %d daily sales row(s) with a day outside 1677-2262", bad)
        sales = sales.dropna(subset=["ds"])
    sales["y"] = sales["y"].astype(float)
    return sales.merge(variants, on="unique_id", how="left").sort_values(
        ["unique_id", "ds"], ignore_index=True
    )


@dataclass
class _History:
    """One variant's history as the model will see it, and what was cut from its end."""

    frame: pd.DataFrame  # unique_id, ds, y
    censored_days: int
    last_day: date  # the store's sales are recorded through this day (the variant's zeros included)


def sales_through(engine: Engine, today: date) -> date | None:
    """The last day before `today` the store has any sales recorded for: how far the feed reaches."""
    day = DailySales.__table__.c.day  # type: ignore[attr-defined]
    with engine.connect() as conn:
        last = conn.execute(select(func.max(day)).where(day < today)).scalar()
    return date.fromisoformat(last) if isinstance(last, str) else last


def _histories(sales: pd.DataFrame, today: date, through: date | None = None) -> dict[str, _History]:
    """Per variant, the days before `today` (one pass over the frame sorted by variant and day).

    A day without a row, up to `through` (the store's last recorded day; by default the frame's own),
    is a day without sales: feeds that send only the days something sold leave them out, and the zeros
    after a variant's last sale are what tells the model it stopped selling."""
    sales = sales[sales["ds"] < pd.Timestamp(today)]
    frame = sales[["unique_id", "ds", "y"]].reset_index(drop=True)
    ids, ys = frame["unique_id"].to_numpy(), frame["y"].to_numpy()
    sold_out, days = sales["stock_on_hand"].to_numpy() <= 0, frame["ds"].to_numpy()
    out: dict[str, _History] = {}
    if not len(ids):  # a store without sales yet
        return out
    end_day = pd.Timestamp(through) if through is not None else pd.Timestamp(days.max())
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(ids)], strict=True):
        part, y = frame.iloc[start:end], ys[start:end]
        if days[end - 1] < end_day:  # no rows after the last sale: zeros up to the store's last day
            tail = pd.date_range(days[end - 1] + pd.Timedelta(days=1), end_day, freq="D")
            part = pd.concat(
                [part, pd.DataFrame({"unique_id": ids[start], "ds": tail, "y": 0.0})], ignore_index=True
            )
            y = np.r_[y, np.zeros(len(tail))]
        censored = 0
        if sold_out[start] and (y > 0).any():
            zero_tail = len(y) - 1 - int(np.flatnonzero(y > 0)[-1])
            censored = (zero_tail // 7) * 7  # whole weeks: the weekday pattern stays in phase
        out[str(ids[start])] = _History(
            frame=part.iloc[: len(part) - censored],
            censored_days=censored,
            last_day=part["ds"].iloc[-1].date(),
        )
    return out


def _cache_key(h: _History, spec: ForecastSpec, today: date) -> str:
    """What the forecast depends on: the history, the spec (parallelism aside) and the store day."""
    digest = hashlib.sha256()
    params = (
        CACHE_VERSION,
        today.isoformat(),
        h.last_day.isoformat(),
        h.censored_days,
        replace(spec, n_jobs=1),
    )
    digest.update(repr(params).encode())
    digest.update(h.frame["ds"].iloc[0].isoformat().encode())
    digest.update(np.ascontiguousarray(h.frame["y"].to_numpy(np.float64)).tobytes())
    return digest.hexdigest()[:24]


def _cache_dir(settings: Settings) -> Path:
    return settings.var_dir / "forecast"


def _read_cached(settings: Settings, vid: str, key: str) -> DemandForecast | None:
    path = _cache_dir(settings) / f"{vid}.json"
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if payload.get("key") != key:
        return None
    try:
        return DemandForecast.model_validate(payload["forecast"])
    except ValueError:
        return None


def _write_cached(settings: Settings, vid: str, key: str, fc: DemandForecast) -> None:
    folder = _cache_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{vid}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps({"key": key, "forecast": fc.model_dump(mode="json")}))
    tmp.replace(folder / f"{vid}.json")


def _lag(h: _History, today: date) -> int:
    """Days between the last recorded day and today: forecast steps that fall before today."""
    return max((today - h.last_day).days - 1, 0)


def _to_model(vid: str, sf: SeriesForecast, h: _History, today: date, issues: list[Issue]) -> DemandForecast:
    points, lag = [], _lag(h, today)
    for i in range(lag, len(sf.mean)):
        bounds: dict[str, float] = {}
        for lv in LEVELS:
            if lv in sf.lo:
                bounds[f"lo_{lv}"] = round(float(sf.lo[lv][i]), 4)
                bounds[f"hi_{lv}"] = round(float(sf.hi[lv][i]), 4)
        day = today + timedelta(days=i - lag)
        points.append(ForecastPoint(ds=day, mean=round(float(sf.mean[i]), 4), **bounds))
    bt = sf.as_dict()["backtest"]
    notes = [i.message for i in issues if i.unique_id == vid]
    if lag:
        notes.append(
            f"sales are recorded through {h.last_day}: the {lag} day(s) since are not in the data yet,"
            " so the forecast starts that many days after the history ends"
        )
    if h.censored_days:
        notes.append(
            f"the last {h.censored_days} days of zero sales were a stock-out, not demand: left out of the fit"
        )
    return DemandForecast(
        variant_id=vid,
        as_of=today,
        model=sf.model,
        demand_kind=sf.kind,
        history_days=sf.n_obs,
        censored_days=h.censored_days,
        points=points,
        backtest=BacktestSummary(**bt),
        notes=notes,
    )


def _compute(histories: dict[str, _History], spec: ForecastSpec, today: date) -> dict[str, DemandForecast]:
    frame = pd.concat([h.frame for h in histories.values()], ignore_index=True)
    # Forecast dates start on `today`: a censored history ends whole weeks earlier, in the same phase;
    # a feed that lags (the store's last recorded day before yesterday) needs that many extra steps.
    lag = max(_lag(h, today) for h in histories.values())
    prep = prepare(frame, replace(spec, horizon=spec.horizon + lag) if lag else spec)
    result = select_and_forecast(prep)
    return {
        vid: _to_model(vid, sf, histories[vid], today, result.issues) for vid, sf in result.series.items()
    }


_batch_lock = threading.Lock()


@contextmanager
def _batch_turn(settings: Settings) -> Iterator[None]:
    """One batch at a time per cache: threads of this process, and other processes (replicas, the
    nightly job) sharing var_dir, which then read what the first one wrote instead of redoing it."""
    folder = _cache_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with _batch_lock, open(folder / ".batch.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def forecast_variant(engine: Engine, settings: Settings, variant_id: str) -> DemandForecast:
    """One variant's forecast: from the cache when its history and settings are unchanged."""
    today = settings.store_day()
    sales = sales_frame(engine, [variant_id])
    if sales.empty:
        with Session(engine) as db:
            if db.get(Variant, variant_id) is None:
                raise UnknownVariant(variant_id)
        raise LookupError(f"variant {variant_id!r} has no sales history: nothing to forecast")
    hist = _histories(sales, today, sales_through(engine, today)).get(variant_id)
    if hist is None:
        raise LookupError(f"variant {variant_id!r} has no sales recorded before {today}: nothing to forecast")
    spec = store_spec(settings, n_jobs=1)
    key = _cache_key(hist, spec, today)
    cached = _read_cached(settings, variant_id, key)
    if cached is not None:
        return cached
    fc = _compute({variant_id: hist}, spec, today)[variant_id]
    _write_cached(settings, variant_id, key, fc)
    return fc


@dataclass
class BatchReport:
    forecasts: dict[str, DemandForecast]
    computed: int
    cached: int
    seconds: float


def forecast_all(engine: Engine, settings: Settings, *, use_cache: bool = True) -> BatchReport:
    """Every variant's forecast; only the ones not in the cache are computed (in parallel)."""
    t0 = time.perf_counter()
    today = settings.store_day()
    with _batch_turn(settings):
        histories = _histories(sales_frame(engine), today)
        spec = store_spec(settings)
        keys = {vid: _cache_key(h, spec, today) for vid, h in histories.items()}
        out: dict[str, DemandForecast] = {}
        if use_cache:
            for vid, key in keys.items():
                cached = _read_cached(settings, vid, key)
                if cached is not None:
                    out[vid] = cached
        todo = {vid: h for vid, h in histories.items() if vid not in out}
        if todo:
            for vid, fc in _compute(todo, spec, today).items():
                out[vid] = fc
                _write_cached(settings, vid, keys[vid], fc)
    return BatchReport(out, computed=len(todo), cached=len(out) - len(todo), seconds=time.perf_counter() - t0)


WARM_NICENESS = 10


def warm_cache(engine: Engine, settings: Settings) -> BatchReport | None:
    """`forecast_all` at a lower CPU priority, for a background thread at server start: the first
    reorder list of the day reads the cache instead of waiting ~20 s, and chats keep the CPU meanwhile
    (the niceness is this thread's own, and the fitting processes it starts inherit it). Failures are
    logged, never raised: the request path computes what is missing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARM_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: warm at normal priority
        log.info("forecast warm-up runs at normal priority")
    try:
        report = forecast_all(engine, settings)
    except Exception:
        log.exception("forecast warm-up failed; forecasts are computed on request instead")
        return None
    log.info(
        "forecast cache warm: %d variants (%d computed, %d cached) in %.1f s",
        len(report.forecasts),
        report.computed,
        report.cached,
        report.seconds,
    )
    return report


def seconds_to_next_day(zone: tzinfo, now: datetime | None = None) -> float:
    """Until a minute past the store's next midnight, when a live store day turns. Aware datetimes of
    one zone subtract as wall clocks, so both go to UTC first: a DST night is 23 or 25 hours long."""
    now = (now or datetime.now(UTC)).astimezone(zone)
    turn = datetime.combine(now.date() + timedelta(days=1), dt_time(0, 1), tzinfo=zone)
    return (turn.astimezone(UTC) - now.astimezone(UTC)).total_seconds()


def keep_warm(
    engine: Engine,
    settings: Settings,
    stop: threading.Event,
    *,
    until_next_day: Callable[[], float] | None = None,
) -> None:
    """The server's forecast thread: warm the cache now and, for a live store day, again each time
    the day turns in the store's time zone (every forecast's key holds the day), until `stop` is set."""
    until_next_day = until_next_day or (lambda: seconds_to_next_day(settings.store_zone))
    warm_cache(engine, settings)
    while settings.store_day_is_live and not stop.wait(until_next_day()):
        warm_cache(engine, settings)


# ---- plot -----------------------------------------------------------------------------------------


def forecast_png(engine: Engine, settings: Settings, variant_id: str, *, history_days: int = 112) -> bytes:
    """History, forecast and its 80/95 % intervals as a PNG (matplotlib's Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fc = forecast_variant(engine, settings, variant_id)
    sales = sales_frame(engine, [variant_id])
    hist = sales[sales["ds"].dt.date < fc.as_of].tail(history_days)
    with Session(engine) as db:
        variant = db.get(Variant, variant_id)
        product = db.get(Product, variant.product_id) if variant else None
        name = product.name if product else variant_id
        options = ", ".join(variant.options.values()) if variant else ""
    days = [pd.Timestamp(p.ds) for p in fc.points]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(hist["ds"], hist["y"], color="#555", lw=1, label="units sold")
    for lv, alpha in ((95, 0.15), (80, 0.3)):
        lo = [getattr(p, f"lo_{lv}") for p in fc.points]
        hi = [getattr(p, f"hi_{lv}") for p in fc.points]
        if all(v is not None for v in lo + hi):
            ax.fill_between(days, lo, hi, color="#1f77b4", alpha=alpha, lw=0, label=f"{lv} % interval")
    ax.plot(days, [p.mean for p in fc.points], color="#1f77b4", lw=2, label=f"forecast ({fc.model})")
    ax.axvline(pd.Timestamp(fc.as_of), color="#999", ls="--", lw=1)
    mase = fc.backtest.mase
    ax.set_title(
        f"{name} ({options}) · {variant_id} · backtest MASE {mase:.2f}"
        if mase is not None
        else f"{name} ({options}) · {variant_id}",
        fontsize=10,
    )
    ax.set_ylabel("units per day")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


if __name__ == "__main__":  # the nightly batch: fill the forecast cache for every variant
    from shopdesk.db import get_engine
    from shopdesk.settings import get_settings

    settings = get_settings()
    report = forecast_all(get_engine(settings), settings, use_cache="--refresh" not in sys.argv)
    print(f"{len(report.forecasts)} variants: {report.computed} computed, {report.cached} cached", end="")
    print(f" in {report.seconds:.1f} s")
