"""Exchanges and address changes: the services, the chat tools, their risk gate and their audit."""

from datetime import UTC, datetime

import pytest
from conftest import conversation, reply, say, status
from sqlmodel import Session, select

from bot.agent import Agent
from bot.llm.scripted import ScriptedBackend
from bot.order_tools import ADDRESS_TRIGGERS, EXCHANGE_TRIGGERS
from commerce import fraud, orders
from commerce.addresses import InvalidAddress, validate_address
from commerce.models import (
    AddressChange,
    Order,
    OrderExchange,
    OrderItem,
    Payment,
    PaymentMethod,
    RiskAssessment,
    ToolCallRecord,
)
from shopdesk.redact import redact, redact_value

KEYBOARD = ("evelyn_lee_1924", "#W3181060", "20122")  # delivered 2026-11-05: clicky, RGB, full size, $231.58
LINEAR = "1151293680"  # linear, RGB, full size: $272.33, available (+$40.75)
LINEAR_NO_LIGHT = "9570044148"  # linear, none, full size: $231.37, available (-$0.21)
CLICKY_WHITE_80 = "4843487907"  # clicky, white, 80%: not available
TAKEOVER = ("harper_silva_8534", "#W8011920")  # docs/fraud.md: the account-takeover demo case
PENDING = ("aarav_anderson_8794", "#W9300146", "19031")  # pending, ships to 931 Maple Drive, PA 19031
NEW_ADDRESS = "445 Maple Drive, Suite 394, Fort Worth, TX 76165"
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)  # the seeded store's today


def exchange_agent(store_db, settings, order_id: str, **args: str) -> Agent:  # type: ignore[no-untyped-def]
    return Agent(
        ScriptedBackend([{"action": "exchange_items", "order_id": order_id, **args}]), store_db, settings
    )


def address_agent(store_db, settings, order_id: str, **args: str) -> Agent:  # type: ignore[no-untyped-def]
    return Agent(
        ScriptedBackend([{"action": "change_address", "order_id": order_id, **args}]), store_db, settings
    )


def audits(engine, conv: str) -> list[ToolCallRecord]:  # type: ignore[no-untyped-def]
    with Session(engine) as db:
        return list(db.exec(select(ToolCallRecord).where(ToolCallRecord.conversation_id == conv)))


def first_item(db: Session, order_id: str) -> OrderItem:
    return db.exec(select(OrderItem).where(OrderItem.order_id == order_id)).first()  # type: ignore[return-value]


# ---- services ---------------------------------------------------------------------------------------


def test_an_exchange_records_what_is_swapped_and_the_difference(store_session: Session) -> None:
    _, order_id, _ = KEYBOARD
    item = first_item(store_session, order_id)
    order, quote = orders.request_exchange(store_session, order_id, {item.id: LINEAR}, now=NOW)  # type: ignore[dict-item]
    assert order.status == "exchange requested"
    assert quote.difference == 40.75 and quote.payment_method == "PayPal"
    row = store_session.exec(select(OrderExchange).where(OrderExchange.order_id == order_id)).one()
    assert (row.old_variant_id, row.new_variant_id, row.price_difference) == (item.variant_id, LINEAR, 40.75)
    assert row.payment_method_id == "paypal_8719727" and row.channel == "chat"
    with pytest.raises(orders.OrderNotExchangeable, match="only delivered orders"):  # once per order
        orders.request_exchange(store_session, order_id, {item.id: LINEAR_NO_LIGHT}, now=NOW)  # type: ignore[dict-item]


def test_a_cheaper_version_is_a_refund(store_session: Session) -> None:
    _, order_id, _ = KEYBOARD
    order = store_session.get(Order, order_id)
    quote = orders.quote_exchange(
        store_session, order, {first_item(store_session, order_id).id: LINEAR_NO_LIGHT}
    )  # type: ignore[arg-type, dict-item]
    assert quote.difference == -0.21


@pytest.mark.parametrize(
    ("variant", "why"),
    [
        (CLICKY_WHITE_80, "is not available"),
        ("9025753381", "already have"),  # the same version
        ("1646531091", "another version of the Mechanical Keyboard"),  # earbuds: another product
    ],
)
def test_only_another_available_version_of_the_same_product(store_session: Session, variant, why) -> None:  # type: ignore[no-untyped-def]
    _, order_id, _ = KEYBOARD
    order = store_session.get(Order, order_id)
    with pytest.raises(orders.OrderNotExchangeable, match=why):
        orders.quote_exchange(store_session, order, {first_item(store_session, order_id).id: variant})  # type: ignore[arg-type, dict-item]


