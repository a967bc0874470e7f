"""The data-alignment probe: are a batch's targets its inputs shifted by one, with sane labels?

A loss that will not fall can come from the data rather than the kernel or the learning rate
(FIELD_NOTES section 5). This module measures, on the raw batch, which shift of the inputs the
targets are, and whether the labels are usable: in range, mostly not ignored, absent on padding,
with EOS labels kept. All of it is vectorised numpy: no Python loop runs over positions.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, cast, overload

import numpy as np

from ._errors import DataMisalignment, Inconclusive, UsageError, suggest
from ._subcommands import INPUT_KEYS, MASK_KEYS, TARGET_KEYS
from .results import _finite

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

AlignmentVerdict = Literal["pass", "data-misalignment", "inconclusive"]
SCHEMA = "gradcheck.probe"
SCHEMA_VERSION = 1
# Exit code of `gradcheck probe-data` for each verdict: only a misaligned batch fails.
EXIT_CODES: dict[str, int] = {"pass": 0, "data-misalignment": 1, "inconclusive": 0}
GUIDE = "DIAGNOSTIC_GUIDE.md#data-misalignment"

SHIFTS = (-2, -1, 0, 1, 2, 3)  # the shifts FIELD_NOTES section 5 probes: copy, double shift, lag
# A healthy batch fits its expected shift at >= 99% of valid positions (FIELD_NOTES section 5):
# the tests' packed rows with one relabelled boundary token in 256 score 0.996; their misaligned
# cases score <= 0.85 at the expected shift (two rows of eight shifted: 0.80).
HEALTHY_MATCH = 0.99
# Below 100 comparable positions one stray mismatch (a packing boundary) moves the match rate by
# more than 1 - HEALTHY_MATCH, so the 0.99 threshold cannot tell a boundary from a bug.
MIN_COMPARABLE = 100
# A shift "fits" when its match rate is at least halfway from chance to a perfect fit. Chance is
# the rate at which unrelated draws from the batch's own token frequencies agree: 0.05 for the
# uniform vocab-20 streams of the tests, ~0.1 for a Zipf-like stream, 0.5 for two-token data.
FIT_FRACTION = 0.5
# Token ids above this are left out of the chance estimate (a bincount of them would allocate a
# table that large); real vocabularies stop near 2**18, so only broken ids are skipped.
CHANCE_MAX_ID = 1 << 22
MAX_LISTED = 5  # positions quoted per finding; the counts cover the rest


STYLES = {"pass": "green", "data-misalignment": "bold red", "inconclusive": "yellow"}


@dataclass(frozen=True)
class AlignmentReport:
    """What check_alignment found in one batch: the verdict and the evidence behind it.

    ``match`` maps each shift k in -2..3 to the share of valid positions i where
    ``targets[b, i] == inputs[b, i + k]`` (NaN where no valid position has ``i + k`` in range).
    ``comparable`` counts the valid positions that the expected shift can compare. Positions
    (``out_of_range_at``) are ``(row, column)``, or ``(column,)`` for a one-sequence batch.
    """

    verdict: AlignmentVerdict
    match: dict[int, float]
    best_shift: int | None
    expected_shift: int
    shape: tuple[int, ...]
    positions: int
    valid: int
    comparable: int
    ignored_share: float  # of the positions the mask keeps (every position without a mask)
    out_of_range: int
    out_of_range_at: tuple[tuple[tuple[int, ...], int], ...]
    inputs_out_of_range: int  # input ids outside [0, vocab) where the mask keeps them
    labels_on_padding: int
    eos_expected: int  # positions whose true target is an EOS (first of a run of eos_id)
    eos_kept: int  # valid targets equal to eos_id
    eos_masked: int  # of eos_expected, those whose target is ignore_index
    chance_match: float  # NaN when some shift fits >= HEALTHY_MATCH (then it is not needed)
    misaligned_rows: tuple[int, ...]
    findings: tuple[str, ...]
    likely_cause: str
    reason: str  # why the shift was not judged (inconclusive unless another finding fails it)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (schema ``gradcheck.probe`` 1); NaN becomes None."""
        from . import __version__

        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "gradcheck_version": __version__,
            "verdict": self.verdict,
            "expected_shift": self.expected_shift,
            "best_shift": self.best_shift,
            "match": {str(k): _finite(v) for k, v in self.match.items()},
            "chance_match": _finite(self.chance_match),
            "shape": list(self.shape),
            "counts": {
                "positions": self.positions,
                "valid": self.valid,
                "comparable": self.comparable,
                "ignored_share": _finite(self.ignored_share),
                "out_of_range": self.out_of_range,
                "inputs_out_of_range": self.inputs_out_of_range,
                "labels_on_padding": self.labels_on_padding,
                "eos_expected": self.eos_expected,
                "eos_kept": self.eos_kept,
                "eos_masked": self.eos_masked,
            },
            "out_of_range_at": [{"at": list(at), "value": v} for at, v in self.out_of_range_at],
            "misaligned_rows": list(self.misaligned_rows),
            "findings": list(self.findings),
            "likely_cause": self.likely_cause,
            "reason": self.reason,
            "options": dict(self.options),
        }

    def _lines(self) -> list[str]:
        """The report as plain lines: headline, match rates, findings, cause."""
        if self.findings:
            head = self.findings[0]
        elif self.verdict == "inconclusive":
            head = self.reason
        else:
            head = f"targets are the inputs shifted by {self.expected_shift}, as expected"
        valid = f"{self.valid:,} valid"
        size = (
            f"{self.shape[0]:,} tokens"
            if len(self.shape) == 1
            else f"{self.shape[0]:,} x {self.shape[1]:,} tokens"
        )
        out = [f"{self.verdict}: {head} ({size}, {valid})"]
        rates = []
        for k, m in self.match.items():
            mark = f"[{k}]" if k == self.expected_shift else str(k)
            if k == self.best_shift:
                mark = "*" + mark
            rates.append(f"{mark} {'-' if m != m else f'{m:.2f}'}")
        chance = (
            "" if self.chance_match != self.chance_match else f"  (chance {self.chance_match:.2f})"
        )
        out.append(f"  match rate by shift: {'  '.join(rates)}{chance}")
        out.append(f"  labels: {self._labels_line()}")
        out += [f"  also: {f}" for f in self.findings[1:]]
        if self.likely_cause:
            out.append(f"  likely cause: {self.likely_cause}")
        if self.reason and self.verdict != "inconclusive":
            out.append(f"  shift not judged: {self.reason}")
        if self.verdict == "inconclusive":
            out.append(
                "  warning: inconclusive is not a pass: probe a larger batch, or several "
                "(probe.watch)"
            )
        return out

    def _labels_line(self) -> str:
        vocab = self.options.get("vocab")
        bounds = f"outside [0, {vocab:,})" if vocab is not None else "negative (no vocab= given)"
        words = [
            f"{self.ignored_share:.1%} ignored (max {self.options.get('max_ignored', 0.5):.0%})"
            if self.ignored_share == self.ignored_share
            else "every position masked",
            f"{self.out_of_range:,} {bounds}",
            f"{self.labels_on_padding:,} on padding",
        ]
        if self.options.get("eos_id") is not None:
            words.append(f"EOS labels kept {self.eos_kept:,}, masked {self.eos_masked:,}")
        return ", ".join(words)

    def raise_for_verdict(self, *, allow_inconclusive: bool = True) -> None:
        """Raise DataMisalignment (an AssertionError) on data-misalignment; Inconclusive if not allowed."""
        if self.verdict == "data-misalignment":
            raise DataMisalignment(str(self), self)
        if self.verdict == "inconclusive" and not allow_inconclusive:
            raise Inconclusive(str(self), self)

    def __str__(self) -> str:
        return "\n".join(self._lines())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        first, *rest = self._lines()
        yield Text(first, style=STYLES[self.verdict])
        for line in rest:
            yield Text(line)


