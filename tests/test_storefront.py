"""The storefront REST the widget and the demo store use: products, feedback, rating, policy pages."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from api.storefront import render_policy
from bot.llm.scripted import ScriptedBackend
from commerce.models import ConversationRating, Message, MessageFeedback, Product
from server import create_app
from shopdesk.settings import Settings

JAMES = "james_li_5688"


@pytest.fixture
def client(store_db):  # type: ignore[no-untyped-def]
    settings = Settings(llm_backend="scripted", database_url=str(store_db.url))
    with TestClient(create_app(settings, backend=ScriptedBackend())) as c:
        yield c


def session(client: TestClient, customer_id: str | None = JAMES) -> dict[str, Any]:
    return client.post("/api/session", json={"customer_id": customer_id}).json()


def bot_reply(store_db, conversation_id: str) -> int:  # type: ignore[no-untyped-def]
    with Session(store_db) as db:
        msg = Message(conversation_id=conversation_id, role="assistant", content="Hello!")
        db.add(msg)
        db.commit()
        return msg.id or 0


def test_products_list_and_detail(client, store_db):
    products = client.get("/api/products").json()["products"]
    assert products and {"id", "name", "price_min", "price_max", "available", "variants"} <= set(products[0])
    assert all(p["price_min"] <= p["price_max"] for p in products)
    first = products[0]
    detail = client.get(f"/api/products/{first['id']}").json()
    assert detail["name"] == first["name"] and len(detail["variants"]) == first["variants"]
    assert detail["available"] == first["available"]
    assert min(v["price"] for v in detail["variants"]) == first["price_min"]
    with Session(store_db) as db:
        name = db.exec(select(Product.name)).first()
    assert any(p["name"] == name for p in client.get("/api/products", params={"q": name}).json()["products"])


def test_products_bad_input(client):
    assert client.get("/api/products/no-such-product").status_code == 404
    assert client.get("/api/products", params={"limit": 0}).status_code == 422
    assert client.get("/api/products", params={"limit": "many"}).status_code == 422
    assert client.get("/api/products", params={"offset": 10**20}).status_code == 422


def test_numbers_past_any_row_id_are_422_not_500(client):
    """SQLite cannot bind them and PostgreSQL's INTEGER cannot hold them: refused before the query."""
    auth = {"Authorization": f"Bearer {session(client)['token']}"}
    huge = 10**20
    r = client.post("/api/conversation/feedback", json={"message_id": huge, "vote": "up"}, headers=auth)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "message_id"
    assert (
        client.get("/api/conversation/messages", params={"after_id": huge}, headers=auth).status_code == 422
    )
    assert (
        client.get("/api/conversation/messages", params={"after_id": 2**31 - 1}, headers=auth).status_code
        == 200
    )


def test_similar_route_is_not_shadowed(client):
    """api/recommendations.py serves /api/products/{id}/similar; the detail route must not take it."""
    pid = client.get("/api/products").json()["products"][0]["id"]
    similar = client.get(f"/api/products/{pid}/similar")
    assert "unknown product" not in similar.text and "variants" not in similar.json()


def test_feedback_is_stored_once_per_reply_and_only_in_ones_own_conversation(client, store_db):
    mine, other = session(client), session(client)
    reply = bot_reply(store_db, mine["conversation_id"])
    auth = {"Authorization": f"Bearer {mine['token']}"}
    assert client.post(
        "/api/conversation/feedback", json={"message_id": reply, "vote": "up"}, headers=auth
    ).json() == {
        "message_id": reply,
        "vote": "up",
    }
    client.post("/api/conversation/feedback", json={"message_id": reply, "vote": "down"}, headers=auth)
    with Session(store_db) as db:
        votes = db.exec(select(MessageFeedback.vote).where(MessageFeedback.message_id == reply)).all()
    assert votes == ["down"]
    foreign = {"Authorization": f"Bearer {other['token']}"}
    assert (
        client.post(
            "/api/conversation/feedback", json={"message_id": reply, "vote": "up"}, headers=foreign
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/conversation/feedback", json={"message_id": 10**9, "vote": "up"}, headers=auth
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/conversation/feedback", json={"message_id": reply, "vote": "meh"}, headers=auth
        ).status_code
        == 422
    )
    assert (
        client.post("/api/conversation/feedback", json={"message_id": reply, "vote": "up"}).status_code == 401
    )


def test_rating(client, store_db):
    mine = session(client, None)
    auth = {"Authorization": f"Bearer {mine['token']}"}
    assert client.post("/api/conversation/rating", json={"rating": 4}, headers=auth).status_code == 200
    assert (
        client.post(
            "/api/conversation/rating", json={"rating": 5, "comment": "great"}, headers=auth
        ).status_code
        == 200
    )
    with Session(store_db) as db:
        row = db.get(ConversationRating, mine["conversation_id"])
    assert row is not None and (row.rating, row.comment) == (5, "great")
    for bad in ({"rating": 0}, {"rating": 6}, {}, {"rating": 3, "comment": "x" * 1001}):
        assert client.post("/api/conversation/rating", json=bad, headers=auth).status_code == 422
    assert client.post("/api/conversation/rating", json={"rating": 3}).status_code == 401


def test_policy_pages_have_the_citation_anchors_and_escape_everything(client):
    page = client.get("/policies/refunds")
    assert page.status_code == 200 and 'id="how-long-a-refund-takes"' in page.text
    assert client.get("/policies/refunds.md").status_code == 200
    assert client.get("/policies/no-such-page").status_code == 404
    assert client.get("/policies/..%2Fsecret").status_code == 404
    _, body = render_policy(
        "# T\n\nhi <script>alert(1)</script> **b**\n\n| a | b |\n| --- | --- |\n| <i> | 2 |\n"
    )
    assert "<script>" not in body and "&lt;script&gt;" in body and "<strong>b</strong>" in body
    assert "<td>&lt;i&gt;</td>" in body
