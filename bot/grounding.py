"""Checks every concrete fact in a reply against the turn's sources.

A fact is anything a shopper could act on: order ids, item and tracking numbers, prices, amounts with
units, dates, emails, phone numbers, links, order statuses. Each must appear in the sources (tool
results, cited passages, the shopper's own words). Facts are compared by value, not by spelling:
"$54.30" matches "54.3 USD", "Nov 3, 2026" matches "2026-11-03", "W2611340" matches "#W2611340", and
a phone number matches whatever its digits were written with. English and Chinese text alike.
"""

import re
from dataclasses import dataclass, field
from datetime import date

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for m in names
}
_MONTH = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_NOT_ALNUM_BEFORE = r"(?<![A-Za-z0-9])"
_NOT_DIGIT_AFTER = r"(?![0-9])"

# Order matters: each match is blanked out before the next pattern runs, so the digits of an id or a
# date are not checked a second time as plain numbers.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("url", re.compile(r"https?://[^\s)>\]]+|www\.[^\s)>\]]+", re.IGNORECASE)),
    ("order_id", re.compile(_NOT_ALNUM_BEFORE + r"#?[Ww]\s?(?P<digits>\d{7})" + _NOT_DIGIT_AFTER)),
    ("date", re.compile(r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})" + _NOT_DIGIT_AFTER)),
    ("date", re.compile(r"(?P<y>\d{4})\s?年\s?(?P<m>\d{1,2})\s?月\s?(?P<d>\d{1,2})\s?[日号]")),
    ("date", re.compile(r"(?P<m>\d{1,2})\s?月\s?(?P<d>\d{1,2})\s?[日号]")),
    (
        "date",
        re.compile(
            _NOT_ALNUM_BEFORE + r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4}|\d{2})" + _NOT_DIGIT_AFTER
        ),
    ),
    (
        "date",
        re.compile(
            _NOT_ALNUM_BEFORE
            + _MONTH
            + r"\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<y>\d{4}))?"
            + _NOT_DIGIT_AFTER,
            re.IGNORECASE,
        ),
    ),
    (
        "date",
        re.compile(
            _NOT_ALNUM_BEFORE
            + r"(?P<d>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?"
            + _MONTH
            + r"(?:,?\s+(?P<y>\d{4}))?",
            re.IGNORECASE,
        ),
    ),
    (
        "phone",
        re.compile(
            _NOT_ALNUM_BEFORE + r"(?:\+?\d{1,3}[\s.-])?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}" + _NOT_DIGIT_AFTER
        ),
    ),
    # Long numbers written in groups: "357 962 501 027", "1234-5678-9012".
    ("number", re.compile(_NOT_ALNUM_BEFORE + r"\d{2,4}(?:[ -]\d{2,4}){2,}" + _NOT_DIGIT_AFTER)),
    ("number", re.compile(r"(?<![A-Za-z0-9.,])[$€£¥]?\s?\d(?:[\d,]*\d)?(?:\.\d+)?(?:\s?%)?")),
    (
        "status",
        re.compile(r"\b(?:pending|processed|delivered|cancell?ed|shipped|refunded)\b", re.IGNORECASE),
    ),
]
# "1. Open the order  2. Choose the items": step numbers, not facts.
_LIST_MARKER = re.compile(r"(?:^|(?<=\s))\d{1,2}[.)]\s+(?=[A-Z*])", re.MULTILINE)
_DIGIT_RUN = re.compile(r"\d[\d\s().-]*\d")


@dataclass(frozen=True)
class Fact:
    kind: str  # email | url | order_id | date | phone | number | status
    text: str  # as written
    key: str  # the value compared with the sources


@dataclass
class GroundingResult:
    ok: bool
    facts: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # required facts the reply does not state


def _number_key(text: str) -> str:
    digits = re.sub(r"[^\d.]", "", text)
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".")
    return digits.lstrip("0") or "0"


def _date_key(match: re.Match[str]) -> str | None:
    parts = match.groupdict()
    month = _MONTHS.get(parts["mon"].lower().rstrip(".")) if parts.get("mon") else int(parts["m"])
    day = int(parts["d"])
    year = parts.get("y")
    try:
        if year:
            full = int(year) + (2000 if len(year) == 2 else 0)
            return date(full, month or 0, day).isoformat()
        date(2000, month or 0, day)  # a real month and day (2000 is a leap year)
    except ValueError:
        return None
    return f"{month:02d}-{day:02d}"


def _key(kind: str, match: re.Match[str]) -> str | None:
    text = match.group(0)
    if kind == "email":
        return text.strip(".").lower()
    if kind == "url":
        return text.rstrip(".,;:!?").lower()
    if kind == "order_id":
        return "W" + match.group("digits")
    if kind == "date":
        return _date_key(match)
    if kind == "phone":
        return re.sub(r"\D", "", text)[-10:]
    if kind == "number":
        return _number_key(text)
    return text.lower().replace("canceled", "cancelled")


def extract_facts(text: str) -> list[Fact]:
    """The checkable facts of a text, each once, in the order of the patterns."""
    masked = _LIST_MARKER.sub(lambda m: " " * len(m.group(0)), text)
    facts: list[Fact] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(masked):
            key = _key(kind, match)
            if key is None:
                continue
            facts.append(Fact(kind, match.group(0).strip(), key))
        masked = pattern.sub(lambda m: " " * len(m.group(0)), masked)
    return list(dict.fromkeys(facts))


class Sources:
    """Everything a reply may state this turn, indexed by value."""

    def __init__(self, texts: list[str]):
        joined = "\n".join(t for t in texts if t)
        self.keys: set[tuple[str, str]] = set()
        for fact in extract_facts(joined):
            kind = "number" if fact.kind == "phone" else fact.kind
            self.keys.add((kind, fact.key))
        # Long digit strings however they were written (tracking and phone numbers, item ids), and
        # bare 7-digit order numbers ("order 2611340" makes "#W2611340" a fact the shopper gave).
        self.digit_runs = {re.sub(r"\D", "", run) for run in _DIGIT_RUN.findall(joined)}
        for run in re.findall(r"(?<![0-9])\d{7}(?![0-9])", joined):
            self.keys.add(("order_id", "W" + run))
        month_days = {k[5:] for kind, k in self.keys if kind == "date" and len(k) == 10}
        self.keys |= {("date", md) for md in month_days}

    def supports(self, fact: Fact) -> bool:
        if fact.kind in ("number", "phone"):
            if ("number", fact.key) in self.keys:
                return True
            digits = re.sub(r"\D", "", fact.text)
            return len(digits) >= 5 and any(digits in run for run in self.digit_runs)
        return (fact.kind, fact.key) in self.keys


def check(draft: str, sources: list[str], required: list[str] | None = None) -> GroundingResult:
    """Every fact in the draft must be supported by the sources, and every required fact be stated."""
    index = Sources(sources)
    facts = extract_facts(draft)
    unsupported = [f.text for f in facts if not index.supports(f)]
    said = Sources([draft])
    missing = [r for r in required or [] if not all(said.supports(f) for f in extract_facts(r))]
    return GroundingResult(
        ok=not unsupported and not missing,
        facts=[f.text for f in facts],
        unsupported=unsupported,
        missing=missing,
    )
