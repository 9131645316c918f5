"""The channel map of a widening (docs/design.md §1, §2).

Widening a channel axis from ``n`` to ``q`` chooses ``g: {0..q-1} -> {0..n-1}`` with
``g(j) = j`` for ``j < n``. New units ``j >= n`` are drawn in seeded, balanced random
rounds: each round is a permutation of the old units, so replica counts differ by at
most one and are all equal when ``q`` is a multiple of ``n`` (what LayerNormalization
over the axis needs to stay exact).

Every new position ``j`` also gets a *share* ``coef[j]``: the factor a contracting
layer applies to the input row it reads. The shares of the copies of one old unit sum
to 1, so the copies together contribute exactly what the unit did:

- ``net2wider``: ``coef = 1 / cnt[g(j)]`` (Net2Net's even split);
- ``net2wider`` with ``noise = S``: unequal shares ``1/cnt + S·N(0,1)``, re-centred to
  sum to 1 per unit: still exact, but the copies receive different gradients;
- ``zero-pad``: new units are *fresh* (random incoming weights) with share 0: exact;
- ``random-pad``: new units fresh, outgoing weights random: not function-preserving.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Init(str, Enum):
    """How the new units are initialised."""

    NET2WIDER = "net2wider"
    ZERO_PAD = "zero-pad"
    RANDOM_PAD = "random-pad"

    @property
    def exact(self) -> bool:
        """Whether the grown model computes exactly what the original did."""
        return self is not Init.RANDOM_PAD


@dataclass(frozen=True)
class ChannelMap:
    """``src[j] = g(j)``, shares ``coef[j]``, and ``fresh[j]`` for units not copied."""

    n: int
    q: int
    src: np.ndarray
    coef: np.ndarray
    fresh: np.ndarray
    init: Init

    @property
    def counts(self) -> np.ndarray:
        """Replica count of every old unit (fresh units not counted)."""
        return np.bincount(self.src[~self.fresh], minlength=self.n)

    @property
    def uniform(self) -> bool:
        """True when every old unit has the same number of copies and none is fresh."""
        return not self.fresh.any() and bool(np.all(self.counts == self.counts[0]))


def balanced_draw(n: int, extra: int, rng: np.random.Generator) -> np.ndarray:
    """``extra`` old-unit indices drawn in rounds of random permutations of ``range(n)``."""
    rounds = -(-extra // n) if extra else 0
    if rounds == 0:
        return np.zeros(0, dtype=np.int64)
    draws = np.concatenate([rng.permutation(n) for _ in range(rounds)])
    return draws[:extra].astype(np.int64)


def build_channel_map(
    n: int, q: int, init: Init = Init.NET2WIDER, noise: float = 0.0, seed: int = 0
) -> ChannelMap:
    """The seeded map widening ``n`` units to ``q``."""
    if q < n:
        raise ValueError(f"cannot widen {n} units to {q}")
    rng = np.random.default_rng(seed)
    extra = balanced_draw(n, q - n, rng)
    src = np.concatenate([np.arange(n, dtype=np.int64), extra])
    fresh = np.zeros(q, dtype=bool)
    if init is Init.NET2WIDER:
        counts = np.bincount(src, minlength=n).astype(np.float64)
        coef = 1.0 / counts[src]
        if noise > 0:
            coef = coef + noise * rng.standard_normal(q)
            excess = np.bincount(src, weights=coef, minlength=n) - 1.0
            coef = coef - excess[src] / counts[src]
    else:
        fresh[n:] = True
        coef = np.where(fresh, 0.0, 1.0)
    return ChannelMap(n, q, src, coef, fresh, init)