def test_only_recent_deliveries_can_be_exchanged(store_session: Session) -> None:
    with pytest.raises(orders.OrderNotExchangeable, match="only delivered orders"):
        orders.check_exchangeable(store_session, store_session.get(Order, "#W2611340"), now=NOW)  # type: ignore[arg-type]
    with pytest.raises(orders.OrderNotExchangeable, match="more than 30 days ago"):
        orders.check_exchangeable(store_session, store_session.get(Order, "#W4435622"), now=NOW)  # type: ignore[arg-type]


def test_a_gift_card_must_cover_a_higher_price(store_session: Session) -> None:
    customer, order_id, _ = KEYBOARD
    card = PaymentMethod(
        id="gift_card_test", customer_id=customer, kind="gift_card", balance=10.0, added_at=NOW
    )
    store_session.add(card)
    payment = store_session.exec(select(Payment).where(Payment.order_id == order_id)).one()
    payment.payment_method_id = card.id
    store_session.add(payment)
    store_session.flush()
    order = store_session.get(Order, order_id)
    item_id = first_item(store_session, order_id).id
    with pytest.raises(orders.OrderNotExchangeable, match=r"\$10.00 left, less than the \$40.75"):
        orders.quote_exchange(store_session, order, {item_id: LINEAR})  # type: ignore[arg-type, dict-item]
    assert orders.quote_exchange(store_session, order, {item_id: LINEAR_NO_LIGHT}).difference == -0.21  # type: ignore[arg-type, dict-item]


def test_addresses_are_validated_field_by_field() -> None:
    ok = validate_address("445 Maple Drive", "Fort Worth", "Texas", "76165-1234", "Suite 394")
    assert (ok.state, ok.zip, ok.one_line()) == ("TX", "76165-1234", f"{NEW_ADDRESS}-1234")
    with pytest.raises(InvalidAddress) as caught:
        validate_address("Maple Drive", "", "XX", "7616")
    assert set(caught.value.errors) == {"street", "city", "state", "zip"}
    assert "5 digits" in caught.value.errors["zip"]


def test_an_address_change_is_kept_for_the_fraud_check(store_session: Session) -> None:
    customer, order_id, old_zip = PENDING
    address = validate_address("445 Maple Drive", "Fort Worth", "TX", "76165", "Suite 394")
    order = orders.change_address(store_session, order_id, address, now=NOW)
    assert (order.ship_address1, order.ship_address2, order.ship_city, order.ship_zip) == (
        "445 Maple Drive",
        "Suite 394",
        "Fort Worth",
        "76165",
    )
    change = store_session.exec(select(AddressChange).where(AddressChange.order_id == order_id)).one()
    assert (change.channel, change.customer_id, change.old_zip, change.zip) == (
        "chat",
        customer,
        old_zip,
        "76165",
    )
    with pytest.raises(orders.AddressNotChangeable, match="already ships to that address"):
        orders.change_address(store_session, order_id, address, now=NOW)
    second = validate_address("12 Oak Street", "Austin", "TX", "78701")
    orders.change_address(store_session, order_id, second, now=NOW)
    from shopdesk.settings import Settings

    rules_only = Settings(_env_file=None, var_dir=NOW.strftime("/tmp/none-%Y"))  # type: ignore[call-arg]
    assessment = fraud.score_order(store_session, rules_only, order_id, "address_change", now=NOW)
    assert "repeated_address_changes" in {r.code for r in assessment.reasons}  # the scorer read them


def test_only_pending_orders_change_address(store_session: Session) -> None:
    address = validate_address("12 Oak Street", "Austin", "TX", "78701")
    with pytest.raises(orders.AddressNotChangeable, match="it is processed"):
        orders.change_address(store_session, "#W2611340", address, now=NOW)


# ---- the exchange tool ----------------------------------------------------------------------------


