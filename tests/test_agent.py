"""The agent with the scripted backend: security and correctness live in code, whatever the model says."""

from pathlib import Path
from typing import Any

import pytest
from conftest import conversation
from sqlmodel import Session, select

from bot.agent import Agent
from bot.llm.base import ToolCall
from bot.llm.scripted import ScriptedBackend
from commerce.models import Conversation, Message, Order, ToolCallRecord
from shopdesk.db import make_engine
from shopdesk.settings import Settings

JAMES = "james_li_5688"  # orders: #W2611340 processed (tracking 357962501027), #W4435622 delivered
AARAV = "aarav_anderson_8794"  # #W9300146 pending, #W3220203 processed, #W4316152 delivered


@pytest.fixture
def settings() -> Settings:
    """The model phrases replies (as a capable model would); `facts` style has its own tests."""
    return Settings(llm_backend="scripted", llm_answer_style="model")


async def turn(agent: Agent, conv_id: str, text: str) -> list[dict[str, Any]]:
    return [event async for event in agent.run_turn(conv_id, text)]


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in events if e["type"] == "message")


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def order_status(engine, order_id: str) -> str:  # type: ignore[no-untyped-def]
    with Session(engine) as db:
        return db.get(Order, order_id).status  # type: ignore[union-attr]


async def test_own_order_status_is_exact_from_store(store_db, settings):
    backend = ScriptedBackend(
        [
            {"action": "order_status", "order_id": "#W2611340"},
            "Your order #W2611340 is processed and on its way.",
        ]
    )
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, JAMES)
    events = await turn(agent, conv, "Where is my order #W2611340?")
    cards = of_type(events, "card")
    assert len(cards) == 1
    card = cards[0]["card"]
    assert card["id"] == "#W2611340" and card["status"] == "processed"
    assert card["shipments"][0]["tracking_id"] == "357962501027"
    tokens = "".join(e["text"] for e in of_type(events, "token"))
    assert tokens.strip() == "Your order #W2611340 is processed and on its way."
    assert final(events)["replaced"] is False
    assert events[-1]["type"] == "done"
    # The decision schema offered to the model only admits the order id the shopper wrote.
    schema = backend.calls[0]["response_schema"]
    status_branch = next(
        b for b in schema["anyOf"] if b["properties"]["action"].get("const") == "order_status"
    )
    assert status_branch["properties"]["order_id"] == {"enum": ["#W2611340"]}


async def test_invented_facts_are_replaced_by_store_facts(store_db, settings):
    backend = ScriptedBackend(
        [
            {"action": "order_status", "order_id": "#W2611340"},
            "Your order #W2611340 was delivered yesterday, tracking 999999999. Call 555-0100.",
        ]
    )
    agent = Agent(backend, store_db, settings)
    events = await turn(agent, conversation(store_db, JAMES), "status of #W2611340 please")
    message = final(events)
    assert message["replaced"] is True
    assert "processed" in message["text"] and "357962501027" in message["text"]
    assert "999999999" not in message["text"] and "delivered" not in message["text"]


async def test_a_draft_that_omits_the_key_facts_is_replaced(store_db, settings):
    # What SmolLM2-135M really writes after an order lookup: no checkable fact, and wrong.
    backend = ScriptedBackend(
        [
            {"action": "order_status", "order_id": "#W2611340"},
            "I'm sorry, I'm unable to provide order details.",
        ]
    )
    agent = Agent(backend, store_db, settings)
    message = final(await turn(agent, conversation(store_db, JAMES), "where is #W2611340"))
    assert message["replaced"] is True and "processed" in message["text"]


