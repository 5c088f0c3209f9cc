"""The NUL character on PostgreSQL, which cannot store it in text: refused at the edge with a clear
400 / 422 / `error` event (it used to reach a query and come back as a 500 or a failed turn), and the
socket and server keep serving. SQLite would store it, so this runs against PostgreSQL."""

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from bot.llm.scripted import ScriptedBackend
from server import create_app
from shopdesk.settings import Settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def client(pg_engine: Engine, pg_url: str, tmp_path) -> TestClient:  # type: ignore[no-untyped-def]
    s = Settings(llm_backend="scripted", database_url=pg_url, var_dir=tmp_path)
    with TestClient(create_app(s, backend=ScriptedBackend()), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    "method, url, body, status",
    [
        ("POST", "/api/session", '{"customer_id": "james\\u0000"}', 422),
        ("POST", "/api/fraud/score", '{"order_id": "#W1\\u0000"}', 422),
        ("POST", "/api/recommendations/cart", '["\\u0000"]', 422),
        ("GET", "/api/recommendations/james%00", None, 400),
        ("GET", "/api/products/p%00/similar", None, 400),
        ("GET", "/api/search?q=return%00policy", None, 400),
        ("GET", "/api/inventory/outlook/%00", None, 400),
    ],
)
def test_nul_in_a_request_is_a_clear_client_error(client, method, url, body, status):  # type: ignore[no-untyped-def]
    r = client.request(method, url, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert "NUL" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_an_escaped_backslash_before_u0000_is_ordinary_text(client):  # type: ignore[no-untyped-def]
    r = client.post(
        "/api/session", content='{"customer_id": "a\\\\u0000b"}', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 404 and "unknown customer" in r.json()["detail"]  # looked up, not refused


def test_nul_in_a_chat_message_is_refused_and_the_chat_goes_on(client):  # type: ignore[no-untyped-def]
    token = client.post("/api/session", json={"customer_id": None}).json()["token"]
    with client.websocket_connect(f"/ws/chat?token={token}") as ws:
        assert ws.receive_json()["type"] == "ready"
        ws.send_text(json.dumps({"type": "message", "text": "where is\x00 my order?"}))
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == "invalid_text" and "NUL" in error["message"]
        ws.send_text(json.dumps({"type": "message", "text": "hello"}))
        while (event := ws.receive_json())["type"] != "done":
            assert event["type"] != "error", event
