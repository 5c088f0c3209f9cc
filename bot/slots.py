"""What the shopper actually wrote: ids, emails, names and answers found in their own words.

Tool arguments the model proposes are accepted only when they are backed by these, so a model that
invents an order id or an email cannot act on it.
"""

import re

# Lookarounds instead of \b: in Chinese text ("订单W2611340的") letters touch the id on both sides.
_ORDER_ID = re.compile(r"(?<![A-Za-z0-9])#?[Ww]?(\d{7})(?![0-9])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_ZIP = re.compile(r"(?<![A-Za-z0-9#])(\d{5})(?![0-9])")
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


# "I'm Ann Lee", "my name is ann lee", "Ann Lee, zip 10001": a first and a last name, in that order.
_INTRO = re.compile(
    r"\b(?:i'?m|i am|my name is|this is|name:?|it'?s)\s+([A-Za-z][a-z'-]+)\s+([A-Za-z][a-z'-]+)", re.I
)
_CAPITALISED_PAIR = re.compile(r"(?<![A-Za-z])([A-Z][a-z'-]+) ([A-Z][a-z'-]+)(?![A-Za-z])")
_NOT_NAMES = {
    "i'm",
    "im",
    "hi",
    "hello",
    "hey",
    "sorry",
    "my",
    "it's",
    "its",
    "this",
    "please",
    "thanks",
    "the",
}


def name_pairs(text: str) -> list[tuple[str, str]]:
    """(first, last) name candidates, introduced ones first, each once."""
    found = [(a, b) for a, b in _INTRO.findall(text)] + _CAPITALISED_PAIR.findall(text)
    pairs = [
        (a.capitalize(), b.capitalize())
        for a, b in found
        if a.lower() not in _NOT_NAMES and b.lower() not in _NOT_NAMES and b.lower() not in {"and", "zip"}
    ]
    return list(dict.fromkeys(pairs))


def words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]+", text)}


_YES_ZH = re.compile(r"^\s*(是的?|好的?|确认|可以|对|行|没问题)")
_NO_ZH = re.compile(r"^\s*(不|别|算了|先不)")


def yes_or_no(text: str) -> bool | None:
    """The shopper's answer to a confirmation: True, False, or None when it is neither."""
    if _NO.search(text) or _NO_ZH.search(text):
        return False
    if _YES.search(text) or _YES_ZH.search(text):
        return True
    return None


def cancel_reason(text: str) -> str:
    lowered = text.lower()
    return "ordered by mistake" if "mistake" in lowered or "accident" in lowered else "no longer needed"


# ---- item ids, phrases and addresses ------------------------------------------------------------

_ITEM_ID = re.compile(r"(?<![A-Za-z0-9#])(\d{10})(?![0-9])")
_TOKEN = re.compile(r"[^\W_]+")


def item_ids(text: str) -> list[str]:
    """Catalog item ids (ten digits, tau2's variant ids) the shopper wrote."""
    return list(dict.fromkeys(_ITEM_ID.findall(text)))


def phrase_backed(value: str, said: str) -> bool:
    """Whether every word of `value` is one the shopper wrote (a model may reorder, not invent).
    Chinese has no spaces, so a non-ASCII piece must appear as it is."""
    tokens = _TOKEN.findall(value.lower())
    written = said.lower()
    words_said = set(_TOKEN.findall(written))
    return bool(tokens) and all(t in words_said or (not t.isascii() and t in written) for t in tokens)


def _state_pattern() -> str:
    from commerce.addresses import US_STATES

    names = sorted(US_STATES.values(), key=len, reverse=True)
    return "|".join(re.escape(n) for n in names)


# "445 Maple Drive, Suite 394, Fort Worth, TX 76165": number and street, an optional unit, the city,
# the state (code or name), and a zip kept loose here so that a wrong one is named, not ignored.
_ADDRESS = re.compile(
    r"(?<![A-Za-z0-9#])(?P<street>\d{1,6}[A-Za-z]?\s+[A-Za-z0-9][A-Za-z0-9.'\- ]{1,60}?)\s*,\s*"
    r"(?:(?P<unit>(?:apt|apartment|suite|ste|unit|floor|fl|room|rm|#)\.?\s*#?\s*[A-Za-z0-9-]+)\s*,\s*)?"
    r"(?P<city>[A-Za-z][A-Za-z.'\- ]{1,40}?)\s*,?\s+"
    rf"(?P<state>{_state_pattern()}|[A-Za-z]{{2}})\.?\s*,?\s*"
    r"(?P<zip>\d[\d-]{2,9})(?![0-9])",
    re.IGNORECASE,
)


def addresses(text: str) -> list[dict[str, str]]:
    """US street addresses written in one line, as {street, address2, city, state, zip} (unvalidated)."""
    return [
        {
            "street": m["street"].strip(),
            "address2": (m["unit"] or "").strip(),
            "city": m["city"].strip(),
            "state": m["state"].strip(),
            "zip": m["zip"].strip("-"),
        }
        for m in _ADDRESS.finditer(text)
    ]
