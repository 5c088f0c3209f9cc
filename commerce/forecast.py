"""Forecasting on any long-format frame (unique_id, ds, y), on Nixtla statsforecast.

One generic core serves the store (daily demand per variant, `commerce.demand`) and the evaluation
command (`shopdesk eval forecast`, any CSV):

- `prepare` checks and cleans the data (duplicate dates, gaps, missing or negative values, series
  shorter than two seasons) and says what it did in `Issue`s instead of failing or guessing silently.
  Series are put on an integer grid (position = periods since the series' first date), so gaps are
  found on any pandas frequency and statsforecast never sees calendar dates.
- `select_models` backtests each series' candidates on rolling origins and chooses one (pooled over
  similar series, see there); `select_and_forecast` then forecasts with prediction intervals.
- `evaluate_holdout` holds out the last `horizon` points of each series, selects on the data before
  them, and scores every candidate, the selection and seasonal naive by MASE and sMAPE.

Candidates: seasonal naive, AutoETS, AutoARIMA, AutoTheta, their mean ("ensemble"), and the
intermittent-demand models CrostonOptimized, TSB and ADIDA. Intermittent series (ADI >= 1.32,
Syntetos-Boylan) skip the ARIMA/Theta searches, which buy nothing there and cost most of the time.
AutoETS fits no season over 24: there `auto_ets` is ETS on the MSTL-deseasonalised series; the
AutoARIMA search is capped (orders, number of models), which bounds its time.

statsforecast 2.x runs its models in compiled C++ (`statsforecast._lib`), not numba: there is no
JIT warm-up to cache (numba is not even installed); a cold process pays ~2-4 s of imports once.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

MODEL_NAMES: tuple[str, ...] = (
    "seasonal_naive",
    "auto_ets",
    "auto_arima",
    "auto_theta",
    "croston_optimized",
    "tsb",
    "adida",
    "ensemble",
)
ENSEMBLE_MEMBERS: tuple[str, ...] = ("auto_ets", "auto_arima", "auto_theta")  # "ensemble" is their mean
HEAVY_MODELS = frozenset({"auto_ets", "auto_arima", "auto_theta"})  # fitted once per CV (refit=False)
INTERMITTENT_CANDIDATES: tuple[str, ...] = (
    "seasonal_naive",
    "auto_ets",
    "croston_optimized",
    "tsb",
    "adida",
)
ADI_INTERMITTENT = 1.32  # average demand interval at which Croston-type models take over (Syntetos-Boylan)
MAX_ETS_SEASON = 24  # statsforecast's AutoETS fits no season longer than this
Kind = Literal["smooth", "intermittent", "zero"]


class ForecastInputError(ValueError):
    """The data cannot be read at all (missing columns, unparsable dates, empty): nothing to forecast."""


@dataclass(frozen=True)
class Issue:
    """A data problem and what was done about it (series id None: the whole input)."""

    unique_id: str | None
    kind: str  # duplicate | gap | missing | negative | short | too_short | no_backtest | all_zero | ...
    message: str

    def __str__(self) -> str:
        return f"{self.unique_id}: {self.message}" if self.unique_id is not None else self.message


@dataclass(frozen=True)
class ForecastSpec:
    """How to forecast: frequency, season, horizon, backtest windows, intervals and data hygiene."""

    freq: str = "D"  # a pandas alias ("D", "W", "W-FRI", "MS", "h", ...) or "1" for integer ds
    season_length: int = 7
    horizon: int = 28
    n_windows: int = 8  # rolling origins of the selection backtest (fewer when the series is short)
    step_size: int | None = None  # points between origins; None: half the horizon
    # A series leaves its pool's default model only for one better on its backtest windows by more than
    # this many standard errors (one-sided 5 %): a smaller edge is within the noise of a few windows.
    switch_z: float = 1.645
    trend: bool = True  # ETS may fit a trend; False for short-horizon daily demand, where it overfits
    levels: tuple[int, ...] = (80, 95)
    max_input: int | None = None  # fit on at most this many recent points (bounds ARIMA/ETS time)
    n_jobs: int = 1
    fill: Literal["interpolate", "zero"] = "interpolate"  # gaps / missing values; "zero" for sales
    duplicates: Literal["mean", "sum"] = "mean"  # several rows on one date; "sum" for sales
    negative: Literal["clip", "keep"] = "keep"  # "clip" for demand: returns are not negative sales
    trim_leading_zeros: bool = False  # demand: zeros before the first sale are "not launched yet"
    candidates: tuple[str, ...] = MODEL_NAMES

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError("horizon must be at least 1")
        if self.season_length < 1:
            raise ValueError("season length must be at least 1")
        unknown = set(self.candidates) - set(MODEL_NAMES)
        if unknown:
            raise ValueError(f"unknown models {sorted(unknown)}; choose from {', '.join(MODEL_NAMES)}")


# ---- calendar: dates <-> integer positions ---------------------------------------------------------


@dataclass(frozen=True)
class Calendar:
    """Maps a series' integer positions back to its dates (or integers)."""

    start: Any  # pd.Period, or an int for integer series
    step: int  # ordinals per position (30 for "30min" periods), or the integer step
    anchor: Literal["start", "end", "int"]
    offset: pd.Timedelta = pd.Timedelta(0)

    def dates(self, positions: Iterable[int]) -> list[Any]:
        if self.anchor == "int":
            return [int(self.start + p * self.step) for p in positions]
        out = []
        for p in positions:
            period = self.start + int(p) * self.step
            if self.anchor == "end":
                out.append(period.end_time.normalize())
            else:
                out.append(period.start_time + self.offset)
        return out


def _offset(freq: str) -> Any:
    """The pandas offset of a frequency alias (old spellings like "M" or "H" accepted quietly)."""
    from pandas.tseries.frequencies import to_offset

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return to_offset(freq.strip())
    except ValueError as exc:
        raise ForecastInputError(
            f"unknown frequency {freq!r} (use a pandas alias: D, W, MS, h, ...)"
        ) from exc


