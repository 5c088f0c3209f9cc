"""Forecast cost: every variant of the store forecast with model selection, against seasonal naive
alone, in the same run on the same data.

    .venv/bin/python benchmarks/forecast.py [--n-jobs 2] [--json]

- selection: `commerce.demand.forecast_all` with the cache off, what the nightly batch or the first
  reorder request of a day does: read `dailysales`, clean, backtest the candidates on 8 rolling
  origins per variant, choose, forecast 28 days with 80/95 % intervals, write the cache.
- baseline: the same reading and cleaning, then seasonal naive (season 7) with intervals for every
  variant, in one statsforecast call: the cheapest forecast there is.
Both include reading the data; the one-off import of statsforecast (a cold process pays it once) is
measured apart. Wall and CPU seconds (this process and its workers) are printed, with the load
average, since the machine is shared: the target is selection under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import bench_store  # noqa: E402
from shopdesk.db import make_engine  # noqa: E402

TARGET_S = 60.0


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-jobs", type=int, default=2, help="worker processes (default 2: this machine)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    t = time.perf_counter()
    import statsforecast.models  # noqa: F401  (the cold import, measured apart)

    from commerce import demand
    from commerce.forecast import build_model, prepare

    import_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_store(Path(tmp)).model_copy(update={"forecast_n_jobs": args.n_jobs})
        engine = make_engine(settings.db_url)
        load_before = os.getloadavg()[0]

        # Baseline: seasonal naive alone, same data path.
        c0, t0 = cpu_seconds(), time.perf_counter()
        spec = demand.store_spec(settings)
        histories = demand._histories(demand.sales_frame(engine), settings.store_day())
        import pandas as pd
        from statsforecast import StatsForecast

        prep = prepare(pd.concat([h.frame for h in histories.values()], ignore_index=True), spec)
        naive = StatsForecast(
            models=[build_model("seasonal_naive", spec, seasonal=True)], freq=1, n_jobs=args.n_jobs
        )
        naive_fc = naive.forecast(df=prep.frame, h=spec.horizon, level=list(spec.levels))
        naive_s, naive_cpu = time.perf_counter() - t0, cpu_seconds() - c0

        # Selection, cache off.
        c0, t0 = cpu_seconds(), time.perf_counter()
        report = demand.forecast_all(engine, settings, use_cache=False)
        sel_s, sel_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        load_after = os.getloadavg()[0]
        engine.dispose()

    models = Counter(f.model for f in report.forecasts.values())
    kinds = Counter(f.demand_kind for f in report.forecasts.values())
    result = {
        "variants": len(report.forecasts),
        "naive_variants": int(naive_fc["unique_id"].nunique()),
        "selection_s": round(sel_s, 1),
        "selection_cpu_s": round(sel_cpu, 1),
        "seasonal_naive_s": round(naive_s, 2),
        "seasonal_naive_cpu_s": round(naive_cpu, 2),
        "ratio": round(sel_s / naive_s, 1),
        "import_s": round(import_s, 1),
        "n_jobs": args.n_jobs,
        "load_avg_before": round(load_before, 2),
        "load_avg_after": round(load_after, 2),
        "models": dict(models.most_common()),
        "demand_kinds": dict(kinds),
        "target_s": TARGET_S,
        "target_met": sel_s < TARGET_S,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"store: {result['variants']} variants, 28-day forecasts with 80/95 % intervals, n_jobs={args.n_jobs}"
    )
    print(f"  seasonal naive alone : {naive_s:6.2f} s wall  {naive_cpu:6.1f} s CPU")
    print(
        f"  with selection       : {sel_s:6.1f} s wall  {sel_cpu:6.1f} s CPU   ({result['ratio']}x the baseline)"
    )
    print(f"  statsforecast import : {import_s:6.1f} s (once per cold process; no JIT: its models are C++)")
    print(f"  load average         : {load_before:.2f} before, {load_after:.2f} after (2 cores, shared)")
    print(f"  models chosen        : {dict(models.most_common())}")
    print(f"  demand               : {dict(kinds)}")
    verdict = "met" if result["target_met"] else "MISSED"
    print(f"target: selection under {TARGET_S:.0f} s: {verdict} ({sel_s:.1f} s)")


if __name__ == "__main__":
    main()
