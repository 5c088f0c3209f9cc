"""The shopper door: sessions, the WebSocket protocol, and bad input that must not hurt the server."""

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bot.llm.scripted import ScriptedBackend
from server import create_app
from shopdesk.settings import Settings

JAMES = "james_li_5688"


@pytest.fixture
def settings(store_db) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(llm_backend="scripted", database_url=str(store_db.url))


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def client(settings, backend):  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings, backend=backend)) as c:
        yield c


def session(client: TestClient, customer_id: str | None = JAMES) -> dict[str, Any]:
    response = client.post("/api/session", json={"customer_id": customer_id})
    assert response.status_code == 200, response.text
    return response.json()


def until_done(ws) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    events = []
    while True:
        event = ws.receive_json()
        events.append(event)
        if event["type"] == "done":
            return events


def assert_usable(ws) -> None:  # type: ignore[no-untyped-def]
    """A ping is answered (turn events still in flight may come first)."""
    ws.send_text(json.dumps({"type": "ping"}))
    for _ in range(10_000):
        if ws.receive_json() == {"type": "pong"}:
            return
    raise AssertionError("no pong")


def test_order_status_streams_with_a_card(client, backend):
    backend.push({"action": "order_status", "order_id": "#W2611340"}, "Your order #W2611340 is processed.")
    token = session(client)["token"]
    with client.websocket_connect(f"/ws/chat?token={token}") as ws:
        assert ws.receive_json()["type"] == "ready"
        ws.send_text(json.dumps({"type": "message", "text": "where is my order #W2611340?", "id": "m1"}))
        events = until_done(ws)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "ack" and kinds[-2:] == ["message", "done"]
    assert kinds.count("token") > 1
    card = next(e for e in events if e["type"] == "card")["card"]
    assert card["status"] == "processed" and card["shipments"][0]["tracking_id"] == "357962501027"
    assert "processed" in events[-2]["text"]


@pytest.mark.parametrize(
    "send,code",
    [
        (lambda ws: ws.send_text("{not json"), "malformed_json"),
        (lambda ws: ws.send_text(json.dumps({"type": "dance"})), "unknown_type"),
        (lambda ws: ws.send_text(json.dumps([1, 2])), "invalid_frame"),
        (lambda ws: ws.send_text(json.dumps({"type": "message", "text": ""})), "invalid_frame"),
        (lambda ws: ws.send_text(json.dumps({"type": "message", "text": " \n\t "})), "invalid_frame"),
        (lambda ws: ws.send_text(json.dumps({"type": "confirm", "approve": "yes"})), "invalid_frame"),
        (lambda ws: ws.send_text(json.dumps({"type": "message", "text": "x" * 17_000})), "too_large"),
        (lambda ws: ws.send_bytes(b"\x00\xff\x10binary"), "binary_frame"),
        (lambda ws: ws.send_text(json.dumps({"type": "message", "text": "hi\x00there"})), "invalid_text"),
    ],
)
def test_bad_frames_get_an_error_and_the_socket_stays_usable(client, send, code):
    token = session(client)["token"]
    with client.websocket_connect(f"/ws/chat?token={token}") as ws:
        ws.receive_json()
        send(ws)
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == code and error["message"]
        assert_usable(ws)
        ws.send_text(json.dumps({"type": "message", "text": "hello"}))
        assert until_done(ws)[-2]["type"] == "message"


def test_a_thousand_rapid_messages_do_not_crash_the_server(client):
    token = session(client)["token"]
    with client.websocket_connect(f"/ws/chat?token={token}") as ws:
        ws.receive_json()
        for i in range(1000):
            ws.send_text(json.dumps({"type": "message", "text": f"message {i}", "id": f"c{i}"}))
        answered, refused = set(), set()
        while len(answered) + len(refused) < 1000:
            event = ws.receive_json()
            if event["type"] == "ack":
                answered.add(event["client_id"])
            elif event["type"] == "error":
                assert event["code"] == "rate_limited"
                refused.add(event["client_id"])
        assert answered and not answered & refused  # every message accounted for, once
        assert_usable(ws)
    # The server keeps serving others.
    other = session(client)["token"]
    with client.websocket_connect(f"/ws/chat?token={other}") as ws:
        ws.receive_json()
        assert_usable(ws)


def test_resending_the_same_client_id_is_processed_once(client, backend):
    token = session(client)["token"]
    with client.websocket_connect(f"/ws/chat?token={token}") as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "message", "text": "hi", "id": "same"}))
        until_done(ws)
        calls = len(backend.calls)
        ws.send_text(json.dumps({"type": "message", "text": "hi", "id": "same"}))
        assert until_done(ws) == [{"type": "done", "duplicate": True, "client_id": "same"}]
        assert len(backend.calls) == calls
    history = client.get("/api/conversation/messages", headers={"Authorization": f"Bearer {token}"}).json()
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]


def test_bad_or_missing_token_is_refused(client):
    for url in ("/ws/chat", "/ws/chat?token=forged.token.value"):
        with pytest.raises(WebSocketDisconnect) as exc, client.websocket_connect(url) as ws:
            ws.receive_json()
        assert exc.value.code == 4401


