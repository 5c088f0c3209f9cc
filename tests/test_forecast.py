"""The forecasting core (commerce/forecast.py) on synthetic series: model choice, intervals, the
holdout evaluation and what bad input turns into."""

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from commerce.forecast import (
    Backtest,
    BacktestPlan,
    ForecastInputError,
    ForecastSpec,
    _clearly_better,
    _roll_heavy,
    backtest_plan,
    build_model,
    candidates_for,
    default_season_length,
    evaluate_holdout,
    mase,
    naive_scale,
    prepare,
    read_long_csv,
    select_and_forecast,
    smape,
)

WEEK = np.array([1.0, 0.9, 0.95, 1.0, 1.2, 1.6, 1.4])


def daily(uid: str, values: np.ndarray, start: str = "2025-01-06") -> pd.DataFrame:
    return pd.DataFrame(
        {"unique_id": uid, "ds": pd.date_range(start, periods=len(values), freq="D"), "y": values}
    )


def seasonal_series(seed: int, n: int = 210, level: float = 50.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level * np.tile(WEEK, n // 7 + 1)[:n] + rng.normal(0, 2.0, n)


def intermittent_series(seed: int, n: int = 240, rate: float = 0.2) -> np.ndarray:
    return np.random.default_rng(seed).poisson(rate, n).astype(float)


# ---- model choice ---------------------------------------------------------------------------------


def test_seasonal_series_get_a_seasonal_model_that_beats_seasonal_naive() -> None:
    df = pd.concat([daily(f"s{i}", seasonal_series(i)) for i in range(2)])
    spec = ForecastSpec(freq="D", season_length=7, horizon=14, n_windows=3)
    result = select_and_forecast(df, spec)
    assert set(result.series) == {"s0", "s1"}
    for sf in result.series.values():
        assert sf.kind == "smooth"
        assert sf.model in {"auto_ets", "auto_arima", "auto_theta", "ensemble", "seasonal_naive"}
        # The weekly shape is in the forecast: it follows the pattern, not a flat line.
        pattern = np.roll(np.tile(WEEK, 2), -(210 % 7))
        assert np.corrcoef(sf.mean, pattern)[0, 1] > 0.9
        # Noise of sd 2 around the pattern: the best possible MASE here is ~0.7, seasonal naive's ~1.4.
        assert sf.backtest.mase is not None and 0.5 < sf.backtest.mase < 1.2
        assert sf.backtest.mae[sf.model] < 0.85 * sf.backtest.mae["seasonal_naive"]
        # Intervals: nested and around the mean, the next 14 days.
        assert (
            np.all(sf.lo[95] <= sf.lo[80]) and np.all(sf.lo[80] <= sf.mean) and np.all(sf.mean <= sf.hi[80])
        )
        assert np.all(sf.hi[80] <= sf.hi[95])
        assert sf.ds[0] == pd.Timestamp("2025-01-06") + pd.Timedelta(days=210) and len(sf.ds) == 14
    ev = evaluate_holdout(df, spec)
    assert ev.models["selected"]["mase"] < ev.models["seasonal_naive"]["mase"]
    assert ev.models["selected"]["mase"] < 1.2 and 0 < ev.models["selected"]["smape"] < 10


def test_intermittent_series_use_intermittent_models_and_never_a_silent_zero() -> None:
    df = pd.concat([daily(f"i{i}", intermittent_series(i)) for i in range(3)])
    spec = ForecastSpec(freq="D", season_length=7, horizon=14, n_windows=3)
    prep = prepare(df, spec)
    assert {info.kind for info in prep.info.values()} == {"intermittent"}
    assert "auto_arima" not in candidates_for("intermittent", spec)
    result = select_and_forecast(prep)
    for sf in result.series.values():
        assert sf.model in candidates_for("intermittent", spec)
        assert set(sf.backtest.mae) == set(candidates_for("intermittent", spec))
        # Demand of ~0.2 a day: the forecast says so (a rate), not 0 and not a spike.
        assert 0.05 < float(np.mean(sf.mean)) < 0.5
        assert np.all(sf.mean >= 0) and np.all(sf.lo[95] >= 0)
        assert 95 in sf.hi  # conformal intervals for the models without native ones


def test_pooled_choice_lets_a_series_switch_only_for_a_clear_gain() -> None:
    df = pd.concat([daily(f"s{i}", seasonal_series(i, n=140)) for i in range(3)])
    spec = ForecastSpec(freq="D", season_length=7, horizon=14, n_windows=3)
    ev = evaluate_holdout(df, spec)
    assert len(ev.backtests) == 3
    for bt in ev.backtests.values():
        own = min(bt.mae, key=bt.mae.get)
        assert bt.chosen == own or not _clearly_better(bt, own, bt.chosen, spec)
        assert len(bt.window_mae[own]) == bt.plan.windows


def _backtest(default: list[float], own: list[float], step: int = 7) -> Backtest:
    w = {"auto_ets": np.array(default), "auto_theta": np.array(own)}
    mae = {m: float(np.mean(v)) for m, v in w.items()}
    return Backtest(
        plan=BacktestPlan(windows=len(default), step=step), mae=mae, rmse=mae, chosen="", scale=1.0,
        window_mae=w, window_rmse=w,
    )  # fmt: skip


def test_a_series_leaves_the_pooled_choice_only_for_a_gain_beyond_the_noise() -> None:
    spec = ForecastSpec(freq="D", season_length=7, horizon=14)
    steady = _backtest([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.0], [0.8, 0.9, 0.7, 0.8, 0.85, 0.75, 0.8, 0.8])
    assert _clearly_better(steady, "auto_theta", "auto_ets", spec)  # 20 % better in every window
    # The same 20 % on average, from two windows out of eight: within the noise, no switch.
    lucky = _backtest([1.0] * 8, [1.0, 1.0, 0.2, 1.0, 1.0, 0.2, 1.0, 1.0])
    assert not _clearly_better(lucky, "auto_theta", "auto_ets", spec)
    # Overlapping windows (half a horizon apart) count as fewer independent ones than non-overlapping.
    edge = [1.0, 0.9, 1.0, 0.9, 1.0, 1.0, 0.9, 1.0]
    assert _clearly_better(_backtest([1.0] * 8, edge, step=14), "auto_theta", "auto_ets", spec)
    assert not _clearly_better(_backtest([1.0] * 8, edge, step=7), "auto_theta", "auto_ets", spec)
    assert not _clearly_better(_backtest([1.0], [0.5]), "auto_theta", "auto_ets", spec)  # one window


def test_heavy_models_are_refitted_at_each_origin_unless_a_full_window_precedes_the_first() -> None:
    y = seasonal_series(3, n=140)
    plan = BacktestPlan(windows=3, step=7)
    spec = ForecastSpec(freq="D", season_length=7, horizon=14, levels=())
    origins = [140 - (7 * 2 + 14) + 7 * k for k in range(3)]
    res = _roll_heavy(([("s", y, True, plan)], ("auto_theta",), spec))["s"]
    refitted = [
        build_model("auto_theta", spec, seasonal=True).forecast(y=y[:o], h=14)["mean"] for o in origins
    ]
    np.testing.assert_allclose(res["cv"]["auto_theta"], np.concatenate(refitted))
    assert res["final"] == {}  # refitted on the whole history for the final forecast
    # With max_input 56 the first origin (112) leaves a full window: fitted once, rolled forward and on.
    capped = ForecastSpec(freq="D", season_length=7, horizon=14, levels=(), max_input=56)
    res = _roll_heavy(([("s", y, True, plan)], ("auto_theta",), capped))["s"]
    assert set(res["final"]) == {"auto_theta"}


def test_backtest_plan_overlaps_windows_rather_than_losing_origins() -> None:
    spec = ForecastSpec(freq="D", season_length=7, horizon=28, n_windows=8)
    full = backtest_plan(730, True, spec)
    assert full is not None and full.windows == 8 and full.step == 14
    short = backtest_plan(100, True, spec)  # room for 100 - 14 = 86 forecast points
    assert short is not None and short.windows == 8 and short.step == (86 - 28) // 7
    assert backtest_plan(40, True, spec) is None  # 40 - 14 < 28: nothing to backtest


def test_metrics() -> None:
    y, yhat = np.array([10.0, 0.0, 5.0]), np.array([8.0, 0.0, 5.0])
    assert smape(y, yhat) == pytest.approx(100 * (2 * 2 / 18) / 3)
    assert smape(np.zeros(3), np.zeros(3)) == 0.0  # 0/0 counts as no error
    assert smape(np.array([1.0]), np.array([0.0])) == 200.0
    assert naive_scale(np.array([1.0, 2, 3, 4, 5, 6, 7, 3, 4]), 7) == pytest.approx(2.0)
    assert naive_scale(np.array([5.0] * 10), 7) == 0.0
    assert mase(y, yhat, 2.0) == pytest.approx((2 / 3) / 2)
    assert math.isnan(mase(y, yhat, 0.0))


def test_default_season_lengths() -> None:
    assert [default_season_length(f) for f in ("D", "W", "W-FRI", "MS", "M", "Q", "h", "Y", "1")] == [
        7, 52, 52, 12, 12, 4, 24, 1, 1,
    ]  # fmt: skip


# ---- bad input -------------------------------------------------------------------------------------


def test_duplicates_gaps_missing_and_negative_values_are_said_and_fixed() -> None:
    y = seasonal_series(7, n=70)
    df = daily("a", y)
    df = pd.concat([df, df.iloc[[10]].assign(y=5.0)])  # a second row on day 10
    df = df.drop(index=[20, 21])  # two days missing
    df.loc[30, "y"] = np.nan  # a missing value
    df.loc[40, "y"] = -3.0  # a negative one
    for spec, day10, gap, neg in (
        (
            ForecastSpec(freq="D", horizon=7, duplicates="sum", fill="zero", negative="clip"),
            y[10] + 5,
            0.0,
            0.0,
        ),
        (ForecastSpec(freq="D", horizon=7), (y[10] + 5) / 2, None, -3.0),
    ):
        prep = prepare(df, spec)
        kinds = {i.kind: i.message for i in prep.issues}
        assert "1 duplicate date(s)" in kinds["duplicate"]
        assert "2 missing date(s) and 1 missing value(s)" in kinds["gap"]
        assert "1 negative value(s)" in kinds["negative"]
        values = prep.frame["y"].to_numpy()
        assert len(values) == 70 and not np.isnan(values).any()
        assert values[10] == pytest.approx(day10)
        if gap is None:  # interpolated between the neighbours
            assert values[20] == pytest.approx(y[19] + (y[22] - y[19]) / 3)
        else:
            assert values[20] == gap and values[30] == 0.0
        assert values[40] == neg
        result = select_and_forecast(prep)  # and it still forecasts
        assert len(result.series["a"].mean) == 7 and np.isfinite(result.series["a"].mean).all()


def test_short_and_tiny_series_fall_back_with_a_message() -> None:
    df = pd.concat(
        [
            daily("short", seasonal_series(1, n=12)),  # under two weeks: no seasonal model
            daily("tiny", np.array([4.0, 6.0, 5.0])),  # too little for any model: its mean
            daily("long", seasonal_series(2, n=120)),
        ]
    )
    result = select_and_forecast(df, ForecastSpec(freq="D", season_length=7, horizon=7))
    by_kind = {(i.unique_id, i.kind) for i in result.issues}
    assert ("short", "short") in by_kind and ("tiny", "too_short") in by_kind and ("tiny", "short") in by_kind
    assert ("short", "no_backtest") in by_kind  # 12 points cannot backtest a 7-step forecast
    assert result.series["tiny"].model == "historic_average"
    assert np.allclose(result.series["tiny"].mean, 5.0)
    assert result.series["short"].model == "auto_ets" and np.isfinite(result.series["short"].mean).all()
    assert result.series["long"].backtest.plan is not None


def test_all_zero_series_forecast_zero_and_say_so() -> None:
    result = select_and_forecast(daily("z", np.zeros(60)), ForecastSpec(freq="D", horizon=7))
    assert np.all(result.series["z"].mean == 0)
    assert any(i.kind == "all_zero" and i.unique_id == "z" for i in result.issues)


def test_leading_zeros_are_cut_for_demand() -> None:
    y = np.r_[np.zeros(50), seasonal_series(3, n=70)]
    spec = ForecastSpec(freq="D", horizon=7, trim_leading_zeros=True)
    prep = prepare(daily("launch", y), spec)
    assert prep.info["launch"].n == 70
    sf = select_and_forecast(prep).series["launch"]
    assert sf.ds[0] == pd.Timestamp("2025-01-06") + pd.Timedelta(days=120)  # dates stay true


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"unique_id": ["a"], "ds": ["2025-01-01"]}), "missing column"),
        (pd.DataFrame({"unique_id": [], "ds": [], "y": []}), "no rows"),
        (
            pd.DataFrame({"unique_id": ["a", "a"], "ds": ["2025-01-01", "yesterday"], "y": [1, 2]}),
            "not dates",
        ),
        (pd.DataFrame({"unique_id": ["a"], "ds": ["2025-01-01"], "y": ["lots"]}), "no numeric"),
        (pd.DataFrame({"unique_id": [None], "ds": ["2025-01-01"], "y": [1]}), "no unique_id"),
    ],
)
def test_unusable_input_is_an_error_with_the_reason(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ForecastInputError, match=message):
        prepare(frame, ForecastSpec(freq="D"))


