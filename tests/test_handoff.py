"""The handoff state machine and its triggers: each trigger leads to `waiting`, with its reason kept."""

import asyncio
from typing import Any

import pytest
from conftest import conversation
from sqlmodel import Session, col, select

from bot import handoff, sentiment
from bot.agent import Agent
from bot.llm.scripted import ScriptedBackend
from bot.tools import ToolResult, default_tools
from commerce.models import Conversation, HandoffEvent, Message
from shopdesk.bus import LocalBus, conversation_channel
from shopdesk.settings import Settings

JAMES = "james_li_5688"


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(_env_file=None, var_dir=tmp_path, llm_backend="scripted", llm_answer_style="facts")  # type: ignore[call-arg]


async def turn(agent: Agent, conv_id: str, text: str) -> list[dict[str, Any]]:
    return [event async for event in agent.run_turn(conv_id, text)]


def handoffs(engine, conv_id: str) -> list[HandoffEvent]:  # type: ignore[no-untyped-def]
    with Session(engine) as db:
        return list(
            db.exec(
                select(HandoffEvent)
                .where(HandoffEvent.conversation_id == conv_id)
                .order_by(col(HandoffEvent.id))
            ).all()
        )


def state_of(engine, conv_id: str) -> Conversation:  # type: ignore[no-untyped-def]
    with Session(engine) as db:
        conv = db.get(Conversation, conv_id)
        assert conv is not None
        return conv


# ---- the machine ------------------------------------------------------------------------------------


def test_the_machine_allows_the_documented_paths_and_refuses_the_rest(store_db) -> None:  # type: ignore[no-untyped-def]
    conv_id = conversation(store_db, JAMES)
    with Session(store_db) as db:
        conv, event = handoff.move(db, conv_id, "waiting", "shopper_request", "asked for a person")
        assert conv.state == "waiting" and conv.waiting_since is not None
        assert event["state"] == "waiting" and "reason" not in event and "trigger" not in event
        handoff.move(db, conv_id, "agent", "take_over")
        with pytest.raises(handoff.InvalidTransition):
            handoff.move(db, conv_id, "agent", "take_over")  # a second agent cannot take it too
        handoff.move(db, conv_id, "bot", "hand_back")
        handoff.move(db, conv_id, "closed", "close")
        with pytest.raises(handoff.InvalidTransition):
            handoff.move(db, conv_id, "agent", "take_over")  # closed: only the shopper reopens it
        db.commit()
    events = handoffs(store_db, conv_id)
    assert [(e.from_state, e.to_state, e.trigger) for e in events] == [
        ("bot", "waiting", "shopper_request"),
        ("waiting", "agent", "take_over"),
        ("agent", "bot", "hand_back"),
        ("bot", "closed", "close"),
    ]
    assert events[0].reason == "asked for a person"


def test_sentiment_scores_complaints_below_the_threshold_and_questions_at_zero() -> None:
    threshold = Settings.model_fields["handoff_sentiment"].default
    assert sentiment.score("This is ridiculous!!! Worst service ever, I'm furious") <= threshold
    assert sentiment.score("太差了！气死我了，我要投诉") <= threshold
    assert sentiment.score("where is my order #W2611340?") == 0.0
    assert sentiment.score("thanks, that was really helpful") > 0.5


# ---- triggers ---------------------------------------------------------------------------------------