def _counter(name: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


async def test_an_unsupported_draft_is_regenerated_once_under_a_stricter_instruction(store_db, settings):
    backend = ScriptedBackend(
        [
            {"action": "order_status", "order_id": "#W2611340"},
            "Order #W2611340 is processed, it arrives on 2026-12-24. Call 1-800-555-0199.",
            "Order #W2611340 is processed, tracking number 357962501027.",
        ]
    )
    before = {n: _counter(f"shopdesk_replies_{n}_total") for n in ("checked", "repaired", "replaced")}
    agent = Agent(backend, store_db, settings)
    events = await turn(agent, conversation(store_db, JAMES), "where is my order #W2611340?")
    message = final(events)
    streamed = "".join(e["text"] for e in of_type(events, "token"))
    assert "1-800-555-0199" in streamed  # the shopper saw the draft stream...
    assert message["replaced"] is True  # ...and the checked reply replaces it
    assert message["text"] == "Order #W2611340 is processed, tracking number 357962501027."
    strict = backend.calls[-1]["messages"][-1]["content"]
    assert "1-800-555-0199" in strict and "Do not write any other number" in strict
    assert _counter("shopdesk_replies_checked_total") == before["checked"] + 1
    assert _counter("shopdesk_replies_repaired_total") == before["repaired"] + 1
    assert _counter("shopdesk_replies_replaced_total") == before["replaced"]
    with Session(store_db) as db:
        row = db.get(Message, message["id"])
        attempts = [s for s in row.meta["steps"] if s["type"] == "grounding"]  # type: ignore[union-attr]
    assert [a["attempt"] for a in attempts] == ["draft", "regenerated"]
    assert attempts[0]["unsupported"] == ["2026-12-24", "1-800-555-0199"] and attempts[1]["ok"] is True


async def test_a_regeneration_that_still_invents_is_replaced_by_the_template(store_db, settings):
    backend = ScriptedBackend(
        [
            {"action": "order_status", "order_id": "#W2611340"},
            "Order #W2611340 ships on Nov 30, 2026.",
            "Order #W2611340 costs $12.00.",
        ]
    )
    before = _counter("shopdesk_replies_replaced_total")
    agent = Agent(backend, store_db, settings)
    message = final(await turn(agent, conversation(store_db, JAMES), "where is #W2611340?"))
    assert message["replaced"] is True
    assert message["text"].startswith("Order #W2611340 is processed.") and "12.00" not in message["text"]
    assert _counter("shopdesk_replies_replaced_total") == before + 1


async def test_a_free_answer_with_an_invented_phone_number_never_reaches_the_shopper(store_db, settings):
    backend = ScriptedBackend(
        [{"action": "answer"}, "Call us at (555) 010-2000.", "Our number is 555 010 2000."]
    )
    agent = Agent(backend, store_db, settings)
    message = final(await turn(agent, conversation(store_db, None), "hello, can I call you?"))
    assert message["replaced"] is True and "555" not in message["text"]


async def test_facts_style_replies_with_the_stores_own_sentences(store_db, settings):
    facts = settings.model_copy(update={"llm_answer_style": "facts"})
    backend = ScriptedBackend([{"action": "order_status", "order_id": "#W2611340"}])
    agent = Agent(backend, store_db, facts)
    events = await turn(agent, conversation(store_db, JAMES), "Where is my order #W2611340?")
    message = final(events)
    assert message["text"].startswith("Order #W2611340 is processed.") and "357962501027" in message["text"]
    assert "".join(e["text"] for e in of_type(events, "token")) == message["text"]
    assert len(backend.calls) == 1  # the decision only: the model writes none of the facts


async def test_cancel_is_not_offered_unless_the_shopper_asks(store_db, settings):
    backend = ScriptedBackend(
        [{"action": "cancel_order", "order_id": "#W9300146", "reason": "no longer needed"}]
    )
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, AARAV)
    events = await turn(agent, conv, "what is the status of #W9300146?")
    offered = {b["properties"]["action"].get("const") for b in backend.calls[0]["response_schema"]["anyOf"]}
    assert "cancel_order" not in offered and "handoff" not in offered
    assert not of_type(events, "confirm")
    assert order_status(store_db, "#W9300146") == "pending"


async def test_other_customers_order_is_refused_and_nothing_leaks(store_db, settings):
    # AARAV's processed order, asked for in JAMES's session.
    backend = ScriptedBackend([{"action": "order_status", "order_id": "#W3220203"}])
    agent = Agent(backend, store_db, settings)
    events = await turn(agent, conversation(store_db, JAMES), "where is #W3220203?")
    assert not of_type(events, "card")
    text = final(events)["text"]
    with Session(store_db) as db:
        other = db.get(Order, "#W3220203")
        assert other is not None and other.customer_id == AARAV
    assert "processed" not in text.lower()
    # Exactly the same words as for an order that does not exist at all.
    backend.push({"action": "order_status", "order_id": "#W0000000"})
    missing = final(await turn(agent, conversation(store_db, JAMES), "where is #W0000000?"))["text"]
    assert text.replace("#W3220203", "#ID") == missing.replace("#W0000000", "#ID")
    with Session(store_db) as db:
        audit = db.exec(select(ToolCallRecord).where(ToolCallRecord.tool == "order_status")).all()
    assert {a.outcome for a in audit} == {"refused"}


