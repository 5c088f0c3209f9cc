"""Fraud scoring: features, rules, the labelled history, the model artifact, the REST door, the CLI."""

import json
import logging
import math
import shutil
from collections import Counter
from copy import deepcopy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from bot.llm.scripted import ScriptedBackend
from commerce import fraud
from commerce.fraud import (
    ACTIONS,
    RULES,
    FraudAssessment,
    OrderPayload,
    PayloadError,
    UnknownCustomer,
    decide,
    fired_rules,
    fit_isotonic,
    load_model,
    rules_score,
    score_order,
    score_payload,
    train_store_model,
)
from commerce.fraud_features import (
    FEATURES,
    ChangeFacts,
    CustomerFacts,
    OrderFacts,
    PaymentFacts,
    address_key,
    load_history,
    order_features,
)
from commerce.fraud_history import (
    DEMO_TAKEOVER_CUSTOMER,
    DEMO_TAKEOVER_ORDER,
    PROTECTED_CUSTOMERS,
    add_fraud_history,
)
from commerce.models import AddressChange, FraudLabel, Order, Payment, RiskAssessment
from commerce.orders import OrderNotFound
from commerce.seed import generate_store, load_seed_file
from server import create_app
from shopdesk import cli
from shopdesk.settings import Settings

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOME = address_key("1 Elm Street", "10001")


