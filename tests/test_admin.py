"""The admin door: prompt validation, versions, conflicts, rollback, A/B tests, the knowledge base,
analytics and role checks, against the real app with the scripted model (no browser)."""

import json
import shutil
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from bot import abtest, prompt_versions
from bot.agent import ASK_TEXT, SAFE_FALLBACK
from bot.llm.scripted import ScriptedBackend
from bot.prompts import PROMPTS_DIR, PromptStore, parse_prompt, validate_prompt
from commerce.models import (
    Conversation,
    ConversationRating,
    HandoffEvent,
    Message,
    MessageFeedback,
    PromptAssignment,
    SuggestedReply,
    ToolCallRecord,
)
from retrieval.knowledge import POLICIES_DIR
from server import create_app
from shopdesk.settings import Settings
from shopdesk.staff import create_staff

JAMES = "james_li_5688"
PASSWORD = "correct horse battery"


@pytest.fixture
def admin_settings(store_db, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    policies = tmp_path / "policies"
    policies.mkdir()
    for name in ("refunds.md", "warranty.md"):
        shutil.copy(POLICIES_DIR / name, policies / name)
    with Session(store_db) as db:
        create_staff(db, "root", "Root", "admin", PASSWORD)
        create_staff(db, "ada", "Ada", "admin", PASSWORD)
        create_staff(db, "alex", "Alex", "agent", PASSWORD)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        llm_backend="scripted",
        database_url=str(store_db.url),
        var_dir=tmp_path / "var",
        prompts_dir=prompts,
        policies_dir=policies,
    )


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def client(admin_settings, backend):  # type: ignore[no-untyped-def]
    with TestClient(create_app(admin_settings, backend=backend)) as c:
        yield c