# --------------------------------------------------------------------------------------------
# checking arguments


@dataclass(frozen=True)
class _Options:
    ignore_index: int
    vocab: int | None
    expected_shift: int
    pad_id: int | None
    eos_id: int | None
    max_ignored: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "ignore_index": self.ignore_index,
            "vocab": self.vocab,
            "expected_shift": self.expected_shift,
            "pad_id": self.pad_id,
            "eos_id": self.eos_id,
            "max_ignored": self.max_ignored,
        }


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UsageError(f"{name}={value!r} must be an int, not {type(value).__name__}.")
    return int(value)


def _id(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UsageError(
            f"{name}={value!r} must be a token id (an int) or None, not {type(value).__name__}."
        )
    return int(value)


def _options(
    ignore_index: object,
    vocab: object,
    expected_shift: object,
    pad_id: object,
    eos_id: object,
    max_ignored: object,
) -> _Options:
    ignore = _int("ignore_index", ignore_index)
    v = _id("vocab", vocab)
    if v is not None and v < 1:
        raise UsageError(
            f"vocab={v} must be the vocabulary size (a positive int), or None to check only "
            "that labels are not negative."
        )
    shift = _int("expected_shift", expected_shift)
    if shift not in SHIFTS:
        raise UsageError(
            f"expected_shift={shift} is outside the shifts the probe measures ({SHIFTS[0]} to "
            f"{SHIFTS[-1]}). Use 1 for targets = tokens[1:] (targets[i] == inputs[i + 1]), 0 for "
            "Hugging Face style labels that the model shifts inside."
        )
    if isinstance(max_ignored, bool) or not isinstance(max_ignored, int | float | np.floating):
        raise UsageError(
            f"max_ignored={max_ignored!r} must be a number between 0 and 1 (the largest share "
            "of labels equal to ignore_index that still passes)."
        )
    if not 0.0 <= float(max_ignored) <= 1.0:
        raise UsageError(
            f"max_ignored={max_ignored!r} must be between 0 and 1 (a share of labels), e.g. 0.5."
        )
    return _Options(
        ignore_index=ignore,
        vocab=v,
        expected_shift=shift,
        pad_id=_id("pad_id", pad_id),
        eos_id=_id("eos_id", eos_id),
        max_ignored=float(max_ignored),
    )


def _array(name: str, value: object) -> np.ndarray:
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"{name} could not be read as an array ({exc}). Pass a [batch, seq] or [seq] array "
            "of token ids: numpy, JAX, a CPU tensor, or equal-length lists."
        ) from None
    return a


