"""A sentiment score per shopper message: strongly negative messages ask for a person (bot/handoff.py).

VADER (a lexicon and rules tuned on social-media text) reads English, including caps, "!!!" and
negations; it knows no Chinese, so a short lexicon of strong Chinese complaints adds to it.
Compound scores run from -1 (furious) to 1 (delighted).
"""

import re
from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# Strong complaints in Chinese and how negative each is on VADER's compound scale.
_ZH_NEGATIVE = {
    "太差": -0.6,
    "差劲": -0.6,
    "垃圾": -0.7,
    "气死": -0.8,
    "愤怒": -0.7,
    "生气": -0.5,
    "投诉": -0.5,
    "骗子": -0.8,
    "欺骗": -0.7,
    "退钱": -0.4,
    "受够了": -0.7,
    "恶心": -0.7,
    "失望": -0.5,
    "太慢": -0.4,
}
_CJK = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=1)
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def score(text: str) -> float:
    """The message's compound sentiment in [-1, 1], rounded to 3 places."""
    value = _analyzer().polarity_scores(text[:2000])["compound"]
    if _CJK.search(text):
        hits = [v for word, v in _ZH_NEGATIVE.items() if word in text]
        if hits:
            value = min(value, min(hits) - 0.1 * (len(hits) - 1))
            if "!" in text or "！" in text:
                value -= 0.1
    return round(max(-1.0, min(1.0, value)), 3)