async def test_model_cannot_use_an_order_id_the_shopper_never_wrote(store_db, settings):
    backend = ScriptedBackend([{"action": "order_status", "order_id": "#W4435622"}])  # James's, but not said
    agent = Agent(backend, store_db, settings)
    events = await turn(agent, conversation(store_db, JAMES), "where is my order?")
    assert not of_type(events, "card")
    assert "order id" in final(events)["text"].lower()
    with Session(store_db) as db:
        record = db.exec(select(ToolCallRecord)).one()
    assert record.outcome == "invalid"


async def test_guest_must_verify_before_account_data(store_db, settings):
    backend = ScriptedBackend([{"action": "order_status", "order_id": "#W2611340"}])
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, None)
    events = await turn(agent, conv, "Where is my order #W2611340?")  # a model that obeys anyway
    assert not of_type(events, "card")
    assert "verify" in final(events)["text"].lower()
    assert "processed" not in final(events)["text"].lower()
    branches = backend.calls[0]["response_schema"]["anyOf"]
    offered = {b["properties"]["action"].get("const") for b in branches}
    assert "order_status" not in offered and "cancel_order" not in offered

    # A guest writing an email is verifying (decided in code, no model call): a made-up email is
    # not verified; the shopper's real one is.
    decisions = len(backend.calls)
    events = await turn(agent, conv, "my email is nobody@example.com")
    assert "couldn't verify" in final(events)["text"]
    await turn(agent, conv, "sorry, it is james.li4495@example.com")
    assert [c for c in backend.calls[decisions:] if c["response_schema"] is not None] == []
    with Session(store_db) as db:
        bound = db.get(Conversation, conv)
        assert bound.customer_id == JAMES and bound.identity == "verified_guest"
        audit = db.exec(select(ToolCallRecord).where(ToolCallRecord.tool == "verify_guest")).all()
    assert [a.arguments for a in audit] == [{"email": "[email]"}, {"email": "[email]"}]  # never in clear
    backend.push({"action": "order_status", "order_id": "#W2611340"}, "It is processed.")
    events = await turn(agent, conv, "so where is #W2611340?")
    assert of_type(events, "card")[0]["card"]["status"] == "processed"


async def test_guest_verification_by_name_and_zip(store_db, settings):
    backend = ScriptedBackend()
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, None)
    events = await turn(agent, conv, "I'm James Li, zip 99999")  # name + zip: verified in code
    assert "couldn't verify" in final(events)["text"] and backend.calls == []
    # Only a zip: the model fills the name from what the shopper wrote before.
    backend.push(
        {"action": "verify_guest", "first_name": "James", "last_name": "Li", "zip": "10083"}, "Welcome."
    )
    await turn(agent, conv, "oops, zip 10083")
    with Session(store_db) as db:
        assert db.get(Conversation, conv).customer_id == JAMES


async def test_verification_cannot_use_an_email_the_shopper_did_not_write(store_db, settings):
    backend = ScriptedBackend([{"action": "verify_guest", "email": "james.li4495@example.com"}])
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, None)
    await turn(agent, conv, "hi, I need help with an order")
    with Session(store_db) as db:
        assert db.get(Conversation, conv).customer_id is None


async def test_cancel_needs_explicit_yes_and_no_changes_nothing(store_db, settings):
    cancel = {"action": "cancel_order", "order_id": "#W9300146", "reason": "no longer needed"}
    backend = ScriptedBackend([cancel])
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, AARAV)
    events = await turn(agent, conv, "please cancel #W9300146, I don't need it")
    confirms = of_type(events, "confirm")
    assert len(confirms) == 1 and confirms[0]["args"]["order_id"] == "#W9300146"
    assert order_status(store_db, "#W9300146") == "pending"

    events = await turn(agent, conv, "no")
    assert order_status(store_db, "#W9300146") == "pending"
    assert "haven't changed" in final(events)["text"]

    backend.push(cancel)
    await turn(agent, conv, "actually yes, cancel #W9300146")
    assert order_status(store_db, "#W9300146") == "pending"  # a new proposal, still waiting for the yes
    events = await turn(agent, conv, "yes")
    assert order_status(store_db, "#W9300146") == "cancelled"
    assert of_type(events, "card")[0]["card"]["status"] == "cancelled"
    with Session(store_db) as db:
        order = db.get(Order, "#W9300146")
        assert order.cancel_reason == "no longer needed"
        outcomes = [r.outcome for r in db.exec(select(ToolCallRecord).order_by(ToolCallRecord.id)).all()]
    assert outcomes == ["proposed", "declined", "proposed", "confirmed"]


