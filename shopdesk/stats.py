"""Confidence intervals for the admin's numbers: small samples are the norm, so no bare percentages.

Rates use the Wilson score interval (sane at 0 %, 100 % and n = 5, where the normal one is not);
the difference of two rates uses Newcombe's hybrid score interval built from the two Wilson ones;
means use Student's t (Welch for a difference), with a percentile bootstrap available for skewed data.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats as _stats

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float | None  # None: no data
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def wilson(successes: int, n: int, z: float = Z95) -> Estimate:
    if n <= 0:
        return Estimate(None, None, None, 0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def rate_difference(a: Estimate, b: Estimate) -> Estimate:
    """B minus A with Newcombe's interval (method 10): no continuity correction."""
    if a.value is None or b.value is None:
        return Estimate(None, None, None, 0)
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    d = b.value - a.value
    low = d - math.sqrt((b.value - b.low) ** 2 + (a.high - a.value) ** 2)
    high = d + math.sqrt((b.high - b.value) ** 2 + (a.value - a.low) ** 2)
    return Estimate(d, low, high, a.n + b.n)


def mean_t(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    n = len(values)
    if n == 0:
        return Estimate(None, None, None, 0)
    m = sum(values) / n
    if n == 1:
        return Estimate(m, None, None, 1)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = float(_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(m, m - half, m + half, n)


def mean_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Estimate:
    """mean(b) - mean(a), Welch's t interval (unequal variances)."""
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return Estimate(None, None, None, na + nb)
    ma, mb = sum(a) / na, sum(b) / nb
    if na < 2 or nb < 2:
        return Estimate(mb - ma, None, None, na + nb)
    va = sum((v - ma) ** 2 for v in a) / (na - 1) / na
    vb = sum((v - mb) ** 2 for v in b) / (nb - 1) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Estimate(mb - ma, mb - ma, mb - ma, na + nb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = float(_stats.t.ppf((1 + confidence) / 2, df)) * se
    return Estimate(mb - ma, mb - ma - half, mb - ma + half, na + nb)


def bootstrap_mean(
    values: Sequence[float], rounds: int = 2000, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """Percentile bootstrap of the mean (deterministic seed: a report does not change on reload)."""
    n = len(values)
    if n == 0:
        return Estimate(None, None, None, 0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(rounds))
    lo = means[int((1 - confidence) / 2 * rounds)]
    hi = means[min(rounds - 1, int((1 + confidence) / 2 * rounds))]
    return Estimate(sum(values) / n, lo, hi, n)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