# ---- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(
    seeded_engine: Engine, store_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A model trained once on the seeded store (read-only engine), in a var dir of its own."""
    var = tmp_path_factory.mktemp("fraud-var")
    settings = store_settings.model_copy(update={"var_dir": var})
    report = train_store_model(seeded_engine, settings)
    assert report.path == var / "fraud"
    return var


@pytest.fixture(scope="module")
def trained(model_dir: Path, store_settings: Settings) -> Settings:
    return store_settings.model_copy(update={"var_dir": model_dir})


@pytest.fixture
def rules_only(store_settings: Settings, tmp_path: Path) -> Settings:
    return store_settings.model_copy(update={"var_dir": tmp_path / "no-model"})


@pytest.fixture
def db(seeded_engine: Engine):  # type: ignore[no-untyped-def]
    with Session(seeded_engine) as session:
        yield session
        session.rollback()


def customer(**changes) -> CustomerFacts:  # type: ignore[no-untyped-def]
    """An established customer: 200 days old, a card from 150 days ago, three earlier orders."""
    card = PaymentFacts("card_1", "credit_card", T - timedelta(days=150))
    prior = [
        OrderFacts(
            f"#W000000{n}",
            "c1",
            T - timedelta(days=d),
            "delivered",
            (("Notebook", a),),
            (("card_1", a),),
            HOME,
        )
        for n, (d, a) in enumerate([(90, 100.0), (60, 120.0), (30, 80.0)])
    ]
    facts = CustomerFacts("c1", "Ann", "Lee", T - timedelta(days=200), HOME, {"card_1": card}, prior, [])
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def order(**changes) -> OrderFacts:  # type: ignore[no-untyped-def]
    base = {
        "id": "#W1111111",
        "customer_id": "c1",
        "created_at": T,
        "status": "pending",
        "items": (("Laptop", 300.0), ("Notebook", 100.0)),
        "payments": (("card_1", 400.0),),
        "ship_key": HOME,
    }
    return OrderFacts(**(base | changes))


# ---- features -------------------------------------------------------------------------------------------


def test_features_of_a_hand_built_order() -> None:
    f = order_features(order(), customer(), ship_addr_accounts=0)
    assert list(f) == list(FEATURES)
    assert f["amount"] == 400.0 and f["n_items"] == 2 and f["max_item_price"] == 300.0
    assert f["amount_vs_median"] == pytest.approx(4.0)  # median of 80, 100, 120
    assert f["n_prior_orders"] == 3 and f["orders_1h"] == 0 and f["orders_24h"] == 0
    assert f["account_age_days"] == pytest.approx(200.0)
    assert f["pm_age_hours"] == pytest.approx(150 * 24) and f["pm_first_use"] == 0
    assert f["high_risk_share"] == pytest.approx(0.75)
    assert f["ship_differs_default"] == f["new_ship_address"] == f["name_mismatch"] == 0
    assert math.isnan(f["addr_change_days"]) and f["ship_to_recent_change"] == 0
    assert f["gift_card_share"] == 0 and f["refunds_prior"] == 0 and f["refund_rate_prior"] == 0


def test_features_see_velocity_new_methods_addresses_and_names() -> None:
    gift = PaymentFacts("gift_1", "gift_card", T - timedelta(hours=2))
    cust = customer()
    cust.payment_methods["gift_1"] = gift
    burst = [
        OrderFacts(
            f"#W222222{n}",
            "c1",
            T - timedelta(minutes=m),
            "cancelled",
            (("Notebook", 30.0),),
            (("gift_1", 30.0),),
            HOME,
        )
        for n, m in enumerate([10, 40, 300])
    ]
    cust.orders = sorted(cust.orders + burst, key=lambda o: o.created_at)
    drop = address_key("9 Cargo Way", "33101")
    cust.changes = [ChangeFacts(T - timedelta(hours=6), None, drop)]
    f = order_features(
        order(payments=(("gift_1", 100.0), ("card_1", 300.0)), ship_key=drop, ship_name="Bob Stone"),
        cust,
        ship_addr_accounts=4,
    )
    assert f["orders_1h"] == 2 and f["orders_24h"] == 3
    assert f["payment_methods_24h"] == 2 and f["pms_added_7d"] == 1
    assert f["gift_card_share"] == pytest.approx(0.25) and f["pm_age_hours"] == pytest.approx(2.0)
    assert f["pm_first_use"] == 0  # the gift card paid the burst already
    assert f["ship_differs_default"] == f["new_ship_address"] == f["ship_to_recent_change"] == 1
    assert f["addr_change_days"] == pytest.approx(0.25) and f["order_addr_changed"] == 0
    assert f["name_mismatch"] == 1 and f["ship_addr_accounts"] == 4
    # A relative with the same last name is not a mismatch; a change on the order itself counts.
    cust.changes = [ChangeFacts(T + timedelta(minutes=20), "#W1111111", drop)]
    f = order_features(order(ship_key=drop, ship_name="bob  LEE"), cust, 0)
    assert f["name_mismatch"] == 0 and f["order_addr_changed"] == 1 and f["ship_to_recent_change"] == 1
    assert math.isnan(f["addr_change_days"])  # that change came after the order was placed


def test_features_use_only_the_past() -> None:
    cust = customer()
    early_refund = replace(cust.orders[0], refunds=((T - timedelta(days=80), 100.0),))
    late_refund = replace(cust.orders[1], refunds=((T + timedelta(days=1), 120.0),))
    later = replace(cust.orders[2], id="#W3333333", created_at=T + timedelta(hours=1))
    cust.orders = [early_refund, late_refund, cust.orders[2], later]
    f = order_features(order(), cust, 0)
    assert f["refunds_prior"] == 1 and f["refund_rate_prior"] == pytest.approx(1 / 3)
    assert f["n_prior_orders"] == 3 and f["orders_1h"] == 0  # the later order is not history yet


def test_guest_checkout_has_no_history() -> None:
    f = order_features(
        order(customer_id=None, payments=(("new", 400.0),)),
        None,
        0,
        {"new": PaymentFacts("new", "paypal", T)},
    )
    assert f["account_age_days"] == 0 and f["n_prior_orders"] == 0 and f["paypal_share"] == 1.0
    assert math.isnan(f["amount_vs_median"]) and f["pm_age_hours"] == 0 and f["pm_first_use"] == 1


# ---- rules ----------------------------------------------------------------------------------------------

LEGIT = order_features(order(), customer(), 0) | {
    "refunds_total": 0.0,
    "refund_rate_total": 0.0,
    "addr_changes_30d": 0.0,
    "pms_added_7d_now": 0.0,
    "cancels_24h": 0.0,
    "days_since_order": 3.0,
}
RULE_CASES = {
    "card_testing": ({"payment_methods_24h": 4, "amount": 35.0}, None),
    "velocity": ({"orders_1h": 3}, None),
    "takeover": ({"pm_age_hours": 0.5, "ship_to_recent_change": 1}, None),
    "drop_address": ({"ship_addr_accounts": 5}, None),
    "new_account_reship": (
        {"account_age_days": 0.2, "pm_age_hours": 0.1, "high_risk_share": 1.0, "name_mismatch": 1},
        None,
    ),
    "refund_history": ({"refunds_prior": 4, "refund_rate_prior": 0.8}, None),
    "unseen_size": ({"n_items": 25}, None),
    "return_to_changed_address": ({"order_addr_changed": 1}, "return"),
    "serial_refunds": ({"refunds_total": 3, "refund_rate_total": 0.6}, "exchange"),
    "address_change_after_new_method": ({"pms_added_7d_now": 1}, "address_change"),
    "repeated_address_changes": ({"addr_changes_30d": 2}, "address_change"),
    "cancel_burst": ({"cancels_24h": 3}, "cancel"),
}


def test_every_rule_has_a_case() -> None:
    assert set(RULE_CASES) == {r.code for r in RULES}


@pytest.mark.parametrize("code", sorted(RULE_CASES))
def test_each_rule_fires_on_its_pattern_only(code: str) -> None:
    changes, action = RULE_CASES[code]
    assert [r.code for r in fired_rules(LEGIT, action)] == []
    assert [r.code for r in fired_rules(LEGIT | changes, action)] == [code]
    rule = next(r for r in RULES if r.code == code)
    if rule.actions:  # action rules stay out of checkout and of other actions
        others = [a for a in (None, *ACTIONS) if a not in rule.actions]
        assert all(code not in [r.code for r in fired_rules(LEGIT | changes, a)] for a in others)


def test_rules_fire_on_the_generated_patterns_not_on_legitimate_orders(db: Session) -> None:
    history = load_history(db)
    X, _, ids = history.matrix()
    fired: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for row, oid in zip(X, ids, strict=True):
        pattern = history.labels.get(oid, "legit")
        totals[pattern] += 1
        fired.setdefault(pattern, Counter()).update(
            r.code for r in fired_rules(dict(zip(FEATURES, row, strict=True)))
        )
    assert set(totals) == {"legit", "account_takeover", "card_testing", "refund_abuse", "reshipping"}
    rate = {p: {code: n / totals[p] for code, n in c.items()} for p, c in fired.items()}
    assert rate["card_testing"]["card_testing"] > 0.6
    assert rate["account_takeover"]["takeover"] > 0.5
    assert rate["reshipping"]["drop_address"] > 0.4
    assert rate["refund_abuse"]["refund_history"] > 0.2
    legit_hits = sum(fired["legit"].values()) / totals["legit"]
    assert legit_hits < 0.02, fired["legit"]


def test_rules_score_and_thresholds(store_settings: Settings) -> None:
    assert rules_score([]) == 0.0
    two = [r for r in RULES if r.code in ("takeover", "return_to_changed_address")]
    assert rules_score(two) == pytest.approx(1 - 0.2 * 0.4)
    s = store_settings.model_copy(update={"fraud_review_threshold": 0.3, "fraud_block_threshold": 0.8})
    assert [decide(x, s) for x in (0.0, 0.29, 0.3, 0.79, 0.8, 1.0)] == [
        "allow",
        "allow",
        "review",
        "review",
        "block",
        "block",
    ]
    inverted = store_settings.model_copy(update={"fraud_review_threshold": 0.9, "fraud_block_threshold": 0.5})
    assert decide(0.6, inverted) == "block"  # a review threshold above block never hides a block


# ---- the labelled history ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_rows(store_settings: Settings) -> tuple[dict, int]:
    """The tau2 store's rows (daily sales left out: the history only tops them up)."""
    rows = generate_store(load_seed_file(store_settings), store_settings.seed, store_settings.store_day())
    rows["dailysales"] = []
    return rows, store_settings.seed


