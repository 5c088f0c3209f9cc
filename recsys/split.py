"""Train/test splits of an interactions table: random, time and last-basket.

- `random`: per user, 20 % of the user's distinct items (all their rows) go to the test part, drawn
  with a seeded generator; users with a single item stay in training. Pairs never straddle the split.
- `time`: one global cutoff: the newest 20 % of rows (rows sharing the cutoff timestamp stay together
  on the training side) are the test part.
- `last-basket`: every row at a user's greatest timestamp is that user's test basket, for users who
  also have earlier rows (the others stay in training).

`exclude_seen`: whether rankings should skip the items a user already has in training. Always for
`random` (its test items are new to the user by construction); for `time` and `last-basket` only when
no (user, item) pair repeats in the data: where people buy the same thing again, repeats are real
targets and hiding them would hide what buy-again is for.

Hyper-parameters and hybrid weights are chosen on a validation split carved the same way from the
training part only (`split(train_part, kind)`), never from the test part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data import Interactions

SPLITS = ("random", "time", "last-basket")
TEST_FRACTION = 0.2


class SplitError(ValueError):
    """The data cannot be split this way (e.g. one timestamp for every row)."""


@dataclass
class Split:
    train: np.ndarray  # row indices into the interactions
    test: np.ndarray
    kind: str
    exclude_seen: bool


def _codes(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def has_repeats(inter: Interactions) -> bool:
    """Does any (user, item) pair occur in more than one row?"""
    u, i = _codes(inter.users), _codes(inter.items)
    pair = u.astype(np.int64) * (int(i.max()) + 1 if len(i) else 1) + i
    return len(np.unique(pair)) < len(pair)


def split(inter: Interactions, kind: str, seed: int = 0, fraction: float = TEST_FRACTION) -> Split:
    if kind not in SPLITS:
        raise SplitError(f"unknown split {kind!r}: choose one of {', '.join(SPLITS)}")
    if len(inter) == 0:
        raise SplitError("no interactions to split")
    if kind == "random":
        test_mask = _random_mask(inter, seed, fraction)
        exclude = True
    elif kind == "time":
        test_mask = _time_mask(inter, fraction)
        exclude = not has_repeats(inter)
    else:
        test_mask = _last_basket_mask(inter)
        exclude = not has_repeats(inter)
    if not test_mask.any():
        raise SplitError(f"the {kind} split leaves nothing to test on (too few rows per user?)")
    if test_mask.all():
        raise SplitError(f"the {kind} split leaves nothing to train on")
    rows = np.arange(len(inter))
    return Split(rows[~test_mask], rows[test_mask], kind, exclude)


def _random_mask(inter: Interactions, seed: int, fraction: float) -> np.ndarray:
    u, i = _codes(inter.users), _codes(inter.items)
    pair_key = u.astype(np.int64) * (int(i.max()) + 1) + i
    pairs, pair_of_row = np.unique(pair_key, return_inverse=True)
    pair_user = (pairs // (int(i.max()) + 1)).astype(np.int64)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(pairs)), pair_user))  # shuffled within each user
    sorted_users = pair_user[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(order)])
    n_test = np.where(counts >= 2, np.maximum(1, np.floor(fraction * counts + 0.5)), 0).astype(np.int64)
    position = np.arange(len(order)) - np.repeat(starts, counts)
    held = np.zeros(len(pairs), bool)
    held[order] = position < np.repeat(n_test, counts)
    return held[pair_of_row.reshape(-1)]


def _time_mask(inter: Interactions, fraction: float) -> np.ndarray:
    ts = np.sort(inter.timestamps)
    cut_pos = int(np.ceil((1.0 - fraction) * len(ts))) - 1
    cutoff = ts[min(max(cut_pos, 0), len(ts) - 1)]
    mask = inter.timestamps > cutoff
    if not mask.any():
        raise SplitError("the time split needs more than one distinct timestamp in the newest rows")
    return mask


def _last_basket_mask(inter: Interactions) -> np.ndarray:
    u = _codes(inter.users)
    newest = np.full(int(u.max()) + 1, -np.inf)
    oldest = np.full(int(u.max()) + 1, np.inf)
    np.maximum.at(newest, u, inter.timestamps)
    np.minimum.at(oldest, u, inter.timestamps)
    has_earlier = oldest < newest
    return (inter.timestamps == newest[u]) & has_earlier[u]
