"""The tracker's assignment as a plain numpy function, against brute force. (OKS and IoU: tests/stream/test_similarity.py.)"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from posestream.plugins.trackers.association import assign


def brute_force(similarity, gate):
    """Best matching by enumeration: the largest total margin over the gate."""
    n, m = similarity.shape
    best_total, best_count = 0.0, 0
    for cols in itertools.permutations(range(m), n):
        pairs = [(r, c) for r, c in enumerate(cols) if similarity[r, c] >= gate]
        total = sum(similarity[r, c] - gate for r, c in pairs)
        if total > best_total:
            best_total, best_count = total, len(pairs)
    return best_total, best_count


@pytest.mark.parametrize("seed", range(8))
def test_assign_is_optimal_and_gated(seed):
    rng = np.random.default_rng(seed)
    similarity = rng.uniform(0, 1, (4, 6))
    rows, cols = assign(similarity, 0.4)
    assert np.all(similarity[rows, cols] >= 0.4)
    assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    total, count = brute_force(similarity, 0.4)
    assert (similarity[rows, cols] - 0.4).sum() == pytest.approx(total)
    assert len(rows) == count


def test_assign_prefers_the_global_optimum_over_greedy():
    # Greedy would take (0, 0) = 0.9 and leave row 1 with 0.1 (below the gate); the optimum is the
    # two pairs (0, 1) and (1, 0).
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])
    rows, cols = assign(similarity, 0.5)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]


def test_assign_keeps_one_sure_match_over_two_doubtful_ones():
    # Row 0 is surely column 0; matching it to column 1 (just above the gate) would let row 1 take
    # column 0 at 0.35 - two pairs, but a far worse explanation.
    similarity = np.array([[0.9, 0.31], [0.35, 0.0]])
    rows, cols = assign(similarity, 0.3)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0)]


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_assign_empty(shape):
    rows, cols = assign(np.zeros(shape), 0.5)
    assert rows.size == 0 and cols.size == 0