def _add_history(base_rows: tuple[dict, int], seed: int | None = None) -> tuple[dict, dict]:
    rows = deepcopy(base_rows[0])
    added = add_fraud_history(
        rows, base_rows[1] if seed is None else seed, Settings(_env_file=None).store_day()
    )
    return rows, added


@pytest.fixture(scope="module")
def history_rows(base_rows: tuple[dict, int]) -> tuple[dict, dict]:
    return _add_history(base_rows)


def test_history_is_deterministic_and_depends_on_the_seed(base_rows, history_rows) -> None:  # type: ignore[no-untyped-def]
    n = {t: len(v) for t, v in base_rows[0].items()}

    def dump(rows: dict) -> str:
        return json.dumps({t: v[n[t] :] for t, v in rows.items()}, sort_keys=True, default=str)

    again, _ = _add_history(base_rows)
    other, _ = _add_history(base_rows, seed=base_rows[1] + 1)
    assert dump(history_rows[0]) == dump(again)
    assert dump(history_rows[0]) != dump(other)


def test_history_is_labelled_additive_and_leaves_the_demo_customers_alone(base_rows, history_rows) -> None:  # type: ignore[no-untyped-def]
    rows, added = history_rows
    before = base_rows[0]
    assert added["orders"] > 1500 and added["fraudlabel"] > 200
    for table, old in before.items():  # nothing changed in place: the old rows are a prefix
        assert rows[table][: len(old)] == [
            r | {"ship_name": None} if table == "orders" else r for r in old
        ], table
    assert all("ship_name" not in r for r in before["orders"])  # the history worked on its own copy
    labels = {r["order_id"]: r for r in rows["fraudlabel"]}
    order_ids = {o["id"]: o for o in rows["orders"]}
    assert set(labels) <= set(order_ids)
    assert Counter(r["pattern"] for r in labels.values()).keys() == {
        "account_takeover",
        "card_testing",
        "refund_abuse",
        "reshipping",
    }
    assert all(labels[o]["customer_id"] == order_ids[o]["customer_id"] for o in labels)
    for table in ("orders", "paymentmethod", "address", "addresschange"):
        new = rows[table][len(before[table]) :]
        assert not [r for r in new if r["customer_id"] in PROTECTED_CUSTOMERS], table
    # Every tau2 order stays legitimate.
    tau2_ids = {o["id"] for o in before["orders"]}
    assert not tau2_ids & set(labels)


