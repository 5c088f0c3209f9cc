"""Fraud scoring: store features, a LightGBM model, explicit rules, a calibrated score and reasons.

One implementation, two doors (checkout REST and the bot's sensitive actions):

- `score_order(db, settings, order_id, action=None)`: an order in the store, optionally for an action
  on it (cancel, return, exchange, address_change), which adds that action's rules.
- `score_payload(db, settings, payload)`: an order being placed (checkout), not in the store yet.

Both return a `FraudAssessment`: a score in [0, 1], the decision (`allow` / `review` / `block`, from
`settings.fraud_review_threshold` / `fraud_block_threshold`), reason codes (fired rules and the
model's top contributing features) and the model version. The score is the larger of the model's
calibrated probability and the rules' combined weight: rules are policy floors the model cannot
talk down, and the model catches what no rule names.

The model lives in `settings.var_dir / "fraud"`: `model.txt` (LightGBM's own text format) and
`manifest.json` (feature version and list, isotonic calibration points, metrics, the model file's
SHA-256). No pickle. A missing artifact, one trained on another feature version, or one whose
files do not match scores with the rules alone (`rules_only=True`), logged once, never an error.
`shopdesk train fraud` (`train_store_model`) writes it from the store's labelled history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session

from commerce.fraud_features import (
    FEATURE_VERSION,
    FEATURES,
    OrderFacts,
    PaymentFacts,
    action_facts,
    address_key,
    catalog,
    count_ship_addr_accounts,
    describe,
    load_customer,
    load_history,
    order_features,
    order_owner,
)
from commerce.models import RiskAssessment
from commerce.orders import OrderNotFound, normalize_order_id
from shopdesk.settings import Settings

log = logging.getLogger("shopdesk.fraud")

ACTIONS: tuple[str, ...] = ("cancel", "return", "exchange", "address_change")
Action = Literal["cancel", "return", "exchange", "address_change"]
Decision = Literal["allow", "review", "block"]
RULES_VERSION = "rules-v1"
MODEL_FILE = "model.txt"
MANIFEST_FILE = "manifest.json"
ARTIFACT_FORMAT = 1
MAX_MODEL_REASONS = 3
MIN_CONTRIBUTION = 0.2  # log-odds: smaller pushes are not worth an agent's attention
MAX_ITEM_PRICE = 50_000.0  # the catalog tops out near $3,300: anything above is a typo or an attack
MAX_ORDER_TOTAL = 250_000.0
CLOCK_SKEW = timedelta(minutes=10)  # a checkout's clock may run this far ahead of ours
GUEST_MAX_AGE_YEARS = 10  # scoring a guest order older than this is a mistyped year
MAX_QUANTITY = 50

# For the store history (~2,600 orders, 24 features). First 15 leaves x 300 rounds; then cut to
# 7 x 200 for latency: SHAP reason codes cost 1.4 -> 0.4 ms per order, and validation AUPRC moved
# 0.972 -> 0.977 (the same split reports it, so read that as "no loss", not as a gain).
STORE_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}
STORE_ROUNDS = 200
# Customers (with all their orders) held out for calibration and the reported metrics. By customer,
# not by time: tau2's orders crowd into the last weeks, so a time split would hold out no refund abuse.
VALIDATION_SHARE = 0.3


# ---- the contract ---------------------------------------------------------------------------------


class Reason(BaseModel):
    code: str  # a rule's code, or "model:<feature>"
    description: str
    weight: float  # a rule: its weight (probability floor); a feature: its push in log-odds


class FraudAssessment(BaseModel):
    score: float = Field(ge=0.0, le=1.0)
    decision: Decision
    reasons: list[Reason]
    model_version: str
    rules_only: bool


class PayloadItem(BaseModel):
    variant_id: str = Field(min_length=1, max_length=32, pattern=r"^\d+$")
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)
    price: float | None = Field(
        default=None, gt=0, le=MAX_ITEM_PRICE, description="default: the catalog price"
    )


class ShipAddress(BaseModel):
    address1: str = Field(min_length=1, max_length=200)
    address2: str = Field(default="", max_length=200)
    city: str = Field(min_length=1, max_length=100)
    state: str = Field(min_length=2, max_length=50)
    zip: str = Field(min_length=3, max_length=10, pattern=r"^[0-9A-Za-z][0-9A-Za-z -]*$")
    country: str = Field(default="USA", min_length=2, max_length=56)


class OrderPayload(BaseModel):
    """An order being placed: who, what, how it is paid, where it goes."""

    model_config = {"extra": "forbid", "str_strip_whitespace": True}

    customer_id: str | None = Field(default=None, min_length=1, max_length=64, description="None: a guest")
    items: list[PayloadItem] = Field(min_length=1, max_length=100)
    payment_method_id: str | None = Field(default=None, min_length=1, max_length=64)
    payment_kind: Literal["credit_card", "gift_card", "paypal"] | None = Field(
        default=None, description="a method entered at checkout (not stored yet)"
    )
    ship_address: ShipAddress
    ship_name: str | None = Field(default=None, max_length=200, description="the recipient, if not the buyer")
    created_at: AwareDatetime | None = Field(default=None, description="default: now")

    @model_validator(mode="after")
    def _payment_and_total(self) -> OrderPayload:
        if (self.payment_method_id is None) == (self.payment_kind is None):
            raise ValueError(
                "give exactly one of payment_method_id (a stored method) or payment_kind (a new one)"
            )
        return self

    @field_validator("items")
    @classmethod
    def _total(cls, items: list[PayloadItem]) -> list[PayloadItem]:
        total = sum((i.price or 0.0) * i.quantity for i in items)
        if total > MAX_ORDER_TOTAL:
            raise ValueError(f"order total {total:,.2f} exceeds {MAX_ORDER_TOTAL:,.0f}")
        return items


class UnknownCustomer(LookupError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id!r} not found")
        self.customer_id = customer_id


class PayloadError(ValueError):
    """A payload that is well-formed but names what the store does not have: `field` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---- rules ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    code: str
    description: str
    weight: float  # alone, the rule puts the score at least here
    test: Callable[[dict[str, float]], bool]
    actions: frozenset[str] | None = None  # None: every order; else only these actions


