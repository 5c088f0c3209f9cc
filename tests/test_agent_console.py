"""Support agents: sign-in, roles, the queue, take over, replies both ways, suggested replies with
citations and proposed actions that run only on the agent's click, hand back (one process, scripted)."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from starlette.websockets import WebSocketDisconnect

from bot.llm.scripted import ScriptedBackend
from commerce.models import Order, SuggestedReply
from server import create_app
from shopdesk.settings import Settings
from shopdesk.staff import create_staff

AARAV, PENDING = "aarav_anderson_8794", "#W9300146"  # a pending order of $153.23
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def policy_retriever():  # type: ignore[no-untyped-def]
    from retrieval.knowledge import policy_documents
    from retrieval.search import Retriever

    return Retriever.from_documents(policy_documents()[0])


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def client(store_db, tmp_path, backend, policy_retriever):  # type: ignore[no-untyped-def]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=tmp_path,
        llm_backend="scripted",
        database_url=str(store_db.url),
        llm_answer_style="facts",
    )
    with Session(store_db) as db:
        create_staff(db, "alex", "Alex", "agent", PASSWORD)
        create_staff(db, "sam", "Sam", "agent", PASSWORD)
        create_staff(db, "root", "Admin", "admin", PASSWORD)
    with TestClient(create_app(settings, backend=backend)) as c:
        c.app.state.agent.retriever = lambda: policy_retriever  # type: ignore[attr-defined]
        yield c


def login(client: TestClient, username: str = "alex") -> dict[str, str]:
    response = client.post("/api/staff/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def shopper(client: TestClient, customer_id: str = AARAV) -> dict[str, Any]:
    response = client.post("/api/session", json={"customer_id": customer_id})
    assert response.status_code == 200
    return response.json()


def until(ws, kind: str, limit: int = 500) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    for _ in range(limit):
        event = ws.receive_json()
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind} event")


@contextmanager
def watching(client: TestClient, auth: dict[str, str], conv: str) -> Iterator[Any]:
    """The agent's console socket, watching `conv`."""
    token = auth["Authorization"].split()[1]
    with client.websocket_connect(f"/ws/agent?token={token}") as console:
        console.receive_json()
        console.send_text(json.dumps({"type": "watch", "conversation_id": conv}))
        until(console, "watching")
        yield console


