"""gradcheck.probe: the data-alignment probe, its loader wrapper and the probe-data command."""

from __future__ import annotations

import argparse
import doctest
import io
import json
import time
from collections import namedtuple
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from rich.console import Console

import gradcheck.probe
from gradcheck import probe
from gradcheck._alignment import run_probe_data
from gradcheck._errors import DataMisalignment, GradcheckError, Inconclusive, UsageError
from gradcheck._subcommands import add_probe_data_parser

VOCAB = 1000
EOS = 0  # also the padding id in the pad == eos cases


def natural(rows: int = 8, seq: int = 257, seed: int = 0) -> np.ndarray:
    """Zipf-distributed ids in [1, VOCAB) with 15% immediate repeats, like text: shift 0 fits ~0.2."""
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.3, size=(rows, seq)), VOCAB - 1)
    repeat = rng.random((rows, seq)) < 0.15
    ids[:, 1:][repeat[:, 1:]] = ids[:, :-1][repeat[:, 1:]]
    return ids


def causal(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return tokens[..., :-1], tokens[..., 1:]


# --------------------------------------------------------------------------------------------
# check_alignment


def test_healthy_batch_passes_although_repeats_make_shift_0_match() -> None:
    inputs, targets = causal(natural())
    report = probe.check_alignment(inputs, targets, vocab=VOCAB)
    assert report.verdict == "pass"
    assert report.best_shift == 1 and report.match[1] == 1.0
    assert report.match[0] > 0.1  # the repeats are there: a copy test would see them
    text = str(report)
    assert text.startswith(
        "pass: targets are the inputs shifted by 1, as expected (8 x 256 tokens, 2,048 valid)"
    )
    assert "*[1] 1.00" in text
    assert "0 outside [0, 1,000)" in text
    assert report.findings == () and report.likely_cause == ""
    report.raise_for_verdict()


@pytest.mark.parametrize(
    ("case", "best", "headline", "cause"),
    [
        (
            "copy",
            0,
            "targets are the inputs shifted by 0, not 1",
            "a copy task: targets are the inputs themselves",
        ),
        (
            "double",
            2,
            "targets are the inputs shifted by 2, not 1",
            "labels shifted twice (pre-shifted labels for a model that shifts inside)",
        ),
        (
            "swapped",
            -1,
            "targets are the inputs shifted by -1, not 1",
            "targets lag the inputs",
        ),
        (
            "unrelated",
            None,
            "targets match the inputs at no shift from -2 to 3",
            "targets unrelated to the inputs",
        ),
    ],
)
def test_misaligned_batches_name_the_shift_and_the_cause(
    case: str, best: int | None, headline: str, cause: str
) -> None:
    tokens = natural(seq=258)
    inputs = tokens[:, :256]
    targets = {
        "copy": tokens[:, :256],
        "double": tokens[:, 2:258],
        "swapped": tokens[:, :256],
        "unrelated": natural(seq=256, seed=1),
    }[case]
    if case == "swapped":
        inputs = tokens[:, 1:257]
    report = probe.check_alignment(inputs, targets, vocab=VOCAB)
    assert report.verdict == "data-misalignment"
    assert report.best_shift == best
    if best is not None:
        assert report.match[best] == 1.0
    text = str(report)
    assert text.startswith(f"data-misalignment: {headline}")
    assert "(8 x 256 tokens, 2,048 valid)" in text.splitlines()[0]
    assert f"likely cause: {cause}" in text
    assert text.rstrip().endswith("DIAGNOSTIC_GUIDE.md#data-misalignment")
    with pytest.raises(DataMisalignment) as exc:
        report.raise_for_verdict()
    assert isinstance(exc.value, AssertionError)
    assert exc.value.report is report
    assert str(exc.value) == text


def test_unrelated_stream_reports_chance_level() -> None:
    inputs = natural(seq=256)
    report = probe.check_alignment(inputs, natural(seq=256, seed=1))
    assert 0.0 < report.chance_match < 0.2
    assert max(report.match.values()) < 0.3
    assert f"chance {report.chance_match:.2f}" in str(report)


def test_hugging_face_labels_pass_with_expected_shift_0() -> None:
    ids = natural(seq=256)
    report = probe.check_alignment(ids, ids.copy(), expected_shift=0)
    assert report.verdict == "pass" and report.best_shift == 0
    assert "*[0] 1.00" in str(report)
    # The same labels under the default expected_shift=1 look like a copy task, with the hint.
    default = probe.check_alignment(ids, ids.copy())
    assert default.verdict == "data-misalignment"
    assert "need expected_shift=0" in default.likely_cause
    # Labels shifted by the user for a model that shifts inside: two tokens ahead.
    inputs, targets = causal(natural())
    pre = probe.check_alignment(inputs, targets, expected_shift=0)
    assert pre.verdict == "data-misalignment" and pre.best_shift == 1
    assert "labels already shifted for a model that shifts inside" in pre.likely_cause


def test_a_few_rows_shifted_differently_are_listed() -> None:
    tokens = natural(seq=258)
    inputs, targets = tokens[:, :256], tokens[:, 1:257].copy()
    targets[[2, 5]] = tokens[[2, 5], 2:258]
    report = probe.check_alignment(inputs, targets)
    assert report.verdict == "data-misalignment"
    assert report.best_shift == 1 and 0.7 < report.match[1] < 0.85  # 6 rows, and repeats
    assert report.misaligned_rows == (2, 5)
    assert f"at only {report.match[1]:.0%} of valid positions (99% needed)" in str(report)
    assert "rows that do not fit: 2 (shift 2), 5 (shift 2)" in str(report)


def test_a_packing_boundary_per_row_still_passes() -> None:
    inputs, targets = causal(natural())
    targets = targets.copy()
    targets[:, 100] = 999_999 % VOCAB  # one relabelled boundary token per row: 1 of 256
    report = probe.check_alignment(inputs, targets, vocab=VOCAB)
    assert report.verdict == "pass", str(report)
    assert 0.99 <= report.match[1] < 1.0


def test_labels_out_of_range_are_counted_and_located() -> None:
    inputs, targets = causal(natural())
    targets = targets.copy()
    targets[1, 3], targets[2, 7], targets[4, 0] = VOCAB, 5000, -1
    report = probe.check_alignment(inputs, targets, vocab=VOCAB)
    assert report.verdict == "data-misalignment"
    assert report.out_of_range == 3
    assert report.out_of_range_at == (((1, 3), 1000), ((2, 7), 5000), ((4, 0), -1))
    text = str(report)
    assert (
        "3 labels outside [0, 1,000) other than ignore_index=-100: [1, 3]=1000, [2, 7]=5000, "
        "[4, 0]=-1"
    ) in text
    assert "whose ignore index is not -100 (e.g. -1)" in text
    # Without vocab only negative labels are out of range; ignore_index itself never is.
    targets[0, 0] = -100
    unknown = probe.check_alignment(inputs, targets)
    assert unknown.out_of_range == 1 and "1 negative label (no vocab= given" in str(unknown)


def test_input_ids_beyond_the_embedding_are_a_finding() -> None:
    inputs, targets = causal(natural())
    inputs = inputs.copy()
    inputs[3, 9] = VOCAB + 5
    report = probe.check_alignment(inputs, targets, vocab=VOCAB)
    assert report.inputs_out_of_range == 1
    assert "1 input ids outside [0, 1,000) on unmasked positions (first at [3, 9])" in str(report)


def test_mostly_ignored_labels_fail_above_max_ignored() -> None:
    inputs, targets = causal(natural())
    targets = targets.copy()
    targets[:, :154] = -100  # a prompt-masking collator: 154 of 256 labels
    report = probe.check_alignment(inputs, targets)
    assert report.verdict == "data-misalignment"
    assert report.ignored_share == pytest.approx(154 / 256)
    assert "60% of labels are ignore_index=-100 (1,232 of 2,048; max_ignored=0.5)" in str(report)
    assert probe.check_alignment(inputs, targets, max_ignored=0.7).verdict == "pass"


def padded_batch(lengths: list[int], seq: int = 256, pad: int = 1) -> dict[str, np.ndarray]:
    """Right-padded rows: doc tokens, then EOS, then pad ids; inputs/targets/mask by position."""
    tokens = np.full((len(lengths), seq + 1), pad)
    body = natural(len(lengths), seq + 1, seed=3)
    body[body <= 1] = 2  # no accidental EOS or pad inside documents
    for r, n in enumerate(lengths):
        tokens[r, :n] = body[r, :n]
        tokens[r, n] = EOS
    inputs, targets = causal(tokens)
    cols = np.arange(seq)
    mask = (cols[None, :] <= np.array(lengths)[:, None]).astype(np.int64)  # docs and their EOS
    return {"inputs": inputs, "targets": targets.copy(), "mask": mask}


LENGTHS = [200, 180, 230, 150]


def test_labels_on_padding_through_the_mask() -> None:
    b = padded_batch(LENGTHS)
    report = probe.check_alignment(b["inputs"], b["targets"], mask=b["mask"], eos_id=EOS)
    n_pad = int((b["mask"] == 0).sum())
    assert report.verdict == "data-misalignment"
    assert report.labels_on_padding == n_pad
    assert f"{n_pad:,} labels on padded positions (mask == 0) are not ignore_index=-100" in str(
        report
    )
    fixed = b["targets"]
    fixed[b["mask"] == 0] = -100
    ok = probe.check_alignment(b["inputs"], fixed, mask=b["mask"], eos_id=EOS)
    assert ok.verdict == "pass", str(ok)
    assert ok.labels_on_padding == 0 and ok.eos_kept == len(LENGTHS)


def test_labels_on_padding_through_pad_id() -> None:
    b = padded_batch(LENGTHS, pad=1)
    report = probe.check_alignment(b["inputs"], b["targets"], pad_id=1)
    assert report.verdict == "data-misalignment"
    assert "labels on padded positions (inputs == pad_id=1)" in str(report)
    fixed = b["targets"]
    fixed[b["inputs"] == 1] = -100
    assert probe.check_alignment(b["inputs"], fixed, pad_id=1).verdict == "pass"


@pytest.mark.parametrize("with_mask", [True, False])
def test_pad_equal_to_eos_with_every_eos_masked_fails(with_mask: bool) -> None:
    b = padded_batch(LENGTHS, pad=EOS)
    mask = b["mask"] if with_mask else None
    # The collator masks every label equal to the pad id, and with pad == eos that is every EOS.
    masked_all = b["targets"].copy()
    masked_all[masked_all == EOS] = -100
    report = probe.check_alignment(b["inputs"], masked_all, mask=mask, pad_id=EOS, eos_id=EOS)
    assert report.verdict == "data-misalignment", str(report)
    assert report.eos_kept == 0 and report.eos_masked == len(LENGTHS)
    assert report.labels_on_padding == 0
    text = str(report)
    assert "every EOS label is masked: 4 positions whose next token is eos_id=0" in text
    assert "the model never learns to stop" in text and "pad_id == eos_id" in text
    # A collator that keeps each document's EOS label and masks only what follows it.
    keeps = b["targets"].copy()
    cols = np.arange(keeps.shape[1])
    keeps[cols[None, :] >= np.array(LENGTHS)[:, None]] = -100
    ok = probe.check_alignment(b["inputs"], keeps, mask=mask, pad_id=EOS, eos_id=EOS)
    assert ok.verdict == "pass", str(ok)
    assert ok.eos_kept == len(LENGTHS) and ok.eos_masked == 0
    assert "EOS labels kept 4, masked 0" in str(ok)


def test_packed_rows_with_pad_equal_to_eos_are_not_padding() -> None:
    tokens = natural(4, 257, seed=5)
    tokens[tokens == EOS] = 2
    tokens[:, 60::61] = EOS  # documents packed back to back, separated by EOS
    tokens[:, 0] = tokens[:, -2] = EOS  # a row may start or end at a boundary: one EOS, no run
    inputs, targets = causal(tokens)
    report = probe.check_alignment(inputs, targets, pad_id=EOS, eos_id=EOS)
    assert report.verdict == "pass", str(report)
    assert report.labels_on_padding == 0 and report.eos_kept > 0


def test_one_sequence_is_a_batch_of_one() -> None:
    tokens = natural(1, 300)[0]
    report = probe.check_alignment(list(tokens[:-1]), list(tokens[1:]))
    assert report.verdict == "pass" and report.shape == (299,)
    assert "(299 tokens, 299 valid)" in str(report)
    targets = tokens[1:].copy()
    targets[5] = -7
    bad = probe.check_alignment(tokens[:-1], targets)
    assert bad.out_of_range_at == (((5,), -7),)
    assert "[5]=-7" in str(bad)


def test_too_few_positions_is_inconclusive_and_says_why() -> None:
    tokens = natural(1, 51)[0]
    report = probe.check_alignment(tokens[:-1], tokens[1:])
    assert report.verdict == "inconclusive"
    text = str(report)
    assert text.startswith(
        "inconclusive: only 49 valid positions comparable at shift 1 (100 needed"
    )
    assert "warning: inconclusive is not a pass" in text
    report.raise_for_verdict()  # allowed by default
    with pytest.raises(Inconclusive):
        report.raise_for_verdict(allow_inconclusive=False)


def test_a_batch_of_one_repeated_id_cannot_tell_shifts_apart() -> None:
    ids = np.full((4, 65), 7)
    report = probe.check_alignment(ids[:, :-1], ids[:, 1:])
    assert report.verdict == "inconclusive"
    assert "cannot tell the shifts apart" in report.reason


def test_a_label_finding_still_fails_a_batch_too_small_to_judge_the_shift() -> None:
    tokens = natural(1, 21)[0]
    targets = tokens[1:].copy()
    targets[0] = -5
    report = probe.check_alignment(tokens[:-1], targets)
    assert report.verdict == "data-misalignment"
    assert "shift not judged: only 19 valid positions" in str(report)


def test_float_ids_that_are_whole_numbers_are_accepted() -> None:
    inputs, targets = causal(natural())
    report = probe.check_alignment(inputs.astype(np.float32), targets.astype(np.float64))
    assert report.verdict == "pass"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"inputs": np.zeros((4, 10), int), "targets": np.zeros((4, 9), int)},
            "inputs has shape (4, 10) but targets has shape (4, 9); they must match",
        ),
        (
            {"inputs": np.zeros((2, 3), int), "targets": np.array([[1, 0.5, 2], [1, 2, 3]])},
            "targets has dtype float64 (shape (2, 3)) with values that are not token ids: "
            "targets[0, 1] = ",
        ),
        ({"inputs": np.int64(3), "targets": np.int64(3)}, "inputs has shape () (0-d)"),
        (
            {"inputs": np.zeros((2, 3, 4), int), "targets": np.zeros((2, 3, 4), int)},
            "inputs has shape (2, 3, 4) (3-d); token ids must be [batch, seq] or [seq]",
        ),
        (
            {"inputs": np.zeros((2, 3), int), "targets": np.ones((2, 3), bool)},
            "targets holds booleans (dtype bool, shape (2, 3)); token ids are integers. Did you "
            "pass the attention mask?",
        ),
        (
            {"inputs": np.array([["a", "b"]]), "targets": np.zeros((1, 2), int)},
            "inputs has dtype <U1 (shape (1, 2)); token ids must be integers",
        ),
        (
            {"inputs": [[1, 2], [3]], "targets": [[1, 2], [3]]},
            "inputs could not be read as an array",
        ),
        (
            {
                "inputs": np.zeros((2, 3), int),
                "targets": np.zeros((2, 3), int),
                "mask": np.ones((2, 4)),
            },
            "mask has shape (2, 4) but inputs has shape (2, 3)",
        ),
        (
            {
                "inputs": np.zeros((2, 3), int),
                "targets": np.zeros((2, 3), int),
                "mask": np.full((2, 3), "x"),
            },
            "mask has dtype <U1 (shape (2, 3)); it must be numeric or bool",
        ),
        (
            {"inputs": np.zeros((2, 3), int), "targets": np.zeros((2, 3), int), "vocab": 0},
            "vocab=0 must be the vocabulary size (a positive int)",
        ),
        (
            {
                "inputs": np.zeros((2, 3), int),
                "targets": np.zeros((2, 3), int),
                "expected_shift": 5,
            },
            "expected_shift=5 is outside the shifts the probe measures (-2 to 3)",
        ),
        (
            {
                "inputs": np.zeros((2, 3), int),
                "targets": np.zeros((2, 3), int),
                "max_ignored": 1.5,
            },
            "max_ignored=1.5 must be between 0 and 1",
        ),
        (
            {
                "inputs": np.zeros((2, 3), int),
                "targets": np.zeros((2, 3), int),
                "ignore_index": "-100",
            },
            "ignore_index='-100' must be an int, not str",
        ),
    ],
)
def test_arguments_it_cannot_use_raise_usage_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        probe.check_alignment(**kwargs)
    assert message in str(exc.value)
    assert exc.value.exit_code == 2