# Past the largest order the history holds ($9,715, 10 items), the model extrapolates: a person looks.
LARGE_ORDER = 10_000.0
LARGE_ORDER_ITEMS = 20

RULES: tuple[Rule, ...] = (
    Rule(
        "card_testing",
        "3 or more payment methods tried within a day on a small order",
        0.85,
        lambda f: f["payment_methods_24h"] >= 3 and f["amount"] < 100,
    ),
    Rule(
        "velocity",
        "4 or more orders within an hour, or 6 or more within a day, on one account",
        0.6,
        lambda f: f["orders_1h"] >= 3 or f["orders_24h"] >= 5,
    ),
    Rule(
        "takeover",
        "established account: payment method added within 3 days and shipping to an address set just before",
        0.8,
        lambda f: (
            f["pm_age_hours"] <= 72
            and f["account_age_days"] >= 30
            and (f["ship_to_recent_change"] >= 1 or f["order_addr_changed"] >= 1)
        ),
    ),
    Rule(
        "drop_address",
        "shipping address used by 3 or more other accounts",
        0.75,
        lambda f: f["ship_addr_accounts"] >= 3,
    ),
    Rule(
        "new_account_reship",
        "account under 3 days old, payment method under 2 hours old, resellable goods to another name",
        0.6,
        lambda f: (
            f["account_age_days"] < 3
            and f["pm_age_hours"] <= 2
            and f["high_risk_share"] >= 0.5
            and f["name_mismatch"] >= 1
        ),
    ),
    Rule(
        "refund_history",
        "3 or more refunds, on half or more of the earlier orders",
        0.6,
        lambda f: f["refunds_prior"] >= 3 and f["refund_rate_prior"] >= 0.5,
    ),
    Rule(
        "unseen_size",
        f"larger than any order in the store's history (over ${LARGE_ORDER:,.0f} or {LARGE_ORDER_ITEMS} items)",
        0.5,
        lambda f: f["amount"] > LARGE_ORDER or f["n_items"] > LARGE_ORDER_ITEMS,
    ),
    Rule(
        "return_to_changed_address",
        "return or exchange of an order shipped to an address set within 30 days before it, or changed on it",
        0.6,
        lambda f: f["ship_to_recent_change"] >= 1 or f["order_addr_changed"] >= 1,
        frozenset({"return", "exchange"}),
    ),
    Rule(
        "serial_refunds",
        "return or exchange by an account with 2 or more refunds on 40 % or more of its orders",
        0.55,
        lambda f: f["refunds_total"] >= 2 and f["refund_rate_total"] >= 0.4,
        frozenset({"return", "exchange"}),
    ),
    Rule(
        "address_change_after_new_method",
        "address change asked within 7 days of adding a payment method",
        0.5,
        lambda f: f["pms_added_7d_now"] >= 1,
        frozenset({"address_change"}),
    ),
    Rule(
        "repeated_address_changes",
        "2 or more address changes in the last 30 days",
        0.5,
        lambda f: f["addr_changes_30d"] >= 2,
        frozenset({"address_change"}),
    ),
    Rule(
        "cancel_burst",
        "3 or more cancellations in the last 24 hours",
        0.5,
        lambda f: f["cancels_24h"] >= 3,
        frozenset({"cancel"}),
    ),
)


