"""The risk gate on the bot's sensitive actions: allow, step-up, handoff; the shopper sees no score."""

from conftest import conversation, reply, say, status
from sqlmodel import Session, select

from bot.agent import Agent
from bot.llm.scripted import ScriptedBackend
from commerce.models import Conversation, RiskAssessment, ToolCallRecord

TAKEOVER = ("harper_silva_8534", "#W8011920")  # docs/fraud.md: new card + drop address, then this order
LEGIT = ("evelyn_lee_1924", "#W3181060", "20122")  # delivered 2026-11-05, shipped to its zip


async def test_a_return_on_a_taken_over_account_goes_to_a_person_with_the_reasons(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id = TAKEOVER
    agent = Agent(ScriptedBackend([{"action": "return_order", "order_id": order_id}]), store_db, settings)
    conv = conversation(store_db, customer)
    events = await say(agent, conv, f"I want to return my order {order_id}")
    text = reply(events)
    assert "member of our support team" in text
    assert not [e for e in events if e["type"] == "confirm"]
    handoff = next(e for e in events if e["type"] == "handoff")
    shown = str(events).lower()
    assert "score" not in shown and "address" not in shown and "0.9" not in shown  # nothing about why
    assert handoff["state"] == "waiting" and status(store_db, order_id) == "delivered"
    with Session(store_db) as db:
        assert db.get(Conversation, conv).state == "waiting"  # type: ignore[union-attr]
        audit = db.exec(select(ToolCallRecord).where(ToolCallRecord.conversation_id == conv)).one()
        assessment = db.exec(select(RiskAssessment).where(RiskAssessment.conversation_id == conv)).one()
    assert audit.result["risk"]["decision"] == "block" and audit.result["risk"]["reasons"]
    assert (
        assessment.action == "return" and assessment.order_id == order_id and assessment.decision == "block"
    )


async def test_a_return_without_risk_is_proposed_and_runs_after_yes(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _zip = LEGIT
    agent = Agent(ScriptedBackend([{"action": "return_order", "order_id": order_id}]), store_db, settings)
    conv = conversation(store_db, customer)
    events = await say(agent, conv, f"please start a return for {order_id}")
    assert [e["action"] for e in events if e["type"] == "confirm"] == ["return_order"]
    assert status(store_db, order_id) == "delivered"
    events = await say(agent, conv, "yes")
    assert "return of order" in reply(events) and status(store_db, order_id) == "return requested"


async def test_review_asks_for_a_detail_of_the_order_before_proposing(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, zip_code = LEGIT
    cautious = settings.model_copy(update={"fraud_review_threshold": 0.0, "fraud_block_threshold": 1.0})
    agent = Agent(ScriptedBackend([{"action": "return_order", "order_id": order_id}]), store_db, cautious)
    conv = conversation(store_db, customer)
    events = await say(agent, conv, f"I want to return {order_id}")
    assert "last four digits" in reply(events) and not [e for e in events if e["type"] == "confirm"]
    events = await say(agent, conv, "it's 00000")
    assert "doesn't match" in reply(events)
    events = await say(agent, conv, f"the zip is {zip_code}")
    assert [e["action"] for e in events if e["type"] == "confirm"] == ["return_order"]
    await say(agent, conv, "yes")
    assert status(store_db, order_id) == "return requested"


async def test_two_wrong_answers_hand_the_conversation_to_a_person(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _zip = LEGIT
    cautious = settings.model_copy(update={"fraud_review_threshold": 0.0, "fraud_block_threshold": 1.0})
    agent = Agent(ScriptedBackend([{"action": "return_order", "order_id": order_id}]), store_db, cautious)
    conv = conversation(store_db, customer)
    await say(agent, conv, f"I want to return {order_id}")
    await say(agent, conv, "1111")
    events = await say(agent, conv, "2222")
    assert any(e["type"] == "handoff" for e in events) and status(store_db, order_id) == "delivered"


async def test_an_old_delivery_cannot_be_returned(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    agent = Agent(ScriptedBackend([{"action": "return_order", "order_id": "#W4435622"}]), store_db, settings)
    events = await say(agent, conversation(store_db, "james_li_5688"), "return #W4435622 please")
    assert "can't be returned" in reply(events) and "more than 30 days ago" in reply(events)
    assert status(store_db, "#W4435622") == "delivered"