def _tokens(name: str, value: object) -> np.ndarray:
    """``value`` as int64 token ids of shape [batch, seq] or [seq], or a UsageError saying why not."""
    a = _array(name, value)
    if a.ndim not in (1, 2):
        raise UsageError(
            f"{name} has shape {a.shape} ({a.ndim}-d); token ids must be [batch, seq] or [seq]. "
            + (
                "Pass the array itself, not a scalar or None."
                if a.ndim == 0
                else "Reshape it, e.g. x.reshape(-1, x.shape[-1]) for [micro, batch, seq]."
            )
        )
    if a.dtype.kind == "b":
        raise UsageError(
            f"{name} holds booleans (dtype {a.dtype}, shape {a.shape}); token ids are integers. "
            "Did you pass the attention mask? It goes in mask=."
        )
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    if a.dtype.kind == "f":
        whole = np.isfinite(a) & (a == np.round(a))
        if bool(whole.all()):
            return a.astype(np.int64)
        bad = tuple(int(i) for i in np.argwhere(~whole)[0])
        raise UsageError(
            f"{name} has dtype {a.dtype} (shape {a.shape}) with values that are not token ids: "
            f"{name}[{', '.join(map(str, bad))}] = {a[bad].item()!r}. Pass the integer ids (before the "
            "embedding), e.g. x.astype(np.int64) if they are whole numbers stored as floats."
        )
    raise UsageError(
        f"{name} has dtype {a.dtype} (shape {a.shape}); token ids must be integers. Pass an "
        "integer array of ids, e.g. np.asarray(ids, dtype=np.int64)."
    )


def _mask(value: object, shape: tuple[int, ...]) -> np.ndarray:
    a = _array("mask", value)
    if a.dtype.kind not in "biuf":
        raise UsageError(
            f"mask has dtype {a.dtype} (shape {a.shape}); it must be numeric or bool: the "
            "attention mask, 1 (or True) for real tokens and 0 for padding."
        )
    if a.shape != shape:
        raise UsageError(
            f"mask has shape {a.shape} but inputs has shape {shape}; pass the attention mask "
            "of this batch (same shape as inputs, 0 on padding), or mask=None."
        )
    return np.asarray(a != 0, dtype=bool)


# --------------------------------------------------------------------------------------------
# the probe


def check_alignment(
    inputs: object,
    targets: object,
    *,
    mask: object = None,
    ignore_index: int = -100,
    vocab: int | None = None,
    expected_shift: int = 1,
    pad_id: int | None = None,
    eos_id: int | None = None,
    max_ignored: float = 0.5,
) -> AlignmentReport:
    """Check that ``targets`` are ``inputs`` shifted by ``expected_shift`` and the labels are sane.

    ``inputs`` and ``targets`` are integer token ids, [batch, seq] or [seq] (numpy, JAX, lists or
    anything with ``__array__``); ``mask`` is the attention mask (0 = padding). A valid position
    has a target other than ``ignore_index`` and a non-zero mask. Raises UsageError for arrays
    it cannot read; never raises on bad data: that is what the report's verdict is for.
    """
    opts = _options(ignore_index, vocab, expected_shift, pad_id, eos_id, max_ignored)
    x = _tokens("inputs", inputs)
    t = _tokens("targets", targets)
    if x.shape != t.shape:
        raise UsageError(
            f"inputs has shape {x.shape} but targets has shape {t.shape}; they must match "
            "(targets[b, i] is the label at inputs[b, i]). For causal LM data take both from one "
            "token array: inputs = tokens[:, :-1], targets = tokens[:, 1:]."
        )
    shape = tuple(int(s) for s in x.shape)
    keep = _mask(mask, x.shape) if mask is not None else None
    if x.ndim == 1:
        x, t = x[None, :], t[None, :]
        keep = keep[None, :] if keep is not None else None
    return _probe(x, t, keep, opts, shape)