def test_to_dict_is_json_with_nan_as_null() -> None:
    tokens = np.array([5, 6])
    report = probe.check_alignment(tokens[:1], tokens[1:])
    out = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert out["schema"] == "gradcheck.probe" and out["schema_version"] == 1
    assert out["match"]["3"] is None and out["verdict"] == "inconclusive"
    assert out["counts"]["positions"] == 1 and out["shape"] == [1]


def test_a_large_batch_takes_milliseconds() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50257, size=(64, 2049))
    inputs, targets = causal(tokens)
    mask = np.ones_like(inputs)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        probe.check_alignment(inputs, targets, mask=mask, vocab=50257, eos_id=50256, pad_id=50256)
        times.append(time.perf_counter() - t0)
    # ~2.5 ms on a 2-core machine; a loop over the 131,072 positions would take seconds.
    assert sorted(times)[2] < 0.1


def test_the_module_docstring_example_runs() -> None:
    result = doctest.testmod(gradcheck.probe, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------------------------
# watch


def good_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return causal(natural(4, 65, seed=seed))


def copy_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    inputs, _ = good_batch(seed)
    return inputs, inputs.copy()


def test_watch_raises_at_the_first_bad_batch_before_it_is_yielded() -> None:
    batches = [good_batch(0), good_batch(1), copy_batch(2), good_batch(3)]
    seen = []
    with pytest.raises(DataMisalignment) as exc:
        for batch in probe.watch(batches, vocab=VOCAB):
            seen.append(batch)
    assert len(seen) == 2 and all(a is b for a, b in zip(seen, batches, strict=False))
    assert exc.value.batch == 2
    assert str(exc.value).startswith(
        "batch 2: data-misalignment: targets are the inputs shifted by 0, not 1"
    )
    report = exc.value.report
    assert isinstance(report, probe.AlignmentReport) and report.best_shift == 0


def test_watch_warns_and_goes_on_with_on_fail_warn() -> None:
    batches = [good_batch(0), copy_batch(1), good_batch(2)]
    wrapped = probe.watch(batches, on_fail="warn")
    with pytest.warns(probe.DataMisalignmentWarning, match="batch 1: data-misalignment") as rec:
        seen = list(wrapped)
    assert all(a is b for a, b in zip(seen, batches, strict=True))
    assert [r.verdict for r in wrapped.reports] == ["pass", "data-misalignment", "pass"]
    (w,) = rec.list
    assert w.filename == __file__  # points at the training loop, not inside gradcheck
    assert isinstance(w.message, probe.DataMisalignmentWarning)
    assert w.message.report is wrapped.reports[1]


class CountingBatch(Mapping[str, Any]):
    """A dict batch that counts how often its arrays are read."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        self.data = {"input_ids": inputs, "labels": targets}
        self.reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_watch_steps_aside_after_n_batches() -> None:
    batches = [CountingBatch(*b) for b in (good_batch(0), good_batch(1), copy_batch(2))]
    batches.append(CountingBatch(*copy_batch(3)))
    wrapped = probe.watch(batches, n=2)
    seen = list(wrapped)  # the misaligned batches 2 and 3 go through: they are not looked at
    assert all(a is b for a, b in zip(seen, batches, strict=True))
    assert batches[0].reads > 0 and batches[1].reads > 0
    assert [b.reads for b in batches[2:]] == [0, 0]
    assert len(wrapped.reports) == 2
    # A later epoch is the loader's own iterator: no wrapper in the loop at all.
    assert type(iter(wrapped)) is type(iter(batches))


def test_watch_passes_len_through_when_the_loader_has_one() -> None:
    batches = [good_batch(0)] * 5
    assert len(probe.watch(batches)) == 5
    gen = probe.watch(iter(batches))
    with pytest.raises(TypeError):
        len(gen)  # type: ignore[arg-type]
    assert sum(1 for _ in gen) == 5


Pair = namedtuple("Pair", ["input_ids", "labels"])


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (lambda i, t, m: (i, t), {}),
        (lambda i, t, m: [i, t, m], {}),
        (lambda i, t, m: {"input_ids": i, "labels": t, "attention_mask": m}, {}),
        (lambda i, t, m: {"tokens": i, "y": t, "mask": m}, {}),
        (lambda i, t, m: SimpleNamespace(inputs=i, targets=t, attention_mask=m), {}),
        (lambda i, t, m: Pair(i, t), {"inputs_key": "input_ids", "targets_key": "labels"}),
        (
            lambda i, t, m: {"src": i, "tgt": t, "pad": m},
            {"inputs_key": "src", "targets_key": "tgt", "mask_key": "pad"},
        ),
    ],
)
def test_watch_reads_tuple_dict_and_attribute_batches(make: Any, kwargs: dict[str, Any]) -> None:
    good = make(*good_batch(0), np.ones((4, 64), int))
    bad = make(*copy_batch(0), np.ones((4, 64), int))
    wrapped = probe.watch([good], **kwargs)
    (seen,) = list(wrapped)
    assert seen is good and wrapped.reports[0].verdict == "pass"
    with pytest.raises(DataMisalignment):
        list(probe.watch([bad], **kwargs))


def test_watch_reads_the_mask_from_a_dict_batch() -> None:
    b = padded_batch(LENGTHS)
    batch = {"input_ids": b["inputs"], "labels": b["targets"], "attention_mask": b["mask"]}
    wrapped = probe.watch([batch], on_fail="warn")
    with pytest.warns(probe.DataMisalignmentWarning, match="labels on padded positions"):
        list(wrapped)
    assert wrapped.reports[0].labels_on_padding == int((b["mask"] == 0).sum())


def test_watch_says_which_keys_it_found_when_it_cannot_find_the_arrays() -> None:
    with pytest.raises(UsageError) as exc:
        list(probe.watch([{"src": 1, "tgt": 2}]))
    msg = str(exc.value)
    assert "cannot find inputs (inputs / input_ids / tokens / x) and targets" in msg
    assert "(keys: 'src', 'tgt')" in msg and "inputs_key=" in msg
    with pytest.raises(UsageError, match=r"targets_key='lables' is not in the batch.*'labels'"):
        list(probe.watch([{"input_ids": 1, "labels": 2}], targets_key="lables"))
    with pytest.raises(UsageError, match="this one has 4 items"):
        list(probe.watch([(1, 2, 3, 4)]))
    with pytest.raises(UsageError, match="a batch is one array"):
        list(probe.watch([np.zeros((2, 3), int)]))


def test_watch_rejects_an_unknown_on_fail_at_once() -> None:
    with pytest.raises(UsageError, match=r"on_fail='rasie' is not one of 'raise', 'warn'.*'raise'"):
        probe.watch([], on_fail="rasie")
    with pytest.raises(UsageError, match="n=-1 must be the number of batches"):
        probe.watch([], n=-1)


class ArrayOnly:
    """Only __array__, as a CPU tensor offers: no numpy or JAX type behind it."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._a if dtype is None else self._a.astype(dtype)


def test_array_like_objects_and_jax_arrays_are_read() -> None:
    inputs, targets = good_batch(0)
    assert probe.check_alignment(ArrayOnly(inputs), ArrayOnly(targets)).verdict == "pass"
    batch = (ArrayOnly(inputs), ArrayOnly(inputs.copy()))
    with pytest.raises(DataMisalignment):
        list(probe.watch([batch]))
    import jax.numpy as jnp

    report = probe.check_alignment(jnp.asarray(inputs), jnp.asarray(targets), vocab=VOCAB)
    assert report.verdict == "pass"
    wrapped = probe.watch([{"input_ids": jnp.asarray(inputs), "labels": jnp.asarray(inputs)}])
    with pytest.raises(DataMisalignment, match="shifted by 0, not 1"):
        list(wrapped)


# --------------------------------------------------------------------------------------------
# gradcheck probe-data


def run_cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="gradcheck")
    add_probe_data_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = run_probe_data(parser.parse_args(["probe-data", *argv]), Console(file=out, width=120))
    return code, out.getvalue()


