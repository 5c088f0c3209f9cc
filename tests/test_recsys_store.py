"""Recommendations on the seeded store: training, the artifact the server loads, the service function
for the bot, and the REST endpoints (200 / 404 / 422, fallbacks, availability, reasons).

One training per module (content model off, ALS on one grid point: a few seconds); the content model
with real MiniLM vectors is in the slow test at the end.
"""

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from commerce.models import Order, OrderItem, Product, Variant
from recsys import artifact
from recsys.matrix import Index
from recsys.models import ALS, MODELS
from recsys.serve import get_recommender
from recsys.service import (
    UnknownItems,
    UnknownProduct,
    complete_cart,
    recommend_for_customer,
    similar_to_product,
)
from recsys.store import load_catalog, recsys_dir, store_interactions, train_store
from shopdesk import cli
from shopdesk.db import make_engine, migrate
from shopdesk.settings import Settings

CUSTOMER = "james_li_5688"
ONE_ALS = [{"factors": 16, "alpha": 10.0}]


def small_grids(mp: pytest.MonkeyPatch) -> None:
    """One hyper-parameter point per model (ALS: a small one): training takes a second or two."""
    for cls in MODELS.values():
        mp.setattr(cls, "grid", cls.grid[:1])
    mp.setattr(ALS, "grid", ONE_ALS)


def settings_for(url: str, var) -> Settings:
    return Settings(_env_file=None, llm_backend="scripted", database_url=url, var_dir=var)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def trained(seeded_engine, tmp_path_factory):
    settings = settings_for(str(seeded_engine.url), tmp_path_factory.mktemp("recsys-store"))
    with pytest.MonkeyPatch.context() as mp:
        small_grids(mp)
        report = train_store(seeded_engine, settings, content=False)
    return settings, report


@pytest.fixture(scope="module")
def api(trained):
    from server import create_app

    settings, _ = trained
    with TestClient(create_app(settings)) as client:
        yield client


def history_of(engine, customer: str) -> set[str]:
    with Session(engine) as db:
        return set(
            db.exec(
                select(OrderItem.variant_id)
                .join(Order, col(Order.id) == col(OrderItem.order_id))
                .where(Order.customer_id == customer, Order.status != "cancelled")
            ).all()
        )


def variants(engine, ids) -> dict[str, Variant]:
    with Session(engine) as db:
        return {v.id: v for v in db.exec(select(Variant).where(col(Variant.id).in_(list(ids)))).all()}


# ---- training and the artifact --------------------------------------------------------------------------


def test_training_writes_a_versioned_artifact(trained, seeded_engine):
    settings, report = trained
    path = artifact.latest(recsys_dir(settings))
    assert path == report.path and path.name == report.version
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == artifact.FORMAT and manifest["source"] == "store"
    assert manifest["created_at"] and len(manifest["data_hash"]) == 64
    assert report.version.endswith(manifest["data_hash"][:8])
    assert set(manifest["models"]) == {
        "popularity",
        "itemknn_cosine",
        "itemknn_bm25",
        "als",
        "ease",
        "buy_again",
    }
    assert "content" in manifest["skipped"] and manifest["embedding_model_id"] is None
    assert manifest["validation_split"] == "last-basket" and "hybrid" in manifest["metrics"]["validation"]
    with Session(seeded_engine) as db:
        assert manifest["n_items"] == len(load_catalog(db).variant_ids) == 591
        # The data hash is a function of the data: the same store gives the same hash.
        assert store_interactions(db).data_hash() == store_interactions(db).data_hash()
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        assert "ease.B" in npz.files and npz["ease.B"].shape == (591, 591)
    rec = get_recommender(settings)
    assert rec is not None and rec.version == report.version and get_recommender(settings) is rec  # cached


def test_a_new_version_is_picked_up_without_a_restart(trained, tmp_path):
    settings, report = trained
    local = settings_for(settings.database_url, tmp_path)
    shutil.copytree(report.path.parent, tmp_path / "recsys")
    first = get_recommender(local)
    assert first is not None and first.version == report.version
    newer = artifact.save(
        recsys_dir(local), report.bundle, Index(np.zeros(0, str), first.index.item_ids), data_hash="f" * 64
    )
    second = get_recommender(local)
    assert second is not None and second is not first and second.version == newer.name