def _period_alias(freq: str, ds: pd.Series) -> str:
    offset = _offset(freq)
    name = offset.name
    base = name.split("-")[0]
    if base == "W" and freq.strip().upper() == "W":  # unanchored: anchor on the data's own weekday
        day = ds.dt.dayofweek.mode().iloc[0]
        name = "W-" + ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")[int(day)]
    elif base in ("MS", "ME", "M", "BMS", "BME"):
        name = "M"
    elif base in ("QS", "QE", "Q"):
        name = "Q"
    elif base in ("YS", "YE", "Y", "AS", "A"):
        name = "Y"
    elif base in ("B", "C", "SMS", "SME"):
        raise ForecastInputError(f"frequency {freq!r} is not supported: use D, W, M, Q, Y, h or minutes")
    return f"{offset.n}{name}" if offset.n != 1 else name


def _is_integer_freq(freq: str) -> bool:
    return freq.strip().lstrip("+").isdigit()


# ---- data preparation -----------------------------------------------------------------------------


@dataclass
class SeriesInfo:
    """What `prepare` learned about one series."""

    n: int  # points on the grid after cleaning
    kind: Kind
    seasonal: bool  # at least two full seasons: seasonal models apply
    nonnegative: bool
    calendar: Calendar


@dataclass
class Prepared:
    """Clean data on an integer grid: `frame` has unique_id (str), ds (int position), y (float)."""

    frame: pd.DataFrame
    info: dict[str, SeriesInfo]
    issues: list[Issue]
    spec: ForecastSpec

    @property
    def ids(self) -> list[str]:
        return list(self.info)


def _classify(y: np.ndarray) -> Kind:
    nonzero = int(np.count_nonzero(y))
    if nonzero == 0:
        return "zero"
    return "intermittent" if len(y) / nonzero >= ADI_INTERMITTENT else "smooth"


def _read_columns(
    df: pd.DataFrame, spec: ForecastSpec, issues: list[Issue]
) -> tuple[pd.DataFrame, int, bool]:
    """Columns unique_id, y, _ord (period ordinal) and, for dates, _ds, _is_start, _is_end (the date is
    its period's first / last day); ForecastInputError for unusable input."""
    missing = {"unique_id", "ds", "y"} - set(df.columns)
    if missing:
        got = ", ".join(map(str, df.columns)) or "no columns"
        raise ForecastInputError(
            f"missing column(s) {', '.join(sorted(missing))}: expected long format unique_id, ds, y (got {got})"
        )
    if df.empty:
        raise ForecastInputError("no rows: nothing to forecast")
    ids = df["unique_id"].astype("string").str.strip()
    if ids.isna().any() or (ids == "").any():
        raise ForecastInputError(f"{int((ids.isna() | (ids == '')).sum())} row(s) have no unique_id")
    data = pd.DataFrame({"unique_id": ids.astype(str)})
    raw_y = df["y"]
    y = pd.to_numeric(raw_y, errors="coerce")
    blank = raw_y.isna() | (raw_y.astype(str).str.strip() == "")
    not_numeric = int((y.isna() & ~blank).sum())
    if y.notna().sum() == 0:
        raise ForecastInputError("column y has no numeric values")
    if not_numeric:
        examples = raw_y[y.isna() & ~blank].head(3).tolist()
        issues.append(
            Issue(None, "missing", f"{not_numeric} y value(s) are not numbers {examples}: treated as missing")
        )
    if np.isinf(y).any():
        issues.append(
            Issue(None, "missing", f"{int(np.isinf(y).sum())} infinite y value(s): treated as missing")
        )
        y = y.replace([np.inf, -np.inf], np.nan)
    data["y"] = y.astype(float)
    integer = _is_integer_freq(spec.freq)
    if integer:
        ds = pd.to_numeric(df["ds"], errors="coerce")
        bad = ds.isna() | (ds % 1 != 0)
        if bad.any():
            raise ForecastInputError(
                f"with an integer frequency ds must be integers, e.g. not {df.loc[bad, 'ds'].head(3).tolist()}"
            )
        data["_ord"] = ds.astype(np.int64)
        return data, int(spec.freq), True
    ds = pd.to_datetime(df["ds"], errors="coerce", format="mixed")
    if ds.isna().any():
        raise ForecastInputError(
            f"{int(ds.isna().sum())} ds value(s) are not dates, e.g. {df.loc[ds.isna(), 'ds'].head(3).tolist()}"
        )
    if getattr(ds.dt, "tz", None) is not None:
        ds = ds.dt.tz_convert("UTC").dt.tz_localize(None)
    alias = _period_alias(spec.freq, ds)
    try:
        periods = ds.dt.to_period(alias)
    except (ValueError, TypeError) as exc:
        raise ForecastInputError(f"cannot put the dates on frequency {spec.freq!r}: {exc}") from exc
    data["_ds"] = ds
    data["_ord"] = periods.array.asi8
    data["_is_start"] = ds == periods.dt.start_time
    data["_is_end"] = ds == periods.dt.end_time.dt.normalize()
    data.attrs["alias"] = alias
    return data, periods.iloc[0].freq.n, False


def _clean_series(
    uid: str, ords: np.ndarray, ys: np.ndarray, dup: int, spec: ForecastSpec, step: int, issues: list[Issue]
) -> np.ndarray:
    """One series' values on its grid (first date at position 0), from its per-date values."""
    if dup:
        how = "summed" if spec.duplicates == "sum" else "averaged"
        issues.append(Issue(uid, "duplicate", f"{dup} duplicate date(s): their values were {how}"))
    pos = (ords - ords[0]) // step
    values = np.full(int(pos[-1]) + 1, np.nan)
    values[pos] = ys
    gaps = len(values) - len(pos)
    nan_given = int(np.isnan(values).sum()) - gaps
    if gaps or nan_given:
        parts = [f"{gaps} missing date(s)"] if gaps else []
        parts += [f"{nan_given} missing value(s)"] if nan_given else []
        how = "filled with 0" if spec.fill == "zero" else "interpolated"
        issues.append(Issue(uid, "gap" if gaps else "missing", f"{' and '.join(parts)}: {how}"))
        if spec.fill == "zero":
            values = np.nan_to_num(values, nan=0.0)
        elif not np.isnan(values).all():
            values = pd.Series(values).interpolate(limit_direction="both").to_numpy()
    negative = int((values < 0).sum())
    if negative and spec.negative == "clip":
        issues.append(
            Issue(uid, "negative", f"{negative} negative value(s) set to 0 (demand cannot be negative)")
        )
        values = np.clip(values, 0.0, None)
    elif negative:
        issues.append(Issue(uid, "negative", f"{negative} negative value(s) kept as they are"))
    return values