def test_cli_pass_prints_the_report_and_writes_json(tmp_path: Path) -> None:
    inputs, targets = causal(natural())
    np.savez(tmp_path / "batch.npz", inputs=inputs, targets=targets)
    report_path = tmp_path / "probe.json"
    code, out = run_cli(
        [str(tmp_path / "batch.npz"), "--vocab", "1000", "--json", str(report_path)]
    )
    assert code == 0
    assert "(inputs=inputs, targets=targets)" in out
    assert "pass: targets are the inputs shifted by 1, as expected (8 x 256 tokens" in out
    assert f"report written to {report_path}" in out
    data = json.loads(report_path.read_text())
    assert data["schema"] == "gradcheck.probe" and data["schema_version"] == 1
    assert data["verdict"] == "pass" and data["match"]["1"] == 1.0
    assert data["options"]["vocab"] == 1000
    assert not (tmp_path / "probe.json.tmp").exists()


def test_cli_misaligned_batch_exits_1(tmp_path: Path) -> None:
    tokens = natural(seq=258)
    np.savez(tmp_path / "b.npz", input_ids=tokens[:, :256], labels=tokens[:, 2:258])
    code, out = run_cli([str(tmp_path / "b.npz")])
    assert code == 1
    assert "data-misalignment: targets are the inputs shifted by 2, not 1" in out
    assert "labels shifted twice" in out


