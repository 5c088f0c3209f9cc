"""The forecasting targets on the dev sets (slow: real model fits, ~3 min in all on 2 cores).

Target (issue 7): on each dev set the per-series selection beats seasonal naive on MASE and is within
2 % of the best single model. Held out: the last `horizon` points of each series (the same protocol
as `shopdesk eval forecast`). Where the selection misses, the test is an expected failure with the
numbers in docs/forecast.md, strict: it turns red the day the miss turns into a pass.
"""

from dataclasses import replace

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from commerce.demand import store_spec
from commerce.forecast import EvalResult, ForecastSpec, evaluate_holdout
from commerce.forecast_data import DEV_SETS, store
from shopdesk.settings import Settings

pytestmark = pytest.mark.slow

# Dev sets where the selection misses (see docs/forecast.md): four series each, where the backtest
# does not single out the holdout's winner. M4 daily: ETS, Theta and the ensemble within 0.2 % of each
# other in the backtest, the holdout favours Theta; M4 weekly: the best is TSB with fixed constants, the
# selection takes Croston, 3.9 % behind; M4 quarterly and yearly: the backtest favours Theta and ARIMA,
# the last 8 quarters / 6 years favour the naive forecast.
MISSES_2PCT = {"m4_daily", "m4_weekly", "m4_quarterly", "m4_yearly"}
MISSES_NAIVE = {"m4_quarterly", "m4_yearly"}
STORE_EVERY = 4  # the store set: every 4th variant on sale (95 of 379), to keep this test ~1 min

_results: dict[str, EvalResult] = {}


def result_for(name: str, seeded_engine: Engine, store_settings: Settings) -> EvalResult:
    if name not in _results:
        d = DEV_SETS[name]
        if name == "store":
            df = store(seeded_engine)
            ids = sorted(df["unique_id"].unique())[::STORE_EVERY]
            df = df[df["unique_id"].isin(ids)]
            spec = replace(store_spec(store_settings), n_jobs=2)
        else:
            df = d.load()
            spec = ForecastSpec(freq=d.freq, season_length=d.season_length, horizon=d.horizon, n_jobs=2)
        _results[name] = evaluate_holdout(df, spec)
    return _results[name]


def _mark(name: str, misses: set[str], why: str):  # type: ignore[no-untyped-def]
    return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=why)) if name in misses else name


@pytest.mark.parametrize("name", [_mark(n, MISSES_NAIVE, "behind seasonal naive here") for n in DEV_SETS])
def test_selection_beats_seasonal_naive(name: str, seeded_engine: Engine, store_settings: Settings) -> None:
    models = result_for(name, seeded_engine, store_settings).models
    assert models["selected"]["mase"] < models["seasonal_naive"]["mase"], models


@pytest.mark.parametrize("name", [_mark(n, MISSES_2PCT, "more than 2 % behind here") for n in DEV_SETS])
def test_selection_within_2pct_of_the_best_single_model(
    name: str, seeded_engine: Engine, store_settings: Settings
) -> None:
    models = result_for(name, seeded_engine, store_settings).models
    best = min(v["mase"] for m, v in models.items() if m != "selected")
    assert models["selected"]["mase"] <= 1.02 * best, models


M4_SETS = [n for n in DEV_SETS if n.startswith("m4_")]


def test_m4_subsets_pooled_meet_both_targets(seeded_engine: Engine, store_settings: Settings) -> None:
    """The six M4 subsets as one set of 24 series (M4's own way of scoring: the mean over every series
    of every frequency). Where each 4-series subset alone is a coin toss, the pool is not."""
    frames = []
    for name in M4_SETS:
        per_series = result_for(name, seeded_engine, store_settings).per_series
        frames.append(per_series.assign(unique_id=name + ":" + per_series["unique_id"].astype(str)))
    scores = pd.concat(frames, ignore_index=True).groupby("model")["mase"]
    assert len(frames) == 6 and (scores.count() == 24).all(), scores.count()  # every series, every model
    pooled = scores.mean()
    best_single = pooled.drop("selected").min()
    assert pooled["selected"] < pooled["seasonal_naive"], pooled
    assert pooled["selected"] <= 1.02 * best_single, pooled