def login(client: TestClient, username: str = "root") -> dict[str, str]:
    r = client.post("/api/staff/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return login(client)


def chat_turn(
    client: TestClient, text: str, customer_id: str | None = JAMES
) -> tuple[str, list[dict[str, Any]]]:
    """A new conversation and one shopper turn through the socket; (conversation id, events)."""
    s = client.post("/api/session", json={"customer_id": customer_id}).json()
    events = []
    with client.websocket_connect(f"/ws/chat?token={s['token']}") as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready"
        events.append(ready)
        ws.send_text(json.dumps({"type": "message", "text": text}))
        while True:
            event = ws.receive_json()
            events.append(event)
            if event["type"] == "done":
                break
    return s["conversation_id"], events


def edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# ---- validation ------------------------------------------------------------------------------------


def test_validation_rejects_broken_missing_unknown_and_too_long():
    text = (PROMPTS_DIR / "answer.md").read_text()
    provided = ("facts",)
    assert validate_prompt(text, "answer", provided).ok

    broken = validate_prompt(edited(text, "{% endif %}", ""), "answer", provided)
    assert not broken.ok and "does not compile" in broken.errors[0]

    system = (PROMPTS_DIR / "system.md").read_text()
    missing = validate_prompt(edited(system, "{{ store_name }}", "our shop"), "system", ("store_name",))
    assert not missing.ok and missing.errors == ["the required variable {{ store_name }} is not used"]

    unknown = validate_prompt(
        edited(text, "{{ facts }}", "{{ facts }} {{ customer_email }}"), "answer", provided
    )
    assert not unknown.ok and "unknown variable {{ customer_email }}" in unknown.errors[0]

    long = validate_prompt(edited(text, "max_length: 4000", "max_length: 40"), "answer", provided)
    assert not long.ok and "the limit is 40" in long.errors[0]

    widened = validate_prompt(
        edited(text, "variables: [facts]", "variables: [facts, customer_email]"), "answer", provided
    )
    assert any("fixed by the code" in e for e in widened.errors)


@pytest.mark.parametrize(
    "injected",
    [
        "{{ lipsum.__globals__['os'].getpid() }}",
        "{{ store_name.__class__.__mro__[1].__subclasses__() }}",
        "{{ store_name['__class__'] }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ range(10) }}",
    ],
)
def test_a_prompt_reaches_nothing_but_its_variables(injected: str) -> None:
    """An admin's template is data: no globals, no attribute walks into Python, at save or at run."""
    system = edited(
        (PROMPTS_DIR / "system.md").read_text(), "{{ store_name }}", "{{ store_name }} " + injected
    )
    verdict = validate_prompt(system, "system", ("store_name",))
    assert not verdict.ok and verdict.rendered_sample is None, verdict
    prompt = parse_prompt(system, "system")  # a file written around the admin page
    with pytest.raises(jinja2.TemplateError):
        prompt.render(store_name="Shop")
    assert "Shop" in parse_prompt(edited(system, injected, ""), "system").render(store_name="Shop")


def test_validate_endpoint_and_a_refused_save_writes_nothing(client, admin, admin_settings):
    current = client.get("/api/admin/prompts/answer", headers=admin).json()
    bad = current["text"].replace("facts", "fact")
    r = client.post("/api/admin/prompts/answer/validate", json={"text": bad}, headers=admin)
    assert r.status_code == 200 and not r.json()["ok"]
    assert any("{{ facts }} is not used" in e for e in r.json()["errors"])
    assert any("unknown variable {{ fact }}" in e for e in r.json()["errors"])
    evil = current["text"].replace("{{ facts }}", "{{ facts }} {{ facts.__class__.__mro__ }}")
    r = client.post("/api/admin/prompts/answer/validate", json={"text": evil}, headers=admin)
    assert r.status_code == 200 and not r.json()["ok"] and "<class" not in r.text
    assert any("names starting with _" in e for e in r.json()["errors"])
    r = client.put(
        "/api/admin/prompts/answer", json={"text": bad, "base_version": current["version"]}, headers=admin
    )
    assert r.status_code == 422 and r.json()["errors"]
    assert (admin_settings.prompts_dir / "answer.md").read_text() == current["text"]
    assert client.get("/api/admin/prompts/answer", headers=admin).json()["version"] == current["version"]


# ---- saving, the next turn, rollback, conflicts -------------------------------------------------------


def system_calls(backend: ScriptedBackend) -> list[str]:
    return [c["messages"][0]["content"] for c in backend.calls if c["messages"][0]["role"] == "system"]


def test_a_saved_prompt_is_used_by_the_next_turn_and_rollback_restores(
    client, admin, backend, admin_settings
):
    listed = {p["name"]: p for p in client.get("/api/admin/prompts", headers=admin).json()}
    assert {"system", "answer", "decide", "answer_strict", "greeting"} <= set(listed)
    v1 = client.get("/api/admin/prompts/system", headers=admin).json()
    assert v1["version"] == 1 and v1["variables"] == ["store_name"]

    chat_turn(client, "hello, can you help me?")
    assert system_calls(backend) and all("Captain" not in s for s in system_calls(backend))

    new = edited(v1["text"], "Keep replies short", "Sign every reply as Captain Shop. Keep replies short")
    r = client.put(
        "/api/admin/prompts/system", json={"text": new, "base_version": 1, "note": "pirate"}, headers=admin
    )
    assert r.status_code == 200, r.text and r.json()["version"] == 2
    assert (admin_settings.prompts_dir / "system.md").read_text() == new

    backend.calls.clear()
    chat_turn(client, "hello, can you help me?")  # same process, no restart
    assert system_calls(backend) and all("Captain Shop" in s for s in system_calls(backend))

    d = client.get("/api/admin/prompts/system/diff", params={"a": 1, "b": 2}, headers=admin).json()["diff"]
    assert "\n-Keep replies short, friendly and plain." in d
    assert "\n+Sign every reply as Captain Shop. Keep replies short, friendly and plain." in d

    r = client.post(
        "/api/admin/prompts/system/rollback", json={"to_version": 1, "base_version": 2}, headers=admin
    )
    assert r.status_code == 200 and r.json()["version"] == 3
    assert (admin_settings.prompts_dir / "system.md").read_text() == v1["text"]
    history = client.get("/api/admin/prompts/system/versions", headers=admin).json()
    assert [(h["version"], h["source"]) for h in history] == [(3, "rollback"), (2, "save"), (1, "file")]
    assert history[1]["author"] == "Root" and history[1]["note"] == "pirate"

    backend.calls.clear()
    chat_turn(client, "hello, can you help me?")
    assert system_calls(backend) and all("Captain" not in s for s in system_calls(backend))


def test_concurrent_edits_conflict_with_the_diff(client, admin, admin_settings):
    ada = login(client, "ada")
    base = client.get("/api/admin/prompts/answer", headers=admin).json()
    mine = edited(base["text"], "Write a short reply", "Write a short, warm reply")
    hers = edited(base["text"], "Write a short reply", "Write a brief reply")
    r1 = client.put(
        "/api/admin/prompts/answer", json={"text": mine, "base_version": base["version"]}, headers=admin
    )
    assert r1.status_code == 200
    r2 = client.put(
        "/api/admin/prompts/answer", json={"text": hers, "base_version": base["version"]}, headers=ada
    )
    assert r2.status_code == 409, r2.text
    body = r2.json()
    assert body["current_version"] == base["version"] + 1 and body["base_version"] == base["version"]
    assert "\n-Write a short reply" in body["diff"] and "\n+Write a short, warm reply" in body["diff"]
    assert (
        "\n-Write a short, warm reply" in body["your_diff"] and "\n+Write a brief reply" in body["your_diff"]
    )
    assert body["current_text"] == mine
    assert (admin_settings.prompts_dir / "answer.md").read_text() == mine  # nothing overwritten
    r3 = client.put(
        "/api/admin/prompts/answer", json={"text": hers, "base_version": body["current_version"]}, headers=ada
    )
    assert r3.status_code == 200  # on top of the newest version it goes through


def test_two_saves_at_the_same_moment_one_wins(admin_settings, store_db):
    store = PromptStore(admin_settings.prompts_dir, store_db)
    with Session(store_db) as db:
        base = prompt_versions.current(db, store, "greeting")
    barrier = threading.Barrier(2)
    results: list[str] = []

    def save(word: str) -> None:
        text = edited(base.text, "How can I help?", f"How can I help? ({word})")
        with Session(store_db) as db:
            barrier.wait()
            try:
                prompt_versions.save(db, store, "greeting", text, base.version, None)
                results.append("saved")
            except prompt_versions.VersionConflict:
                results.append("conflict")

    threads = [threading.Thread(target=save, args=(w,)) for w in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "saved"]
    with Session(store_db) as db:
        assert len(prompt_versions.history(db, "greeting")) == 2


# ---- greeting and preview -----------------------------------------------------------------------------


def test_the_greeting_is_in_ready_and_follows_a_save(client, admin):
    _, events = chat_turn(client, "hi")
    assert events[0]["greeting"].startswith("Hi! I'm the assistant of Shopdesk Demo Store.")
    g = client.get("/api/admin/prompts/greeting", headers=admin).json()
    new = edited(g["text"], "How can I help?", "What can I do for you today?")
    assert (
        client.put(
            "/api/admin/prompts/greeting", json={"text": new, "base_version": g["version"]}, headers=admin
        ).status_code
        == 200
    )
    _, events = chat_turn(client, "hi")
    assert events[0]["greeting"].endswith("What can I do for you today?")


def test_preview_runs_one_turn_with_the_unsaved_text_and_leaves_nothing(client, admin, backend, store_db):
    text = client.get("/api/admin/prompts/system", headers=admin).json()["text"]
    draft = edited(text, "Keep replies short", "Always mention the Preview Parrot. Keep replies short")
    with Session(store_db) as db:
        before = db.exec(select(func.count()).select_from(Conversation)).one()
    backend.push({"action": "order_status", "order_id": "#W2611340"})
    r = client.post(
        "/api/admin/prompts/system/preview",
        json={"text": draft, "message": "where is my order #W2611340?", "customer_id": JAMES},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "Preview Parrot" in body["rendered"]
    turn = body["turn"]
    assert [c["tool"] for c in turn["tool_calls"]] == ["order_status"] and turn["tool_calls"][0][
        "outcome"
    ] == "ok"
    assert "processed" in turn["reply"] and turn["cards"]
    assert any(p["name"] == "system" and "Preview Parrot" in p["text"] for p in turn["prompts"])
    assert "Preview Parrot" not in (client.app.state.settings.prompts_dir / "system.md").read_text()
    with Session(store_db) as db:
        assert db.exec(select(func.count()).select_from(Conversation)).one() == before
    bad = client.post(
        "/api/admin/prompts/system/preview",
        json={"text": edited(text, "{{ store_name }}", "{{ shop }}")},
        headers=admin,
    )
    assert bad.status_code == 422 and bad.json()["errors"]


# ---- A/B tests ----------------------------------------------------------------------------------------


def new_conversations(engine, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with Session(engine) as db:
        for i in ids:
            db.add(Conversation(id=i))
        db.commit()
    return ids


def test_ab_split_is_sticky_close_to_the_ratio_and_the_winner_is_promoted(client, admin, backend, store_db):
    v1 = client.get("/api/admin/prompts/system", headers=admin).json()
    challenger = edited(v1["text"], "Keep replies short", "Mention the Blue Arm. Keep replies short")
    assert (
        client.put(
            "/api/admin/prompts/system", json={"text": challenger, "base_version": 1}, headers=admin
        ).status_code
        == 200
    )
    r = client.post(
        "/api/admin/abtests",
        json={"prompt_name": "system", "version_a": 1, "version_b": 2, "share_b": 0.3},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    test_id = r.json()["id"]
    dup = client.post(
        "/api/admin/abtests", json={"prompt_name": "system", "version_a": 1, "version_b": 2}, headers=admin
    )
    assert dup.status_code == 422 and "already runs" in dup.json()["detail"]

    store: PromptStore = client.app.state.prompts
    ids = new_conversations(store_db, 600)
    first = {i: "Blue Arm" in store.render("system", i, store_name="S") for i in ids}
    share = sum(first.values()) / len(ids)
    assert 0.24 < share < 0.36, share  # 600 draws at 0.3: sd 0.019
    again = {i: "Blue Arm" in store.render("system", i, store_name="S") for i in ids}
    assert again == first  # sticky in this process
    abtest._assigned.clear()  # another process: only the database remembers
    other = PromptStore(store.directory, store_db)
    assert {i: "Blue Arm" in other.render("system", i, store_name="S") for i in ids} == first
    with Session(store_db) as db:
        rows = db.exec(select(PromptAssignment).where(PromptAssignment.test_id == test_id)).all()
    assert len(rows) == 600 and all(r.arm == abtest.arm_for(test_id, r.conversation_id, 0.3) for r in rows)

    # A real turn renders the arm's version.
    backend.calls.clear()
    conv_id, _ = chat_turn(client, "hello there, can you help?")
    assert ("Blue Arm" in system_calls(backend)[0]) == (abtest.arm_for(test_id, conv_id, 0.3) == "B")

    with Session(store_db) as db:  # outcomes for the report: B's conversations rate 5, A's 3
        for r in rows[:40]:
            db.add(Message(conversation_id=r.conversation_id, role="user", content="hi"))
            db.add(Message(conversation_id=r.conversation_id, role="assistant", content="hello", meta={}))
            db.add(ConversationRating(conversation_id=r.conversation_id, rating=5 if r.arm == "B" else 3))
        db.commit()
        in_b = sum(r.arm == "B" for r in rows[:40])
    report = client.get(f"/api/admin/abtests/{test_id}", headers=admin).json()
    a, b = report["arms"]["A"], report["arms"]["B"]
    assert a["version"] == 1 and b["version"] == 2
    chat_in_b = abtest.arm_for(test_id, conv_id, 0.3) == "B"  # the real chat above is in the test too
    assert b["conversations"] == in_b + chat_in_b and a["conversations"] == 40 - in_b + (not chat_in_b)
    assert b["assigned"] + a["assigned"] == 601
    assert b["satisfaction"]["value"] == 5.0 and a["satisfaction"]["value"] == 3.0
    assert report["b_minus_a"]["satisfaction"]["value"] == 2.0
    assert a["resolution_without_handoff"]["low"] <= a["resolution_without_handoff"]["value"] <= 1.0

    r = client.post(f"/api/admin/abtests/{test_id}/stop", json={"promote": "A"}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "stopped" and r.json()["winner"] == 1
    assert (client.app.state.settings.prompts_dir / "system.md").read_text() == v1["text"]
    history = client.get("/api/admin/prompts/system/versions", headers=admin).json()
    assert history[0]["source"] == "promote" and history[0]["version"] == 3
    b_conv = next(i for i, is_b in first.items() if is_b)
    assert "Blue Arm" not in store.render("system", b_conv, store_name="S")  # the test is over for everyone
    assert client.post(f"/api/admin/abtests/{test_id}/stop", json={}, headers=admin).status_code == 409


# ---- knowledge base -----------------------------------------------------------------------------------


@pytest.fixture
def kb_index(admin_settings) -> None:  # type: ignore[no-untyped-def]
    """A small prebuilt index of the two policy pages (the app loads it instead of embedding the store)."""
    from retrieval.ingest import load_corpus
    from retrieval.search import Retriever

    docs, _ = load_corpus(admin_settings.policies_dir, source_type="policy", prefix="policies/")
    Retriever.from_documents(docs).save(admin_settings.var_dir / "index")


GIFT = """# Gift wrapping

## How gift wrapping works

Any order can be gift wrapped in Zanzibar ribbon for $4.50. Choose it at checkout; the receipt is left out.
"""


def test_uploaded_documents_are_retrievable_at_once(client, admin, kb_index, admin_settings):
    listed = client.get("/api/admin/kb", headers=admin).json()
    assert [d["name"] for d in listed] == ["refunds.md", "warranty.md"] and listed[0]["sections"] > 1

    r = client.post("/api/admin/kb", json={"filename": "Gift Wrapping.md", "text": GIFT}, headers=admin)
    assert r.status_code == 201, r.text and r.json()["name"] == "gift-wrapping.md"
    hits = client.get(
        "/api/admin/kb/search", params={"q": "zanzibar ribbon gift wrap", "k": 3}, headers=admin
    )
    assert hits.json()["passages"][0]["source"] == "policies/gift-wrapping.md"
    agent_view = client.app.state.agent.retriever().search("zanzibar ribbon gift wrap", k=1)  # the bot's own
    assert agent_view[0].source == "policies/gift-wrapping.md"
    assert client.get("/api/search", params={"q": "zanzibar ribbon"}).json()["passages"][0]["source"] == (
        "policies/gift-wrapping.md"
    )

    r = client.put(
        "/api/admin/kb/gift-wrapping.md", json={"text": GIFT.replace("Zanzibar", "Marigold")}, headers=admin
    )
    assert r.status_code == 200
    top = client.get(
        "/api/admin/kb/search", params={"q": "gift wrapping ribbon", "k": 1}, headers=admin
    ).json()
    assert "Marigold" in top["passages"][0]["text"] and "Zanzibar" not in top["passages"][0]["text"]
    assert "Marigold" in client.get("/api/admin/kb/gift-wrapping.md", headers=admin).json()["text"]
    page = client.get("/policies/gift-wrapping")  # where the bot's citation links
    assert page.status_code == 200 and "Marigold" in page.text

    assert client.delete("/api/admin/kb/gift-wrapping.md", headers=admin).status_code == 204
    after = client.get(
        "/api/admin/kb/search", params={"q": "gift wrapping ribbon", "k": 5}, headers=admin
    ).json()
    assert all(p["source"] != "policies/gift-wrapping.md" for p in after["passages"])
    assert not (admin_settings.policies_dir / "gift-wrapping.md").exists()
    assert client.get("/policies/gift-wrapping").status_code == 404


def test_ids_past_any_row_are_422_not_500(client, admin):  # type: ignore[no-untyped-def]
    huge = 10**20
    for url in (
        f"/api/admin/abtests/{huge}",
        f"/api/admin/prompts/greeting/versions/{huge}",
        f"/api/admin/prompts/greeting/diff?a=1&b={huge}",
    ):
        r = client.get(url, headers=admin)
        assert r.status_code == 422, (url, r.text)
    assert client.post(f"/api/admin/abtests/{huge}/stop", json={}, headers=admin).status_code == 422
    assert client.get("/api/admin/abtests/0", headers=admin).status_code == 422
    assert client.get("/api/admin/abtests/2147483647", headers=admin).status_code == 404


@pytest.mark.parametrize(
    "filename, text, status, words",
    [
        ("terms.pdf", "# Terms", 422, "only Markdown or text"),
        ("big.md", "# Big\n\n" + "x" * 300_000, 413, "the limit is"),
        ("empty.md", "  \n", 422, "empty"),
        ("latin1.md", "caf\ufffd", 422, "not UTF-8"),
        ("refunds.md", "# Refunds\n\nnew", 409, "already exists"),
        ("../../etc.md", "# Escape", 201, ""),  # the path is dropped: it lands as etc.md in the KB
    ],
)
def test_bad_uploads_get_clear_errors(client, admin, kb_index, admin_settings, filename, text, status, words):
    r = client.post("/api/admin/kb", json={"filename": filename, "text": text}, headers=admin)
    assert r.status_code == status, r.text
    if words:
        assert words in r.json()["detail"]
    else:
        assert (admin_settings.policies_dir / "etc.md").exists()


# ---- analytics ----------------------------------------------------------------------------------------


def _grounding(ok_draft: bool, ok_retry: bool | None = None) -> list[dict[str, Any]]:
    steps = [{"type": "grounding", "attempt": "draft", "ok": ok_draft, "unsupported": [], "missing": []}]
    if ok_retry is not None:
        steps.append(
            {"type": "grounding", "attempt": "regenerated", "ok": ok_retry, "unsupported": [], "missing": []}
        )
    return steps


def test_analytics_match_the_conversations_made_here(client, admin, backend, store_db):
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    backend.push({"action": "order_status", "order_id": "#W2611340"})
    real_id, _ = chat_turn(client, "where is my order #W2611340?")  # a real turn: resolved, one tool call
    ids = new_conversations(store_db, 5)
    c1, c2, c3, c4, idle = ids
    with Session(store_db) as db:

        def turn(conv: str, question: str, reply: str, ttft: float, steps: list[dict[str, Any]]) -> int:
            db.add(Message(conversation_id=conv, role="user", content=question))
            m = Message(
                conversation_id=conv, role="assistant", content=reply, meta={"ttft_ms": ttft, "steps": steps}
            )
            db.add(m)
            db.flush()
            return m.id  # type: ignore[return-value]

        m1 = turn(c1, "Do you ship to Canada?", "Yes, we ship to Canada.", 100.0, _grounding(True))
        db.add(MessageFeedback(conversation_id=c1, message_id=m1, vote="up"))
        db.add(ConversationRating(conversation_id=c1, rating=5))
        turn(
            c2,
            "Can I pay with bitcoin??",
            ASK_TEXT["clarification"],
            50.0,
            [{"type": "decision", "valid": True, "decision": {"action": "ask", "need": "clarification"}}],
        )
        db.add(HandoffEvent(conversation_id=c2, from_state="bot", to_state="waiting", trigger="failed_turns"))
        conv2 = db.get(Conversation, c2)
        conv2.state = "waiting"  # type: ignore[union-attr]
        db.add(conv2)
        m3 = turn(c3, "can I pay with Bitcoin", SAFE_FALLBACK, 300.0, _grounding(False, False))
        db.add(MessageFeedback(conversation_id=c3, message_id=m3, vote="down"))
        db.add(ConversationRating(conversation_id=c3, rating=2))
        m4 = turn(c4, "what is the warranty on the laptop?", "Two years.", 200.0, _grounding(False, True))
        db.add(ToolCallRecord(conversation_id=c4, tool="search_knowledge", outcome="ok"))
        for status in ("accepted", "edited", "ignored"):
            db.add(SuggestedReply(conversation_id=c4, message_id=m4, text="Two years.", status=status))
        db.commit()
    assert idle  # created, never written in: not counted

    r = client.get("/api/admin/analytics", params={"since": since}, headers=admin)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["conversations"] == 5
    assert sum(d["conversations"] for d in a["per_day"]) == 5
    assert a["handoffs"] == 1 and a["handoff_rate"]["value"] == 0.2
    assert a["handoff_reasons"] == [{"trigger": "failed_turns", "reason": None, "count": 1}]
    assert a["resolution_without_handoff"]["value"] == 0.6  # real, c1, c4
    assert a["thumbs"] == {"up": 1, "down": 1} and a["thumbs_up_rate"]["value"] == 0.5
    assert a["satisfaction"]["value"] == 3.5 and a["ratings"]["5"] == 1 and a["ratings"]["2"] == 1
    assert (
        a["grounding"]["checked"] == 3 and a["grounding"]["repaired"] == 1 and a["grounding"]["replaced"] == 1
    )
    assert a["ttft_ms"]["n"] == 5 and a["ttft_ms"]["median"] is not None
    assert {t["tool"]: t["calls"] for t in a["tools"]} == {"order_status": 1, "search_knowledge": 1}
    s = a["suggested_replies"]
    assert (s["offered"], s["accepted"], s["edited"], s["ignored"]) == (3, 1, 1, 1)
    assert abs(s["acceptance_rate"]["value"] - 1 / 3) < 1e-3
    assert a["unanswered"][0]["question"] == "can i pay with bitcoin" and a["unanswered"][0]["count"] == 2
    assert len(a["unanswered"]) == 1
    for est in (a["handoff_rate"], a["resolution_without_handoff"], a["thumbs_up_rate"]):
        assert 0.0 <= est["low"] <= est["value"] <= est["high"] <= 1.0

    csv = client.get("/api/admin/analytics/export.csv", params={"since": since}, headers=admin)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].startswith("conversation_id,day") and len(lines) == 6
    assert any(line.startswith(real_id) for line in lines)

    metrics = client.get("/metrics").text
    assert "shopdesk_turn_seconds_count" in metrics and "shopdesk_replies_checked_total" in metrics


# ---- roles --------------------------------------------------------------------------------------------


def test_only_admins_get_in(client):
    agent = login(client, "alex")
    shopper = {
        "Authorization": f"Bearer {client.post('/api/session', json={'customer_id': JAMES}).json()['token']}"
    }
    from api.admin import router

    routes = list(router.routes)
    assert len(routes) >= 15
    for route in routes:
        path = route.path.replace("{name}", "system").replace("{version}", "1").replace("{test_id}", "1")
        for method in route.methods:
            for headers, expected in ((agent, 403), (shopper, 403), ({}, 401)):
                r = client.request(method, path, headers=headers, json={}, params={"q": "x", "a": 1, "b": 1})
                assert r.status_code == expected, (method, path, headers, r.status_code, r.text)