def fired_rules(features: dict[str, float], action: str | None = None) -> list[Rule]:
    """The rules that apply to `action` (None: an order at checkout) and hold for these features."""
    return [r for r in RULES if (r.actions is None or action in r.actions) and r.test(features)]


def rules_score(rules: list[Rule]) -> float:
    """Independent pieces of evidence: 1 - prod(1 - weight) (none fired: 0)."""
    return 1.0 - math.prod(1.0 - r.weight for r in rules)


def decide(score: float, settings: Settings) -> Decision:
    block = settings.fraud_block_threshold
    review = min(settings.fraud_review_threshold, block)
    return "block" if score >= block else "review" if score >= review else "allow"


# ---- the model artifact -----------------------------------------------------------------------------


@dataclass
class FraudModel:
    """A loaded artifact: the booster, its isotonic calibration and what it was trained on."""

    booster: Any  # lightgbm.Booster
    version: str
    features: tuple[str, ...]
    cal_x: np.ndarray
    cal_y: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)

    def calibrate(self, raw: np.ndarray | float) -> np.ndarray:
        """Raw margin -> probability: piecewise-linear through the isotonic points (monotone, in [0, 1])."""
        return np.clip(np.interp(raw, self.cal_x, self.cal_y), 0.0, 1.0)

    _fast: _SingleRowContrib | None = field(default=None, repr=False)

    def explain(self, x: list[float]) -> tuple[float, list[tuple[str, float]]]:
        """Calibrated probability and each feature's contribution (log-odds) for one order."""
        if self._fast is None:
            self._fast = _SingleRowContrib(self.booster, len(self.features))
        contrib = self._fast(x)
        raw = float(contrib.sum())  # the contributions plus the bias add up to the raw margin
        return float(self.calibrate(raw)), list(zip(self.features, contrib[:-1].tolist(), strict=True))


