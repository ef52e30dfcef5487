"""Which sequence sits at (step, slot): a pure function of the plan and the seed.

Design
- Counts are exact, not sampled: batch `step` holds `plan.target_count_at(step)` target sequences
  and the rest generic (see schedule._cumulative_count for the rounding).
- The slots a batch's target sequences occupy are a seeded shuffle of the batch, so sources are
  interleaved inside each batch (the paper shuffles inside each block).
- Target sequences are consumed in one fixed seeded order that repeats every epoch (the paper
  cycles the target subset in the same order); the k-th target sequence of the run is
  `target_order[k % T]`.
- Generic sequences follow a seeded order that does not repeat until every one has been used;
  each further pass gets a fresh order.

Because the k-th sequence of each source is a closed-form function of k, and the number of
sequences of each source before a step is closed-form too, any step can be produced without
replaying the ones before it: resuming needs only the step, and data-parallel ranks can take
disjoint slots of the same global batch (`slots=range(rank, B, world_size)`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .schedule import Plan

TARGET, GENERIC = "target", "generic"

# Stream ids keep the target order, generic orders and in-batch shuffles independent of each other.
_TARGET_STREAM, _GENERIC_STREAM, _SLOT_STREAM = 1, 2, 3


@dataclass(frozen=True)
class Slot:
    source: str  # TARGET or GENERIC
    index: int  # row in that source's packed training split


class Mixture:
    def __init__(self, plan: Plan):
        self.plan = plan
        seed = plan.seed
        T = plan.target_sequences
        self._target_order = np.random.default_rng([seed, _TARGET_STREAM]).permutation(T)

        @lru_cache(maxsize=4)
        def generic_order(epoch: int) -> np.ndarray:
            rng = np.random.default_rng([seed, _GENERIC_STREAM, epoch])
            return rng.permutation(plan.generic_sequences)

        self._generic_order = generic_order

    def target_index(self, k: int) -> int:
        """Row of the k-th target sequence of the run (0-based)."""
        return int(self._target_order[k % len(self._target_order)])

    def generic_index(self, k: int) -> int:
        """Row of the k-th generic sequence of the run (0-based)."""
        G = self.plan.generic_sequences
        return int(self._generic_order(k // G)[k % G])

    def is_target(self, step: int) -> np.ndarray:
        """Boolean mask over the batch's slots: True where a target sequence sits."""
        B, n_target = self.plan.batch_size, self.plan.target_count_at(step)
        mask = np.zeros(B, dtype=bool)
        if n_target:
            shuffle = np.random.default_rng([self.plan.seed, _SLOT_STREAM, step]).permutation(B)
            mask[shuffle[:n_target]] = True
        return mask

    def batch(self, step: int, slots: Iterable[int] | None = None) -> list[Slot]:
        """The sequences of batch `step`, in slot order (optionally only the given slots)."""
        B = self.plan.batch_size
        mask = self.is_target(step)
        target_before = self.plan.target_count_before(step)
        generic_before = step * B - target_before
        # rank of each slot among the slots of its source within this batch
        target_rank = np.cumsum(mask) - 1
        generic_rank = np.cumsum(~mask) - 1
        chosen = range(B) if slots is None else slots
        out = []
        for slot in chosen:
            if mask[slot]:
                out.append(Slot(TARGET, self.target_index(target_before + int(target_rank[slot]))))
            else:
                out.append(
                    Slot(GENERIC, self.generic_index(generic_before + int(generic_rank[slot])))
                )
        return out