@pytest.mark.parametrize("order_id,status", [("#W3220203", "processed"), ("#W4316152", "delivered")])
async def test_processed_or_delivered_orders_cannot_be_cancelled(store_db, settings, order_id, status):
    backend = ScriptedBackend(
        [{"action": "cancel_order", "order_id": order_id, "reason": "no longer needed"}]
    )
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, AARAV)
    events = await turn(agent, conv, f"cancel {order_id}")
    assert not of_type(events, "confirm")
    assert "only pending orders" in final(events)["text"]
    await turn(agent, conv, "yes")
    assert order_status(store_db, order_id) == status


async def test_conversation_survives_a_restart(store_db, settings, tmp_path):
    url = str(store_db.url)
    backend = ScriptedBackend(
        [{"action": "cancel_order", "order_id": "#W9300146", "reason": "ordered by mistake"}]
    )
    conv = conversation(store_db, AARAV)
    await turn(Agent(backend, store_db, settings), conv, "cancel #W9300146, ordered by mistake")
    store_db.dispose()

    fresh_engine = make_engine(url)  # a new process would do exactly this
    restarted = Agent(ScriptedBackend(), fresh_engine, settings)
    events = await turn(restarted, conv, "yes")
    assert order_status(fresh_engine, "#W9300146") == "cancelled"
    assert of_type(events, "card")
    with Session(fresh_engine) as db:
        roles = [m.role for m in db.exec(select(Message).where(Message.conversation_id == conv)).all()]
    assert roles == ["user", "assistant", "user", "assistant"]
    # The model sees the earlier turns (multi-turn memory from the database).
    restarted.backend.push("ok")  # type: ignore[attr-defined]
    await turn(restarted, conv, "thanks")
    seen = restarted.backend.calls[-1]["messages"]  # type: ignore[attr-defined]
    assert any("#W9300146" in (m.get("content") or "") for m in seen)


async def test_handoff_tool_moves_the_conversation_to_waiting(store_db, settings):
    backend = ScriptedBackend([{"action": "handoff", "reason": "shopper asked for a human"}])
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, JAMES)
    events = await turn(agent, conv, "I want to talk to a person")
    assert of_type(events, "handoff")[0]["state"] == "waiting"
    events = await turn(agent, conv, "hello?")
    # Stored and acknowledged; the bot stays quiet while a human is coming.
    assert [e["type"] for e in events] == ["ack", "done"]
    assert len(backend.calls) == 1


async def test_backend_failure_keeps_the_message_and_hands_off(store_db, settings):
    from bot.llm.base import BackendError

    def broken(*_args):  # type: ignore[no-untyped-def]
        raise BackendError("connection refused")

    agent = Agent(ScriptedBackend(broken), store_db, settings)
    conv = conversation(store_db, JAMES)
    events = await turn(agent, conv, "where is #W2611340?")
    assert of_type(events, "error")[0]["code"] == "llm_unavailable"
    with Session(store_db) as db:
        stored = db.exec(select(Message).where(Message.conversation_id == conv, Message.role == "user")).one()
    assert stored.content == "where is #W2611340?"
    # A person takes over at once: the model is not needed for that.
    assert of_type(events, "handoff")[0]["state"] == "waiting"
    with Session(store_db) as db:
        assert db.get(Conversation, conv).state == "waiting"  # type: ignore[union-attr]
        assert db.get(Conversation, conv).handoff_reason == "the assistant is unavailable"  # type: ignore[union-attr]


async def test_no_with_a_new_request_declines_and_answers_the_request(store_db, settings):
    backend = ScriptedBackend(
        [{"action": "cancel_order", "order_id": "#W9300146", "reason": "no longer needed"}]
    )
    agent = Agent(backend, store_db, settings.model_copy(update={"llm_answer_style": "facts"}))
    conv = conversation(store_db, AARAV)
    await turn(agent, conv, "cancel #W9300146")
    backend.push({"action": "order_status", "order_id": "#W3220203"})
    events = await turn(agent, conv, "no, keep it. Where is #W3220203 though?")
    text = final(events)["text"]
    assert text.startswith("Okay, I haven't changed anything.") and "#W3220203 is processed" in text
    assert order_status(store_db, "#W9300146") == "pending"