async def test_an_exchange_is_proposed_with_the_difference_and_runs_after_yes(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = KEYBOARD
    agent = exchange_agent(store_db, settings, order_id)
    conv = conversation(store_db, customer)
    events = await say(agent, conv, f"I want to exchange the keyboard in {order_id} for linear switches")
    confirm = next(e for e in events if e["type"] == "confirm")
    assert confirm["action"] == "exchange_items" and confirm["args"]["new_item_id"] == LINEAR
    assert (
        "$40.75 more, charged to your PayPal" in reply(events) and status(store_db, order_id) == "delivered"
    )
    events = await say(agent, conv, "yes")
    assert "exchange of the Mechanical Keyboard" in reply(events)
    assert status(store_db, order_id) == "exchange requested"


async def test_a_cheaper_version_says_what_is_refunded(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = KEYBOARD
    agent = exchange_agent(store_db, settings, order_id)
    events = await say(
        agent, conversation(store_db, customer), f"exchange {order_id} for linear switches with no backlight"
    )
    assert "we refund $0.21 to your PayPal" in reply(events)


async def test_an_unavailable_version_is_not_proposed(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = KEYBOARD
    agent = exchange_agent(store_db, settings, order_id)
    events = await say(
        agent, conversation(store_db, customer), f"exchange {order_id} for white backlight, 80%"
    )
    assert "is not available" in reply(events) and not [e for e in events if e["type"] == "confirm"]


async def test_without_the_wanted_option_the_tool_asks(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = KEYBOARD
    agent = exchange_agent(store_db, settings, order_id)
    events = await say(agent, conversation(store_db, customer), f"please exchange my order {order_id}")
    text = reply(events)
    assert "Which version of the Mechanical Keyboard" in text and "$272.33" in text
    assert not [e for e in events if e["type"] == "confirm"]


@pytest.mark.parametrize(
    "answer",
    [
        "switch type linear, backlight none, size 80%",
        "linear, none, 80%",
        "the linear one with no backlight, 80%",
    ],
)
async def test_an_answer_to_the_question_back_continues_the_exchange(store_db, settings, answer: str) -> None:  # type: ignore[no-untyped-def]
    """The shopper answers "which version?" in their own words, without saying "exchange" again."""
    customer, order_id, _ = KEYBOARD
    agent = exchange_agent(store_db, settings, order_id)  # the model decides the first turn only
    conv = conversation(store_db, customer)
    assert "Which version" in reply(
        await say(agent, conv, f"I'd like to exchange an item in order {order_id}")
    )
    events = await say(agent, conv, answer)
    confirm = next(e for e in events if e["type"] == "confirm")
    assert confirm["action"] == "exchange_items" and confirm["args"]["new_item_id"] == "1421289881", events
    events = await say(agent, conv, "yes")
    assert status(store_db, order_id) == "exchange requested", reply(events)


async def test_a_message_that_answers_nothing_is_not_taken_for_the_answer(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = KEYBOARD
    agent = exchange_agent(store_db, settings, order_id)
    conv = conversation(store_db, customer)
    await say(agent, conv, f"I'd like to exchange an item in order {order_id}")
    agent.backend.push({"action": "answer"})  # type: ignore[attr-defined]
    agent.backend.push("We are open every day.")  # type: ignore[attr-defined]
    events = await say(agent, conv, "what are your opening hours?")
    assert not [e for e in events if e["type"] == "confirm"] and "Which version" not in reply(events)
    assert audits(store_db, conv)[-1].outcome == "ask"  # the exchange was not run again
    agent.backend.push({"action": "answer"})  # type: ignore[attr-defined]
    agent.backend.push("Okay.")  # type: ignore[attr-defined]
    await say(agent, conv, "no, never mind")
    await say(agent, conv, "linear, none, 80%")  # the question is no longer the bot's latest word
    assert [a.outcome for a in audits(store_db, conv) if a.tool == "exchange_items"] == ["ask"]


async def test_several_items_ask_which_one(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    agent = exchange_agent(store_db, settings, "#W6239298")
    events = await say(agent, conversation(store_db, "lucas_brown_6720"), "exchange something in #W6239298")
    assert "Which item of order #W6239298" in reply(events) and "E-Reader" in reply(events)


async def test_questions_back_are_steps_not_failed_turns(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    agent = exchange_agent(store_db, settings, "#W6239298")
    conv = conversation(store_db, "lucas_brown_6720")
    await say(agent, conv, "exchange something in #W6239298")
    events = await say(agent, conv, "exchange the water bottle in #W6239298")  # the model picks again
    assert "Which version of the Water Bottle" in reply(events)
    assert not [e for e in events if e["type"] == "handoff"] and audits(store_db, conv)[-1].outcome == "ask"


async def test_exchanges_refuse_orders_not_delivered_or_not_the_shoppers(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    agent = exchange_agent(store_db, settings, "#W2611340")
    events = await say(agent, conversation(store_db, "james_li_5688"), "exchange #W2611340 for another size")
    assert "only delivered orders can be exchanged" in reply(events)
    _, order_id, _ = KEYBOARD
    agent = exchange_agent(store_db, settings, order_id)
    conv = conversation(store_db, "james_li_5688")
    events = await say(agent, conv, f"exchange the keyboard in {order_id} for linear switches")
    assert "couldn't find" in reply(events) and "Keyboard" not in reply(events)
    assert audits(store_db, conv)[0].result["reason"] == "not_owner"


async def test_options_the_shopper_never_wrote_are_not_used(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = KEYBOARD
    agent = exchange_agent(store_db, settings, order_id, new_options="tactile", new_item_id=LINEAR)
    events = await say(agent, conversation(store_db, customer), f"exchange {order_id} for linear switches")
    assert "new options and new item id" in reply(events)
    assert not [e for e in events if e["type"] == "confirm"]


# ---- the address tool -----------------------------------------------------------------------------


async def test_an_address_change_is_proposed_then_kept_and_the_audit_has_no_address(
    store_db, settings
) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = PENDING
    agent = address_agent(store_db, settings, order_id)
    conv = conversation(store_db, customer)
    events = await say(agent, conv, f"please change the shipping address of {order_id} to {NEW_ADDRESS}")
    assert [e["action"] for e in events if e["type"] == "confirm"] == ["change_address"]
    assert NEW_ADDRESS in reply(events)
    events = await say(agent, conv, "yes")
    assert f"will ship to {NEW_ADDRESS}" in reply(events)
    with Session(store_db) as db:
        order = db.get(Order, order_id)
        change = db.exec(select(AddressChange).where(AddressChange.order_id == order_id)).one()
    assert order.ship_zip == "76165" and order.status == "pending" and change.channel == "chat"  # type: ignore[union-attr]
    trail = str([(a.arguments, a.result) for a in audits(store_db, conv)])
    assert "Maple" not in trail and "Fort Worth" not in trail and "76165" not in trail
    assert "[address]" in trail


async def test_a_malformed_zip_is_named_and_nothing_is_proposed(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = PENDING
    agent = address_agent(store_db, settings, order_id)
    events = await say(
        agent,
        conversation(store_db, customer),
        f"change the address of {order_id} to 1 Elm St, Austin, TX 7870",
    )
    assert "zip: 7870 is not a US zip code" in reply(events)
    assert not [e for e in events if e["type"] == "confirm"]


async def test_the_address_tool_asks_for_an_address_it_was_not_given(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = PENDING
    agent = address_agent(store_db, settings, order_id)
    events = await say(agent, conversation(store_db, customer), f"I need to change the address on {order_id}")
    assert "What is the new shipping address for order" in reply(events)


async def test_an_address_the_shopper_never_wrote_is_refused(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, _ = PENDING
    agent = address_agent(
        store_db, settings, order_id, street="1 Drop Lane", city="Reno", state="NV", zip="89501"
    )
    events = await say(
        agent, conversation(store_db, customer), f"change the address of {order_id} to {NEW_ADDRESS}"
    )
    assert "Could you tell me the street and city and state and zip" in reply(events)
    assert status(store_db, order_id) == "pending"


async def test_shipped_orders_and_other_customers_orders_keep_their_address(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    agent = address_agent(store_db, settings, "#W2611340")
    events = await say(
        agent, conversation(store_db, "james_li_5688"), f"ship #W2611340 to {NEW_ADDRESS} instead"
    )
    assert "only be changed before the order ships" in reply(events)
    _, order_id, _ = PENDING
    agent = address_agent(store_db, settings, order_id)
    events = await say(
        agent, conversation(store_db, "james_li_5688"), f"change the address of {order_id} to {NEW_ADDRESS}"
    )
    assert "couldn't find" in reply(events)
    with Session(store_db) as db:
        assert not db.exec(select(AddressChange).where(AddressChange.channel == "chat")).all()


# ---- the risk gate on both ------------------------------------------------------------------------


def cautious(settings):  # type: ignore[no-untyped-def]
    """Every action is reviewed (none blocked)."""
    return settings.model_copy(update={"fraud_review_threshold": 0.0, "fraud_block_threshold": 1.0})


def blocking(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"fraud_review_threshold": 0.0, "fraud_block_threshold": 0.0})


async def test_a_reviewed_exchange_asks_for_a_detail_then_proposes(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, zip_code = KEYBOARD
    agent = exchange_agent(store_db, cautious(settings), order_id)
    conv = conversation(store_db, customer)
    events = await say(agent, conv, f"exchange the keyboard in {order_id} for linear switches")
    assert "last four digits" in reply(events) and not [e for e in events if e["type"] == "confirm"]
    events = await say(agent, conv, f"the zip is {zip_code}")
    assert [e["args"]["new_item_id"] for e in events if e["type"] == "confirm"] == [LINEAR]
    await say(agent, conv, "yes")
    assert status(store_db, order_id) == "exchange requested"


async def test_a_reviewed_address_change_asks_for_a_detail_then_proposes(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id, zip_code = PENDING
    agent = address_agent(store_db, cautious(settings), order_id)
    conv = conversation(store_db, customer)
    events = await say(agent, conv, f"change the address of {order_id} to {NEW_ADDRESS}")
    assert "last four digits" in reply(events)
    events = await say(agent, conv, zip_code)
    assert [e["action"] for e in events if e["type"] == "confirm"] == ["change_address"]
    await say(agent, conv, "yes")
    with Session(store_db) as db:
        assert db.get(Order, order_id).ship_zip == "76165"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("make_agent", "customer", "order_id", "text", "action"),
    [
        (
            exchange_agent,
            "evelyn_lee_1924",
            "#W3181060",
            "exchange #W3181060 for linear switches",
            "exchange",
        ),
        (
            address_agent,
            PENDING[0],
            PENDING[1],
            f"change the address of {PENDING[1]} to {NEW_ADDRESS}",
            "address_change",
        ),
    ],
)
async def test_a_blocked_action_goes_to_a_person_with_the_reasons(
    store_db, settings, make_agent, customer, order_id, text, action
) -> None:  # type: ignore[no-untyped-def]
    before = status(store_db, order_id)
    agent = make_agent(store_db, blocking(settings), order_id)
    conv = conversation(store_db, customer)
    events = await say(agent, conv, text)
    assert "member of our support team" in reply(events) and any(e["type"] == "handoff" for e in events)
    assert not [e for e in events if e["type"] == "confirm"] and status(store_db, order_id) == before
    assert "score" not in str(events).lower()
    [audit] = audits(store_db, conv)
    assert audit.result["risk"]["decision"] == "block"
    with Session(store_db) as db:
        assessment = db.exec(select(RiskAssessment).where(RiskAssessment.conversation_id == conv)).one()
    assert (assessment.action, assessment.order_id) == (action, order_id)


async def test_the_account_takeover_case_cannot_exchange(store_db, settings) -> None:  # type: ignore[no-untyped-def]
    customer, order_id = TAKEOVER
    agent = exchange_agent(store_db, settings, order_id)
    events = await say(
        agent,
        conversation(store_db, customer),
        f"exchange the earbuds in {order_id} for the 6 hours battery life",
    )
    assert any(e["type"] == "handoff" for e in events) and status(store_db, order_id) == "delivered"


# ---- words ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "exchange", "address"),
    [
        ("exchange #W3181060 for linear switches", True, False),
        ("swap the t-shirt for size L", True, False),
        ("订单#W3181060换货", True, False),
        ("please change the shipping address of #W9300146", False, True),
        ("ship my order #W9300146 to 12 Oak Street, Austin, TX 78701", False, True),
        ("把订单的地址改成 12 Oak Street", False, True),
        ("my email address is ann@example.com", False, False),
        ("where is my order #W2611340?", False, False),
        ("I want to return my order", False, False),
    ],
)
def test_the_write_tools_are_on_offer_only_when_named(text: str, exchange: bool, address: bool) -> None:
    assert bool(EXCHANGE_TRIGGERS.search(text)) is exchange
    assert bool(ADDRESS_TRIGGERS.search(text)) is address


def test_addresses_are_redacted_in_text_and_by_field() -> None:
    assert (
        redact(f"Ship order #W9300146 to {NEW_ADDRESS.lower()} instead")
        == "Ship order #W9300146 to [address] instead"
    )
    masked = redact_value(
        {"street": "1 Elm St", "city": "Austin", "state": "TX", "zip": "78701", "order_id": "#W1"}
    )
    assert masked == {
        "street": "[address]",
        "city": "[address]",
        "state": "TX",
        "zip": "[address]",
        "order_id": "#W1",
    }
