"""gradcheck.probe on random token streams: any shift is found, and correct data always passes.

The streams come from numpy with a drawn seed (uniform ids, vocab >= 20), so that Hypothesis
explores sizes, vocabularies, shifts and masking rather than hand-picked degenerate ids.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck import probe
from gradcheck._alignment import SHIFTS

FEW = settings(max_examples=40, deadline=None)


def stream(seed: int, rows: int, seq: int, vocab: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """inputs [rows, seq] and targets with targets[b, i] == inputs[b, i + k] wherever in range."""
    tokens = np.random.default_rng(seed).integers(0, vocab, size=(rows, seq + 5))
    return tokens[:, 2 : 2 + seq], tokens[:, 2 + k : 2 + k + seq]


sizes = {
    "seed": st.integers(0, 2**32 - 1),
    "rows": st.integers(1, 4),
    "seq": st.integers(110, 300),  # >= MIN_COMPARABLE comparable positions even for one row
    "vocab": st.integers(20, 5000),
}


@FEW
@given(k=st.sampled_from(SHIFTS), **sizes)
def test_a_shift_by_k_is_found_as_k(seed: int, rows: int, seq: int, vocab: int, k: int) -> None:
    inputs, targets = stream(seed, rows, seq, vocab, k)
    report = probe.check_alignment(inputs, targets, vocab=vocab)
    assert report.best_shift == k, str(report)
    assert report.match[k] == 1.0
    assert report.verdict == ("pass" if k == 1 else "data-misalignment"), str(report)
    if k != 1:
        assert f"targets are the inputs shifted by {k}, not 1" in str(report)


@FEW
@given(
    ignored=st.floats(0.0, 0.4),
    padded=st.integers(0, 40),
    **sizes,
)
def test_a_correct_shift_1_stream_always_passes(
    seed: int, rows: int, seq: int, vocab: int, ignored: float, padded: int
) -> None:
    inputs, targets = stream(seed, rows, seq, vocab, 1)
    targets = targets.copy()
    rng = np.random.default_rng(seed + 1)
    targets[rng.random(targets.shape) < ignored] = -100  # e.g. masked prompt tokens
    mask = np.ones_like(inputs)
    mask[:, seq - padded :] = 0  # right padding, its labels ignored as a collator does
    targets[mask == 0] = -100
    report = probe.check_alignment(inputs, targets, mask=mask, vocab=vocab)
    if report.comparable >= 100:
        assert report.verdict == "pass", str(report)
    else:
        assert report.verdict == "inconclusive", str(report)


@FEW
@given(k=st.sampled_from(SHIFTS), **sizes)
def test_the_expected_shift_passes_whatever_it_is(
    seed: int, rows: int, seq: int, vocab: int, k: int
) -> None:
    inputs, targets = stream(seed, rows, seq, vocab, k)
    report = probe.check_alignment(inputs, targets, vocab=vocab, expected_shift=k)
    assert report.verdict == "pass", str(report)