def test_the_demo_takeover_case(history_rows) -> None:  # type: ignore[no-untyped-def]
    rows, _ = history_rows
    o = next(r for r in rows["orders"] if r["id"] == DEMO_TAKEOVER_ORDER)
    assert o["customer_id"] == DEMO_TAKEOVER_CUSTOMER and o["status"] == "delivered"
    tau2_customer = next(c for c in rows["customer"] if c["id"] == DEMO_TAKEOVER_CUSTOMER)
    assert o["created_at"] - tau2_customer["created_at"] > timedelta(days=300)  # an established account
    (payment,) = [p for p in rows["payment"] if p["order_id"] == o["id"]]
    method = next(m for m in rows["paymentmethod"] if m["id"] == payment["payment_method_id"])
    assert timedelta(0) < o["created_at"] - method["added_at"] < timedelta(hours=4)
    (change,) = [c for c in rows["addresschange"] if c["customer_id"] == DEMO_TAKEOVER_CUSTOMER]
    assert change["address1"] == o["ship_address1"] and change["changed_at"] < o["created_at"]
    assert o["ship_name"] and o["ship_name"].split()[-1] != tau2_customer["last_name"]
    assert next(r for r in rows["fraudlabel"] if r["order_id"] == o["id"])["pattern"] == "account_takeover"


def test_the_seeded_store_holds_the_history(db: Session) -> None:
    labels = Counter(db.exec(select(FraudLabel.pattern)).all())
    assert min(labels.values()) > 20
    assert db.exec(select(AddressChange).where(AddressChange.customer_id == DEMO_TAKEOVER_CUSTOMER)).first()
    refunded_delivered = db.exec(
        select(Order.id)
        .join(Payment, col(Payment.order_id) == col(Order.id))
        .where(Order.status == "delivered", Payment.kind == "refund")
    ).all()
    assert len(refunded_delivered) > 50  # returns and claims


# ---- model, calibration, artifact ---------------------------------------------------------------------------


def test_training_beats_the_rules_on_held_out_customers(seeded_engine: Engine, trained: Settings) -> None:
    manifest = json.loads((trained.var_dir / "fraud" / "manifest.json").read_text())
    m = manifest["metrics"]
    assert m["auprc_model"] > 0.85 and m["auprc_model"] > m["auprc_rules_only"] + 0.1
    assert m["legit_flagged_at_review"] < 0.03
    assert manifest["feature_version"] == fraud.FEATURE_VERSION and manifest["features"] == list(FEATURES)
    assert manifest["n_train"] > 1500 and manifest["n_valid"] > 500


def test_calibration_is_monotone_and_a_probability(trained: Settings) -> None:
    model = load_model(trained)
    assert model is not None
    p = model.calibrate(np.linspace(-30, 30, 601))
    assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1 and p[0] < 0.05 and p[-1] > 0.9
    rng = np.random.default_rng(0)
    raw = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-3 * raw))).astype(int)
    x, cal = fit_isotonic(raw, y)
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(cal) >= 0) and cal.min() >= 0 and cal.max() <= 1