def test_cli_named_keys_mask_and_expected_shift(tmp_path: Path) -> None:
    b = padded_batch(LENGTHS)
    labels = b["inputs"].copy()
    labels[b["mask"] == 0] = -100
    np.savez(tmp_path / "b.npz", ids=b["inputs"], lab=labels, am=b["mask"])
    argv = [str(tmp_path / "b.npz"), "--inputs", "ids", "--targets", "lab", "--mask", "am"]
    code, out = run_cli([*argv, "--expected-shift", "0"])
    assert code == 0 and "(inputs=ids, targets=lab, mask=am)" in out
    assert "pass: targets are the inputs shifted by 0, as expected" in out
    code, out = run_cli(argv)
    assert code == 1 and "a copy task" in out
    labels[b["mask"] == 0] = -1  # a collator that ignores -1, not -100
    np.savez(tmp_path / "b.npz", ids=b["inputs"], lab=labels, am=b["mask"])
    code, out = run_cli([*argv, "--expected-shift", "0"])
    assert (
        code == 1
        and "260 negative labels (no vocab= given, so none is checked against it) other than "
        "ignore_index=-100"
        in out
    )
    code, out = run_cli([*argv, "--expected-shift", "0", "--ignore-index", "-1"])
    assert code == 0


def test_cli_inconclusive_exits_0_with_the_reason(tmp_path: Path) -> None:
    tokens = natural(1, 41)
    np.savez(tmp_path / "b.npz", x=tokens[:, :-1], y=tokens[:, 1:])
    code, out = run_cli([str(tmp_path / "b.npz")])
    assert code == 0
    assert "inconclusive: only 39 valid positions comparable at shift 1" in out