class _SingleRowContrib:
    """TreeSHAP contributions of one row through LightGBM's single-row fast path.

    `Booster.predict` parses its parameters, builds a predictor and enters an OpenMP region on every
    call: 0.15 ms at the median, and 0.3 to 4 ms at the 99th percentile on a busy 2-core box. The fast path
    prepares that once per model (same numbers, bit for bit); one lock, since it reuses one buffer."""

    def __init__(self, booster: Any, n_features: int) -> None:
        import ctypes

        from lightgbm import basic

        self._ctypes, self._lib, self._check = ctypes, basic._LIB, basic._safe_call
        self._handle = ctypes.c_void_p()
        self._check(
            self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(basic._C_API_PREDICT_CONTRIB),
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(-1),  # to the last
                ctypes.c_int(basic._C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                basic._c_str("num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._booster = booster  # the handle points into it: keep it alive as long as we are
        self._n = n_features
        self._out = np.empty(n_features + 1, dtype=np.float64)
        self._out_len = ctypes.c_int64()
        self._lock = threading.Lock()

    def __call__(self, x: list[float]) -> np.ndarray:
        row = np.ascontiguousarray(x, dtype=np.float64)
        if row.shape != (self._n,):
            raise ValueError(f"expected {self._n} features, got {row.shape}")
        ct = self._ctypes
        with self._lock:
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._handle,
                    row.ctypes.data_as(ct.c_void_p),
                    ct.byref(self._out_len),
                    self._out.ctypes.data_as(ct.POINTER(ct.c_double)),
                )
            )
            return self._out.copy()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_FastConfigFree(handle)


def artifact_dir(settings: Settings) -> Path:
    return settings.var_dir / "fraud"


_cache: dict[Path, tuple[tuple[int, int], FraudModel | None]] = {}
_cache_lock = threading.Lock()


def load_model(settings: Settings) -> FraudModel | None:
    """The artifact under settings.var_dir/fraud, cached until its manifest changes; None (logged once
    per state) when it is missing, from another feature version, or inconsistent."""
    directory = artifact_dir(settings)
    manifest_path = directory / MANIFEST_FILE
    try:
        st = manifest_path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, 0)
    with _cache_lock:
        hit = _cache.get(directory)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        model = _load(directory) if stamp != (0, 0) else None
        if model is None and stamp == (0, 0):
            log.warning("no fraud model at %s: rules-only scoring (run `shopdesk train fraud`)", directory)
        _cache[directory] = (stamp, model)
        return model