def test_artifact_round_trip(trained: Settings, db: Session) -> None:
    import lightgbm as lgb

    model = load_model(trained)
    assert model is not None and load_model(trained) is model  # cached until the manifest changes
    manifest = json.loads((trained.var_dir / "fraud" / "manifest.json").read_text())
    assert model.version == manifest["model_version"] and model.version.startswith("store-v1-")
    fresh = lgb.Booster(model_file=str(trained.var_dir / "fraud" / "model.txt"))
    X = np.asarray(load_history(db).matrix()[0][:50])
    raw = fresh.predict(X, raw_score=True)
    bias = fresh.predict(X, pred_contrib=True)[:, -1]
    explained = [model.explain(list(x)) for x in X]
    assert np.allclose([sum(c for _, c in contribs) for _, contribs in explained], raw - bias, atol=1e-6)
    assert np.allclose([p for p, _ in explained], model.calibrate(raw))
    # The single-row fast path gives each feature exactly what Booster.predict gives it.
    contrib = fresh.predict(X, pred_contrib=True)[:, :-1]
    assert np.array_equal([[c for _, c in contribs] for _, contribs in explained], contrib)


def _copy_artifact(trained: Settings, tmp_path: Path) -> Settings:
    shutil.copytree(trained.var_dir / "fraud", tmp_path / "fraud")
    return trained.model_copy(update={"var_dir": tmp_path})