def test_cli_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        run_cli([str(tmp_path / "missing.npz")])
    (tmp_path / "log.txt").write_text("step 1 loss 5.2\n")
    with pytest.raises(UsageError, match=r"is not a numpy \.npz file"):
        run_cli([str(tmp_path / "log.txt")])
    np.save(tmp_path / "one.npy", np.zeros((2, 3), int))
    with pytest.raises(UsageError, match=r"holds a single array \(shape \(2, 3\)\)"):
        run_cli([str(tmp_path / "one.npy")])
    np.savez(tmp_path / "b.npz", src=np.zeros((2, 3), int), labels=np.zeros((2, 3), int))
    with pytest.raises(UsageError) as exc:
        run_cli([str(tmp_path / "b.npz")])
    assert "b.npz has no inputs array under the default names" in str(exc.value)
    assert "it has 'src', 'labels'. Name it: --inputs KEY." in str(exc.value)
    assert exc.value.exit_code == 2 and isinstance(exc.value, GradcheckError)
    with pytest.raises(UsageError, match=r"--targets lables: b\.npz has no array named 'lables'"):
        run_cli([str(tmp_path / "b.npz"), "--inputs", "src", "--targets", "lables"])
    with pytest.raises(UsageError, match=r"the directory .* does not exist"):
        run_cli([str(tmp_path / "b.npz"), "--json", str(tmp_path / "no" / "r.json")])


def test_probe_data_is_a_gradcheck_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradcheck.cli import main

    tokens = np.random.default_rng(3).integers(0, 40, size=(4, 65))
    path = tmp_path / "batch.npz"
    np.savez(path, input_ids=tokens[:, :-1], labels=tokens[:, :-1])
    assert main(["probe-data", str(path), "--vocab", "40"]) == 1
    out = capsys.readouterr().out
    assert "data-misalignment: targets are the inputs shifted by 0, not 1" in out
    assert main(["probe-data", str(tmp_path / "missing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
