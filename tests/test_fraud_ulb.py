"""The ULB credit-card acceptance run (slow): the split is what docs/fraud.md says, and LightGBM with
the parameters frozen on the dev split reaches AUPRC >= 0.80 on the held-out last 20 % of rows."""

from pathlib import Path

import pytest

from commerce.fraud_eval import (
    ULB_DEV_ROWS,
    ULB_DROP,
    ULB_LABEL,
    ULB_ROWS,
    evaluate_csv,
    ulb_csv_path,
    write_ulb_split,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source() -> Path:
    try:
        return ulb_csv_path()
    except FileNotFoundError as exc:  # `make install` puts it there: missing data is a failure, not a skip
        pytest.fail(str(exc))


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_the_splits_are_the_time_ordered_dev_and_acceptance_rows(source: Path, tmp_path: Path) -> None:
    everything = _rows(source)
    dev_train, dev_valid = (_rows(p) for p in write_ulb_split(tmp_path, "dev", source))
    train, test = (_rows(p) for p in write_ulb_split(tmp_path, "acceptance", source))
    assert train[0] == test[0] == dev_train[0] == everything[0]  # the header
    assert len(train) - 1 == ULB_DEV_ROWS and len(test) - 1 == ULB_ROWS - ULB_DEV_ROWS
    assert train[1:] + test[1:] == everything[1:]  # byte for byte, in Time order
    assert dev_train[1:] + dev_valid[1:] == train[1:]  # development never touches the acceptance rows
    assert len(dev_train) - 1 == int(ULB_DEV_ROWS * 0.8)
    last_dev_time = float(train[-1].split(",", 1)[0])
    assert all(float(r.split(",", 1)[0]) >= last_dev_time for r in test[1:])


def test_gbm_reaches_the_acceptance_target(source: Path, tmp_path: Path) -> None:
    train, test = write_ulb_split(tmp_path, "acceptance", source)
    result = evaluate_csv(train, test, ULB_LABEL, ULB_DROP, models=("gbm",))
    assert result["n_train"] == ULB_DEV_ROWS and result["n_test"] == ULB_ROWS - ULB_DEV_ROWS
    gbm = result["models"]["gbm"]
    assert gbm["auprc"] >= 0.80, gbm
    assert gbm["auroc"] > 0.97 and gbm["recall@1%fpr"] > 0.8
