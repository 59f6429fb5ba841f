"""Every random stream of a run is derived from the run's seed and what it is for, so any of them can be
recreated in isolation (after a resume, or in a test) without replaying the others."""

from __future__ import annotations

import numpy as np

# What a derived seed is for: the second number of `derive_seed(seed, purpose, ...)`.
TRAINING = 0  # (seed, TRAINING, round): dropout and other in-model randomness
DATA_ORDER = 1  # (seed, DATA_ORDER, round, epoch): the order of the training examples
RANDOM_PRUNING = 2  # (seed, RANDOM_PRUNING, round): scores of the random-pruning control
REINIT = 3  # (seed, REINIT, round): fresh initialisation of the random re-initialisation control
SHUFFLE = 4  # (seed, SHUFFLE, round): the permutation of the shuffle_layer mask control
SUBSET = 5  # (seed, SUBSET): which training examples `dataset.subset` keeps
AUGMENT = 6  # (seed, AUGMENT, round, step): the crops and flips of one training batch
LMC = 7  # (seed, LMC, round): the SGD noise of the second copy in `lth analyze lmc`
GROWTH = 8  # (seed, GROWTH, round, step): where SET regrows weights at the mask update after `step`
TRAIN_SAMPLE = 9  # (seed, TRAIN_SAMPLE): the training examples each evaluation measures training accuracy on


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers such as (seed, DATA_ORDER, round, epoch)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
