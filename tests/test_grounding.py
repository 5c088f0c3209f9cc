"""The groundedness check: facts compared by value across spellings, languages and formats."""

import pytest

from bot.grounding import check, extract_facts

ORDER = (
    "Order #W2611340 is processed. It has 2 items (Water Bottle, Office Chair), total $536.65. "
    "Shipped with UPS, tracking number 357962501027, estimated delivery 2026-11-23."
)


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.key) for f in extract_facts(text)]


@pytest.mark.parametrize(
    "reply",
    [
        "Your order W2611340 is processed.",  # id without '#'
        "Order #w2611340 totals 536.65 USD.",  # currency written out, lower-case id
        "It should arrive on Nov 23, 2026.",  # date as words
        "It should arrive on 11/23/2026.",  # US date
        "Expected on 23 November.",  # day-month, no year
        "Tracking: 357 962 501 027.",  # grouped digits
        "订单W2611340已处理，预计2026年11月23日送达，共$536.65。",  # Chinese, id touching CJK text
        "预计11月23日送达。",
        "The total is $536.65 for 2 items.",
    ],
)
def test_supported_facts_pass_whatever_their_spelling(reply: str) -> None:
    result = check(reply, [ORDER])
    assert result.ok, result.unsupported


@pytest.mark.parametrize(
    "reply,invented",
    [
        ("Your order #W2611341 is processed.", "#W2611341"),
        ("The total is $563.65.", "$563.65"),
        ("It arrives on 2026-11-24.", "2026-11-24"),
        ("It arrives on Nov 24.", "Nov 24"),
        ("Call us at (555) 123-4567.", "(555) 123-4567"),
        ("Call 1-800-555-0199 any time.", "1-800-555-0199"),
        ("Write to help@shop.example.com.", "help@shop.example.com"),
        ("Your tracking number is 357962501028.", "357962501028"),
        ("It weighs 2.5 kg.", "2.5"),
        ("You get 15% off.", "15%"),
        ("订单已于2026年11月25日送达。", "2026年11月25日"),
        ("退款¥120。", "¥120"),
        ("Your order was delivered.", "delivered"),
        ("See https://evil.example.com/login", "https://evil.example.com/login"),
    ],
)
def test_invented_facts_are_reported(reply: str, invented: str) -> None:
    result = check(reply, [ORDER])
    assert not result.ok and invented in result.unsupported


def test_the_shoppers_own_words_are_a_source() -> None:
    assert check("I'll look at order #W1234567 for you.", ["where is my order 1234567?"]).ok
    assert check("We'll write to ann@example.com.", ["my email is Ann@Example.com"]).ok


def test_step_numbers_are_not_facts_but_numbers_in_sentences_are() -> None:
    assert check("1. Open the chat\n2. Give the order number\n3. Say yes", []).ok
    assert check("1. Sign in 2. Tell us the order", []).ok
    assert not check("You have 3 days left.", []).ok


def test_required_facts_must_be_stated() -> None:
    result = check("Your order is on its way.", [ORDER], required=["#W2611340", "processed"])
    assert not result.ok and result.missing == ["#W2611340", "processed"]
    assert check("Order W2611340 is processed.", [ORDER], required=["#W2611340", "processed"]).ok


def test_each_fact_is_extracted_once_with_its_kind() -> None:
    assert kinds("#W2611340 on 2026-11-23 for $536.65, tracking 357962501027") == [
        ("order_id", "W2611340"),
        ("date", "2026-11-23"),
        ("number", "536.65"),
        ("number", "357962501027"),
    ]
    assert kinds("Nothing to check here.") == []
    assert kinds("Feb 30") == []  # not a date
