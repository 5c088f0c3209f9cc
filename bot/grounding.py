"""Checks every concrete fact in a draft reply against the turn's sources.

A fact is anything a shopper could act on: order ids, long numbers (tracking, phone), prices, dates,
emails, links, order statuses. Each must appear in the sources (tool results, store documents, the
shopper's own words); otherwise the draft is not shown and a reply built from the sources replaces it.
"""

import re
from dataclasses import dataclass, field

_FACT_PATTERNS = [
    re.compile(r"#?W\d{7}"),
    re.compile(r"\$\s?\d[\d,]*(?:\.\d{1,2})?"),
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
    re.compile(r"(?<![\d.])\d[\d\- ]{2,}\d(?![\d.])"),
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    re.compile(r"https?://\S+|www\.\S+"),
    re.compile(r"\b(?:pending|processed|delivered|cancelled|canceled|shipped|refunded)\b", re.IGNORECASE),
]


@dataclass
class GroundingResult:
    ok: bool
    facts: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # required facts the draft does not state


def _normalize(text: str) -> str:
    return re.sub(r"[\s,$#-]", "", text.lower())


def extract_facts(text: str) -> list[str]:
    found: list[str] = []
    for pattern in _FACT_PATTERNS:
        found.extend(m.group(0).strip() for m in pattern.finditer(text))
    return list(dict.fromkeys(f for f in found if f))


def check(draft: str, sources: list[str], required: list[str] | None = None) -> GroundingResult:
    """Every fact in the draft must be in the sources, and every required fact in the draft."""
    haystack = _normalize("\n".join(sources))
    facts = extract_facts(draft)
    unsupported = [f for f in facts if _normalize(f) not in haystack]
    said = _normalize(draft)
    missing = [r for r in required or [] if _normalize(r) not in said]
    return GroundingResult(
        ok=not unsupported and not missing, facts=facts, unsupported=unsupported, missing=missing
    )