def test_a_model_of_another_feature_version_falls_back_to_rules(
    trained: Settings, tmp_path: Path, db: Session, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _copy_artifact(trained, tmp_path)
    path = tmp_path / "fraud" / "manifest.json"
    manifest = json.loads(path.read_text())
    assert score_order(db, settings, DEMO_TAKEOVER_ORDER).rules_only is False
    path.write_text(json.dumps(manifest | {"feature_version": "store-v0"}))
    with caplog.at_level(logging.WARNING, logger="shopdesk.fraud"):
        result = score_order(db, settings, DEMO_TAKEOVER_ORDER)
    assert result.rules_only and result.model_version == fraud.RULES_VERSION
    assert "store-v0" in caplog.text and "rules-only" in caplog.text
    assert result.decision in ("review", "block") and {r.code for r in result.reasons} == {"takeover"}


def test_a_tampered_or_missing_model_falls_back_to_rules(
    trained: Settings, tmp_path: Path, db: Session, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _copy_artifact(trained, tmp_path)
    model_file = tmp_path / "fraud" / "model.txt"
    model_file.write_text(model_file.read_text().replace("tree_sizes", "tree_sizes ", 1))
    (tmp_path / "fraud" / "manifest.json").touch()  # a new stamp: the cache reloads
    with caplog.at_level(logging.WARNING, logger="shopdesk.fraud"):
        assert score_order(db, settings, "#W2611340").rules_only
    assert "does not match its manifest" in caplog.text
    caplog.clear()
    shutil.rmtree(tmp_path / "fraud")
    with caplog.at_level(logging.WARNING, logger="shopdesk.fraud"):
        assert score_order(db, settings, "#W2611340").rules_only
        assert score_order(db, settings, "#W2611340").rules_only
    assert caplog.text.count("no fraud model") == 1  # logged once, not on every score


# ---- scoring the store's orders ------------------------------------------------------------------------------


@pytest.mark.parametrize("use_model", [True, False])
def test_a_return_on_the_takeover_order_is_stepped_up_or_handed_off(
    use_model: bool, trained: Settings, rules_only: Settings, db: Session
) -> None:
    settings = trained if use_model else rules_only
    result = score_order(db, settings, DEMO_TAKEOVER_ORDER, "return")
    assert result.decision in ("review", "block") and result.rules_only is not use_model
    codes = [r.code for r in result.reasons]
    assert "takeover" in codes and "return_to_changed_address" in codes
    assert all(r.description for r in result.reasons)
    if use_model:
        assert any(c.startswith("model:") for c in codes)


def test_the_conversation_customers_are_never_gated(trained: Settings, db: Session) -> None:
    for cid in sorted(PROTECTED_CUSTOMERS):
        oids = db.exec(select(Order.id).where(Order.customer_id == cid)).all()
        assert oids
        for oid in oids:
            for action in (None, *ACTIONS):
                result = score_order(db, trained, oid, action)
                assert result.decision == "allow", (oid, action, result)


def test_scores_carry_reasons_and_rank_fraud_above_legit(trained: Settings, db: Session) -> None:
    labelled = db.exec(select(FraudLabel.order_id, FraudLabel.pattern).order_by(FraudLabel.order_id)).all()
    fraud_scores = [score_order(db, trained, oid) for oid, _ in labelled[::7]]
    legit_ids = db.exec(
        select(Order.id).where(col(Order.id).not_in([o for o, _ in labelled])).order_by(Order.id)
    ).all()
    legit_scores = [score_order(db, trained, oid) for oid in legit_ids[::40]]
    assert all(isinstance(r, FraudAssessment) and r.reasons for r in fraud_scores)
    assert np.mean([r.score for r in fraud_scores]) > 0.7 > 0.1 > np.mean([r.score for r in legit_scores])
    assert sum(r.decision != "allow" for r in legit_scores) <= 0.05 * len(legit_scores)


def test_score_order_bad_input(trained: Settings, db: Session) -> None:
    with pytest.raises(OrderNotFound):
        score_order(db, trained, "#W0000000")
    with pytest.raises(OrderNotFound):
        score_order(db, trained, "nonsense")
    with pytest.raises(ValueError, match="action"):
        score_order(db, trained, "#W2611340", "refund")


def _payload(**changes) -> OrderPayload:  # type: ignore[no-untyped-def]
    base = {
        "customer_id": "james_li_5688",
        "items": [{"variant_id": "6469567736", "quantity": 1}],
        "payment_method_id": "gift_card_1725971",
        "ship_address": {
            "address1": "215 River Road",
            "address2": "Suite 991",
            "city": "New York",
            "state": "NY",
            "zip": "10083",
        },
    }
    return OrderPayload.model_validate(base | changes)


def test_score_payload(trained: Settings, db: Session) -> None:
    usual = score_payload(db, trained, _payload())
    assert usual.decision == "allow" and not usual.rules_only
    drop = db.exec(
        select(Order.ship_address1, Order.ship_city, Order.ship_state, Order.ship_zip)
        .join(FraudLabel, col(FraudLabel.order_id) == col(Order.id))
        .where(FraudLabel.pattern == "reshipping")
    ).first()
    assert drop is not None
    reship = score_payload(
        db,
        trained,
        _payload(
            customer_id=None,
            payment_method_id=None,
            payment_kind="credit_card",
            items=[{"variant_id": "2216662955", "quantity": 2}],  # a laptop
            ship_address={"address1": drop[0], "city": drop[1], "state": drop[2], "zip": drop[3]},
            ship_name="Someone Else",
        ),
    )
    assert reship.decision in ("review", "block") and "drop_address" in [r.code for r in reship.reasons]
    with pytest.raises(UnknownCustomer):
        score_payload(db, trained, _payload(customer_id="nobody_0000"))
    with pytest.raises(PayloadError) as err:
        score_payload(db, trained, _payload(items=[{"variant_id": "6469567736"}, {"variant_id": "123"}]))
    assert err.value.field == "items.1.variant_id"
    with pytest.raises(PayloadError) as err:
        score_payload(db, trained, _payload(payment_method_id="credit_card_0000000"))
    assert err.value.field == "payment_method_id"


@pytest.mark.parametrize("kind", ["credit_card", "paypal", "gift_card"])
def test_an_ordinary_guest_checkout_is_allowed_on_the_rules(
    trained: Settings, db: Session, kind: str
) -> None:
    """The model learned accounts: to it a guest was an account opened this minute with a card added
    this minute, and every guest paying by card or PayPal scored 1.0 (block)."""
    guest = score_payload(
        db,
        trained,
        _payload(
            customer_id=None,
            payment_method_id=None,
            payment_kind=kind,
            ship_address={"address1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"},
        ),
    )
    assert guest.decision == "allow" and guest.rules_only and guest.reasons == []


def test_orders_beyond_the_history_go_to_a_person(trained: Settings, db: Session) -> None:
    """50 laptops on a stored gift card scored 0.0 with no reasons; no order in the history is that big."""
    big = score_payload(db, trained, _payload(items=[{"variant_id": "2216662955", "quantity": 50}]))
    assert big.decision in ("review", "block") and "unseen_size" in [r.code for r in big.reasons]
    with pytest.raises(PayloadError, match="exceeds 250,000") as err:  # catalog prices count toward the cap
        score_payload(db, trained, _payload(items=[{"variant_id": "2216662955", "quantity": 50}] * 100))
    assert err.value.field == "items"


# ---- REST -----------------------------------------------------------------------------------------------------


@pytest.fixture
def client(store_db: Engine, trained: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = _copy_artifact(trained, tmp_path).model_copy(
        update={"database_url": str(store_db.url), "llm_backend": "scripted"}
    )
    with TestClient(create_app(settings, backend=ScriptedBackend())) as c:
        yield c


def _errors(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return {e["field"]: e["message"] for e in response.json()["errors"]}


def test_api_scores_an_order_and_records_it(client: TestClient, store_db: Engine) -> None:
    r = client.post("/api/fraud/score", json={"order_id": DEMO_TAKEOVER_ORDER, "action": "return"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"score", "decision", "reasons", "model_version", "rules_only"}
    assert body["decision"] in ("review", "block") and body["model_version"].startswith("store-v1-")
    assert all(set(x) == {"code", "description", "weight"} for x in body["reasons"])
    ok = client.post("/api/fraud/score", json={"order_id": "w2611340"})
    assert ok.status_code == 200 and ok.json()["decision"] == "allow"
    with Session(store_db) as s:
        rows = s.exec(select(RiskAssessment).order_by(col(RiskAssessment.id))).all()
    assert [(x.order_id, x.action, x.decision) for x in rows] == [
        (DEMO_TAKEOVER_ORDER, "return", body["decision"]),
        ("#W2611340", None, "allow"),
    ]
    assert rows[0].reasons == body["reasons"]


def test_api_scores_a_payload(client: TestClient) -> None:
    r = client.post("/api/fraud/score", json=_payload().model_dump(exclude_none=True))
    assert r.status_code == 200 and r.json()["decision"] == "allow"


def test_api_not_found(client: TestClient) -> None:
    r = client.post("/api/fraud/score", json={"order_id": "#W0000000"})
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    body = _payload().model_dump(exclude_none=True) | {"customer_id": "nobody_0000"}
    assert client.post("/api/fraud/score", json=body).status_code == 404


def test_api_bad_input_names_the_field(client: TestClient) -> None:
    good = _payload().model_dump(exclude_none=True)
    item = good["items"][0]
    cases = [
        ({k: v for k, v in good.items() if k != "items"}, "items", "required"),
        (good | {"items": [item | {"quantity": -1}]}, "items.0.quantity", "greater than or equal to 1"),
        (good | {"items": [item | {"quantity": "two"}]}, "items.0.quantity", "integer"),
        (good | {"items": [item | {"price": -5}]}, "items.0.price", "greater than 0"),
        (good | {"items": [item | {"price": 1e9}]}, "items.0.price", "less than or equal to 50000"),
        (good | {"items": [item | {"price": 40000, "quantity": 50}]}, "items", "exceeds"),
        (good | {"items": [item | {"variant_id": "999"}]}, "items.0.variant_id", "unknown variant"),
        (good | {"payment_method_id": "paypal_1"}, "payment_method_id", "not a payment method"),
        (good | {"payment_kind": "paypal"}, "body", "exactly one"),
        (good | {"ship_address": {"city": "X"}}, "ship_address.address1", "required"),
        (good | {"created_at": "yesterday"}, "created_at", "datetime"),
        (good | {"created_at": "0001-01-01T00:00:00Z"}, "created_at", "before the account was opened"),
        (good | {"created_at": "9999-12-31T23:59:59Z"}, "created_at", "in the future"),
        (
            good
            | {"customer_id": None, "payment_method_id": None, "payment_kind": "paypal"}
            | {"created_at": "1990-01-01T00:00:00Z"},
            "created_at",
            "more than 10 years ago",
        ),
        (good | {"coupon": "FREE"}, "coupon", "not permitted"),
        ({"order_id": 2611340}, "order_id", "string"),
        ({"order_id": "#W2611340", "action": "refund"}, "action", "cancel"),
    ]
    for body, field, message in cases:
        errors = _errors(client.post("/api/fraud/score", json=body))
        assert field in errors and message in errors[field], (field, errors)
    assert _errors(client.post("/api/fraud/score", json=["order_id"]))  # not an object
    assert (
        client.post(
            "/api/fraud/score", content=b"{", headers={"Content-Type": "application/json"}
        ).status_code
        == 422
    )


def test_api_key(store_db: Engine, trained: Settings) -> None:
    base = trained.model_copy(update={"database_url": str(store_db.url), "llm_backend": "scripted"})
    body = {"order_id": "#W2611340"}
    keyed = base.model_copy(update={"fraud_api_key": SecretStr("s3cret")})
    with TestClient(create_app(keyed, backend=ScriptedBackend())) as c:
        assert c.post("/api/fraud/score", json=body).status_code == 401
        assert c.post("/api/fraud/score", json=body, headers={"X-API-Key": "nope"}).status_code == 401
        assert c.post("/api/fraud/score", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    production = base.model_copy(update={"demo_mode": False})
    with TestClient(create_app(production, backend=ScriptedBackend())) as c:
        assert c.post("/api/fraud/score", json=body).status_code == 403


# ---- CLI --------------------------------------------------------------------------------------------------------


def _csv(path: Path, n: int, seed: int) -> Path:
    """id, a feature that carries the label, noise, an amount, and a 0/1 label (10 % positive)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    lines = ["id,signal,noise,amount,label"]
    for i in range(n):
        signal = rng.normal(2.0 * y[i], 1.0)
        lines.append(f"{i},{signal:.4f},{rng.normal():.4f},{rng.exponential(50):.2f},{y[i]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_eval_fraud_json(tmp_path: Path) -> None:
    train, test = _csv(tmp_path / "train.csv", 1500, 1), _csv(tmp_path / "test.csv", 1000, 2)
    args = [
        "eval",
        "fraud",
        "--train",
        str(train),
        "--test",
        str(test),
        "--label",
        "label",
        "--drop",
        "id",
        "--json",
    ]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out) == {"models", "n_train", "n_test", "positive_rate"}
    assert set(out["models"]) == {"gbm", "logreg", "isolation_forest"}
    assert all(set(m) == {"auprc", "auroc", "recall@1%fpr"} for m in out["models"].values())
    assert out["n_train"] == 1500 and out["n_test"] == 1000 and 0.05 < out["positive_rate"] < 0.15
    # The signal is real: the supervised models find it, far above the base rate.
    assert out["models"]["logreg"]["auroc"] > 0.9 and out["models"]["gbm"]["auprc"] > 3 * out["positive_rate"]
    table = CliRunner().invoke(cli.app, args[:-1])
    assert table.exit_code == 0 and "isolation_forest" in table.stdout and "AUPRC" in table.stdout


@pytest.mark.parametrize(
    ("files", "label", "drop", "message"),
    [
        ({"train": None}, "label", "id", "no such file"),
        ({"train": "a,b\n1,2\n"}, "label", "", "no label column"),
        ({"train": "id,x,label\n1,abc,0\n2,def,1\n"}, "label", "id", "not numeric: x"),
        ({"train": "x,label\n1,0\n2,7\n"}, "label", "", "0 or 1"),
        ({"train": "x,label\n1,0\n2,0\n"}, "label", "", "both classes"),
        ({"test": "id,signal,label\n1,2,0\n"}, "label", "id", "missing feature columns"),
        ({"train": "\xff\xfe\x00"}, "label", "", "readable CSV"),
        ({}, "label", "id,nope", "--drop names columns"),
    ],
)
def test_cli_eval_fraud_bad_files(tmp_path: Path, files: dict, label: str, drop: str, message: str) -> None:
    paths = {"train": _csv(tmp_path / "train.csv", 200, 1), "test": _csv(tmp_path / "test.csv", 200, 2)}
    for name, content in files.items():
        paths[name] = tmp_path / f"bad-{name}.csv"
        if content is not None:
            paths[name].write_bytes(content.encode("latin-1"))
    args = ["eval", "fraud", "--train", str(paths["train"]), "--test", str(paths["test"]), "--label", label]
    result = CliRunner().invoke(cli.app, [*args, "--drop", drop, "--json"] if drop else [*args, "--json"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split()) and result.stdout == ""


def test_cli_train_fraud(store_db: Engine, store_settings: Settings, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = store_settings.model_copy(update={"database_url": str(store_db.url), "var_dir": tmp_path})
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(cli.app, ["train", "fraud"])
    assert result.exit_code == 0, result.output
    assert "validation AUPRC" in result.stdout and (tmp_path / "fraud" / "model.txt").exists()
    manifest = json.loads((tmp_path / "fraud" / "manifest.json").read_text())
    assert manifest["model_version"] in result.stdout
    empty = store_settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'empty.db'}", "var_dir": tmp_path}
    )
    monkeypatch.setattr(cli, "get_settings", lambda: empty)
    failed = CliRunner().invoke(cli.app, ["train", "fraud"])
    assert failed.exit_code == 2 and "shopdesk seed" in failed.stderr