async def test_asking_for_a_person_waits_with_the_reason(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    agent = Agent(ScriptedBackend([{"action": "handoff", "reason": "wants a human"}]), store_db, settings)
    conv = conversation(store_db, JAMES)
    events = await turn(agent, conv, "I want to talk to a person")
    assert [e for e in events if e["type"] == "handoff"][0]["state"] == "waiting"
    assert [e.trigger for e in handoffs(store_db, conv)] == ["shopper_request"]
    assert state_of(store_db, conv).handoff_reason == "wants a human"


async def test_two_failed_turns_in_a_row_wait_and_a_good_turn_resets_the_count(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    unclear = {"action": "ask", "need": "clarification"}
    backend = ScriptedBackend([unclear, {"action": "list_orders"}, unclear, unclear])
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, JAMES)
    await turn(agent, conv, "hmm")
    assert state_of(store_db, conv).failed_turns == 1
    await turn(agent, conv, "what did I order?")  # helped: the run starts again
    assert state_of(store_db, conv).failed_turns == 0
    events = await turn(agent, conv, "blorp")
    assert not [e for e in events if e["type"] == "handoff"]
    events = await turn(agent, conv, "zzz")
    kinds = [e["type"] for e in events]
    # The reply, then the handoff (with its shopper-facing line), then done.
    assert kinds[-3:] == ["message", "handoff", "done"]
    assert events[-2]["state"] == "waiting" and "support team" in events[-2]["text"]
    assert [e.trigger for e in handoffs(store_db, conv)] == ["failed_turns"]


async def test_a_furious_message_goes_to_a_person_without_asking_the_model(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend()
    agent = Agent(backend, store_db, settings)
    conv = conversation(store_db, JAMES)
    events = await turn(agent, conv, "This is RIDICULOUS. Worst service ever, I'm furious!!!")
    assert [e["type"] for e in events] == ["ack", "handoff", "done"]
    assert backend.calls == []
    assert [e.trigger for e in handoffs(store_db, conv)] == ["negative_sentiment"]
    with Session(store_db) as db:
        stored = db.exec(select(Message).where(Message.conversation_id == conv, Message.role == "user")).one()
        assert stored.sentiment is not None and stored.sentiment <= settings.handoff_sentiment
        # The line the shopper saw is in the history (a reload shows it again).
        system = db.exec(
            select(Message).where(Message.conversation_id == conv, Message.role == "system")
        ).one()
        assert system.content == events[1]["text"] and system.id == events[1]["id"]


async def test_a_tool_error_goes_to_a_person(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    tools = default_tools()

    async def broken(args, ctx) -> ToolResult:  # type: ignore[no-untyped-def]
        raise RuntimeError("database on fire")

    tools.get("list_orders").run = broken
    agent = Agent(ScriptedBackend([{"action": "list_orders"}]), store_db, settings, tools=tools)
    conv = conversation(store_db, JAMES)
    events = await turn(agent, conv, "what did I order?")
    assert [e for e in events if e["type"] == "handoff"][0]["state"] == "waiting"
    assert [e.trigger for e in handoffs(store_db, conv)] == ["error"]


async def test_a_fraud_block_goes_to_a_person_and_flags_the_chat(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id = "harper_silva_8534", "#W8011920"  # docs/fraud.md: an account takeover
    agent = Agent(ScriptedBackend([{"action": "return_order", "order_id": order_id}]), store_db, settings)
    conv = conversation(store_db, customer)
    events = await turn(agent, conv, f"I want to return my order {order_id}")
    assert [e for e in events if e["type"] == "handoff"][0]["state"] == "waiting"
    assert [e.trigger for e in handoffs(store_db, conv)] == ["fraud_review"]
    assert state_of(store_db, conv).fraud_flag


async def test_while_waiting_messages_are_kept_and_reach_the_agents_bus(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    bus = LocalBus()
    backend = ScriptedBackend()
    agent = Agent(backend, store_db, settings, bus=bus)
    conv = conversation(store_db, JAMES, state="waiting")
    async with bus.subscribe(conversation_channel(conv)) as sub:
        events = await turn(agent, conv, "hello? anyone there?")
        published = await asyncio.wait_for(sub.get(), 1)
    assert [e["type"] for e in events] == ["ack", "done"] and backend.calls == []
    assert published["type"] == "shopper_message" and published["audience"] == "agent"
    assert published["message"]["text"] == "hello? anyone there?"
    assert published["message"]["id"] == events[0]["message_id"]


async def test_a_closed_chat_reopens_with_the_bot_when_the_shopper_writes(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    agent = Agent(ScriptedBackend([{"action": "list_orders"}]), store_db, settings)
    conv = conversation(store_db, JAMES, state="closed")
    events = await turn(agent, conv, "what did I order?")
    assert any(e["type"] == "card" for e in events)
    assert state_of(store_db, conv).state == "bot"
    assert [e.trigger for e in handoffs(store_db, conv)] == ["reopen"]