def test_rest_bad_input(client):
    assert client.post("/api/session", json={"customer_id": "nobody_1"}).status_code == 404
    bad = client.post("/api/session", json={"customer_id": ["x"]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "customer_id"
    assert (
        client.post(
            "/api/session", content=b"\xff\xfe", headers={"Content-Type": "application/json"}
        ).status_code
        == 422
    )
    assert client.get("/api/conversation/messages").status_code == 401
    assert (
        client.get("/api/conversation/messages", headers={"Authorization": "Bearer nope"}).status_code == 401
    )


def test_a_confirm_with_nothing_pending_stores_nothing_and_asks_no_model(client, backend):
    """A stale button (answered in another tab, an old widget): an error, no "yes" message, no turn."""
    token = session(client)["token"]
    with client.websocket_connect(f"/ws/chat?token={token}") as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "confirm", "approve": True}))
        events = until_done(ws)
        assert [e["type"] for e in events] == ["error", "done"] and events[0]["code"] == "nothing_to_confirm"
        assert_usable(ws)
    assert backend.calls == []
    history = client.get("/api/conversation/messages", headers={"Authorization": f"Bearer {token}"})
    assert history.json()["messages"] == []


def test_messages_endpoint_shows_only_the_tokens_conversation(client):
    mine, other = session(client), session(client)
    with client.websocket_connect(f"/ws/chat?token={other['token']}") as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "message", "text": "secret question"}))
        until_done(ws)
    response = client.get("/api/conversation/messages", headers={"Authorization": f"Bearer {mine['token']}"})
    assert response.json()["messages"] == []


def test_demo_page_and_customers(client):
    page = client.get("/")
    assert page.status_code == 200 and "/ws/chat" not in page.text and "/static/widget.js" in page.text
    customers = client.get("/api/demo/customers?limit=5").json()["customers"]
    assert len(customers) == 5 and all(c["orders"] for c in customers)


def test_conversation_survives_a_server_restart(settings):
    first = ScriptedBackend([{"action": "order_status", "order_id": "#W2611340"}, "It is processed."])
    with TestClient(create_app(settings, backend=first)) as client:
        token = session(client)["token"]
        with client.websocket_connect(f"/ws/chat?token={token}") as ws:
            ws.receive_json()
            ws.send_text(json.dumps({"type": "message", "text": "where is #W2611340?"}))
            until_done(ws)
    second = ScriptedBackend(["ok", "Anything else?"])
    with TestClient(create_app(settings, backend=second)) as client:
        with client.websocket_connect(f"/ws/chat?token={token}") as ws:
            assert ws.receive_json()["conversation_id"]
            ws.send_text(json.dumps({"type": "message", "text": "thanks"}))
            until_done(ws)
        history = client.get(
            "/api/conversation/messages", headers={"Authorization": f"Bearer {token}"}
        ).json()
    assert [m["text"] for m in history["messages"]][:1] == ["where is #W2611340?"]
    assert len(history["messages"]) == 4
    assert any("#W2611340" in (m.get("content") or "") for m in second.calls[-1]["messages"])


def test_disconnect_mid_stream_aborts_the_model_and_keeps_the_message(client, backend, store_db):
    from sqlmodel import Session, select

    from commerce.models import Message

    backend.delay_s = 0.05
    backend.push({"action": "answer"}, "word " * 400)  # a long reply, streamed slowly
    token = session(client)["token"]
    with client.websocket_connect(f"/ws/chat?token={token}") as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "message", "text": "hello, how are you today?"}))
        seen = 0
        while seen < 3:
            seen += ws.receive_json()["type"] == "token"
    # The shopper is gone: the model stream is closed, not run to its end for nobody.
    for _ in range(100):
        if backend.aborted:
            break
        time.sleep(0.05)
    assert backend.aborted == 1
    with Session(store_db) as db:
        rows = db.exec(select(Message.role, Message.content)).all()
    assert ("user", "hello, how are you today?") in [tuple(r) for r in rows]


def test_a_guest_connects_verifies_and_gets_their_order(client, backend):
    guest = session(client, None)
    assert guest["customer"] is None
    with client.websocket_connect(f"/ws/chat?token={guest['token']}") as ws:
        assert ws.receive_json()["identity"] == "guest"
        backend.push({"action": "order_status", "order_id": "#W2611340"})
        ws.send_text(json.dumps({"type": "message", "text": "where is #W2611340?"}))
        events = until_done(ws)
        assert not [e for e in events if e["type"] == "card"]  # nothing before verification
        backend.push({"action": "verify_guest", "email": "james.li4495@example.com"})
        ws.send_text(json.dumps({"type": "message", "text": "I'm james.li4495@example.com"}))
        until_done(ws)
        backend.push({"action": "order_status", "order_id": "#W2611340"})
        ws.send_text(json.dumps({"type": "message", "text": "where is #W2611340 then?"}))
        card = next(e for e in until_done(ws) if e["type"] == "card")["card"]
    assert card["status"] == "processed"
    # The same guest token reconnects to the now verified conversation.
    with client.websocket_connect(f"/ws/chat?token={guest['token']}") as ws:
        assert ws.receive_json()["identity"] == "verified_guest"


def test_the_apps_agent_routes_small_model_decisions(client, backend):
    """The server wires the intent router: a policy question is offered the knowledge search first,
    and nothing the router finds unlikely."""
    guest = session(client, None)
    with client.websocket_connect(f"/ws/chat?token={guest['token']}") as ws:
        ws.receive_json()
        backend.push({"action": "ask", "need": "clarification"})
        ws.send_text(
            json.dumps({"type": "message", "text": "how long do I have to return a delivered item?"})
        )
        until_done(ws)
    offered = [b["properties"]["action"].get("const") for b in backend.calls[-1]["response_schema"]["anyOf"]]
    assert offered[0] == "search_knowledge" and "verify_guest" not in offered and "answer" not in offered