def _pairs(
    x: np.ndarray, t: np.ndarray, valid: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets, the inputs k further on, and validity, over the columns where i + k is in range."""
    seq = x.shape[1]
    if k >= 0:
        return t[:, : seq - k], x[:, k:], valid[:, : seq - k]
    return t[:, -k:], x[:, : seq + k], valid[:, -k:]


def _probe(
    x: np.ndarray, t: np.ndarray, keep: np.ndarray | None, o: _Options, shape: tuple[int, ...]
) -> AlignmentReport:
    rows, seq = x.shape
    labelled = t != o.ignore_index
    valid = labelled & keep if keep is not None else labelled
    one_row = len(shape) == 1

    def where(index: Sequence[int]) -> tuple[int, ...]:
        return (int(index[1]),) if one_row else (int(index[0]), int(index[1]))

    def show(index: Sequence[int]) -> str:
        return "[" + ", ".join(str(i) for i in where(index)) + "]"

    # Hits and valid counts per row and shift (rows x shifts), summed over the batch.
    hits = np.zeros((rows, len(SHIFTS)), np.int64)
    count = np.zeros((rows, len(SHIFTS)), np.int64)
    for j, k in enumerate(SHIFTS):
        if abs(k) < seq:
            tk, xk, vk = _pairs(x, t, valid, k)
            hits[:, j] = np.count_nonzero((tk == xk) & vk, axis=1)
            count[:, j] = np.count_nonzero(vk, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = hits.sum(axis=0) / count.sum(axis=0)
    match = {k: float(rates[j]) for j, k in enumerate(SHIFTS)}
    e = SHIFTS.index(o.expected_shift)
    comparable = int(count[:, e].sum())
    # Chance only matters when no shift fits outright: the healthy path skips its bincount.
    top = max((m for m in match.values() if m == m), default=0.0)
    chance = _chance(x, t[valid]) if top < HEALTHY_MATCH else float("nan")
    best = _best_shift(match, o.expected_shift, chance)

    found: list[tuple[str, str]] = []  # (finding, likely cause)
    reason = ""
    misaligned_rows: tuple[int, ...] = ()
    fits = [k for k, m in match.items() if m >= HEALTHY_MATCH]
    if comparable < MIN_COMPARABLE:
        reason = (
            f"only {comparable:,} valid positions comparable at shift {o.expected_shift} "
            f"({MIN_COMPARABLE} needed to judge the {HEALTHY_MATCH:.0%} threshold)"
        )
    elif o.expected_shift in fits and len(fits) > 1:
        others = ", ".join(str(k) for k in fits if k != o.expected_shift)
        reason = (
            f"shift {o.expected_shift} fits, but so does shift {others}: the tokens repeat so "
            "much (runs of one id, unmasked padding) that the batch cannot tell the shifts apart"
        )
    elif match[o.expected_shift] < HEALTHY_MATCH:
        with np.errstate(invalid="ignore", divide="ignore"):
            row_rates = hits / count
        row_best = np.argmax(np.nan_to_num(row_rates, nan=-1.0), axis=1)
        row_ok = np.nan_to_num(row_rates[:, e], nan=1.0) >= HEALTHY_MATCH
        misaligned_rows = tuple(int(r) for r in np.flatnonzero(~row_ok))
        text, cause = _shift_finding(
            match, best, o.expected_shift, chance, misaligned_rows, row_best, rows
        )
        if best == o.expected_shift and len(misaligned_rows) in (0, rows):
            # No row stands out: quote the first mismatches, target against the shifted input.
            tk, xk, vk = _pairs(x, t, valid, o.expected_shift)
            off = max(0, -o.expected_shift)
            quoted = [
                f"{show((b, i + off))} target {int(tk[b, i])}, input {int(xk[b, i])}"
                for b, i in np.argwhere(vk & (tk != xk))[:2]
            ]
            text += f"; first: {'; '.join(quoted)}"
        found.append((text, cause))

    # Labels outside [0, vocab) (or negative when vocab is unknown), ignore_index aside.
    wild = labelled & ((t < 0) | (t >= o.vocab)) if o.vocab is not None else labelled & (t < 0)
    n_wild = int(np.count_nonzero(wild))
    wild_at = tuple((where(i), int(t[tuple(i)])) for i in np.argwhere(wild)[:MAX_LISTED])
    if n_wild:
        plural = "s" if n_wild != 1 else ""
        what = (
            f"label{plural} outside [0, {o.vocab:,})"
            if o.vocab is not None
            else f"negative label{plural} (no vocab= given, so none is checked against it)"
        )
        listed = ", ".join(f"[{', '.join(map(str, p))}]={v}" for p, v in wild_at)
        more = " ..." if n_wild > MAX_LISTED else ""
        found.append(
            (
                f"{n_wild:,} {what} other than ignore_index={o.ignore_index}: {listed}{more}",
                "labels from a tokenizer with a larger vocabulary than the model's, or a "
                f"collator whose ignore index is not {o.ignore_index} (e.g. -1): a loss kernel "
                "indexes out of bounds or trains on a wrong class",
            )
        )

    # Input ids outside the embedding, where the mask keeps them (masked padding may be -1).
    n_inputs_wild = 0
    if o.vocab is not None:
        bad_in = (x < 0) | (x >= o.vocab)
        if keep is not None:
            bad_in &= keep
        n_inputs_wild = int(np.count_nonzero(bad_in))
        if n_inputs_wild:
            found.append(
                (
                    f"{n_inputs_wild:,} input ids outside [0, {o.vocab:,}) on unmasked "
                    f"positions (first at {show(np.argwhere(bad_in)[0])})",
                    "inputs from a tokenizer with a larger vocabulary than the model's embedding",
                )
            )

    # Share of ignored labels among the positions the mask keeps (all of them without a mask).
    kept = int(np.count_nonzero(keep)) if keep is not None else rows * seq
    ignored = kept - int(np.count_nonzero(valid))
    ignored_share = ignored / kept if kept else float("nan")
    if ignored_share > o.max_ignored:
        found.append(
            (
                f"{ignored_share:.0%} of labels are ignore_index={o.ignore_index} ({ignored:,} "
                f"of {kept:,}{' unmasked' if keep is not None else ''}; "
                f"max_ignored={o.max_ignored:g})",
                "a collator that masks most labels (prompt masking, a padding mask applied to "
                "real tokens, or every label masked): the loss learns from few tokens",
            )
        )

    # Labels on padding: masked positions, or pad_id inputs, whose target is not ignored.
    padded, how = _padding(x, keep, o)
    on_pad = padded & labelled
    n_on_pad = int(np.count_nonzero(on_pad))
    if n_on_pad:
        found.append(
            (
                f"{n_on_pad:,} labels on padded positions ({how}) are not "
                f"ignore_index={o.ignore_index} (first at {show(np.argwhere(on_pad)[0])})",
                f"the collator leaves labels on padding: set them to {o.ignore_index}, or the "
                "model learns to predict padding and the loss averages over it",
            )
        )

    # Every EOS label masked: the model never learns to stop.
    eos_expected = eos_kept = eos_masked = 0
    if o.eos_id is not None:
        eos_expected, eos_kept, eos_masked = _eos(
            x, t, keep, valid, labelled, o.eos_id, o.expected_shift
        )
        if eos_kept == 0 and eos_masked > 0:
            found.append(
                (
                    f"every EOS label is masked: {eos_masked:,} positions whose next token is "
                    f"eos_id={o.eos_id} have target {o.ignore_index}, and no target is "
                    f"{o.eos_id}",
                    "pad_id == eos_id and the collator masks every pad label, so every EOS "
                    "label goes too: the model never learns to stop (mask padding through the "
                    "attention mask, or give padding its own id)"
                    if o.pad_id is not None and o.pad_id == o.eos_id
                    else "the collator masks every EOS label (often because pad == eos): the "
                    "model never learns to stop",
                )
            )

    verdict: AlignmentVerdict = (
        "data-misalignment" if found else "inconclusive" if reason else "pass"
    )
    causes = list(dict.fromkeys(cause for _, cause in found))
    return AlignmentReport(
        verdict=verdict,
        match=match,
        best_shift=best,
        expected_shift=o.expected_shift,
        shape=shape,
        positions=rows * seq,
        valid=int(np.count_nonzero(valid)),
        comparable=comparable,
        ignored_share=ignored_share,
        out_of_range=n_wild,
        out_of_range_at=wild_at,
        inputs_out_of_range=n_inputs_wild,
        labels_on_padding=n_on_pad,
        eos_expected=eos_expected,
        eos_kept=eos_kept,
        eos_masked=eos_masked,
        chance_match=chance,
        misaligned_rows=misaligned_rows,
        findings=tuple(text for text, _ in found),
        likely_cause="; ".join([*causes, GUIDE]) if causes else "",
        reason=reason,
        options=o.as_dict(),
    )


def _chance(x: np.ndarray, labels: np.ndarray) -> float:
    """The match rate of unrelated streams: P(a random valid label == a random input id)."""
    xs = x.ravel()
    xs = xs[(xs >= 0) & (xs < CHANCE_MAX_ID)]
    ls = labels[(labels >= 0) & (labels < CHANCE_MAX_ID)]
    if xs.size == 0 or ls.size == 0:
        return float("nan")
    n = int(max(xs.max(), ls.max())) + 1
    px = np.bincount(xs, minlength=n) / xs.size
    pl = np.bincount(ls, minlength=n) / ls.size
    return float(px @ pl)


def _best_shift(match: dict[int, float], expected: int, chance: float) -> int | None:
    """The shift with the highest match rate (ties go to the expected one), if it fits at all."""
    scored = [(m, -abs(k - expected), -k, k) for k, m in match.items() if m == m]
    if not scored:
        return None
    top, *_, k = max(scored)
    floor = chance if chance == chance else 0.0
    if top < floor + FIT_FRACTION * (1.0 - floor):
        return None
    return k


def _shift_finding(
    match: dict[int, float],
    best: int | None,
    expected: int,
    chance: float,
    bad_rows: tuple[int, ...],
    row_best: np.ndarray,
    rows: int,
) -> tuple[str, str]:
    """The headline and likely cause for targets that are not the inputs shifted as expected."""
    m_exp = match[expected]
    if best is None:
        k_top = max((k for k in match if match[k] == match[k]), key=lambda k: match[k])
        return (
            f"targets match the inputs at no shift from {SHIFTS[0]} to {SHIFTS[-1]} (best "
            f"{match[k_top]:.2f} at shift {k_top}; chance {chance:.2f})",
            "targets unrelated to the inputs: labels from another batch or a shuffled dataset "
            "joined wrongly, or a different tokenizer; the loss floors at the targets' unigram "
            "entropy",
        )
    if best == expected:
        listed = ", ".join(
            f"{r} (shift {SHIFTS[int(row_best[r])]})" for r in bad_rows[:MAX_LISTED]
        ) + (" ..." if len(bad_rows) > MAX_LISTED else "")
        text = (
            f"targets are the inputs shifted by {expected} at only {m_exp:.0%} of valid "
            f"positions ({HEALTHY_MATCH:.0%} needed)"
        )
        if bad_rows and len(bad_rows) < rows:
            text += f"; rows that do not fit: {listed}"
            cause = (
                "part of the batch is aligned differently (rows from another pipeline or "
                "collator, or labels shifted per document before packing)"
            )
        else:
            cause = (
                "mismatches spread over every row: labels replaced inside the sequences (a "
                "corrupting augmentation, or a collator writing labels from another source)"
            )
        return text, cause
    m_best = match[best]
    if m_best >= HEALTHY_MATCH:
        text = f"targets are the inputs shifted by {best}, not {expected}"
    else:
        text = (
            f"targets fit shift {best} best ({m_best:.0%} of valid positions), not {expected} "
            f"({m_exp:.0%})"
        )
    ahead = best - expected + 1  # how far ahead of the current token the model is trained
    if ahead == 0:
        if expected == 1:
            cause = (
                "a copy task: targets are the inputs themselves, so the loss collapses toward "
                "0; Hugging Face style labels (labels == input_ids, shifted inside the model) "
                "need expected_shift=0"
            )
        else:
            cause = (
                "labels shifted the wrong way for a model that shifts inside: it learns to copy "
                "its input and the loss collapses toward 0"
            )
    elif ahead == 2:
        if expected == 1:
            cause = (
                "labels shifted twice (pre-shifted labels for a model that shifts inside): it "
                "learns to predict two tokens ahead"
            )
        else:
            cause = (
                "labels already shifted for a model that shifts inside, so it learns two "
                "tokens ahead: pass labels = input_ids, or expected_shift=1 if this model does "
                "not shift"
            )
    elif ahead > 2:
        cause = (
            f"the shift is applied more than once: the model learns to predict {ahead} tokens ahead"
        )
    else:
        cause = (
            "targets lag the inputs: labels rolled the wrong way (np.roll(tokens, 1) instead of "
            "-1) or inputs and targets swapped; the model learns to repeat a token it has seen"
        )
    return text, cause


def _padding(x: np.ndarray, keep: np.ndarray | None, o: _Options) -> tuple[np.ndarray, str]:
    """Padded positions: mask == 0, or pad_id in the inputs, and how they were found.

    When pad_id == eos_id an EOS inside a packed row looks like padding, so only leading or
    trailing runs of at least two pad ids count (left or right padding after the real EOS).
    """
    padded = ~keep if keep is not None else np.zeros(x.shape, bool)
    how = ["mask == 0"] if keep is not None else []
    if o.pad_id is not None:
        is_pad = x == o.pad_id
        if o.pad_id == o.eos_id and x.size:
            seq = x.shape[1]
            cols = np.arange(seq)
            lead = np.where(is_pad.all(axis=1), seq, np.argmax(~is_pad, axis=1))
            trail = np.where(is_pad.all(axis=1), seq, np.argmax(~is_pad[:, ::-1], axis=1))
            lead[lead < 2] = 0
            trail[trail < 2] = 0
            is_pad = (cols < lead[:, None]) | (cols >= seq - trail[:, None])
        padded = padded | is_pad
        how.append(f"inputs == pad_id={o.pad_id}")
    return padded, " or ".join(how)


def _eos(
    x: np.ndarray,
    t: np.ndarray,
    keep: np.ndarray | None,
    valid: np.ndarray,
    labelled: np.ndarray,
    eos_id: int,
    k: int,
) -> tuple[int, int, int]:
    """(positions that should predict EOS, valid EOS targets, those of the first masked).

    A position i should predict EOS when the input its target is aligned with,
    ``inputs[b, i + expected_shift]``, is eos_id and is the first of its run: with pad == eos the
    rest of the run is padding, whose labels are rightly masked. Its own mask must keep i (a
    real token predicts the EOS). "Every EOS masked" is then: such positions exist, some have
    target == ignore_index, and no valid target anywhere equals eos_id. An EOS only in the last
    target column (the input it follows is cut off) cannot be seen from the inputs.
    """
    seq = x.shape[1]
    is_eos = x == eos_id
    first = is_eos.copy()
    first[:, 1:] &= ~is_eos[:, :-1]
    expects = np.zeros(x.shape, bool)
    if abs(k) < seq:
        if k >= 0:
            expects[:, : seq - k] = first[:, k:]
        else:
            expects[:, -k:] = first[:, : seq + k]
    if keep is not None:
        expects &= keep
    kept = int(np.count_nonzero(valid & (t == eos_id)))
    masked = int(np.count_nonzero(expects & ~labelled))
    return int(np.count_nonzero(expects)), kept, masked


# --------------------------------------------------------------------------------------------
# watching a data loader

T = TypeVar("T")


class DataMisalignmentWarning(UserWarning):
    """probe.watch(on_fail="warn") found a misaligned batch; ``report`` holds the evidence."""

    def __init__(self, message: str, report: AlignmentReport | None = None, batch: int = 0) -> None:
        self.report = report
        self.batch = batch
        super().__init__(message)


def _pick(
    has: Callable[[str], bool],
    found: Sequence[str],
    key: str | None,
    names: Sequence[str],
    arg: str,
) -> str | None:
    """The batch field holding one array: ``key`` if given, else the first of ``names`` present."""
    if key is None:
        return next((n for n in names if has(n)), None)
    if not has(key):
        close = suggest(key, found)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(
            f"{arg}={key!r} is not in the batch, which has "
            f"{', '.join(map(repr, found[:20])) or 'nothing'}.{hint}"
        )
    return key


def split_batch(
    batch: object,
    *,
    inputs_key: str | None = None,
    targets_key: str | None = None,
    mask_key: str | None = None,
) -> tuple[object, object, object]:
    """(inputs, targets, mask or None) from a tuple/list, a mapping, or an object with fields.

    Mappings are looked up by key, other objects by attribute; a tuple or list is positional,
    ``(inputs, targets)`` or ``(inputs, targets, mask)``, unless it is a named tuple and
    ``*_key`` name its fields.
    """
    named = any(k is not None for k in (inputs_key, targets_key, mask_key))
    if isinstance(batch, tuple | list) and not (named and hasattr(batch, "_fields")):
        if named:
            raise UsageError(
                f"inputs_key / targets_key / mask_key name fields of dict or object batches; "
                f"this batch is a plain {type(batch).__name__}, read by position as (inputs, "
                "targets[, mask]). Drop the *_key arguments, or yield dicts."
            )
        if len(batch) in (2, 3):
            return batch[0], batch[1], batch[2] if len(batch) == 3 else None
        raise UsageError(
            f"a {type(batch).__name__} batch must be (inputs, targets) or (inputs, targets, mask); "
            f"this one has {len(batch)} items. Yield a dict with named keys instead, e.g. "
            "{'input_ids': ..., 'labels': ...}."
        )
    if isinstance(batch, np.ndarray) or hasattr(batch, "__array__"):
        raise UsageError(
            f"a batch is one array (type {type(batch).__name__}, shape "
            f"{getattr(batch, 'shape', '?')}): the probe needs inputs and targets. Yield "
            "(inputs, targets[, mask]) tuples or dicts, or call check_alignment(inputs, targets)."
        )
    getter: Callable[[str], object]
    has: Callable[[str], bool]
    if isinstance(batch, Mapping):
        found = [str(k) for k in batch]
        getter, has = batch.__getitem__, batch.__contains__
        kind = "keys"
    else:
        fields = getattr(batch, "_fields", None) or getattr(batch, "__dict__", None)
        found = [str(n) for n in fields] if fields else [n for n in dir(batch) if n[:1] != "_"]
        getter = lambda name: getattr(batch, name)  # noqa: E731
        has = lambda name: hasattr(batch, name)  # noqa: E731
        kind = "attributes"
    ik = _pick(has, found, inputs_key, INPUT_KEYS, "inputs_key")
    tk = _pick(has, found, targets_key, TARGET_KEYS, "targets_key")
    mk = _pick(has, found, mask_key, MASK_KEYS, "mask_key")
    if ik is None or tk is None:
        missing = " and ".join(
            f"{what} ({' / '.join(names)})"
            for what, names, got in (("inputs", INPUT_KEYS, ik), ("targets", TARGET_KEYS, tk))
            if got is None
        )
        shown = ", ".join(repr(f) for f in found[:20]) or "none"
        raise UsageError(
            f"cannot find {missing} in a batch of type {type(batch).__name__} ({kind}: {shown}). "
            "Name them: probe.watch(loader, inputs_key=..., targets_key=..., mask_key=...), or "
            "yield (inputs, targets[, mask]) tuples."
        )
    return getter(ik), getter(tk), getter(mk) if mk is not None else None


class Watch(Generic[T]):
    """Iterates a data loader unchanged, checking the first ``n`` batches with check_alignment.

    ``reports`` holds one AlignmentReport per checked batch. Once ``n`` batches were checked the
    wrapper steps aside: the rest of the epoch is delegated to the loader's own iterator, and a
    later epoch iterates the loader directly.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        n: int,
        on_fail: str,
        options: _Options,
        keys: tuple[str | None, str | None, str | None],
    ) -> None:
        self.iterable = iterable
        self.n = n
        self.on_fail = on_fail
        self.reports: list[AlignmentReport] = []
        self._options = options
        self._keys = keys

    def __iter__(self) -> Iterator[T]:
        if len(self.reports) >= self.n:
            return iter(self.iterable)
        return self._checking()

    def _checking(self) -> Iterator[T]:
        it = iter(self.iterable)
        while len(self.reports) < self.n:
            try:
                batch = next(it)
            except StopIteration:
                return
            self._check(batch, len(self.reports))
            yield batch
        yield from it

    def _check(self, batch: object, index: int) -> None:
        inputs_key, targets_key, mask_key = self._keys
        inputs, targets, mask = split_batch(
            batch, inputs_key=inputs_key, targets_key=targets_key, mask_key=mask_key
        )
        o = self._options
        report = check_alignment(
            inputs,
            targets,
            mask=mask,
            ignore_index=o.ignore_index,
            vocab=o.vocab,
            expected_shift=o.expected_shift,
            pad_id=o.pad_id,
            eos_id=o.eos_id,
            max_ignored=o.max_ignored,
        )
        self.reports.append(report)
        if report.verdict != "data-misalignment":
            return
        message = f"batch {index}: {report}"
        if self.on_fail == "raise":
            raise DataMisalignment(message, report, batch=index)
        warnings.warn(DataMisalignmentWarning(message, report, index), stacklevel=3)


