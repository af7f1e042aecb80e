"""Batches that keep the pairs of one prompt together.

InstructGPT (Ouyang et al. 2022, sec. 3.5) trains its reward model on all K(K-1)/2
comparisons of a prompt in one batch element: shuffled into different batches, each
completion would be seen K-1 times per epoch in separate updates, and the model overfits
after one epoch. ``GroupedPairSampler`` gives the same effect with ordinary batches.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator, Sequence

from torch.utils.data import Sampler


class GroupedPairSampler(Sampler[int]):
    """Pair indices ordered so that each group's pairs share a batch when possible.

    ``groups[i]`` is the group (source prompt) of pair ``i``, e.g. ``pairs["group"]``
    from ``to_preference_pairs``. Use it with the same ``batch_size``:
    ``DataLoader(pairs, batch_size=batch_size, sampler=GroupedPairSampler(pairs["group"], batch_size))``.

    Batching rule, per epoch (``random.Random(seed + epoch)``; call ``set_epoch``):
    1. Shuffle the groups, and the pairs inside each group.
    2. Fill batches of exactly ``batch_size`` pairs. The next group goes in whole if it
       fits; otherwise the first group among the next ``lookahead`` that fits goes in;
       if none fits, the next group is split: the pairs that fit close this batch and
       the rest start the next one.
    So every batch but the last has exactly ``batch_size`` pairs (the DataLoader's own
    chunking lines up with these batches), a group of at most ``batch_size`` pairs is
    split only when no group in the lookahead fits the space left, and a larger group
    fills consecutive batches. Not distributed-aware: shard its output per rank yourself.
    """

    def __init__(self, groups: Sequence[Hashable], batch_size: int, seed: int = 0, lookahead: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        members: dict[Hashable, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        self._groups = list(members.values())  # first-appearance order, so seeds are reproducible
        self.batch_size, self.seed, self.lookahead, self.epoch = batch_size, seed, max(1, lookahead), 0
        self._length = sum(len(g) for g in self._groups)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently for each epoch (same seed + epoch -> same order)."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches as lists of pair indices (``__iter__`` yields them flattened)."""
        rng = random.Random(self.seed + self.epoch)
        order = [rng.sample(group, len(group)) for group in rng.sample(self._groups, len(self._groups))]
        upcoming = iter(order)
        window: list[list[int]] = []  # the next `lookahead` groups still to place
        batches, current = [], []
        while True:
            window.extend(g for _, g in zip(range(self.lookahead - len(window)), upcoming))
            if not window:
                break
            space = self.batch_size - len(current)
            fits = next((k for k, g in enumerate(window) if len(g) <= space), None)
            if fits is not None:
                current += window.pop(fits)
            else:  # split the next group across this batch and the next
                current += window[0][:space]
                window[0] = window[0][space:]
            if len(current) == self.batch_size:
                batches.append(current)
                current = []
        if current:
            batches.append(current)
        return batches

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return self._length