def prepare(df: pd.DataFrame, spec: ForecastSpec) -> Prepared:
    """Validate and clean a long frame; raises ForecastInputError only when nothing is usable."""
    issues: list[Issue] = []
    data, step, integer = _read_columns(df, spec, issues)
    alias = data.attrs.get("alias")
    data = data.sort_values(["unique_id", "_ord"], kind="stable", ignore_index=True)
    dups = data.duplicated(["unique_id", "_ord"]).groupby(data["unique_id"], sort=True).sum()
    grouped = data.groupby(["unique_id", "_ord"], sort=True)
    per_date = (
        grouped["y"].sum(min_count=1) if spec.duplicates == "sum" else grouped["y"].mean()
    ).reset_index()
    if not integer:
        per_series = data.groupby("unique_id", sort=True).agg(
            ds0=("_ds", "first"), ord0=("_ord", "first"), starts=("_is_start", "all"), ends=("_is_end", "all")
        )
    uids = per_date["unique_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1], True])
    ords_all, ys_all = per_date["_ord"].to_numpy(), per_date["y"].to_numpy(float)
    info: dict[str, SeriesInfo] = {}
    frames: list[pd.DataFrame] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        uid = str(uids[a])
        values = _clean_series(uid, ords_all[a:b], ys_all[a:b], int(dups[uid]), spec, step, issues)
        if np.isnan(values).all():
            issues.append(Issue(uid, "empty", "no values at all: no forecast"))
            continue
        if integer:
            cal = Calendar(start=int(ords_all[a]), step=step, anchor="int")
        else:
            row = per_series.loc[uid]
            period0 = pd.Period(ordinal=int(row["ord0"]), freq=alias)
            if row["ends"] and not row["starts"]:  # month-end style dates
                cal = Calendar(start=period0, step=step, anchor="end")
            else:
                cal = Calendar(
                    start=period0, step=step, anchor="start", offset=row["ds0"] - period0.start_time
                )
        if spec.trim_leading_zeros and (values > 0).any() and values[0] == 0:
            lead = int(np.argmax(values > 0))
            values = values[lead:]
            cal = Calendar(start=cal.start + lead * step, step=step, anchor=cal.anchor, offset=cal.offset)
        n = len(values)
        seasonal = spec.season_length > 1 and n >= 2 * spec.season_length
        if spec.season_length > 1 and not seasonal:
            issues.append(
                Issue(
                    uid,
                    "short",
                    f"{n} point(s), fewer than two seasons ({2 * spec.season_length}): non-seasonal models only",
                )
            )
        kind = _classify(values[-spec.max_input :] if spec.max_input else values)
        if kind == "zero":
            issues.append(
                Issue(
                    uid, "all_zero", "every recent value is 0: the forecast is 0 (nothing else to learn from)"
                )
            )
        info[uid] = SeriesInfo(
            n=n, kind=kind, seasonal=seasonal, nonnegative=bool((values >= 0).all()), calendar=cal
        )
        frames.append(pd.DataFrame({"unique_id": uid, "ds": np.arange(n, dtype=np.int64), "y": values}))
    if not frames:
        raise ForecastInputError("no series has any value: nothing to forecast")
    return Prepared(frame=pd.concat(frames, ignore_index=True), info=info, issues=issues, spec=spec)


# ---- models ----------------------------------------------------------------------------------------


FALLBACK_MODEL = "historic_average"  # only for series too short for anything else (< MIN_FIT points)
MIN_FIT = 10  # fewer points than this: the mean of what there is, said plainly


def build_model(name: str, spec: ForecastSpec, *, seasonal: bool, conformal_h: int | None = None) -> Any:
    """A statsforecast model whose alias is our `name`; `conformal_h` adds conformal intervals to the
    models without native ones (the intermittent ones)."""
    from statsforecast.models import (
        ADIDA,
        MSTL,
        TSB,
        AutoARIMA,
        AutoETS,
        AutoTheta,
        CrostonOptimized,
        HistoricAverage,
        SeasonalNaive,
    )
    from statsforecast.utils import ConformalIntervals

    m = spec.season_length if seasonal else 1
    trend = "Z" if spec.trend else "N"
    intervals = ConformalIntervals(h=conformal_h, n_windows=2) if conformal_h else None
    if name == "seasonal_naive":
        return SeasonalNaive(season_length=m, alias=name)
    if name == "auto_ets":
        if m > MAX_ETS_SEASON:  # AutoETS has no season this long: ETS on the STL-deseasonalised series
            return MSTL(season_length=m, trend_forecaster=AutoETS(model=f"Z{trend}N"), alias=name)
        return AutoETS(season_length=m, model=f"Z{trend}Z", alias=name)
    if name == "auto_arima":
        # A capped search, the cap on its time: the default search took ~2 s per daily series of a
        # year here, this one ~0.14 s, with the same holdout error on the store's and the dev sets'
        # series (p, q <= 2 cost a third more and gained nothing; nmodels < 6 trips a statsforecast bug).
        caps = dict(max_p=1, max_q=1, max_P=1, max_Q=1, max_order=3, nmodels=6, approximation=True)
        return AutoARIMA(season_length=m, alias=name, **caps)
    if name == "auto_theta":
        return AutoTheta(season_length=m, alias=name)
    if name == "croston_optimized":
        return CrostonOptimized(alias=name, prediction_intervals=intervals)
    if name == "tsb":
        # statsforecast fits no TSB parameters: 0.2 for both smoothing constants, its documented example
        return TSB(alpha_d=0.2, alpha_p=0.2, alias=name, prediction_intervals=intervals)
    if name == "adida":
        return ADIDA(alias=name, prediction_intervals=intervals)
    if name == FALLBACK_MODEL:
        return HistoricAverage(alias=name)
    raise ValueError(f"unknown model {name!r}")


NATIVE_INTERVALS = frozenset(
    {"seasonal_naive", "auto_ets", "auto_arima", "auto_theta", "ensemble", FALLBACK_MODEL}
)


def candidates_for(kind: Kind, spec: ForecastSpec) -> tuple[str, ...]:
    """The models competing for one series: intermittent series skip the costly ARIMA/Theta searches."""
    if kind == "smooth":
        return spec.candidates
    allowed = set(INTERMITTENT_CANDIDATES) if kind == "intermittent" else {"seasonal_naive"}
    return tuple(m for m in spec.candidates if m in allowed) or ("seasonal_naive",)


def default_model(kind: Kind, spec: ForecastSpec) -> str:
    """The choice when a series is too short to backtest."""
    preferred = {"smooth": "auto_ets", "intermittent": "croston_optimized", "zero": "seasonal_naive"}[kind]
    cands = candidates_for(kind, spec)
    return preferred if preferred in cands else cands[0]


class _quiet(warnings.catch_warnings):
    """statsforecast warns per fit (ARIMA convergence, short series); our Issues say what matters."""

    def __enter__(self) -> None:  # type: ignore[override]
        super().__enter__()
        warnings.simplefilter("ignore")


def _statsforecast(models: list[Any], n_series: int, spec: ForecastSpec, seasonal: bool) -> Any:
    from statsforecast import StatsForecast

    # A process pool costs ~0.5 s to start: not worth it for a handful of series.
    jobs = spec.n_jobs if n_series >= 4 * max(spec.n_jobs, 1) else 1
    fallback = build_model("seasonal_naive", spec, seasonal=seasonal)
    return StatsForecast(models=models, freq=1, n_jobs=jobs, fallback_model=fallback, verbose=False)


# ---- selection by rolling-origin cross-validation -----------------------------------------------------


@dataclass(frozen=True)
class BacktestPlan:
    """Rolling origins for one series: `windows` forecasts of the horizon, origins `step` apart."""

    windows: int
    step: int


def backtest_plan(n: int, seasonal: bool, spec: ForecastSpec) -> BacktestPlan | None:
    """As many origins (up to spec.n_windows) as leave two seasons (or MIN_FIT points) to fit on."""
    h = spec.horizon
    room = n - max(2 * spec.season_length if seasonal else 0, MIN_FIT)  # points that can be forecast
    if room < h:
        return None
    step = spec.step_size or max(1, h // 2)
    windows = min(spec.n_windows, 1 + (room - h) // step)
    if windows < spec.n_windows and room > h:  # overlap the windows rather than lose origins
        step = max(1, (room - h) // (spec.n_windows - 1))
        windows = min(spec.n_windows, 1 + (room - h) // step)
    return BacktestPlan(windows=windows, step=step)


def naive_scale(y: np.ndarray, season_length: int) -> float:
    """Mean absolute error of the in-sample seasonal naive forecast (lag 1 when too short or flat)."""
    for lag in (season_length, 1):
        if len(y) > lag:
            scale = float(np.mean(np.abs(y[lag:] - y[:-lag])))
            if scale > 0:
                return scale
    return 0.0


@dataclass
class Backtest:
    """Cross-validation errors of each candidate on one series, and the choice they lead to."""

    plan: BacktestPlan | None
    mae: dict[str, float]
    rmse: dict[str, float]
    chosen: str
    scale: float  # in-sample seasonal naive MAE: MASE = MAE / scale
    # Final forecasts ("mean", "lo-80", ...) of the heavy models, rolled forward from their backtest
    # fit when that fit saw a full input window: refitting would see as much data, only newer.
    rolled: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    metric: Literal["mae", "rmse"] = "mae"  # what the choice minimised
    # The same errors per backtest window (one value per origin): how much they vary says how sure
    # the choice can be.
    window_mae: dict[str, np.ndarray] = field(default_factory=dict)
    window_rmse: dict[str, np.ndarray] = field(default_factory=dict)
    # The backtest forecasts themselves (windows x horizon per model) and what happened.
    window_pred: dict[str, np.ndarray] = field(default_factory=dict)
    window_actual: np.ndarray | None = None

    def error(self, model: str) -> float:
        return (self.mae if self.metric == "mae" else self.rmse).get(model, math.inf)

    def window_errors(self, model: str) -> np.ndarray | None:
        """A model's error (the chosen metric) on each backtest window; None without a backtest."""
        return (self.window_mae if self.metric == "mae" else self.window_rmse).get(model)

    @property
    def mase(self) -> float | None:
        if self.chosen not in self.mae or not self.scale:
            return None
        return self.mae[self.chosen] / self.scale


_Item = tuple[str, np.ndarray, bool, BacktestPlan]  # series id, values, seasonal, backtest plan


def _roll_heavy(task: tuple[list[_Item], tuple[str, ...], ForecastSpec]) -> dict[str, dict[str, Any]]:
    """Backtest the heavy models of some series (runs in a worker process).

    When the first origin leaves a full input window (`max_input` points) to fit on, the same as
    statsforecast's cross_validation(refit=False): each model is fitted once at the first origin and
    rolled forward (states updated, parameters kept) to each later origin; unlike it, the fitted model
    is kept and rolled to the end of the history for the final forecast, which sees as much data:
    that halves the cost of the ARIMA search, the dearest step by far (the store). Otherwise a fit at
    the first origin would see fewer points than the final fit, and the backtest would judge
    parameters estimated on less data (the M4 monthly series, 300-450 points, chose the ensemble
    over Theta that way): the models are refitted at every origin, a true rolling origin.
    """
    items, names, spec = task
    h, levels = spec.horizon, list(spec.levels) or None
    out: dict[str, dict[str, Any]] = {}
    with _quiet():
        for uid, y, seasonal, plan in items:
            n = len(y)
            origin0 = n - (plan.step * (plan.windows - 1) + h)
            window = spec.max_input or n
            origins = [origin0 + k * plan.step for k in range(plan.windows)]
            refit = origin0 < window  # always without max_input: the final fit sees all n points
            res: dict[str, Any] = {
                "y": np.concatenate([y[o : o + h] for o in origins]),
                "cv": {},
                "final": {},
            }
            for m in names:
                try:
                    if refit:
                        res["cv"][m] = np.concatenate(
                            [
                                build_model(m, spec, seasonal=seasonal).forecast(
                                    y=y[max(0, o - window) : o], h=h
                                )["mean"]
                                for o in origins
                            ]
                        )
                        continue
                    model = build_model(m, spec, seasonal=seasonal).fit(
                        y=y[max(0, origin0 - window) : origin0]
                    )
                    res["cv"][m] = np.concatenate(
                        [model.forward(y=y[max(0, o - window) : o], h=h)["mean"] for o in origins]
                    )
                    if not refit:
                        f = model.forward(y=y[n - window :], h=h, level=levels)
                        res["final"][m] = {k: np.asarray(v, float) for k, v in f.items() if k != "fitted"}
                except Exception:  # noqa: BLE001  (scored as seasonal naive, like statsforecast's fallback)
                    naive = build_model("seasonal_naive", spec, seasonal=seasonal)
                    res["cv"][m] = np.concatenate(
                        [naive.forecast(y=y[max(0, o - window) : o], h=h)["mean"] for o in origins]
                    )
            out[uid] = res
    return out


def _run_heavy(items: list[_Item], names: tuple[str, ...], spec: ForecastSpec) -> dict[str, dict[str, Any]]:
    """`_roll_heavy` over many series, in `spec.n_jobs` processes (interleaved chunks balance the load)."""
    if spec.n_jobs <= 1 or len(items) < 4 * spec.n_jobs:
        return _roll_heavy((items, names, spec))
    from concurrent.futures import ProcessPoolExecutor

    import statsforecast.models  # noqa: F401  (imported here, forked workers skip its ~3 s import)

    k = 4 * spec.n_jobs
    chunks = [(items[i::k], names, spec) for i in range(k)]
    out: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(spec.n_jobs) as pool:
        for part in pool.map(_roll_heavy, chunks):
            out.update(part)
    return out


def _cross_validate(
    frame: pd.DataFrame,
    ids: list[str],
    names: tuple[str, ...],
    spec: ForecastSpec,
    plan: BacktestPlan,
    seasonal: bool,
) -> dict[str, Backtest]:
    """Errors per series and model over the rolling origins (plan, scale and choice left to the caller).

    The cheap models go through statsforecast's cross_validation, refitted at every origin; the
    ETS/ARIMA/Theta searches are fitted once and rolled forward (`_roll_heavy`).
    """
    fitted = _expand(names)
    preds: dict[str, dict[str, np.ndarray]] = {uid: {} for uid in ids}
    actual: dict[str, np.ndarray] = {}
    rolled: dict[str, dict[str, dict[str, np.ndarray]]] = {uid: {} for uid in ids}
    heavy = tuple(m for m in fitted if m in HEAVY_MODELS)
    cheap = [m for m in fitted if m not in HEAVY_MODELS]
    sub = frame[frame["unique_id"].isin(ids)]
    if heavy:
        values = {str(uid): g["y"].to_numpy(float) for uid, g in sub.groupby("unique_id", sort=False)}
        for uid, res in _run_heavy([(uid, values[uid], seasonal, plan) for uid in ids], heavy, spec).items():
            actual[uid] = res["y"]
            preds[uid].update(res["cv"])
            rolled[uid] = res["final"]
    if cheap:
        sf = _statsforecast(
            [build_model(m, spec, seasonal=seasonal) for m in cheap], len(ids), spec, seasonal
        )
        with _quiet():
            cv = sf.cross_validation(
                h=spec.horizon,
                df=sub,
                n_windows=plan.windows,
                step_size=plan.step,
                input_size=spec.max_input,
                refit=True,
            )
        cv = cv.sort_values(["unique_id", "cutoff", "ds"], kind="stable")
        for uid, g in cv.groupby("unique_id", sort=False):
            actual.setdefault(str(uid), g["y"].to_numpy(float))
            preds[str(uid)].update({m: g[m].to_numpy(float) for m in cheap})
    out: dict[str, Backtest] = {}
    for uid in ids:
        p = preds[uid]
        if "ensemble" in names:
            p["ensemble"] = np.mean([p[m] for m in ENSEMBLE_MEMBERS], axis=0)
        diff = {m: p[m] - actual[uid] for m in names}
        per_window = {m: d.reshape(plan.windows, spec.horizon) for m, d in diff.items()}
        out[uid] = Backtest(
            plan=plan,
            mae={m: float(np.mean(np.abs(d))) for m, d in diff.items()},
            rmse={m: float(np.sqrt(np.mean(d**2))) for m, d in diff.items()},
            chosen="",
            scale=0.0,
            rolled=rolled[uid],
            window_mae={m: np.mean(np.abs(d), axis=1) for m, d in per_window.items()},
            window_rmse={m: np.sqrt(np.mean(d**2, axis=1)) for m, d in per_window.items()},
            window_pred={m: p[m].reshape(plan.windows, spec.horizon) for m in names},
            window_actual=actual[uid].reshape(plan.windows, spec.horizon),
        )
    return out


def _expand(names: Iterable[str]) -> list[str]:
    """The models to fit for these candidates (the ensemble stands for its members)."""
    out: list[str] = []
    for m in names:
        out += [x for x in (ENSEMBLE_MEMBERS if m == "ensemble" else (m,)) if x not in out]
    return out


def select_models(prep: Prepared) -> dict[str, Backtest]:
    """Per series: backtest its candidates on rolling origins and choose one.

    A few windows of one series measure its models noisily, so the choice is pooled: among the series
    with the same candidates, the model with the lowest mean scaled backtest error is the default, and
    a series takes its own winner instead only when that beats the default on its windows by more than
    `spec.switch_z` standard errors (`_clearly_better`): within the noise, the pool knows better. The
    error is MAE (what MASE scores), except on intermittent series: there MAE
    rewards forecasting 0 (the median of a sparse series), a forecast that would never reorder, so
    they are chosen by RMSE, which rewards the mean rate.
    """
    spec = prep.spec
    groups: dict[tuple[tuple[str, ...], bool, BacktestPlan | None], list[str]] = {}
    for uid, info in prep.info.items():
        names = candidates_for(info.kind, spec)
        plan = backtest_plan(info.n, info.seasonal, spec) if info.n >= MIN_FIT else None
        groups.setdefault((names, info.seasonal, plan), []).append(uid)
    values = {uid: g["y"].to_numpy() for uid, g in prep.frame.groupby("unique_id", sort=False)}
    result: dict[str, Backtest] = {}
    pools: dict[tuple[tuple[str, ...], bool], list[str]] = {}
    for (names, seasonal, plan), ids in groups.items():
        done = (
            _cross_validate(prep.frame, ids, names, spec, plan, seasonal) if plan and len(names) > 1 else {}
        )
        for uid in ids:
            info = prep.info[uid]
            scale = naive_scale(values[uid], spec.season_length if info.seasonal else 1)
            bt = done.get(uid)
            mae, rmse = (bt.mae, bt.rmse) if bt else ({}, {})
            if info.n < MIN_FIT:
                chosen = FALLBACK_MODEL
                prep.issues.append(Issue(uid, "too_short", f"only {info.n} point(s): forecast is their mean"))
            elif mae:
                chosen = ""  # decided below, once the pool's default is known
                pools.setdefault((names, info.kind == "intermittent"), []).append(uid)
            else:
                chosen = default_model(info.kind, spec)
                if len(names) > 1:
                    prep.issues.append(
                        Issue(
                            uid,
                            "no_backtest",
                            f"{info.n} point(s) are too few to backtest a {spec.horizon}-step "
                            f"forecast: {chosen} chosen by default",
                        )
                    )
            result[uid] = Backtest(
                plan=plan if mae else None,
                mae=mae,
                rmse=rmse,
                chosen=chosen,
                scale=scale,
                rolled=bt.rolled if bt else {},
                metric="rmse" if info.kind == "intermittent" else "mae",
                window_mae=bt.window_mae if bt else {},
                window_rmse=bt.window_rmse if bt else {},
                window_pred=bt.window_pred if bt else {},
                window_actual=bt.window_actual if bt else None,
            )
    for (names, _), ids in pools.items():
        default = _pooled_default(names, [result[uid] for uid in ids])
        for uid in ids:
            bt = result[uid]
            own = min(names, key=lambda m: (bt.error(m), names.index(m)))
            bt.chosen = own if _clearly_better(bt, own, default, spec) else default
    return result


def _clearly_better(bt: Backtest, own: str, default: str, spec: ForecastSpec) -> bool:
    """Whether a series' own backtest winner beats its pool's default by more than the noise.

    The evidence is the paired difference of the two models' errors per window; its standard error
    is inflated for the windows' overlap (origins half a horizon apart share half their points): with
    `w` windows spanning `span` points, about span / horizon of them are independent.
    """
    if own == default or bt.plan is None:
        return False
    a, b = bt.window_errors(default), bt.window_errors(own)
    if a is None or b is None or len(a) < 2:
        return False  # one window says nothing about its own noise: keep the pool's choice
    d = a - b
    w = len(d)
    independent = min(w, (bt.plan.step * (w - 1) + spec.horizon) / spec.horizon)
    se = float(np.std(d, ddof=1)) / math.sqrt(independent)
    return float(np.mean(d)) > spec.switch_z * se


def _pooled_default(names: tuple[str, ...], backtests: list[Backtest]) -> str:
    """The candidate with the lowest mean scaled backtest error over these series (ties: the earlier one)."""

    def score(m: str) -> float:
        vals = [bt.error(m) / bt.scale for bt in backtests if m in bt.mae and bt.scale > 0]
        return float(np.mean(vals)) if vals else math.inf

    return min(names, key=lambda m: (score(m), names.index(m)))


# ---- forecasts ------------------------------------------------------------------------------------


@dataclass
class SeriesForecast:
    """One series' forecast: dates, mean, intervals per level, the chosen model and its backtest."""

    unique_id: str
    model: str
    kind: Kind
    ds: list[Any]
    mean: np.ndarray
    lo: dict[int, np.ndarray]
    hi: dict[int, np.ndarray]
    backtest: Backtest
    n_obs: int

    def as_dict(self) -> dict[str, Any]:
        def day(d: Any) -> Any:
            return d.isoformat() if hasattr(d, "isoformat") else d

        bt = self.backtest
        return {
            "unique_id": self.unique_id,
            "model": self.model,
            "kind": self.kind,
            "n_obs": self.n_obs,
            "forecast": [
                {"ds": day(d), "mean": round(float(m), 4)}
                | {f"lo_{lv}": round(float(self.lo[lv][i]), 4) for lv in sorted(self.lo)}
                | {f"hi_{lv}": round(float(self.hi[lv][i]), 4) for lv in sorted(self.hi)}
                for i, (d, m) in enumerate(zip(self.ds, self.mean, strict=True))
            ],
            "backtest": {
                "windows": bt.plan.windows if bt.plan else 0,
                "mae": _round(bt.mae.get(self.model)),
                "rmse": _round(bt.rmse.get(self.model)),
                "mase": _round(bt.mase),
                "candidates_mae": {m: _round(v) for m, v in bt.mae.items()},
            },
        }


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


@dataclass
class ForecastResult:
    series: dict[str, SeriesForecast]
    issues: list[Issue]
    seconds: float

    def issues_for(self, uid: str) -> list[Issue]:
        return [i for i in self.issues if i.unique_id in (uid, None)]


def _recent(frame: pd.DataFrame, max_input: int | None) -> pd.DataFrame:
    return frame.groupby("unique_id", sort=False).tail(max_input) if max_input else frame


def _fit_forecast(
    frame: pd.DataFrame,
    prep: Prepared,
    by_model: Mapping[tuple[str, bool, bool], list[str]],
    levels: tuple[int, ...],
) -> dict[str, dict[str, np.ndarray]]:
    """Refit each series' model on its history and forecast: uid -> {"mean", "lo-80", "hi-80", ...}."""
    spec = prep.spec
    out: dict[str, dict[str, np.ndarray]] = {}
    for (name, seasonal, conformal), ids in by_model.items():
        members = _expand([name])
        models = [
            build_model(m, spec, seasonal=seasonal, conformal_h=spec.horizon if conformal else None)
            for m in members
        ]
        sf = _statsforecast(models, len(ids), spec, seasonal)
        with _quiet():
            fc = sf.forecast(
                df=frame[frame["unique_id"].isin(ids)], h=spec.horizon, level=list(levels) if levels else None
            )
        for uid, g in fc.groupby("unique_id", sort=False):
            out[str(uid)] = _combine([_columns(g, m, levels) for m in members], levels)
    return out


def _columns(g: pd.DataFrame, name: str, levels: tuple[int, ...]) -> dict[str, np.ndarray]:
    cols = {"mean": g[name].to_numpy(float)}
    for lv in levels:
        for side in ("lo", "hi"):
            if f"{name}-{side}-{lv}" in g:
                cols[f"{side}-{lv}"] = g[f"{name}-{side}-{lv}"].to_numpy(float)
    return cols


def _combine(parts: list[dict[str, np.ndarray]], levels: tuple[int, ...]) -> dict[str, np.ndarray]:
    """One model's forecast, or an ensemble's: the mean of its members' means and of their bounds."""
    if len(parts) == 1:
        return parts[0]
    out = {"mean": np.mean([p["mean"] for p in parts], axis=0)}
    for lv in levels:
        for side in ("lo", "hi"):
            if all(f"{side}-{lv}" in p for p in parts):
                out[f"{side}-{lv}"] = np.mean([p[f"{side}-{lv}"] for p in parts], axis=0)
    return out


def select_and_forecast(data: pd.DataFrame | Prepared, spec: ForecastSpec | None = None) -> ForecastResult:
    """Choose a model per series by backtest, refit it on the whole history, forecast with intervals."""
    t0 = time.perf_counter()
    prep = data if isinstance(data, Prepared) else prepare(data, spec or ForecastSpec())
    spec = prep.spec
    chosen = select_models(prep)
    frame = _recent(prep.frame, spec.max_input)
    by_model: dict[tuple[str, bool, bool], list[str]] = {}
    raw: dict[str, dict[str, np.ndarray]] = {}
    for uid, bt in chosen.items():
        info = prep.info[uid]
        members = _expand([bt.chosen])
        if all(m in bt.rolled for m in members):  # the backtest fit, rolled to the end of the history
            raw[uid] = _combine([bt.rolled[m] for m in members], spec.levels)
            continue
        conformal = bt.chosen not in NATIVE_INTERVALS and bool(spec.levels) and info.n >= 2 * spec.horizon + 1
        if bt.chosen not in NATIVE_INTERVALS and spec.levels and not conformal:
            prep.issues.append(
                Issue(uid, "no_interval", f"too short for conformal intervals on {bt.chosen}: none given")
            )
        by_model.setdefault((bt.chosen, info.seasonal, conformal), []).append(uid)
    raw.update(_fit_forecast(frame, prep, by_model, spec.levels))
    series: dict[str, SeriesForecast] = {}
    for uid, cols in raw.items():
        info = prep.info[uid]
        floor = 0.0 if info.nonnegative else -math.inf
        lo = {lv: np.maximum(cols[f"lo-{lv}"], floor) for lv in spec.levels if f"lo-{lv}" in cols}
        hi = {lv: np.maximum(cols[f"hi-{lv}"], floor) for lv in spec.levels if f"hi-{lv}" in cols}
        if info.kind != "zero" and not np.any(cols["mean"] > 0) and info.nonnegative:
            prep.issues.append(
                Issue(
                    uid,
                    "zero_forecast",
                    f"{chosen[uid].chosen} forecasts 0 although the series has recent sales",
                )
            )
        series[uid] = SeriesForecast(
            unique_id=uid,
            model=chosen[uid].chosen,
            kind=info.kind,
            ds=info.calendar.dates(range(info.n, info.n + spec.horizon)),
            mean=np.maximum(cols["mean"], floor),
            lo=lo,
            hi=hi,
            backtest=chosen[uid],
            n_obs=info.n,
        )
    return ForecastResult(series=series, issues=prep.issues, seconds=time.perf_counter() - t0)


# ---- evaluation on a held-out window ----------------------------------------------------------------


def mase(y: np.ndarray, yhat: np.ndarray, scale: float) -> float:
    return float(np.mean(np.abs(y - yhat)) / scale) if scale > 0 else math.nan


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE on 0-200; a point where both are 0 counts as 0 error."""
    denom = np.abs(y) + np.abs(yhat)
    terms = np.divide(2.0 * np.abs(y - yhat), denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)
    return float(100.0 * np.mean(terms))


@dataclass
class EvalResult:
    """Holdout scores: mean MASE / sMAPE over series for each candidate, the selection and the baseline."""

    horizon: int
    n_series: int
    models: dict[str, dict[str, float]]  # name -> {"mase", "smape"}; includes "selected"
    chosen: Counter[str]
    per_series: pd.DataFrame  # unique_id, model, mase, smape (one row per series and model)
    forecasts: dict[str, dict[str, np.ndarray]]  # unique_id -> model -> held-out forecast
    actual: dict[str, np.ndarray]  # unique_id -> the held-out values
    backtests: dict[str, Backtest]  # the selection's evidence per series
    issues: list[Issue]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "models": {m: {k: _round(v, 6) for k, v in s.items()} for m, s in self.models.items()},
            "n_series": self.n_series,
            "horizon": self.horizon,
        }


def evaluate_holdout(data: pd.DataFrame | Prepared, spec: ForecastSpec | None = None) -> EvalResult:
    """Hold out the last `horizon` points of each series; select on what precedes them; score all."""
    t0 = time.perf_counter()
    prep = data if isinstance(data, Prepared) else prepare(data, spec or ForecastSpec())
    spec = prep.spec
    h = spec.horizon
    keep = [uid for uid, info in prep.info.items() if info.n >= h + MIN_FIT]
    for uid in sorted(set(prep.info) - set(keep)):
        prep.issues.append(
            Issue(
                uid,
                "too_short",
                f"{prep.info[uid].n} point(s): too short to hold out {h} and fit on the rest; not scored",
            )
        )
    if not keep:
        raise ForecastInputError(
            f"no series is long enough to hold out {h} points and fit on the rest ({h + MIN_FIT} needed)"
        )
    frame = prep.frame[prep.frame["unique_id"].isin(keep)]
    sizes = frame.groupby("unique_id", sort=False)["y"].transform("size")
    train = frame[frame["ds"] < sizes - h].reset_index(drop=True)
    test = frame[frame["ds"] >= sizes - h]
    train_info: dict[str, SeriesInfo] = {}
    for uid, g in train.groupby("unique_id", sort=False):
        old = prep.info[str(uid)]
        y = g["y"].to_numpy()
        n = len(y)
        train_info[str(uid)] = SeriesInfo(
            n=n,
            kind=_classify(y[-spec.max_input :] if spec.max_input else y),
            seasonal=spec.season_length > 1 and n >= 2 * spec.season_length,
            nonnegative=old.nonnegative,
            calendar=old.calendar,
        )
    tprep = Prepared(frame=train, info=train_info, issues=prep.issues, spec=spec)
    chosen = select_models(tprep)
    # Every candidate on every series (the table reports each model), plus any fallback chosen.
    recent = _recent(train, spec.max_input)
    groups: dict[tuple[tuple[str, ...], bool], list[str]] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for uid, info in train_info.items():
        extra = [FALLBACK_MODEL] if chosen[uid].chosen == FALLBACK_MODEL else []
        names = tuple(dict.fromkeys(["seasonal_naive", *spec.candidates, *extra]))
        rolled = chosen[uid].rolled
        preds[uid] = {m: rolled[m]["mean"] for m in _expand(names) if m in rolled}
        todo = tuple(m for m in _expand(names) if m not in rolled)
        groups.setdefault((todo, info.seasonal), []).append(uid)
    for (todo, seasonal), ids in groups.items():
        if todo:
            sf = _statsforecast(
                [build_model(m, spec, seasonal=seasonal) for m in todo], len(ids), spec, seasonal
            )
            with _quiet():
                fc = sf.forecast(df=recent[recent["unique_id"].isin(ids)], h=h)
            for uid, g in fc.groupby("unique_id", sort=False):
                preds[str(uid)].update({m: g[m].to_numpy(float) for m in todo})
    for p in preds.values():
        if "ensemble" in spec.candidates:
            p["ensemble"] = np.mean([p[m] for m in ENSEMBLE_MEMBERS], axis=0)
    actual = {str(uid): g["y"].to_numpy() for uid, g in test.groupby("unique_id", sort=False)}
    rows = []
    for uid, info in train_info.items():
        y_train = train.loc[train["unique_id"] == uid, "y"].to_numpy()
        scale = naive_scale(y_train, spec.season_length)
        if scale == 0:
            tprep.issues.append(
                Issue(
                    uid,
                    "flat",
                    "in-sample naive error is 0 (flat history): MASE undefined, left out of the MASE mean",
                )
            )
        floor = 0.0 if info.nonnegative else -math.inf
        for m, yhat in preds[uid].items():
            yhat = np.maximum(yhat, floor)
            rows.append((uid, m, mase(actual[uid], yhat, scale), smape(actual[uid], yhat)))
        sel = np.maximum(preds[uid][chosen[uid].chosen], floor)
        rows.append((uid, "selected", mase(actual[uid], sel, scale), smape(actual[uid], sel)))
    per_series = pd.DataFrame(rows, columns=["unique_id", "model", "mase", "smape"])
    order = ["seasonal_naive", *[m for m in spec.candidates if m != "seasonal_naive"], "selected"]
    means = per_series.groupby("model")[["mase", "smape"]].mean()
    models = {m: {"mase": float(means.loc[m, "mase"]), "smape": float(means.loc[m, "smape"])} for m in order}
    return EvalResult(
        horizon=h,
        n_series=len(train_info),
        models=models,
        chosen=Counter(bt.chosen for bt in chosen.values()),
        per_series=per_series,
        forecasts=preds,
        actual=actual,
        backtests=chosen,
        issues=tprep.issues,
        seconds=time.perf_counter() - t0,
    )


# ---- CSV input (the eval command) ---------------------------------------------------------------------


def read_long_csv(path: str | Any) -> pd.DataFrame:
    """A long-format CSV (unique_id, ds, y); ForecastInputError with the reason when it is not one."""
    try:
        df = pd.read_csv(path, dtype={"unique_id": str, "ds": str}, keep_default_na=True)
    except FileNotFoundError as exc:
        raise ForecastInputError(f"file not found: {path}") from exc
    except (IsADirectoryError, PermissionError) as exc:
        raise ForecastInputError(f"{path} is not a readable file: {exc.strerror}") from exc
    except pd.errors.EmptyDataError as exc:
        raise ForecastInputError(f"{path} is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ForecastInputError(f"{path} is not a readable CSV: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = {"unique_id", "ds", "y"} - set(df.columns)
    if missing:
        raise ForecastInputError(
            f"{path}: missing column(s) {', '.join(sorted(missing))}; expected a header unique_id,ds,y "
            f"(got {', '.join(df.columns)})"
        )
    return df[["unique_id", "ds", "y"]]


def default_season_length(freq: str) -> int:
    """The usual season of a frequency: a week of days, a year of weeks/months/quarters, a day of hours."""
    if _is_integer_freq(freq):
        return 1
    base = _offset(freq).name.split("-")[0]
    return {"D": 7, "W": 52, "MS": 12, "ME": 12, "QS": 4, "QE": 4, "h": 24}.get(base, 1)