class SizedWatch(Watch[T]):
    """A Watch over a loader with a len(): len() passes through."""

    def __len__(self) -> int:
        return len(cast(Sized, self.iterable))


ON_FAIL = ("raise", "warn")
T_co = TypeVar("T_co", covariant=True)


class _SizedIterable(Protocol[T_co]):
    """A loader with a len(): a list, a torch DataLoader."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[T_co]: ...


@overload
def watch(
    iterable: _SizedIterable[T],
    n: int = 8,
    *,
    on_fail: str = "raise",
    ignore_index: int = -100,
    vocab: int | None = None,
    expected_shift: int = 1,
    pad_id: int | None = None,
    eos_id: int | None = None,
    max_ignored: float = 0.5,
    inputs_key: str | None = None,
    targets_key: str | None = None,
    mask_key: str | None = None,
) -> SizedWatch[T]: ...


@overload
def watch(
    iterable: Iterable[T],
    n: int = 8,
    *,
    on_fail: str = "raise",
    ignore_index: int = -100,
    vocab: int | None = None,
    expected_shift: int = 1,
    pad_id: int | None = None,
    eos_id: int | None = None,
    max_ignored: float = 0.5,
    inputs_key: str | None = None,
    targets_key: str | None = None,
    mask_key: str | None = None,
) -> Watch[T]: ...


def watch(
    iterable: Iterable[T],
    n: int = 8,
    *,
    on_fail: str = "raise",
    ignore_index: int = -100,
    vocab: int | None = None,
    expected_shift: int = 1,
    pad_id: int | None = None,
    eos_id: int | None = None,
    max_ignored: float = 0.5,
    inputs_key: str | None = None,
    targets_key: str | None = None,
    mask_key: str | None = None,
) -> Watch[T]:
    """Yield every batch of ``iterable`` unchanged, checking the first ``n`` with check_alignment.

    A misaligned batch raises DataMisalignment before it reaches the loop (``on_fail="raise"``)
    or warns with DataMisalignmentWarning and is yielded (``on_fail="warn"``). Batches are
    ``(inputs, targets[, mask])`` tuples, mappings or objects with named fields; ``*_key``
    name the fields when the defaults (INPUT_KEYS, TARGET_KEYS, MASK_KEYS) do not fit.
    """
    if on_fail not in ON_FAIL:
        close = suggest(str(on_fail), ON_FAIL)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(
            f"on_fail={on_fail!r} is not one of {', '.join(map(repr, ON_FAIL))}: 'raise' stops "
            f"at the first misaligned batch, 'warn' warns and goes on.{hint}"
        )
    count = _int("n", n)
    if count < 0:
        raise UsageError(f"n={n} must be the number of batches to check: 0 or more (default 8).")
    for name, key in (
        ("inputs_key", inputs_key),
        ("targets_key", targets_key),
        ("mask_key", mask_key),
    ):
        if key is not None and not isinstance(key, str):
            raise UsageError(f"{name}={key!r} must be a key name (a str) or None.")
    options = _options(ignore_index, vocab, expected_shift, pad_id, eos_id, max_ignored)
    if not isinstance(iterable, Iterable):
        raise UsageError(
            f"watch() wraps a data loader; got a {type(iterable).__name__}, which is not iterable."
        )
    cls = SizedWatch if isinstance(iterable, Sized) else Watch
    return cls(iterable, count, on_fail, options, (inputs_key, targets_key, mask_key))


# --------------------------------------------------------------------------------------------
# the probe-data command


def _load_npz(path: Path) -> Mapping[str, np.ndarray]:
    import zipfile

    if not path.is_file():
        raise UsageError(
            f"{path} does not exist"
            + (" (it is a directory)" if path.is_dir() else "")
            + ". Save a batch with np.savez('batch.npz', inputs=..., targets=...)."
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(
            f"{path} is not a numpy .npz file ({exc}). Save the batch with "
            "np.savez('batch.npz', inputs=..., targets=...)."
        ) from None
    if not isinstance(loaded, Mapping):
        raise UsageError(
            f"{path} holds a single array (shape {getattr(loaded, 'shape', '?')}), not an .npz "
            "of named arrays. Save both: np.savez('batch.npz', inputs=..., targets=...)."
        )
    try:
        return {name: loaded[name] for name in loaded}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(
            f"{path}: an array could not be read ({exc}). Save plain numeric arrays "
            "(allow_pickle is off: object arrays are refused)."
        ) from None


def run_probe_data(args: argparse.Namespace, console: Console) -> int:
    """``gradcheck probe-data``: print the report, write --json FILE; the verdict's exit code."""
    from rich.markup import escape

    path = Path(args.batch)
    from ._files import check_output_dir

    check_output_dir("--json", args.json)
    arrays = _load_npz(path)
    names = list(arrays)
    picked: dict[str, str | None] = {}
    for what, flag, given, defaults in (
        ("inputs", "--inputs", args.inputs, INPUT_KEYS),
        ("targets", "--targets", args.targets, TARGET_KEYS),
        ("mask", "--mask", args.mask, MASK_KEYS),
    ):
        if given is not None:
            if given not in arrays:
                close = suggest(given, names)
                hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise UsageError(
                    f"{flag} {given}: {path.name} has no array named {given!r}; it has "
                    f"{', '.join(map(repr, names)) or 'none'}.{hint}"
                )
            picked[what] = given
        else:
            picked[what] = next((d for d in defaults if d in arrays), None)
            if picked[what] is None and what != "mask":
                raise UsageError(
                    f"{path.name} has no {what} array under the default names "
                    f"({', '.join(defaults)}); it has {', '.join(map(repr, names)) or 'none'}. "
                    f"Name it: {flag} KEY."
                )
    mask_key = picked["mask"]
    report = check_alignment(
        arrays[str(picked["inputs"])],
        arrays[str(picked["targets"])],
        mask=arrays[mask_key] if mask_key is not None else None,
        ignore_index=args.ignore_index,
        vocab=args.vocab,
        expected_shift=args.expected_shift,
        pad_id=args.pad_id,
        eos_id=args.eos_id,
        max_ignored=args.max_ignored,
    )
    keys = f"inputs={picked['inputs']}, targets={picked['targets']}" + (
        f", mask={mask_key}" if mask_key is not None else ""
    )
    console.print(
        f"gradcheck probe-data {escape(str(path))} ({escape(keys)})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(report, highlight=False, soft_wrap=True)
    if args.json is not None:
        from ._files import write_atomically

        write_atomically(args.json, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
        console.print(f"report written to {escape(args.json)}", highlight=False, soft_wrap=True)
    return report.exit_code