def test_a_broken_artifact_falls_back_to_popularity(trained, tmp_path):
    settings, report = trained
    local = settings_for(settings.database_url, tmp_path)
    shutil.copytree(report.path.parent, tmp_path / "recsys")
    (tmp_path / "recsys" / report.version / "arrays.npz").write_bytes(b"not an npz file")
    assert get_recommender(local) is None
    engine = make_engine(settings.database_url)
    with Session(engine) as db:
        items = recommend_for_customer(db, local, CUSTOMER, 3)
    engine.dispose()
    assert len(items) == 3 and all(i.fallback and i.reason_kind == "popular" for i in items)


def test_cancelled_orders_are_not_interactions(seeded_engine):
    with Session(seeded_engine) as db:
        inter = store_interactions(db)
        n_items = db.exec(
            select(OrderItem.id)
            .join(Order, col(Order.id) == col(OrderItem.order_id))
            .where(Order.status != "cancelled")
        ).all()
    assert len(inter) == len(n_items) and inter.timestamp_kind == "number"


# ---- REST: a customer -----------------------------------------------------------------------------------


def test_customer_recommendations_are_available_reasoned_and_diverse(api, trained, seeded_engine):
    _, report = trained
    r = api.get(f"/api/recommendations/{CUSTOMER}", params={"k": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 6 and body["model_version"] == report.version and body["fallback"] is False
    items = body["items"]
    assert len(items) == 6 and len({i["variant_id"] for i in items}) == 6
    assert set(items[0]) == {
        "variant_id", "product_id", "name", "price", "options", "score", "reason", "reason_kind", "fallback"
    }  # fmt: skip
    bought = history_of(seeded_engine, CUSTOMER)
    rows = variants(seeded_engine, [i["variant_id"] for i in items])
    assert all(rows[i["variant_id"]].available for i in items)
    assert all(rows[i["variant_id"]].product_id == i["product_id"] for i in items)
    again = [i for i in items if i["reason_kind"] == "bought_before"]
    picks = [i for i in items if i["reason_kind"] != "bought_before"]
    assert len(again) == 2 and all(i["reason"] == "bought before" for i in again)
    assert {i["variant_id"] for i in again} <= bought  # buy-again slots: their own items
    assert not {i["variant_id"] for i in picks} & bought  # nothing they bought anywhere else
    assert len({i["product_id"] for i in picks}) == len(picks)  # one per product
    assert items[: len(picks)] == picks  # hybrid picks first, then the buy-again slots
    names = {v: n for v, n in _names(seeded_engine, bought).items()}
    for item in picks:
        assert item["fallback"] is False
        assert item["reason_kind"] in ("similar", "popular")
        if item["reason_kind"] == "similar":
            assert item["reason"].removeprefix("similar to ") in names.values()
        else:
            assert item["reason"] == f"popular in {item['name']}"


def _names(engine, ids) -> dict[str, str]:
    with Session(engine) as db:
        rows = db.exec(
            select(Variant.id, Product.name).join(Product).where(col(Variant.id).in_(list(ids)))
        ).all()
    return dict(rows)


def test_unknown_customer_gets_popular_available_items_marked_fallback(api, seeded_engine):
    r = api.get("/api/recommendations/nobody_at_all", params={"k": 8})
    assert r.status_code == 200
    body = r.json()
    items = body["items"]
    assert body["fallback"] is True and len(items) == 8
    assert all(i["fallback"] and i["reason_kind"] == "popular" for i in items)
    assert all(i["reason"] == f"popular in {i['name']}" for i in items)
    assert len({i["product_id"] for i in items}) == 8
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    rows = variants(seeded_engine, [i["variant_id"] for i in items])
    assert all(rows[i["variant_id"]].available for i in items)


def test_a_customers_recommendations_are_for_them_or_a_service_only(trained):
    """The reasons say what the customer bought: an anonymous caller who guessed the id learns nothing."""
    from pydantic import SecretStr

    from server import create_app
    from shopdesk.security import SessionClaims, StaffClaims, issue_staff_token, issue_token

    settings, _ = trained
    s = settings.model_copy(update={"demo_mode": False, "recsys_api_key": SecretStr("recs-key")})
    own = issue_token(SessionClaims(conversation_id="c", customer_id=CUSTOMER), s)
    other = issue_token(SessionClaims(conversation_id="c", customer_id="noah_brown_6181"), s)
    staff = issue_staff_token(StaffClaims(staff_id=1, role="admin", name="Ada"), s)
    url = f"/api/recommendations/{CUSTOMER}"
    with TestClient(create_app(s)) as c:
        assert c.get(url).status_code == 401
        assert c.get("/api/recommendations/nobody_at_all").status_code == 401  # no "exists?" oracle either
        assert c.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 403
        assert c.get(url, headers={"Authorization": f"Bearer {staff}"}).status_code == 403
        assert c.get(url, headers={"Authorization": "Bearer garbage"}).status_code == 401
        for headers in ({"X-API-Key": "recs-key"}, {"Authorization": f"Bearer {own}"}):
            r = c.get(url, headers=headers)
            assert r.status_code == 200 and any(
                i["reason_kind"] == "bought_before" for i in r.json()["items"]
            )
        assert c.get("/api/products/1656367028/similar").status_code == 200  # nothing personal: open
        assert c.post("/api/recommendations/cart", json=["1656367028"]).status_code == 200
    unkeyed = s.model_copy(update={"recsys_api_key": None})
    with TestClient(create_app(unkeyed)) as c:
        refused = c.get(url)
        assert refused.status_code == 403 and "SHOPDESK_RECSYS_API_KEY" in refused.json()["detail"]


@pytest.mark.parametrize("k", ["0", "51", "many", "-3"])
def test_k_out_of_range_is_422_everywhere(api, k):
    for method, url in (
        ("get", f"/api/recommendations/{CUSTOMER}"),
        ("get", "/api/products/1656367028/similar"),
        ("post", "/api/recommendations/cart"),
    ):
        kwargs = {"json": ["1656367028"]} if method == "post" else {}
        r = getattr(api, method)(url, params={"k": k}, **kwargs)
        assert r.status_code == 422, (url, r.text)
        assert any(e["field"] == "k" for e in r.json()["errors"])


# ---- REST: products and carts ---------------------------------------------------------------------------


def test_similar_products_exclude_the_product_itself(api, seeded_engine):
    product = "1656367028"  # Mechanical Keyboard
    r = api.get(f"/api/products/{product}/similar", params={"k": 5})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 5 and all(i["product_id"] != product for i in items)
    assert len({i["product_id"] for i in items}) == 5
    assert all(
        i["reason"] == "similar to Mechanical Keyboard" or i["reason_kind"] == "popular" for i in items
    )
    assert any(i["reason_kind"] == "similar" and not i["fallback"] for i in items)
    rows = variants(seeded_engine, [i["variant_id"] for i in items])
    assert all(rows[i["variant_id"]].available for i in items)
    missing = api.get("/api/products/no-such-product/similar")
    assert missing.status_code == 404 and missing.json()["detail"] == "unknown product: no-such-product"


def test_cart_completion_takes_variant_and_product_ids(api, seeded_engine):
    with Session(seeded_engine) as db:
        keyboard = db.exec(select(Variant.id).where(Variant.product_id == "1656367028")).first()
    r = api.post("/api/recommendations/cart", params={"k": 4}, json=[keyboard, "7765186836"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 4
    assert not {i["product_id"] for i in items} & {"1656367028", "7765186836"}
    assert all(i["reason_kind"] in ("similar", "popular") for i in items)
    assert any(i["reason"] in ("similar to Mechanical Keyboard", "similar to Cycling Helmet") for i in items)
    wrapped = api.post("/api/recommendations/cart", params={"k": 4}, json={"items": [keyboard, "7765186836"]})
    assert wrapped.json()["items"] == items
    unknown = api.post("/api/recommendations/cart", json=[keyboard, "ghost-1", "ghost-2"])
    assert unknown.status_code == 404 and "ghost-1, ghost-2" in unknown.json()["detail"]
    empty = api.post("/api/recommendations/cart", json=[])
    assert empty.status_code == 200 and empty.json()["fallback"] is True and len(empty.json()["items"]) == 10
    bad = api.post("/api/recommendations/cart", json={"items": "not a list"})
    assert bad.status_code == 422


# ---- availability, no artifact, empty catalog -----------------------------------------------------------


def test_an_unavailable_variant_is_never_recommended(trained, store_db):
    settings, _ = trained
    local = settings.model_copy(update={"database_url": str(store_db.url)})
    with Session(store_db) as db:
        before = recommend_for_customer(db, local, "nobody", 5)
        personal = recommend_for_customer(db, local, CUSTOMER, 6)
    gone = {before[0].variant_id, *(i.variant_id for i in personal)}
    with Session(store_db) as db:
        db.exec(update(Variant).where(col(Variant.id).in_(gone)).values(available=False))  # type: ignore[call-overload]
        db.commit()
        after = recommend_for_customer(db, local, "nobody", 5)
        personal_after = recommend_for_customer(db, local, CUSTOMER, 6)
    assert before[0].variant_id not in {i.variant_id for i in after} and len(after) == 5
    assert not gone & {i.variant_id for i in personal_after} and len(personal_after) == 6


def test_without_an_artifact_the_store_serves_live_popularity(seeded_engine, tmp_path):
    from server import create_app

    settings = settings_for(str(seeded_engine.url), tmp_path)
    with TestClient(create_app(settings)) as client:
        body = client.get(f"/api/recommendations/{CUSTOMER}", params={"k": 5}).json()
        similar = client.get("/api/products/1656367028/similar", params={"k": 3}).json()
    assert body["model_version"] is None and body["fallback"] is True and len(body["items"]) == 5
    assert all(i["reason_kind"] == "popular" for i in body["items"])
    assert similar["fallback"] is True and all(i["product_id"] != "1656367028" for i in similar["items"])
    rows = variants(seeded_engine, [i["variant_id"] for i in body["items"]])
    assert all(rows[i["variant_id"]].available for i in body["items"])


def test_an_empty_catalog_answers_empty_lists(tmp_path):
    from server import create_app

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    migrate(url)
    settings = settings_for(url, tmp_path)
    engine = make_engine(url)
    try:
        for trained_first in (False, True):
            if trained_first:
                report = train_store(engine, settings, content=False)
                assert report.n_variants == 0 and report.n_interactions == 0
            with TestClient(create_app(settings)) as client:
                r = client.get(f"/api/recommendations/{CUSTOMER}")
                assert r.status_code == 200 and r.json()["items"] == []
                assert client.get("/api/products/1/similar").status_code == 404
                assert client.post("/api/recommendations/cart", json=[]).json()["items"] == []
    finally:
        engine.dispose()


# ---- the service function the bot's tool calls ------------------------------------------------------------


def test_service_function_with_a_query(trained, seeded_engine):
    settings, _ = trained
    with Session(seeded_engine) as db:
        recs = recommend_for_customer(db, settings, CUSTOMER, 4, query="headphones")
        plain = recommend_for_customer(db, settings, CUSTOMER)
        with pytest.raises(ValueError):
            recommend_for_customer(db, settings, CUSTOMER, 0)
        with pytest.raises(UnknownProduct):
            similar_to_product(db, settings, "nope")
        with pytest.raises(UnknownItems):
            complete_cart(db, settings, ["nope"])
    assert len(recs) == 4 and all(r.name == "Headphones" for r in recs)
    assert all(r.reason == "matches 'headphones'" and r.reason_kind == "query" for r in recs)
    assert len(plain) == 5 and sum(r.reason_kind == "bought_before" for r in plain) == 1


def test_train_cli(store_db, tmp_path, monkeypatch):
    settings = settings_for(str(store_db.url), tmp_path)
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    small_grids(monkeypatch)
    result = CliRunner().invoke(cli.app, ["train", "recsys", "--no-content", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert body["n_variants"] == 591 and body["n_interactions"] > 2000
    assert (tmp_path / "recsys" / body["version"] / "manifest.json").exists()
    assert body["version"] == (tmp_path / "recsys" / "LATEST").read_text().strip()
    assert "hybrid" in body["validation"] and body["weights"] and "content" in body["skipped"]


# ---- slow: the content model on real MiniLM vectors -------------------------------------------------------


@pytest.mark.slow
def test_content_model_on_the_store(seeded_engine, tmp_path):
    settings = settings_for(str(seeded_engine.url), tmp_path)
    report = train_store(seeded_engine, settings, content=True)
    assert "content" in report.bundle.models and report.bundle.validation["content"]["ndcg@10"] >= 0
    manifest = json.loads((report.path / "manifest.json").read_text())
    assert manifest["embedding_model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    with Session(seeded_engine) as db:
        recs = recommend_for_customer(db, settings, "nobody", 3, query="something to keep my coffee hot")
        similar = similar_to_product(db, settings, "1656367028", 5)  # Mechanical Keyboard
    assert recs[0].reason_kind == "query" and recs[0].fallback is True
    assert any(word in recs[0].name for word in ("Kettle", "Coffee", "Water Bottle", "Espresso"))
    assert all(i.product_id != "1656367028" for i in similar)
