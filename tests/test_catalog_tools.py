"""The bot's catalog tools: recommendations (and the stock outlook) for the session's shopper."""

from pathlib import Path
from typing import Any

import pytest
from conftest import conversation
from sqlmodel import Session, select

from bot.agent import Agent
from bot.catalog_tools import recommendation_query
from bot.llm.scripted import ScriptedBackend
from commerce.models import OrderItem, Variant
from shopdesk.settings import Settings

JAMES = "james_li_5688"


async def run(agent: Agent, conv: str, text: str) -> list[dict[str, Any]]:
    return [e async for e in agent.run_turn(conv, text)]


@pytest.fixture
def trained(store_db, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    from recsys.serve import clear_cache
    from recsys.store import train_store

    settings = Settings(
        _env_file=None, var_dir=tmp_path, database_url=str(store_db.url), llm_backend="scripted"
    )  # type: ignore[call-arg]
    train_store(store_db, settings, content=False)
    clear_cache()
    return settings


@pytest.mark.parametrize(
    "text,query",
    [
        ("Can you recommend something?", None),
        ("what should I buy next?", None),
        ("suggest something for camping", "camping"),
        ("any ideas for a gift for my dad who likes coffee?", "gift dad who likes coffee"),
        ("你有什么推荐的商品吗？", None),
    ],
)
def test_the_query_is_what_the_shopper_is_looking_for(text: str, query: str | None) -> None:
    assert recommendation_query(text) == query


async def test_recommendations_for_the_signed_in_customer_are_real_and_available(store_db, trained) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend([{"action": "recommend_products"}])
    agent = Agent(backend, store_db, trained)
    events = await run(agent, conversation(store_db, JAMES), "can you recommend something for me?")
    card = next(e["card"] for e in events if e["type"] == "card")
    message = next(e for e in events if e["type"] == "message")
    assert card["kind"] == "products" and 1 <= len(card["items"]) <= 4
    assert message["text"].startswith("Here are some picks for you:")
    with Session(store_db) as db:
        mine = _orders_of(db, JAMES)
        bought = {row.variant_id for row in db.exec(select(OrderItem)).all() if row.order_id in mine}
        for item in card["items"]:
            variant = db.get(Variant, item["variant_id"])
            assert variant is not None and variant.available and variant.price == item["price"]
            assert item["name"] in message["text"] and f"${item['price']:.2f}" in message["text"]
            assert item["reason"]
            # A past purchase only ever appears labelled as one.
            assert (item["variant_id"] in bought) == (item["reason_kind"] == "bought_before")


def _orders_of(db: Session, customer_id: str) -> set[str]:
    from commerce.models import Order

    return set(db.exec(select(Order.id).where(Order.customer_id == customer_id)).all())


async def test_a_guest_gets_popular_products_marked_as_such(store_db, trained) -> None:  # type: ignore[no-untyped-def]
    backend = ScriptedBackend([{"action": "recommend_products"}])
    agent = Agent(backend, store_db, trained)
    events = await run(agent, conversation(store_db, None), "any gift ideas?")
    message = next(e for e in events if e["type"] == "message")
    assert message["text"].startswith("Here are some of our popular products right now:")
    card = next(e["card"] for e in events if e["type"] == "card")
    assert all(item["reason_kind"] == "popular" for item in card["items"])


async def test_stock_outlook_answers_with_the_stores_restock_window(store_db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from commerce.inventory import find_variants
    from commerce.inventory import stock_outlook as outlook_of

    settings = Settings(_env_file=None, var_dir=tmp_path, llm_backend="scripted")  # type: ignore[call-arg]
    with Session(store_db) as db:
        sold_out = [v for v in db.exec(select(Variant).where(Variant.available == False)).all()]  # noqa: E712
        outlooks = [outlook_of(db, settings, v.id) for v in sold_out]
    windowed = next(o for o in outlooks if o.restock_earliest is not None)
    undated = next(o for o in outlooks if o.restock_earliest is None)
    for outlook in (windowed, undated):
        words = " ".join([outlook.product_name, *outlook.options.values()])
        with Session(store_db) as db:
            assert outlook.variant_id in [v.id for v in find_variants(db, words)]
        agent = Agent(ScriptedBackend([{"action": "stock_outlook"}]), store_db, settings)
        events = await run(agent, conversation(store_db, None), f"when is the {words} back in stock?")
        card = next(e["card"] for e in events if e["type"] == "card")
        text = next(e for e in events if e["type"] == "message")["text"]
        item = next(i for i in card["items"] if i["variant_id"] == outlook.variant_id)
        assert card["kind"] == "restock" and item["in_stock"] is False
        if outlook.restock_earliest:
            assert item["restock_earliest"] == outlook.restock_earliest.isoformat()
            assert outlook.restock_earliest.isoformat() in text and outlook.restock_latest.isoformat() in text  # type: ignore[union-attr]
        else:
            assert item["has_estimate"] is False
            assert "don't have a restock date" in text or "no longer made" in text
        assert "PO-" not in text and "supplier" not in text.lower()  # purchasing internals stay inside


async def test_stock_outlook_forecasts_off_the_event_loop(store_db, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An uncached forecast is up to a second of CPU per variant: never on the loop other chats share."""
    import threading

    from commerce import inventory

    real, threads = inventory.stock_outlook, []

    def recording(db, settings, variant_id):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread())
        return real(db, settings, variant_id)

    monkeypatch.setattr(inventory, "stock_outlook", recording)
    settings = Settings(_env_file=None, var_dir=tmp_path, llm_backend="scripted")  # type: ignore[call-arg]
    agent = Agent(ScriptedBackend([{"action": "stock_outlook"}]), store_db, settings)
    events = await run(agent, conversation(store_db, None), "is the kettle in stock?")
    assert [e for e in events if e["type"] == "card"]
    assert threads and all(t is not threading.main_thread() for t in threads)


async def test_stock_outlook_asks_which_product_when_none_is_named(store_db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(_env_file=None, var_dir=tmp_path, llm_backend="scripted")  # type: ignore[call-arg]
    agent = Agent(ScriptedBackend([{"action": "stock_outlook"}]), store_db, settings)
    events = await run(agent, conversation(store_db, None), "when is the flux capacitor back in stock?")
    assert next(e for e in events if e["type"] == "message")["text"].startswith("Which product do you mean?")
    assert not [e for e in events if e["type"] == "card"]