def _load(directory: Path) -> FraudModel | None:
    import lightgbm as lgb

    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        if (
            manifest.get("feature_version") != FEATURE_VERSION
            or tuple(manifest.get("features", ())) != FEATURES
        ):
            log.warning(
                "fraud model at %s was trained on features %r, this code computes %r: rules-only scoring "
                "(retrain with `shopdesk train fraud`)",
                directory,
                manifest.get("feature_version"),
                FEATURE_VERSION,
            )
            return None
        text = (directory / MODEL_FILE).read_text()
        if hashlib.sha256(text.encode()).hexdigest() != manifest.get("model_sha256"):
            log.warning("fraud model at %s does not match its manifest: rules-only scoring", directory)
            return None
        cal = manifest["calibration"]
        booster = lgb.Booster(model_str=text)
        return FraudModel(
            booster=booster,
            version=manifest["model_version"],
            features=FEATURES,
            cal_x=np.asarray(cal["x"], dtype=np.float64),
            cal_y=np.asarray(cal["y"], dtype=np.float64),
            manifest=manifest,
            _fast=_SingleRowContrib(booster, len(FEATURES)),  # prepared here, not on the first request
        )
    except (OSError, ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
        log.warning("fraud model at %s is unreadable (%s): rules-only scoring", directory, exc)
        return None


def save_artifact(
    directory: Path, booster: Any, cal_x: np.ndarray, cal_y: np.ndarray, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write model.txt then manifest.json (each atomically); the manifest's hash ties the pair."""
    directory.mkdir(parents=True, exist_ok=True)
    text = booster.model_to_string()
    sha = hashlib.sha256(text.encode()).hexdigest()
    manifest = {
        "format": ARTIFACT_FORMAT,
        "feature_version": FEATURE_VERSION,
        "features": list(FEATURES),
        "model_version": f"{FEATURE_VERSION}-{sha[:12]}",
        "model_sha256": sha,
        "calibration": {"method": "isotonic", "x": cal_x.tolist(), "y": cal_y.tolist()},
        "rules_version": RULES_VERSION,
        **extra,
    }
    for name, content in ((MODEL_FILE, text), (MANIFEST_FILE, json.dumps(manifest, indent=2))):
        tmp = directory / f".{name}.tmp"
        tmp.write_text(content)
        os.replace(tmp, directory / name)
    return manifest


def fit_isotonic(raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic calibration points (raw margin -> fraud rate) from a held-out split."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
    return np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)


# ---- scoring ------------------------------------------------------------------------------------------


def assess(
    settings: Settings,
    features: dict[str, float],
    action: str | None = None,
    action_features: dict[str, float] | None = None,
    *,
    guest: bool = False,
) -> FraudAssessment:
    """Score from features: rules (for `action`), then the model when there is a usable one.

    A guest checkout is scored by the rules alone (`rules_only`): the model learned accounts, and a
    guest reads to it as an account opened this minute paying with a card added this minute, the
    card-testing and reshipping patterns, so it blocked every guest paying by card or PayPal. The
    rules that hold for guests (drop addresses, resellable goods to another name, size) still apply."""
    fired = fired_rules({**features, **(action_features or {})}, action)
    floor = rules_score(fired)
    reasons = [
        Reason(code=r.code, description=r.description, weight=r.weight)
        for r in sorted(fired, key=lambda r: -r.weight)
    ]
    model = None if guest else load_model(settings)
    if model is None:
        return FraudAssessment(
            score=round(floor, 4),
            decision=decide(floor, settings),
            reasons=reasons,
            model_version=RULES_VERSION,
            rules_only=True,
        )
    prob, contribs = model.explain([features[name] for name in FEATURES])
    top = sorted((c for c in contribs if c[1] >= MIN_CONTRIBUTION), key=lambda c: -c[1])[:MAX_MODEL_REASONS]
    reasons += [
        Reason(code=f"model:{name}", description=describe(name, features[name]), weight=round(value, 3))
        for name, value in top
    ]
    score = max(prob, floor)
    return FraudAssessment(
        score=round(score, 4),
        decision=decide(score, settings),
        reasons=reasons,
        model_version=model.version,
        rules_only=False,
    )


def score_order(
    db: Session, settings: Settings, order_id: str, action: str | None = None, *, now: datetime | None = None
) -> FraudAssessment:
    """The risk of an order in the store, or of `action` on it (cancel / return / exchange /
    address_change). Raises OrderNotFound, and ValueError for an unknown action."""
    if action is not None and action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}; got {action!r}")
    oid = normalize_order_id(order_id)
    owner = order_owner(db, oid) if oid else None
    if owner is None:
        raise OrderNotFound(order_id)
    customer_id, address1, zip_code = owner
    customer = load_customer(db, customer_id)
    assert customer is not None  # the foreign key guarantees it
    order = next(o for o in customer.orders if o.id == oid)
    shared = count_ship_addr_accounts(db, address1, zip_code, customer_id, order.created_at)
    features = order_features(order, customer, shared)
    extra = action_facts(order, customer, now or datetime.now(UTC)) if action else None
    return assess(settings, features, action, extra)


def score_payload(db: Session, settings: Settings, payload: OrderPayload) -> FraudAssessment:
    """The risk of an order being placed. Raises UnknownCustomer, and PayloadError (with the field)
    for an unknown variant, a payment method that is not the customer's, or a time the order cannot
    have been placed at (in the future, or before the account existed: the features would be
    nonsense, such as an account minus 2,000 years old)."""
    now = datetime.now(UTC)
    at = payload.created_at.astimezone(UTC) if payload.created_at else now
    if at > now + CLOCK_SKEW:
        raise PayloadError("created_at", f"{at.isoformat()} is in the future")
    customer = None
    if payload.customer_id is not None:
        customer = load_customer(db, payload.customer_id)
        if customer is None:
            raise UnknownCustomer(payload.customer_id)
        if at < customer.created_at:
            raise PayloadError(
                "created_at",
                f"{at.isoformat()} is before the account was opened ({customer.created_at.date()})",
            )
    elif at < now - timedelta(days=365 * GUEST_MAX_AGE_YEARS):
        raise PayloadError("created_at", f"{at.isoformat()} is more than {GUEST_MAX_AGE_YEARS} years ago")
    known = catalog(db, (i.variant_id for i in payload.items))
    items: list[tuple[str, float]] = []
    for n, item in enumerate(payload.items):
        if item.variant_id not in known:
            raise PayloadError(f"items.{n}.variant_id", f"unknown variant {item.variant_id!r}")
        name, price = known[item.variant_id]
        items += [(name, float(item.price if item.price is not None else price))] * item.quantity
    total = sum(p for _, p in items)  # at catalog prices where none was given
    if total > MAX_ORDER_TOTAL:
        raise PayloadError("items", f"order total {total:,.2f} exceeds {MAX_ORDER_TOTAL:,.0f}")
    extra: dict[str, PaymentFacts] = {}
    if payload.payment_method_id is not None:
        method = payload.payment_method_id
        if customer is None or method not in customer.payment_methods:
            raise PayloadError("payment_method_id", "not a payment method of this customer")
    else:
        method = "(new)"
        extra[method] = PaymentFacts(method, payload.payment_kind or "credit_card", at)
    addr = payload.ship_address
    order = OrderFacts(
        id=None,
        customer_id=payload.customer_id,
        created_at=at,
        status="pending",
        items=tuple(items),
        payments=((method, round(sum(p for _, p in items), 2)),),
        ship_key=address_key(addr.address1, addr.zip),
        ship_name=payload.ship_name or None,
    )
    shared = count_ship_addr_accounts(db, addr.address1, addr.zip, payload.customer_id, at)
    return assess(settings, order_features(order, customer, shared, extra), guest=customer is None)


def record_assessment(
    db: Session,
    assessment: FraudAssessment,
    *,
    order_id: str | None = None,
    customer_id: str | None = None,
    action: str | None = None,
    conversation_id: str | None = None,
) -> int:
    """Keep a given score with its reasons (the audit) in the caller's transaction, which commits.
    Returns the RiskAssessment id. A Core insert built once: the ORM's object and flush, or building
    the statement per call (0.25 ms), cost more than the scoring."""
    result = db.connection().execute(
        _INSERT_ASSESSMENT,
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "action": action,
            "score": assessment.score,
            "decision": assessment.decision,
            "reasons": [r.model_dump() for r in assessment.reasons],
            "model_version": assessment.model_version,
            "rules_only": assessment.rules_only,
            "conversation_id": conversation_id,
            "created_at": datetime.now(UTC),
        },
    )
    return int(result.inserted_primary_key[0])


