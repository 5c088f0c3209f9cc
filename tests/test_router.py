"""The intent router: the embedding ranking a small model's decision is offered in."""

import pytest

from bot.router import IntentRouter, default_router


@pytest.fixture(scope="module")
def router() -> IntentRouter:
    return default_router()


ALL = [
    "verify_guest",
    "list_orders",
    "order_status",
    "cancel_order",
    "search_knowledge",
    "handoff",
    "answer",
    "decline",
]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("how long do I have to return a delivered item?", "search_knowledge"),
        ("Do you deliver with UPS? How many days?", "search_knowledge"),
        ("Where is my order #W2611340?", "order_status"),
        ("Please cancel my order #W9300146, I don't need it anymore.", "cancel_order"),
        ("what have I bought from you?", "list_orders"),
        ("I need a human, now", "handoff"),
        ("hello!", "answer"),
        ("my email is james.li4495@example.com", "verify_guest"),
        ("Can you write me a haiku about autumn?", "decline"),
        ("What's the weather like in Paris?", "decline"),
    ],
)
def test_router_puts_the_intended_action_first(router, text, expected):
    assert router.rank(text, ALL)[0] == expected


def test_router_never_adds_an_action_and_keeps_unknown_candidates(router):
    assert set(router.rank("cancel my order", ["order_status", "answer"])) <= {"order_status", "answer"}
    assert router.rank("anything", ["ask"]) == ["ask"]  # no examples: left as offered