def test_unknown_frequency_is_an_error() -> None:
    with pytest.raises(ForecastInputError, match="frequency"):
        prepare(daily("a", np.ones(30)), ForecastSpec(freq="fortnightly-ish"))


def test_calendars_keep_the_data_conventions() -> None:
    rng = np.random.default_rng(0)
    month_end = pd.DataFrame(
        {
            "unique_id": "m",
            "ds": pd.date_range("2015-01-31", periods=40, freq="ME"),
            "y": rng.normal(10, 1, 40),
        }
    )
    fridays = pd.DataFrame(
        {
            "unique_id": "w",
            "ds": pd.date_range("2020-01-03", periods=40, freq="W-FRI"),
            "y": rng.normal(5, 1, 40),
        }
    )
    m = select_and_forecast(month_end, ForecastSpec(freq="M", season_length=12, horizon=3)).series["m"]
    assert m.ds == [pd.Timestamp("2018-05-31"), pd.Timestamp("2018-06-30"), pd.Timestamp("2018-07-31")]
    w = select_and_forecast(fridays, ForecastSpec(freq="W", season_length=52, horizon=2)).series["w"]
    assert [d.day_name() for d in w.ds] == ["Friday", "Friday"] and w.ds[0] == pd.Timestamp(date(2020, 10, 9))
    ints = pd.DataFrame({"unique_id": "i", "ds": np.arange(100, 160), "y": rng.normal(3, 1, 60)})
    i = select_and_forecast(ints, ForecastSpec(freq="1", season_length=1, horizon=2)).series["i"]
    assert i.ds == [160, 161]