def say(ws, text: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    ws.send_text(json.dumps({"type": "message", "text": text}))
    events = []
    while True:
        events.append(ws.receive_json())
        if events[-1]["type"] == "done":
            return events


def test_login_refuses_a_wrong_password_and_an_unknown_user_alike(client) -> None:  # type: ignore[no-untyped-def]
    wrong = client.post("/api/staff/login", json={"username": "alex", "password": "nope nope nope"})
    unknown = client.post("/api/staff/login", json={"username": "nobody", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert client.post("/api/staff/login", json={"username": "alex"}).status_code == 422


def test_roles_shoppers_never_reach_agent_doors_and_staff_never_reach_shopper_ones(client) -> None:  # type: ignore[no-untyped-def]
    session = shopper(client)
    shopper_auth = {"Authorization": f"Bearer {session['token']}"}
    assert client.get("/api/agent/queue").status_code == 401
    assert client.get("/api/agent/queue", headers=shopper_auth).status_code == 403
    assert client.get("/api/agent/queue", headers=login(client)).status_code == 200
    assert client.get("/api/agent/queue", headers=login(client, "root")).status_code == 200  # admins too
    # ...but an agent opens no admin door.
    assert client.get("/api/admin/prompts", headers=login(client)).status_code == 403
    assert client.get("/api/admin/prompts", headers=login(client, "root")).status_code == 200
    assert (
        client.get(f"/api/agent/conversations/{session['conversation_id']}", headers=shopper_auth).status_code
        == 403
    )
    # A shopper token does not open the agents' socket; a staff token does not open a shopper chat.
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(f"/ws/agent?token={session['token']}") as ws,
    ):
        ws.receive_json()
    assert refused.value.code == 4403
    staff_token = login(client)["Authorization"].split()[1]
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(f"/ws/chat?token={staff_token}") as ws,
    ):
        ws.receive_json()
    assert refused.value.code == 4401
    assert (
        client.get(
            "/api/conversation/messages", headers={"Authorization": f"Bearer {staff_token}"}
        ).status_code
        == 403
    )
    # Unknown ids and bad bodies get clear errors.
    auth = login(client)
    assert client.get("/api/agent/conversations/nope", headers=auth).status_code == 404
    assert client.post("/api/agent/conversations/nope/take-over", headers=auth).status_code == 404
    bad = client.post(
        f"/api/agent/conversations/{session['conversation_id']}/messages", headers=auth, json={"text": ""}
    )
    assert bad.status_code == 422


def test_an_agent_takes_over_replies_runs_a_suggested_cancel_on_click_and_hands_back(
    client, backend, store_db
) -> None:  # type: ignore[no-untyped-def]
    auth = login(client)
    session = shopper(client)
    conv = session["conversation_id"]
    with client.websocket_connect(f"/ws/chat?token={session['token']}") as chat:
        assert chat.receive_json()["type"] == "ready"
        backend.push({"action": "handoff", "reason": "shopper asked for a person"})
        events = say(chat, "I want to talk to a person")
        assert [e for e in events if e["type"] == "handoff"][0]["state"] == "waiting"

        queue = client.get("/api/agent/queue", headers=auth).json()
        entry = next(c for c in queue["conversations"] if c["id"] == conv)
        assert entry["state"] == "waiting" and entry["customer"]["id"] == AARAV
        assert entry["waiting_s"] is not None and entry["sentiment"] is not None

        token = auth["Authorization"].split()[1]
        with client.websocket_connect(f"/ws/agent?token={token}") as console:
            assert console.receive_json()["type"] == "ready"
            console.send_text(json.dumps({"type": "watch", "conversation_id": conv}))
            assert until(console, "watching")["conversation_id"] == conv

            assert client.post(f"/api/agent/conversations/{conv}/take-over", headers=auth).status_code == 200
            joined = until(chat, "handoff")
            assert joined["state"] == "agent" and joined["agent"] == "Alex"
            assert "reason" not in joined and "trigger" not in joined  # the shopper sees no internals
            # A second agent cannot take the same chat, nor write in it.
            other = login(client, "sam")
            assert client.post(f"/api/agent/conversations/{conv}/take-over", headers=other).status_code == 409
            assert (
                client.post(
                    f"/api/agent/conversations/{conv}/messages", headers=other, json={"text": "hi"}
                ).status_code
                == 409
            )

            # The shopper writes: the agent sees it live, then suggested replies with sources.
            backend.push("I can help with cancelling order #W9300146.")  # the model's draft
            events = say(chat, f"please cancel my order {PENDING}, I don't need it anymore")
            assert [e["type"] for e in events] == ["ack", "done"]  # no bot reply: a person has the chat
            seen = until(console, "shopper_message")
            assert seen["message"]["text"].startswith("please cancel")
            suggestions = until(console, "suggestions")["suggestions"]
            assert 1 <= len(suggestions) <= 3
            action = next(s for s in suggestions if s["action"])
            assert (
                action["action"]["tool"] == "cancel_order" and action["action"]["args"]["order_id"] == PENDING
            )
            cited = next(s for s in suggestions if s["citations"])
            assert cited["citations"][0]["source"].startswith("policies/")

            # The proposed cancel runs only when the agent clicks, and confirms.
            with Session(store_db) as db:
                assert db.get(Order, PENDING).status == "pending"  # type: ignore[union-attr]
            url = f"/api/agent/conversations/{conv}/actions"
            preview = client.post(url, headers=auth, json={"suggestion_id": action["id"]}).json()
            assert preview["outcome"] == "proposed" and PENDING in preview["summary"] and not preview["done"]
            with Session(store_db) as db:
                assert db.get(Order, PENDING).status == "pending"  # type: ignore[union-attr]
            done = client.post(
                url, headers=auth, json={"suggestion_id": action["id"], "confirm": True}
            ).json()
            assert done["outcome"] == "confirmed" and done["done"]
            with Session(store_db) as db:
                assert db.get(Order, PENDING).status == "cancelled"  # type: ignore[union-attr]
            told = until(chat, "agent_message")
            assert "cancelled" in told["text"] and told["card"]["status"] == "cancelled"

            # Accepting a suggestion sends it as it is; the others are recorded as ignored.
            sent = client.post(
                f"/api/agent/conversations/{conv}/messages",
                headers=auth,
                json={"text": cited["text"], "suggestion_id": cited["id"]},
            )
            assert sent.status_code == 201 and sent.json()["suggestion_status"] == "accepted"
            message = until(chat, "agent_message")
            assert message["text"] == cited["text"] and message["agent"] == "Alex"
            with Session(store_db) as db:
                statuses = {s.id: s.status for s in db.exec(select(SuggestedReply)).all()}
            assert statuses[cited["id"]] == "accepted"
            assert all(v in ("accepted", "ignored") for v in statuses.values())

            # The transcript has everything: messages with roles, tool calls, state changes.
            detail = client.get(f"/api/agent/conversations/{conv}", headers=auth).json()
            roles = [m["role"] for m in detail["messages"]]
            assert roles == ["user", "assistant", "user", "agent", "agent"]
            assert [e["trigger"] for e in detail["events"]] == ["shopper_request", "take_over"]
            assert any(t["tool"] == "handoff" for t in detail["tool_calls"])
            assert any(
                t["tool"] == "cancel_order" and t["outcome"] == "confirmed" for t in detail["tool_calls"]
            )

            assert client.post(f"/api/agent/conversations/{conv}/hand-back", headers=auth).status_code == 200
            assert until(chat, "handoff")["state"] == "bot"
        # Back with the bot: it answers again.
        backend.push({"action": "list_orders"})
        events = say(chat, "what did I order?")
        assert any(e["type"] == "card" for e in events)

    # History (a reload) shows the agent's messages with the agent's name.
    history = client.get(
        "/api/conversation/messages", headers={"Authorization": f"Bearer {session['token']}"}
    ).json()
    agent_messages = [m for m in history["messages"] if m["role"] == "agent"]
    assert len(agent_messages) == 2 and {m["agent"] for m in agent_messages} == {"Alex"}


@pytest.mark.parametrize(
    ("order_id", "why"),
    [("#W5065081", "another customer's order"), ("#W3220203", "processed: it has left the warehouse")],
)
def test_no_action_is_suggested_that_the_click_would_refuse(client, backend, order_id: str, why: str) -> None:  # type: ignore[no-untyped-def]
    """A button saying "I can cancel order X" must be one the agent's click can keep."""
    auth = login(client)
    session = shopper(client)
    conv = session["conversation_id"]
    with client.websocket_connect(f"/ws/chat?token={session['token']}") as chat:
        chat.receive_json()
        backend.push({"action": "handoff", "reason": "shopper asked for a person"})
        say(chat, "I want to talk to a person")
        with watching(client, auth, conv) as console:
            assert client.post(f"/api/agent/conversations/{conv}/take-over", headers=auth).status_code == 200
            backend.push("Let me look at that order.")  # the model's draft
            say(chat, f"please cancel order {order_id}")
            while (seen := until(console, "shopper_message"))["message"][
                "text"
            ] != f"please cancel order {order_id}":
                pass
            while (event := until(console, "suggestions"))["message_id"] != seen["message"]["id"]:
                pass
            suggestions = event["suggestions"]
    assert suggestions and not any(s["action"] for s in suggestions), (why, suggestions)
    assert not any(s["text"].startswith("I can cancel order") for s in suggestions), why
    assert any(order_id in s["text"] for s in suggestions), suggestions  # the refusal, for the agent to send


def test_an_edited_suggestion_is_recorded_as_edited_and_close_keeps_tags_and_note(
    client, backend, store_db
) -> None:  # type: ignore[no-untyped-def]
    auth = login(client)
    session = shopper(client, "james_li_5688")
    conv = session["conversation_id"]
    with client.websocket_connect(f"/ws/chat?token={session['token']}") as chat:
        chat.receive_json()
        assert client.post(f"/api/agent/conversations/{conv}/take-over", headers=auth).status_code == 200
        until(chat, "handoff")
        with watching(client, auth, conv) as console:
            say(chat, "what is your return policy?")
            suggestion = until(console, "suggestions")["suggestions"][0]
        edited = client.post(
            f"/api/agent/conversations/{conv}/messages",
            headers=auth,
            json={"text": suggestion["text"] + " Anything else?", "suggestion_id": suggestion["id"]},
        )
        assert edited.json()["suggestion_status"] == "edited"
        closed = client.post(
            f"/api/agent/conversations/{conv}/close",
            headers=auth,
            json={"tags": ["Returns", " policy "], "note": "explained"},
        )
        assert closed.status_code == 200
        assert until(chat, "handoff")["state"] == "closed"
    detail = client.get(f"/api/agent/conversations/{conv}", headers=auth).json()
    assert (
        detail["state"] == "closed"
        and detail["tags"] == ["policy", "returns"]
        and detail["close_note"] == "explained"
    )
    assert client.post(f"/api/agent/conversations/{conv}/close", headers=auth, json={}).status_code == 409


def test_agent_socket_refuses_bad_frames_and_keeps_serving(client) -> None:  # type: ignore[no-untyped-def]
    token = login(client)["Authorization"].split()[1]
    with client.websocket_connect(f"/ws/agent?token={token}") as console:
        console.receive_json()
        console.send_text("{nope")
        assert console.receive_json()["code"] == "malformed_json"
        console.send_bytes(b"\x00\x01")
        assert console.receive_json()["code"] == "binary_frame"
        console.send_text(json.dumps({"type": "watch"}))
        assert console.receive_json()["code"] == "invalid_frame"
        console.send_text(json.dumps({"type": "watch", "conversation_id": "nope"}))
        assert console.receive_json()["code"] == "unknown_conversation"
        console.send_text(json.dumps({"type": "ping"}))
        assert console.receive_json() == {"type": "pong"}


def test_conversation_state_for_a_reload_shows_the_pending_action_and_the_agent(client, backend) -> None:  # type: ignore[no-untyped-def]
    session = shopper(client)
    headers = {"Authorization": f"Bearer {session['token']}"}
    assert client.get("/api/conversation", headers=headers).json()["pending_action"] is None
    with client.websocket_connect(f"/ws/chat?token={session['token']}") as chat:
        chat.receive_json()
        backend.push({"action": "cancel_order", "order_id": PENDING, "reason": "no longer needed"})
        events = say(chat, f"please cancel {PENDING}, I don't need it")
        assert any(e["type"] == "confirm" for e in events)
    state = client.get("/api/conversation", headers=headers).json()
    assert state["state"] == "bot" and state["agent"] is None
    assert (
        state["pending_action"]["action"] == "cancel_order" and PENDING in state["pending_action"]["summary"]
    )
    auth = login(client)
    client.post(f"/api/agent/conversations/{session['conversation_id']}/take-over", headers=auth)
    state = client.get("/api/conversation", headers=headers).json()
    assert state["state"] == "agent" and state["agent"] == "Alex"
    assert (
        client.get("/api/conversation", headers=auth).status_code == 403
    )  # a staff token is not a shopper's