_INSERT_ASSESSMENT = RiskAssessment.__table__.insert()  # type: ignore[attr-defined]


# ---- training on the store's labelled history ---------------------------------------------------------


def _held_out(customer_id: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}|fraud-split|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < VALIDATION_SHARE


@dataclass
class TrainReport:
    path: Path
    model_version: str
    n_train: int
    n_valid: int
    positives_train: int
    positives_valid: int
    metrics: dict[str, float]
    by_pattern: dict[str, dict[str, float]]
    seconds: dict[str, float]


Progress = Callable[[str, int, int], None]


def train_store_model(
    source: Engine | Session,
    settings: Settings,
    progress: Progress | None = None,
    *,
    rounds: int = STORE_ROUNDS,
) -> TrainReport:
    """Train on the store's labelled history (time split: the last VALIDATION_SHARE validates and
    calibrates), write the artifact, and report validation AUPRC / AUROC against rules alone."""
    import lightgbm as lgb
    from sklearn.metrics import average_precision_score, roc_auc_score

    t0 = time.perf_counter()
    if isinstance(source, Session):
        history = load_history(source)
    else:
        with Session(source) as db:
            history = load_history(db)
    X_list, y_list, ids = history.matrix(
        progress=(lambda done, total: progress("features", done, total)) if progress else None
    )
    X, y = np.asarray(X_list, dtype=np.float64), np.asarray(y_list, dtype=np.int32)
    held = np.array([_held_out(o.customer_id or "", settings.seed) for o in history.orders])
    for part, mask in (("training", ~held), ("validation", held)):
        if y[mask].sum() < 5 or (1 - y[mask]).sum() < 5:
            raise ValueError(
                f"too few labelled orders in the {part} split ({int(y[mask].sum())} of {mask.sum()})"
            )
    t_features = time.perf_counter() - t0

    t1 = time.perf_counter()
    # One thread: on a small set, OpenMP threads mostly spin (16x slower on a busy 2-core box).
    params = {**STORE_PARAMS, "seed": settings.seed, "num_threads": 1}
    callbacks = []
    if progress is not None:

        def on_iteration(env: Any) -> None:
            progress("boosting", env.iteration + 1, env.end_iteration)

        callbacks.append(on_iteration)
    train_set = lgb.Dataset(X[~held], y[~held], feature_name=list(FEATURES), free_raw_data=False)
    booster = lgb.train(params, train_set, num_boost_round=rounds, callbacks=callbacks)
    t_train = time.perf_counter() - t1

    raw_valid = booster.predict(X[held], raw_score=True, num_threads=1)
    y_valid = y[held]
    cal_x, cal_y = fit_isotonic(raw_valid, y_valid)
    prob = np.clip(np.interp(raw_valid, cal_x, cal_y), 0, 1)
    floors = np.array([rules_score(fired_rules(dict(zip(FEATURES, row, strict=True)))) for row in X[held]])
    combined = np.maximum(prob, floors)
    metrics = {
        "auprc_model": float(average_precision_score(y_valid, raw_valid)),
        "auroc_model": float(roc_auc_score(y_valid, raw_valid)),
        "auprc_rules_only": float(average_precision_score(y_valid, floors)),
        "auroc_rules_only": float(roc_auc_score(y_valid, floors)),
        "auprc_combined": float(average_precision_score(y_valid, combined)),
    }
    for name, threshold in (
        ("review", settings.fraud_review_threshold),
        ("block", settings.fraud_block_threshold),
    ):
        flagged = combined >= threshold
        metrics[f"precision_at_{name}"] = float(y_valid[flagged].mean()) if flagged.any() else 0.0
        metrics[f"recall_at_{name}"] = float(flagged[y_valid == 1].mean())
        metrics[f"legit_flagged_at_{name}"] = float(flagged[y_valid == 0].mean())
    by_pattern: dict[str, dict[str, float]] = {}
    valid_ids = [i for i, h in zip(ids, held, strict=True) if h]
    for pattern in sorted(set(history.labels.values())):
        mask = np.array([history.labels.get(i) == pattern for i in valid_ids])
        if mask.any():
            by_pattern[pattern] = {
                "n": int(mask.sum()),
                "recall_at_review": float((combined[mask] >= settings.fraud_review_threshold).mean()),
            }
    manifest = save_artifact(
        artifact_dir(settings),
        booster,
        cal_x,
        cal_y,
        {
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "params": params,
            "num_boost_round": rounds,
            "n_train": int((~held).sum()),
            "n_valid": int(held.sum()),
            "metrics": metrics,
            "by_pattern": by_pattern,
        },
    )
    return TrainReport(
        path=artifact_dir(settings),
        model_version=manifest["model_version"],
        n_train=int((~held).sum()),
        n_valid=int(held.sum()),
        positives_train=int(y[~held].sum()),
        positives_valid=int(y_valid.sum()),
        metrics=metrics,
        by_pattern=by_pattern,
        seconds={"features": t_features, "train": t_train, "total": time.perf_counter() - t0},
    )