def test_weekly_with_yearly_season_fits_without_autoets_season_52() -> None:
    n, h = 160, 8
    truth = 100 + 20 * np.sin(2 * np.pi * np.arange(n + h) / 52)
    y = truth[:n] + np.random.default_rng(1).normal(0, 2, n)
    df = pd.DataFrame({"unique_id": "w", "ds": pd.date_range("2020-01-03", periods=n, freq="W-FRI"), "y": y})
    spec = ForecastSpec(freq="W", season_length=52, horizon=h, n_windows=3, candidates=("auto_ets",))
    sf = select_and_forecast(df, spec).series["w"]
    # "auto_ets" is ETS on the MSTL-deseasonalised series here: it follows the yearly wave (a flat
    # forecast would be ~14 off on average over these weeks).
    assert np.mean(np.abs(sf.mean - truth[n:])) < 3.0
    assert sf.lo[95][0] < truth[n] < sf.hi[95][0]


def test_read_long_csv_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,date,value\na,2025-01-01,3\n")
    with pytest.raises(ForecastInputError, match="unique_id,ds,y"):
        read_long_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ForecastInputError, match="empty"):
        read_long_csv(empty)
    with pytest.raises(ForecastInputError, match="not found"):
        read_long_csv(tmp_path / "missing.csv")