async def test_native_tool_calls_go_through_the_same_checks(store_db, settings):
    native = settings.model_copy(update={"llm_native_tools": True})
    backend = ScriptedBackend(
        [ToolCall("order_status", {"order_id": "#W3220203"}, id="c1")]  # someone else's order
    )
    agent = Agent(backend, store_db, native)
    events = await turn(agent, conversation(store_db, JAMES), "where is #W3220203?")
    assert not of_type(events, "card")
    assert "couldn't find" in final(events)["text"]
    assert all(t["function"]["strict"] for t in backend.calls[0]["tools"])

    backend.push(ToolCall("order_status", {"order_id": "#W2611340"}, id="c2"), "It is processed.")
    events = await turn(agent, conversation(store_db, JAMES), "where is #W2611340?")
    assert of_type(events, "card")[0]["card"]["status"] == "processed"
    assert final(events)["text"] == "It is processed."
    # The tool block is byte-identical for every shopper (prefix caching), guest or signed in.
    backend.push(ToolCall("order_status", {"order_id": "#W2611340"}, id="c3"))
    events = await turn(agent, conversation(store_db, None), "where is #W2611340?")
    assert backend.calls[-1]["tools"] == backend.calls[0]["tools"]
    assert "verify" in final(events)["text"].lower() and not of_type(events, "card")


def test_tool_specs_are_strict_and_self_contained():
    import json as _json

    from bot.tools import default_tools

    registry = default_tools()
    for name in ("verify_guest", "list_orders", "order_status", "cancel_order", "handoff"):
        params = registry.get(name).spec()["function"]["parameters"]
        assert params["additionalProperties"] is False and set(params["required"]) == set(
            params["properties"]
        )
        text = _json.dumps(params)
        assert '"slot"' not in text
        assert "$ref" not in text or "$defs" in params  # every reference resolvable
        for prop in params["properties"].values():
            if prop.get("type") == "string":
                assert "maxLength" in prop or "enum" in prop or "pattern" in prop, (name, prop)


@pytest.fixture(scope="module")
def policy_retriever():  # type: ignore[no-untyped-def]
    from retrieval.knowledge import policy_documents
    from retrieval.search import Retriever

    docs, _report = policy_documents()
    return Retriever.from_documents(docs)


async def test_policy_question_is_answered_from_the_store_pages_with_a_citation(
    store_db, settings, policy_retriever
):
    backend = ScriptedBackend([{"action": "search_knowledge"}])
    facts = settings.model_copy(update={"llm_answer_style": "facts"})
    agent = Agent(backend, store_db, facts, retriever=lambda: policy_retriever)
    conv = conversation(store_db, None)  # a guest may ask about policies without verifying
    events = await turn(agent, conv, "how long do I have to return a delivered item?")
    message = final(events)
    assert message["citations"], message
    citation = message["citations"][0]
    assert citation["source"].endswith("returns-and-exchanges.md") and citation["anchor"]
    page = (Path("knowledge") / citation["source"]).read_text()
    assert f"## {citation['section']}" in page  # the citation names a real section of the page
    assert "return" in message["text"].lower() and "day" in message["text"].lower(), message["text"]
    branches = backend.calls[0]["response_schema"]["anyOf"]
    assert {"action": {"const": "search_knowledge"}} in [b["properties"] for b in branches]


async def test_knowledge_search_runs_off_the_event_loop(store_db, settings, policy_retriever):
    """Embedding the query is CPU work: on the event loop it would stall every other chat's stream."""
    import asyncio
    import threading

    searched_on: list[threading.Thread] = []

    class Recording:
        def search(self, query, k=5, filters=None):  # type: ignore[no-untyped-def]
            searched_on.append(threading.current_thread())
            return policy_retriever.search(query, k=k, filters=filters)

    backend = ScriptedBackend([{"action": "search_knowledge"}])
    facts = settings.model_copy(update={"llm_answer_style": "facts"})
    agent = Agent(backend, store_db, facts, retriever=lambda: Recording())
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(heartbeat())
    try:
        events = await turn(agent, conversation(store_db, None), "how long do I have to return an item?")
    finally:
        beat.cancel()
    assert final(events)["citations"]
    assert searched_on and all(t is not threading.main_thread() for t in searched_on)
    assert ticks > 0


async def test_search_knowledge_without_an_index_says_so(store_db, settings):
    backend = ScriptedBackend([{"action": "search_knowledge"}])
    agent = Agent(backend, store_db, settings.model_copy(update={"llm_answer_style": "facts"}))
    events = await turn(agent, conversation(store_db, JAMES), "what is your warranty?")
    assert "not available" in final(events)["text"] and not final(events)["citations"]


def test_an_order_number_in_the_latest_message_is_the_only_one_on_offer() -> None:
    from bot.tools import slot_values

    said = ["status of order #W1539823 please", "and #W1620235?"]
    assert slot_values(said)["order_id"] == ["#W1620235"]
    assert slot_values([*said, "can I cancel it?"])["order_id"] == ["#W1620235", "#W1539823"]  # latest first
