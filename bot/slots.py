"""What the shopper actually wrote: ids, emails, names and answers found in their own words.

Tool arguments the model proposes are accepted only when they are backed by these, so a model that
invents an order id or an email cannot act on it.
"""

import re

_ORDER_ID = re.compile(r"#?\b[Ww]?(\d{7})\b")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ZIP = re.compile(r"\b(\d{5})\b")
_YES = re.compile(
    r"^\s*(yes|yeah|yep|yup|sure|ok|okay|confirm(ed)?|please do|go ahead|do it|correct|y)\b", re.IGNORECASE
)
_NO = re.compile(
    r"^\s*(no|nope|nah|don'?t|do not|stop|cancel that|never ?mind|wait|n)\b",
    re.IGNORECASE,
)


def order_ids(text: str) -> list[str]:
    """Order ids in the canonical "#W1234567" form, in order of appearance, without duplicates."""
    found = [f"#W{digits}" for digits in _ORDER_ID.findall(text)]
    return list(dict.fromkeys(found))


def emails(text: str) -> list[str]:
    return [e.strip(".").lower() for e in _EMAIL.findall(text)]


def zips(text: str) -> list[str]:
    return _ZIP.findall(text)


def words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]+", text)}


def yes_or_no(text: str) -> bool | None:
    """The shopper's answer to a confirmation: True, False, or None when it is neither."""
    if _NO.search(text):
        return False
    if _YES.search(text):
        return True
    return None


def cancel_reason(text: str) -> str:
    lowered = text.lower()
    return "ordered by mistake" if "mistake" in lowered or "accident" in lowered else "no longer needed"
