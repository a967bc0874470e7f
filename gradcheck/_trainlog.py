"""Probable verdicts from a training log: `gradcheck diagnose-log train.jsonl`.

A run that only left a log (a C++ trainer, a cluster job) still says a lot: the loss at init against
ln V, a loss that collapses to 0, the clip rate after warm-up, what the loss did when the learning
rate changed, spikes, the trend. From those this module gives a *probable* verdict (a log is not a
check: the next steps say which check settles it) with every finding that led to it::

    from gradcheck._trainlog import diagnose_log

    report = diagnose_log("train.jsonl", vocab=2000, max_norm=1.5)
    print(report)              # kernel-bug (probable, from the log): not the learning rate: ...
    report.to_dict()["verdict"]

The facts and thresholds come from FIELD_NOTES.md sections 1, 4 and 5; each threshold below says
why it has its value. The verdict rules are the ordered table ``RULES``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from ._errors import UsageError
from ._logread import ALIASES as ALIASES
from ._logread import LogSeries as LogSeries
from ._logread import format_step as _step
from ._logread import read_log as read_log
from ._subcommands import TRAINING_LOG_GUIDE
from .results import _finite

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
LogVerdict = Literal["pass", "kernel-bug", "lr-problem", "data-misalignment", "inconclusive"]

SCHEMA = "gradcheck.training-log"
SCHEMA_VERSION = 1
GUIDE = TRAINING_LOG_GUIDE
PLOT_INSTALL = 'pip install "gradcheck[plot]"'
# Exit code of `gradcheck diagnose-log` for each verdict: a probable problem fails, like a check.
EXIT_CODES: dict[str, int] = {
    "pass": 0,
    "kernel-bug": 1,
    "lr-problem": 1,
    "data-misalignment": 1,
    "inconclusive": 0,
}
STYLES = {
    "pass": "green",
    "kernel-bug": "bold red",
    "lr-problem": "bold magenta",
    "data-misalignment": "bold yellow",
    "inconclusive": "yellow",
}


# --- thresholds (FIELD_NOTES.md sections 1, 4 and 5; "the synthetic logs" are the seeded curves
# --- built in tests/unit/test_diagnose_log.py: healthy, lr too high, the field-notes case, copy task)

# Fewer finite losses than this: the windows below have no noise estimate, so no verdict.
MIN_RECORDS = 30
# The first logged loss counts as "at init" only when it was logged this close to the first step.
INIT_STEP_MAX = 10
# A fresh model predicts near uniform: loss_0 ~ ln V; random logits of std s add ~ s^2 / 2, so a
# start within 1 nat of ln V allows logits of std up to 1.4; 1 nat below means the model already
# puts e (2.7x) more probability than uniform on the targets before learning anything.
INIT_BAND_NATS = 1.0
# A language model on real text stays above ~1 nat (the entropy of text); a loss under 0.05 nats
# (95% probability on every target) is a copy task or a leak (FIELD_NOTES 5: 8.6 -> 0.0000).
COLLAPSE_LOSS_NATS = 0.05
# Supporting evidence of a collapse: the grad norm fell below 5% of its start (copy task: -> 0).
COLLAPSE_GNORM_FRACTION = 0.05
# Healthy runs clip <= 0.5% of the steps after warm-up (FIELD_NOTES 4).
CLIP_HEALTHY = 0.005
# ">= 99% clipped" reads as every step: a handful of unclipped steps does not change the picture.
CLIP_ALWAYS = 0.99
# Fewer post-warm-up steps than this: a clip rate is not judged (one clip would already be 5%).
CLIP_MIN_STEPS = 20
# An lr change between two records of >= 2x is a regime boundary; smooth decays change far less
# per record (a cosine over 1,000 steps: < 1% per step).
LR_JUMP = 2.0
# ...and the lr must be flat (within 1.25x) for 3 records on each side: this keeps the warm-up
# ramp and the last steps of a decay to 0 (where step-to-step ratios blow up) out.
LR_FLAT_RECORDS = 3
LR_FLAT_RATIO = 1.25
# Loss level before / after an lr change: the median of up to 200 records on each side (enough
# for a median good to a few % of the spread), and at least 10 to judge at all.
LR_WINDOW_RECORDS = 200
LR_WINDOW_MIN = 10
# A plateau is "not the learning rate" when it did not move under an lr change of >= 5x (FIELD_NOTES
# 1 saw none under 20x); a 2x change moves even a healthy loss too little to tell the two apart.
PLATEAU_LR_RATIO = 5.0
# "Did not move": the two medians differ by less than half the per-step spread (a move smaller
# than that is not material), and never less than 3 standard errors of their difference (window
# noise alone cannot read as a move). The synthetic logs: field-notes 0.02 and 0.01 vs bands of
# 0.19 and 0.21 (unchanged); lr too high 0.66 vs 0.22 and a healthy 10x step decay 0.26 vs 0.046
# (moved).
PLATEAU_BAND_SIGMAS = 0.5
PLATEAU_SE_K = 3.0
# Only a stuck loss is a plateau: one still above half its starting value. A loss that fell below
# that and then ignores an lr cut has converged (the healthy synthetic log falls to 33%).
PLATEAU_STUCK_FRACTION = 0.5
# Spikes: a loss above the median of the 50 records before it by 6 robust sigmas (MAD x 1.4826)
# and by >= 5% of that median and >= 0.05 nats: Gaussian noise crosses 6 sigma once in 5e8
# records; the healthy synthetic log has none, the lr-too-high one has one every ~40 records.
SPIKE_WINDOW = 50
SPIKE_MADS = 6.0
SPIKE_MIN_REL = 0.05
SPIKE_MIN_NATS = 0.05
# A grad-norm spike: 6 robust sigmas and 50% above its rolling median (grad norms are noisier).
GNORM_SPIKE_REL = 0.5
# One or two spikes is a bad batch; 3 or more is a pattern.
SPIKES_MIN = 3
# After an lr cut, spikes at <= 1/4 of the rate before count as removed by the lower lr.
FIXED_SPIKE_RATE = 0.25
# Rolling medians start a window every 1/20 of its length: smooth enough, and cheap on long logs.
ROLLING_STEPS = 20
# Trend windows: the first and last 10% of the records, at least 10 each.
TREND_FRACTION = 0.1
TREND_MIN_RECORDS = 10
# A change in the loss level of less than 2% over the run is no trend (and never < 3 standard
# errors, as above).
TREND_MIN_REL = 0.02
# Rising: the loss gave back more than a quarter of what it had gained (from its best level).
RISE_FRACTION = 0.25
# Grad norm "not falling": its last window is still >= 80% of its first after warm-up.
GNORM_FALL = 0.8
# With a rising loss, a grad norm that grew 2x or more is divergence (the iterates blow up).
GNORM_GROWTH = 2.0
# The loss "oscillates" rather than sits flat when its 5th-95th percentile range is >= 5% of it.
OSCILLATION_REL = 0.05


@dataclass(frozen=True)
class LogFinding:
    """One signal read from the log: what was observed, what it means, where it points."""

    key: str  # init | collapse | clip-rate | plateau | lr-changes | lr-fixed | spikes | ...
    label: str  # a few words for the plot
    observed: str
    meaning: str
    points_to: LogVerdict | None  # None: context, not evidence for a verdict
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return f"{self.observed}: {self.meaning}" if self.meaning else self.observed

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "observed": self.observed,
            "meaning": self.meaning,
            "points_to": self.points_to,
            "numbers": _finite(self.numbers),
        }


@dataclass(frozen=True)
class LogReport:
    """The probable verdict on one training log, the findings behind it and what to do next."""

    verdict: LogVerdict
    headline: str
    rule: str  # the key of the RULES row that decided
    findings: tuple[LogFinding, ...]  # the lead finding first, then its support, then context
    next_steps: tuple[str, ...]
    signals: dict[str, dict[str, Any]]  # the numbers of every signal, computed or not
    not_computed: dict[str, str]  # signal -> why it could not be computed
    source: str
    records: int
    columns: dict[str, str]  # field -> the column it was read from
    settings: dict[str, Any]  # vocab, warmup, max_norm as given
    notes: tuple[str, ...] = ()
    likely_cause: str = ""
    probable: bool = True  # always: a log suggests, a check decides
    series: LogSeries | None = field(default=None, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def lines(self) -> list[str]:
        """The report as the CLI prints it, one string per line."""
        out = [f"{self.verdict} (probable, from the log): {self.headline}"]
        if self.likely_cause:
            out.append(f"  likely cause: {self.likely_cause}")
        # a finding the headline already quotes is not printed twice (it stays in to_dict)
        out += [f"  {f.text}" for f in self.findings[1:] if f.observed not in self.headline]
        if self.not_computed:
            out.append(
                "  not computed: "
                + "; ".join(f"{k} ({why})" for k, why in self.not_computed.items())
            )
        out += [f"  note: {n}" for n in self.notes]
        shown = ", ".join(self.columns.values())
        steps = self.signals.get("log", {})
        out.append(
            f"  log: {self.source}, {self.records:,} records, steps {_step(steps.get('first_step'))}"
            f" - {_step(steps.get('last_step'))} (columns read: {shown})"
        )
        if self.next_steps:
            out.append(
                "  next: " + "  ".join(f"{i}. {s}" for i, s in enumerate(self.next_steps, 1))
            )
        out.append(f"  guide: {GUIDE}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        first, *rest = self.lines()
        head = Text(self.verdict, style=STYLES[self.verdict])
        head.append(first[len(self.verdict) :], style="")
        yield head
        for line in rest:
            yield Text(line)

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "gradcheck_version": __version__,
            "verdict": self.verdict,
            "probable": self.probable,
            "rule": self.rule,
            "headline": self.headline,
            "likely_cause": self.likely_cause,
            "findings": [f.to_dict() for f in self.findings],
            "next_steps": list(self.next_steps),
            "signals": _finite(self.signals),
            "not_computed": dict(self.not_computed),
            "log": {"source": self.source, "records": self.records, "columns": self.columns},
            "settings": _finite(self.settings),
            "notes": list(self.notes),
            "guide": GUIDE,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# --- numbers -----------------------------------------------------------------------------------


def _sigma(x: FloatArray) -> float:
    """Robust standard deviation (MAD x 1.4826) of the finite values; 0 when too few."""
    v = x[np.isfinite(x)]
    if v.size < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _median(x: FloatArray) -> float:
    v = x[np.isfinite(x)]
    return float(np.median(v)) if v.size else math.nan


def _se_diff(s1: float, n1: int, s2: float, n2: int) -> float:
    """Standard error of the difference of two medians (each ~1.25 sigma / sqrt(n))."""
    return 1.2533 * math.sqrt(s1 * s1 / max(n1, 1) + s2 * s2 / max(n2, 1))


def rolling_median(x: FloatArray, window: int) -> tuple[npt.NDArray[np.intp], FloatArray]:
    """Medians of windows of ``window`` consecutive finite values of x, and where they start.

    The windows start every window/ROLLING_STEPS values (and at the last full window), so a long
    log costs ~ROLLING_STEPS x its length, not window x its length.
    """
    v = x[np.isfinite(x)]
    if v.size < window:
        return np.zeros(0, dtype=np.intp), np.zeros(0)
    stride = max(1, window // ROLLING_STEPS)
    starts = np.unique(np.append(np.arange(0, v.size - window + 1, stride), v.size - window))
    return starts, np.array([np.median(v[i : i + window]) for i in starts])


def _spikes(x: FloatArray, *, rel: float, floor: float) -> BoolArray:
    """x[i] far above the median of the SPIKE_WINDOW records before it (NaN never a spike)."""
    n = x.size
    out = np.zeros(n, dtype=bool)
    if n <= TREND_MIN_RECORDS:
        return out
    padded = np.concatenate([np.full(SPIKE_WINDOW, np.nan), x])
    windows = np.lib.stride_tricks.sliding_window_view(padded[:-1], SPIKE_WINDOW)
    history = np.isfinite(windows).sum(axis=1)
    rows = np.flatnonzero((history >= TREND_MIN_RECORDS) & np.isfinite(x))
    for lo in range(0, rows.size, 20_000):  # bounded memory on a long log
        r = rows[lo : lo + 20_000]
        w = windows[r]
        med = np.nanmedian(w, axis=1)
        mad = np.nanmedian(np.abs(w - med[:, None]), axis=1)
        bar = np.maximum(SPIKE_MADS * 1.4826 * mad, np.maximum(rel * np.abs(med), floor))
        out[r] = x[r] > med + bar
    return out


def _trend_window(m: int) -> int:
    return max(TREND_MIN_RECORDS, int(TREND_FRACTION * m))


def _rise(x: FloatArray) -> dict[str, Any]:
    """Did the (finite) loss of this stretch rise from its best level? Numbers for the finding."""
    v = x[np.isfinite(x)]
    k = _trend_window(v.size)
    if v.size < 2 * k:
        return {"rising": False, "judged": False}
    starts, smooth = rolling_median(v, k)
    start, end = float(smooth[0]), float(smooth[-1])
    earlier = starts <= v.size - 2 * k  # windows clear of the last one
    j = int(np.argmin(np.where(earlier, smooth, np.inf)))
    at, best = int(starts[j]), float(smooth[j])
    s_end = _sigma(v[-k:])
    band = max(
        RISE_FRACTION * max(start - best, 0.0),
        TREND_MIN_REL * abs(best),
        PLATEAU_SE_K * _se_diff(s_end, k, _sigma(v[at : at + k]), k),
    )
    return {
        "rising": end - best > band,
        "judged": True,
        "start": start,
        "best": best,
        "end": end,
        "band": band,
    }


# --- formatting ----------------------------------------------------------------------------


def _lr(x: float) -> str:
    """1e-3 rather than 0.001 or 1.00e-03."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    mant, exp = f"{x:.2e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def _g(x: float) -> str:
    return f"{x:.3g}"


def _pct(r: float) -> str:
    return f"{100 * r:.3g}%"


# --- signals --------------------------------------------------------------------------------


@dataclass
class _Signals:
    """Everything measured on one log; the rules and the findings read from here."""

    series: LogSeries
    vocab: int | None
    warmup_index: int = 0
    warmup_step: float | None = None
    warmup_source: str = "none"
    spikes: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    gnorm_spikes: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    boundaries: list[dict[str, Any]] = field(default_factory=list)
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_computed: dict[str, str] = field(default_factory=dict)
    findings: dict[str, LogFinding] = field(default_factory=dict)

    def add(self, finding: LogFinding) -> None:
        self.findings[finding.key] = finding
        self.numbers[finding.key] = finding.numbers


def _warmup(sig: _Signals, warmup: int | None) -> None:
    s = sig.series
    if warmup is not None:
        sig.warmup_index = int(np.searchsorted(s.step, warmup, side="left"))
        sig.warmup_step, sig.warmup_source = float(warmup), "--warmup"
        return
    if s.lr is None:
        return
    lr = s.lr
    i = 0
    # the ramp rises at every record; a flat stretch ends it (a later lr raise is a regime change)
    while i + 1 < lr.size and np.isfinite(lr[i + 1]) and lr[i + 1] > lr[i]:
        i += 1
    if i == 0 or not np.isfinite(lr[0]) or not lr[0] < 0.5 * lr[i]:
        return
    sig.warmup_index, sig.warmup_step, sig.warmup_source = i, float(s.step[i]), "lr ramp"


def _signal_init(sig: _Signals) -> None:
    s = sig.series
    if sig.vocab is None:
        sig.not_computed["loss at init"] = "give --vocab V to compare it with ln V"
        return
    finite = np.flatnonzero(np.isfinite(s.loss))
    if not finite.size:
        return
    i = int(finite[0])
    loss0, step0 = float(s.loss[i]), float(s.step[i])
    ln_v = math.log(sig.vocab)
    at_init = step0 - float(s.step[0]) <= INIT_STEP_MAX and step0 <= INIT_STEP_MAX
    gap = loss0 - ln_v
    numbers = {
        "loss_0": loss0,
        "step_0": step0,
        "ln_vocab": ln_v,
        "vocab": sig.vocab,
        "gap_nats": gap,
        "at_init": at_init,
        "band_nats": INIT_BAND_NATS,
    }
    observed = f"loss at init {loss0:.2f} vs ln V = {ln_v:.2f} (vocab {sig.vocab:,})"
    points: LogVerdict | None = None
    if not at_init:
        observed = (
            f"first logged loss {loss0:.2f} (step {_step(step0)}) vs ln V = {ln_v:.2f} "
            f"(vocab {sig.vocab:,})"
        )
        meaning, label = "not logged at init: not compared", "init: not logged"
    elif gap < -INIT_BAND_NATS:
        meaning = (
            f"{-gap:.2f} nats below: the model predicts the targets before it has learned "
            "anything: the targets are visible in the inputs (a copy task or a leak)"
        )
        label, points = f"init {loss0:.2f} << ln V {ln_v:.2f}", "data-misalignment"
    elif gap > INIT_BAND_NATS:
        meaning = (
            f"{gap:.2f} nats above: the logits at init are too large (init scale), or the loss "
            "is summed rather than averaged over tokens"
        )
        label = f"init {loss0:.2f} >> ln V {ln_v:.2f}"
    else:
        meaning, label = "a sane start", f"init {loss0:.2f} ~ ln V {ln_v:.2f}"
    sig.add(LogFinding("init", label, observed, meaning, points, numbers))


def _signal_nonfinite(sig: _Signals) -> None:
    s = sig.series
    bad = np.flatnonzero(~np.isfinite(s.loss))
    if not bad.size:
        return
    first = int(bad[0])
    before = s.loss[max(0, first - 5 * TREND_MIN_RECORDS) : first]
    rose = _rise(before)
    g = s.grad_norm
    grew = False
    if g is not None:
        gb = g[max(0, first - 5 * TREND_MIN_RECORDS) : first]
        gb = gb[np.isfinite(gb)]
        k = _trend_window(gb.size)
        grew = gb.size >= 2 * k and _median(gb[-k:]) >= GNORM_GROWTH * _median(gb[:k])
    diverged = first >= TREND_MIN_RECORDS and (bool(rose["rising"]) or grew)
    kinds = sorted({"nan" if math.isnan(v) else "inf" for v in s.loss[bad]})
    observed = (
        f"loss {'/'.join(kinds)} at {bad.size:,} logged steps, first at step "
        f"{_step(float(s.step[first]))}"
    )
    if diverged:
        meaning = (
            "divergence: the loss (or the grad norm) rose before it: the signature of a too-high "
            "learning rate"
        )
    elif first < TREND_MIN_RECORDS:
        meaning = (
            "from the start: not a divergence; the forward pass, the loss kernel or the data "
            "(labels out of range) produce it"
        )
    else:
        meaning = "with no rise before it: an overflow or a bad batch rather than the learning rate"
    sig.add(
        LogFinding(
            "non-finite",
            f"loss {'/'.join(kinds)} x{bad.size}",
            observed,
            meaning,
            "lr-problem" if diverged else None,
            {
                "count": int(bad.size),
                "first_step": float(s.step[first]),
                "diverged": diverged,
                "steps": s.step[bad[:1000]].tolist(),
            },
        )
    )


def _signal_collapse(sig: _Signals) -> None:
    s = sig.series
    v = s.loss[np.isfinite(s.loss)]
    if v.size < MIN_RECORDS:
        return
    k = _trend_window(v.size)
    start, end = float(v[0]), _median(v[-k:])
    if not (end < COLLAPSE_LOSS_NATS and start > 10 * COLLAPSE_LOSS_NATS):
        return
    numbers: dict[str, Any] = {
        "loss_start": start,
        "loss_end": end,
        "threshold": COLLAPSE_LOSS_NATS,
    }
    observed = f"the loss collapsed towards 0: {start:.2g} -> {end:.4f}"
    g = s.grad_norm
    if g is not None:
        gv = g[np.isfinite(g)]
        if gv.size >= 2 * k:
            g0, g1 = _median(gv[:TREND_MIN_RECORDS]), _median(gv[-k:])
            numbers |= {"grad_norm_start": g0, "grad_norm_end": g1}
            if g1 < COLLAPSE_GNORM_FRACTION * g0:
                observed += f", grad norm {_g(g0)} -> {g1:.2g}"
    sig.add(
        LogFinding(
            "collapse",
            f"collapse {start:.2g} -> {end:.4f}",
            observed,
            "a language model on real text cannot get near 0: the targets are visible in the "
            "inputs (targets == inputs, a copy task), or a tiny data set was memorised",
            "data-misalignment",
            numbers,
        )
    )


def _signal_clip(sig: _Signals) -> None:
    s = sig.series
    if s.clipped is None:
        why = "no clipped column"
        if s.grad_norm is not None:
            why += "; give --max-norm X to derive it from grad_norm"
        sig.not_computed["clip rate"] = why
        return
    post = s.clipped[sig.warmup_index :]
    post = post[np.isfinite(post)]
    if post.size < CLIP_MIN_STEPS:
        sig.not_computed["clip rate"] = (
            f"{post.size} logged steps after warm-up, fewer than {CLIP_MIN_STEPS}"
        )
        return
    rate = float(np.mean(post > 0.5))
    after = (
        f"after warm-up (step {_step(sig.warmup_step)}, {sig.warmup_source})"
        if sig.warmup_source != "none"
        else "over every step (no warm-up known: give --warmup N)"
    )
    observed = f"clip rate {after}: {_pct(rate)} of {post.size:,} logged steps (healthy <= {_pct(CLIP_HEALTHY)})"
    norm = f" of max-norm {s.max_norm:g}" if s.max_norm is not None else " (the max-norm)"
    points: LogVerdict | None = None
    if rate >= CLIP_ALWAYS:
        meaning = (
            f"every update is a fixed-length step{norm} along the gradient direction: the "
            "gradient is far larger than the optimizer expects"
        )
        points = "kernel-bug"
    elif rate > CLIP_HEALTHY:
        meaning = "frequent clipping: loss spikes, too high a learning rate, or a max-norm below the typical grad norm"
    else:
        meaning = "within bounds"
    sig.add(
        LogFinding(
            "clip-rate",
            f"clipped {_pct(rate)}",
            observed,
            meaning,
            points,
            {
                "rate": rate,
                "steps": int(post.size),
                "healthy": CLIP_HEALTHY,
                "warmup_step": sig.warmup_step,
                "warmup_source": sig.warmup_source,
                "source": s.clip_source,
                "max_norm": s.max_norm,
            },
        )
    )


def _signal_spikes(sig: _Signals) -> None:
    s = sig.series
    sig.spikes = _spikes(s.loss, rel=SPIKE_MIN_REL, floor=SPIKE_MIN_NATS)
    if s.grad_norm is not None:
        sig.gnorm_spikes = _spikes(s.grad_norm, rel=GNORM_SPIKE_REL, floor=0.0)
    else:
        sig.gnorm_spikes = np.zeros(len(s), dtype=bool)
    gidx = np.flatnonzero(sig.gnorm_spikes)
    sig.numbers["grad-norm-spikes"] = {
        "count": int(gidx.size),
        "steps": s.step[gidx[:1000]].tolist(),
    }
    idx = np.flatnonzero(sig.spikes)
    if not idx.size:
        sig.numbers["spikes"] = {"count": 0}
        return
    near = sig.gnorm_spikes.copy()
    near[1:] |= sig.gnorm_spikes[:-1]
    near[:-1] |= sig.gnorm_spikes[1:]
    with_g = int(np.sum(near[idx]))
    worst = int(idx[np.argmax(s.loss[idx])])
    med = _median(s.loss[max(0, worst - SPIKE_WINDOW) : worst])
    observed = (
        f"{idx.size:,} loss spikes (above the rolling median + {SPIKE_MADS:g} MAD)"
        + (f", {with_g:,} with a grad-norm spike" if s.grad_norm is not None else "")
        + f"; worst {_g(float(s.loss[worst]))} at step {_step(float(s.step[worst]))} vs median {_g(med)}"
    )
    many = idx.size >= SPIKES_MIN
    meaning = (
        "the signature of a too-high learning rate"
        if many
        else "isolated: one bad batch does this too"
    )
    sig.add(
        LogFinding(
            "spikes",
            f"{idx.size} spikes",
            observed,
            meaning,
            "lr-problem" if many else None,
            {
                "count": int(idx.size),
                "with_grad_norm_spike": with_g,
                "steps": s.step[idx[:1000]].tolist(),
            },
        )
    )


def _signal_trend(sig: _Signals) -> None:
    s = sig.series
    v = s.loss[sig.warmup_index :]
    v = v[np.isfinite(v)]
    k = _trend_window(v.size)
    if v.size < 2 * k:
        v = s.loss[np.isfinite(s.loss)]  # all warm-up (or nearly): judge the whole log
        k = _trend_window(v.size)
        if v.size < 2 * k:
            return
    start, end = _median(v[:k]), _median(v[-k:])
    band = max(
        TREND_MIN_REL * abs(start), PLATEAU_SE_K * _se_diff(_sigma(v[:k]), k, _sigma(v[-k:]), k)
    )
    rise = _rise(v)
    half = v[v.size // 2 :]
    lo, hi = (float(q) for q in np.percentile(half, [5, 95]))
    numbers: dict[str, Any] = {
        "start": start,
        "end": end,
        "band": band,
        "p5_last_half": lo,
        "p95_last_half": hi,
    }
    numbers |= {f"rise_{k2}": v2 for k2, v2 in rise.items() if k2 not in ("judged",)}
    if rise["rising"]:
        trend = "rising"
        observed = (
            f"loss rising: best {_g(rise['best'])}, now {_g(rise['end'])} (start {_g(start)})"
        )
        meaning = "the run is getting worse"
    elif end < start - band:
        trend = "falling"
        observed = f"loss falling: {_g(start)} -> {_g(end)}"
        meaning = "the model learns"
    else:
        trend = "flat"
        if hi - lo >= OSCILLATION_REL * abs(end):
            observed = (
                f"loss oscillating {_g(lo)} - {_g(hi)} without a falling trend (level {_g(end)})"
            )
        else:
            observed = f"loss flat at {_g(end)} (start {_g(start)})"
        meaning = "not learning any more"
    numbers["trend"] = trend
    label = {"rising": "loss rising", "falling": "loss falling", "flat": "loss not falling"}[trend]
    sig.add(LogFinding("trend", label, observed, meaning, None, numbers))


def _signal_grad_norm(sig: _Signals) -> None:
    s = sig.series
    if s.grad_norm is None:
        sig.not_computed["grad norm"] = "no grad_norm column"
        return
    g = s.grad_norm[sig.warmup_index :]
    g = g[np.isfinite(g)]
    k = _trend_window(g.size)
    if g.size < 2 * k:
        return
    first, last = _median(g[:k]), _median(g[-k:])
    lo, hi = (float(q) for q in np.percentile(g, [1, 99]))
    falling = last < GNORM_FALL * first
    grew = last >= GNORM_GROWTH * first
    observed = f"grad norm {lo:.2g} - {hi:.2g}" + (
        f", falling ({_g(first)} -> {_g(last)})"
        if falling
        else f", growing ({_g(first)} -> {_g(last)})"
        if grew
        else ", not falling"
    )
    if falling:
        meaning = ""
    elif grew:
        meaning = "with a rising loss, the iterates blow up; alone, weak evidence"
    else:
        meaning = (
            "weak evidence alone: gradient noise keeps it up in healthy runs (McCandlish et al.)"
        )
    sig.add(
        LogFinding(
            "grad-norm",
            "grad norm falling"
            if falling
            else "grad norm growing"
            if grew
            else "grad norm not falling (weak)",
            observed,
            meaning,
            None,
            {"p1": lo, "p99": hi, "first": first, "last": last, "falling": falling, "grew": grew},
        )
    )


def _signal_params(sig: _Signals) -> None:
    s = sig.series
    if s.param_dist is not None:
        d = s.param_dist
        ok = np.flatnonzero(np.isfinite(d))
        if ok.size < 2:
            return
        i0, i1 = int(ok[0]), int(ok[-1])
        steps = float(s.step[i1] - s.step[i0])
        growth = (float(d[i1]) - float(d[i0])) / steps if steps > 0 else math.nan
        mid = int(ok[ok.size // 2])
        late = float(d[i1]) - float(d[mid])
        numbers: dict[str, Any] = {
            "dist_start": float(d[i0]),
            "dist_end": float(d[i1]),
            "steps": steps,
            "growth_per_step": growth,
            "growth_second_half": late,
        }
        observed = (
            f"distance from init {_g(float(d[i0]))} -> {_g(float(d[i1]))} over "
            f"{_step(steps)} steps ({growth:.2g} per step"
        )
        if s.lr is not None:
            lr_med = _median(s.lr[sig.warmup_index :])
            if lr_med > 0:
                numbers |= {"lr_median": lr_med, "growth_over_lr": growth / lr_med}
                observed += f", {growth / lr_med:.3g}x the median lr {_lr(lr_med)}"
        observed += ")"
        meaning = (
            "the weights keep moving away from init"
            if late > 0
            else "flat over the second half: the updates cancel out (the weights go back and forth)"
        )
        sig.add(
            LogFinding(
                "param-dist",
                f"dist {_g(float(d[i1]))}",
                observed,
                meaning,
                None,
                numbers,
            )
        )
        return
    sig.not_computed["distance from init"] = "no param_dist column"
    if s.param_norm is None:
        return
    p = s.param_norm
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size < 2:
        return
    n0, n1 = float(p[ok[0]]), float(p[ok[-1]])
    ortho = math.sqrt(abs(n1 * n1 - n0 * n0))
    sig.add(
        LogFinding(
            "param-norm",
            "norm logged, not distance",
            f"parameter norm logged, not the distance from init: {n0:.1f} -> {n1:.1f}",
            f"a norm change of {abs(n1 - n0):.2g} fits a step of size "
            f"{f'{ortho:.1f}' if ortho >= 1 else f'{ortho:.2g}'} orthogonal to "
            "the weights, so it says nothing about movement: log param_dist = "
            "||theta - theta_0|| instead",
            None,
            {"norm_start": n0, "norm_end": n1, "orthogonal_step": ortho},
        )
    )


def _signal_lr_changes(sig: _Signals) -> None:
    s = sig.series
    if s.lr is None:
        sig.not_computed["lr changes"] = "no lr column"
        return
    lr, n = s.lr, len(s)
    cuts: list[int] = []
    for i in range(max(sig.warmup_index, 1), n):
        a, b = lr[i - 1], lr[i]
        if not (np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0):
            continue
        if max(a / b, b / a) < LR_JUMP * (1 - 1e-9):
            continue
        left = lr[max(0, i - LR_FLAT_RECORDS) : i]
        right = lr[i : i + LR_FLAT_RECORDS]
        if left.size < LR_FLAT_RECORDS or right.size < LR_FLAT_RECORDS:
            continue
        flat_l = np.all(np.isfinite(left)) and left.max() <= LR_FLAT_RATIO * left.min()
        flat_r = np.all(np.isfinite(right)) and right.max() <= LR_FLAT_RATIO * right.min()
        if flat_l and flat_r:
            cuts.append(i)
    edges = [sig.warmup_index, *cuts, n]
    for j, i in enumerate(cuts):
        lo_b = max(edges[j], i - LR_WINDOW_RECORDS)
        hi_a = min(edges[j + 2], i + LR_WINDOW_RECORDS)
        before, after = s.loss[lo_b:i], s.loss[i:hi_a]
        nb, na = int(np.isfinite(before).sum()), int(np.isfinite(after).sum())
        lb, la = _median(before), _median(after)
        sb, sa = _sigma(before), _sigma(after)
        band = max(PLATEAU_BAND_SIGMAS * max(sb, sa), PLATEAU_SE_K * _se_diff(sb, nb, sa, na))
        judged = nb >= LR_WINDOW_MIN and na >= LR_WINDOW_MIN
        regime_b = slice(edges[j], i)
        regime_a = slice(i, edges[j + 2])
        sig.boundaries.append(
            {
                "index": i,
                "step": float(s.step[i]),
                "lr_before": float(lr[i - 1]),
                "lr_after": float(lr[i]),
                "ratio": float(max(lr[i - 1] / lr[i], lr[i] / lr[i - 1])),
                "direction": "down" if lr[i] < lr[i - 1] else "up",
                "loss_before": lb,
                "loss_after": la,
                "records_before": nb,
                "records_after": na,
                "band": band,
                "judged": judged,
                "moved": judged and abs(la - lb) > band,
                "window": (lo_b, hi_a),
                "regime_before": (edges[j], i),
                "regime_after": (i, edges[j + 2]),
                "spikes_before": int(sig.spikes[regime_b].sum()),
                "spikes_after": int(sig.spikes[regime_a].sum()),
            }
        )
    public = [
        {
            k: v
            for k, v in b.items()
            if k not in ("index", "window", "regime_before", "regime_after")
        }
        for b in sig.boundaries
    ]
    sig.numbers["lr-changes"] = {"changes": public}
    if not sig.boundaries:
        return
    parts = []
    for b in sig.boundaries:
        what = (
            "too few records to judge"
            if not b["judged"]
            else f"loss {_g(b['loss_before'])} -> {_g(b['loss_after'])}, "
            + ("moved" if b["moved"] else "unchanged")
            + f" (band +/-{b['band']:.2g})"
        )
        parts.append(
            f"{_lr(b['lr_before'])} -> {_lr(b['lr_after'])} at step {_step(b['step'])}: {what}"
        )
    sig.add(
        LogFinding(
            "lr-changes",
            f"{len(sig.boundaries)} lr change(s)",
            "lr changes: " + "; ".join(parts),
            "",
            None,
            {"changes": public},
        )
    )


def _plateau(sig: _Signals) -> None:
    """The largest lr change, over consecutive changes in one direction, the loss ignored."""
    s = sig.series
    finite = s.loss[np.isfinite(s.loss)]
    if not finite.size:
        return
    loss0 = float(finite[0])
    best: tuple[float, int, int] | None = None
    bs = sig.boundaries
    for a in range(len(bs)):
        for b in range(a, len(bs)):
            chain = bs[a : b + 1]
            if any(
                c["direction"] != bs[a]["direction"] or not c["judged"] or c["moved"] for c in chain
            ):
                break
            first, last = chain[0], chain[-1]
            ratio = first["lr_before"] / last["lr_after"]
            ratio = max(ratio, 1 / ratio)
            overall = abs(last["loss_after"] - first["loss_before"])
            if overall > max(c["band"] for c in chain):
                continue  # small steps that add up to a move
            if best is None or ratio > best[0]:
                best = (ratio, a, b)
    if best is None or best[0] < PLATEAU_LR_RATIO * (1 - 1e-9):
        return
    ratio, a, b = best
    first, last = bs[a], bs[b]
    level = _median(s.loss[first["window"][0] : last["window"][1]])
    stuck = level >= PLATEAU_STUCK_FRACTION * loss0
    verb = "fell" if first["direction"] == "down" else "rose"
    observed = (
        f"the loss plateau at {_g(level)} did not move when lr {verb} {ratio:.3g}x "
        f"({_lr(first['lr_before'])} -> {_lr(last['lr_after'])} at step {_step(last['step'])})"
    )
    numbers = {
        "level": level,
        "lr_ratio": ratio,
        "lr_from": first["lr_before"],
        "lr_to": last["lr_after"],
        "step": last["step"],
        "loss_0": loss0,
        "stuck": stuck,
        "changes": b - a + 1,
    }
    if stuck:
        sig.add(
            LogFinding(
                "plateau",
                f"plateau {_g(level)}: lr {ratio:.3g}x, no move",
                observed,
                "not the learning rate: the gradient the optimizer follows (or data the model "
                "cannot learn from) holds the loss there",
                "kernel-bug",
                numbers,
            )
        )
    else:
        sig.add(
            LogFinding(
                "plateau",
                f"converged {_g(level)}",
                observed,
                f"at {_pct(level / loss0)} of the starting loss: converged, not stuck",
                None,
                numbers,
            )
        )


def _lr_fixed(sig: _Signals) -> None:
    """Spikes, non-finite losses or a rise at one lr that stopped after a cut to a lower lr."""
    s = sig.series
    for b in sig.boundaries:
        if b["direction"] != "down":
            continue
        (b0, b1), (a0, a1) = b["regime_before"], b["regime_after"]
        if a1 - a0 < LR_WINDOW_MIN or b1 - b0 < LR_WINDOW_MIN:
            continue
        before, after = s.loss[b0:b1], s.loss[a0:a1]
        nan_b = int((~np.isfinite(before)).sum())
        nan_a = int((~np.isfinite(after)).sum())
        rise_b, rise_a = _rise(before), _rise(after)
        sp_b, sp_a = b["spikes_before"], b["spikes_after"]
        rate_b, rate_a = sp_b / (b1 - b0), sp_a / (a1 - a0)
        unstable = sp_b >= SPIKES_MIN or nan_b > 0 or bool(rise_b["rising"])
        calm = (
            nan_a == 0
            and not rise_a["rising"]
            and sp_a < SPIKES_MIN
            and rate_a <= FIXED_SPIKE_RATE * max(rate_b, 1e-12)
        )
        if not (unstable and calm):
            continue
        what = []
        if sp_b:
            what.append(f"{sp_b:,} loss spikes")
        if nan_b:
            what.append(f"{nan_b:,} non-finite losses")
        if rise_b["rising"]:
            what.append(f"a rise {_g(rise_b['best'])} -> {_g(rise_b['end'])}")
        fa = after[np.isfinite(after)]
        k = _trend_window(fa.size)
        l0, l1 = _median(fa[:k]), _median(fa[-k:])
        observed = (
            f"{' and '.join(what)} at lr {_lr(b['lr_before'])} stopped after the cut to "
            f"{_lr(b['lr_after'])} at step {_step(b['step'])}"
            + (f" ({sp_a} spikes after)" if sp_a else "")
            + f"; then the loss went {_g(l0)} -> {_g(l1)}"
        )
        sig.add(
            LogFinding(
                "lr-fixed",
                f"lr {_lr(b['lr_before'])} unstable, {_lr(b['lr_after'])} calm",
                observed,
                f"the lower lr removed the instability: lr {_lr(b['lr_before'])} was too high",
                "lr-problem",
                {
                    "step": b["step"],
                    "lr_before": b["lr_before"],
                    "lr_after": b["lr_after"],
                    "spikes_before": sp_b,
                    "spikes_after": sp_a,
                    "nonfinite_before": nan_b,
                    "rising_before": bool(rise_b["rising"]),
                    "loss_after_start": l0,
                    "loss_after_end": l1,
                },
            )
        )
        return


# --- verdict ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One row of the verdict table: the first row whose test finds its lead finding decides."""

    verdict: LogVerdict
    key: str
    when: str
    test: Callable[[_Signals], LogFinding | None]


def _found(key: str, verdict: LogVerdict) -> Callable[[_Signals], LogFinding | None]:
    def test(sig: _Signals) -> LogFinding | None:
        f = sig.findings.get(key)
        return f if f is not None and f.points_to == verdict else None

    return test


def _too_little(sig: _Signals) -> LogFinding | None:
    n = int(np.isfinite(sig.series.loss).sum())
    if n >= MIN_RECORDS:
        return None
    return LogFinding(
        "too-little",
        "too little log",
        f"too little log to judge: {n} finite losses (need >= {MIN_RECORDS})",
        "log more steps (every step, or at least every 10th)",
        "inconclusive",
        {"finite_losses": n, "needed": MIN_RECORDS},
    )


def _unstable(sig: _Signals) -> LogFinding | None:
    """Spikes at the lr the run ended with, or a rise with a growing grad norm / NaN: divergence."""
    spikes = sig.findings.get("spikes")
    if spikes is not None and spikes.points_to == "lr-problem":
        return spikes
    nonfinite = sig.findings.get("non-finite")
    if nonfinite is not None and nonfinite.points_to == "lr-problem":
        return nonfinite
    trend, gn = sig.findings.get("trend"), sig.findings.get("grad-norm")
    if (
        trend is not None
        and trend.numbers["trend"] == "rising"
        and gn is not None
        and gn.numbers["grew"]
    ):
        return LogFinding(
            "divergence",
            "diverging",
            f"{trend.observed}, with the grad norm growing {_g(gn.numbers['first'])} -> "
            f"{_g(gn.numbers['last'])}",
            "divergence: the iterates blow up: the signature of a too-high learning rate",
            "lr-problem",
            {"loss": trend.numbers, "grad_norm": gn.numbers},
        )
    return None


def _falling(sig: _Signals) -> LogFinding | None:
    trend, clip = sig.findings.get("trend"), sig.findings.get("clip-rate")
    if trend is None or trend.numbers["trend"] != "falling" or "non-finite" in sig.findings:
        return None
    if clip is not None and clip.numbers["rate"] > CLIP_HEALTHY:
        return None
    tail = (
        f" and the clip rate after warm-up is {_pct(clip.numbers['rate'])} (healthy <= {_pct(CLIP_HEALTHY)})"
        if clip is not None
        else " (clip rate not logged)"
    )
    return LogFinding(
        "healthy",
        "healthy",
        f"the loss fell from {_g(trend.numbers['start'])} to {_g(trend.numbers['end'])}{tail}",
        "",
        "pass",
        {},
    )


def _undecided(sig: _Signals) -> LogFinding:
    why = []
    trend, clip = sig.findings.get("trend"), sig.findings.get("clip-rate")
    if trend is not None and trend.numbers["trend"] == "rising":
        why.append(
            f"{trend.observed} at one lr with no instability: too high a learning rate or a "
            "gradient with the wrong sign; the log cannot tell them apart"
        )
    elif trend is not None and trend.numbers["trend"] == "flat":
        judged = [b for b in sig.boundaries if b["judged"]]
        tested = (
            "no lr change of >= 5x tested it" if not judged else "the lr changes did not settle it"
        )
        why.append(f"{trend.observed}, and {tested}")
    if clip is not None and clip.numbers["rate"] > CLIP_HEALTHY:
        why.append(
            f"clip rate {_pct(clip.numbers['rate'])} after warm-up (healthy <= {_pct(CLIP_HEALTHY)})"
        )
    if "non-finite" in sig.findings:
        why.append(sig.findings["non-finite"].observed)
    if not why:
        why.append("no signal in the log points anywhere")
    return LogFinding(
        "undecided",
        "undecided",
        "; ".join(why),
        "the checks below decide what the log cannot",
        "inconclusive",
        {},
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "inconclusive",
        "too-little",
        f"fewer than {MIN_RECORDS} finite losses: nothing is judged",
        _too_little,
    ),
    Rule(
        "data-misalignment",
        "collapse",
        "the loss collapsed towards 0 (a copy task: targets == inputs)",
        _found("collapse", "data-misalignment"),
    ),
    Rule(
        "data-misalignment",
        "init-below-ln-v",
        "the loss at init is far below ln V: the model knows the targets before training",
        _found("init", "data-misalignment"),
    ),
    Rule(
        "lr-problem",
        "lr-fixed",
        "spikes, non-finite losses or a rise that a cut to a lower lr removed",
        _found("lr-fixed", "lr-problem"),
    ),
    Rule(
        "lr-problem",
        "unstable",
        "repeated loss spikes, a divergence to NaN, or a loss rising with a growing grad norm",
        _unstable,
    ),
    Rule(
        "kernel-bug",
        "plateau",
        "a stuck loss unchanged by an lr change of >= 5x: not the learning rate "
        "(the gradient path, or the data: probe the data first)",
        _found("plateau", "kernel-bug"),
    ),
    Rule(
        "pass",
        "falling",
        "a falling loss with the clip rate within bounds (or not logged), no NaN",
        _falling,
    ),
)


LIKELY_CAUSES: dict[str, str] = {
    "kernel-bug": "a wrong gradient (a loss or backward kernel), or data the model cannot learn "
    "from: probe the data first, then verify the gradient",
    "data-misalignment": "targets not shifted against the inputs (a copy task), shifted twice, or "
    "leaked into the inputs",
    "lr-problem": "a learning rate above the stable step: lower it or warm up longer; if a lower "
    "lr does not help, verify the gradient",
}


def _next_steps(verdict: LogVerdict, rule: str, sig: _Signals) -> tuple[str, ...]:
    v = str(sig.vocab) if sig.vocab is not None else "V"
    probe = "gradcheck probe-data batch.npz"
    run = f"gradcheck run loss-ce --vocab {v} --fd32"
    diagnose = "gradcheck.diagnose_training(...)"
    steps: list[str]
    if verdict == "kernel-bug":
        steps = [probe, run, diagnose]
    elif verdict == "data-misalignment":
        steps = [probe, diagnose]
    elif verdict == "lr-problem":
        steps = [diagnose, run]
    elif verdict == "inconclusive" and rule == "too-little":
        steps = ["log step, loss, grad_norm, lr, clipped and param_dist for every step", probe]
    elif verdict == "inconclusive":
        steps = [probe, run, diagnose]
    else:
        steps = []
    if "param-norm" in sig.findings:
        steps.append("log param_dist = ||theta - theta_0|| instead of the parameter norm")
    return tuple(steps)


def diagnose_log(
    path_or_records: str | os.PathLike[str] | Iterable[Mapping[str, Any]] | LogSeries,
    *,
    vocab: int | None = None,
    warmup: int | None = None,
    max_norm: float | None = None,
) -> LogReport:
    """A probable verdict on a training log, with the findings that led to it.

    ``path_or_records``: a JSON-lines or CSV file, records as dicts (step, loss, grad_norm, lr,
    clipped, param_dist, param_norm or their aliases), or a LogSeries from read_log. ``vocab``
    compares the loss at init with ln V; ``warmup`` (steps) overrides the warm-up found in the lr
    ramp; ``max_norm`` gives clipped = grad_norm > max_norm when the log has no clipped column.

    >>> report = diagnose_log([{"step": i, "loss": 7.6 / (1 + i / 50)} for i in range(200)])
    >>> report.verdict, report.probable
    ('pass', True)
    """
    if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2):
        raise UsageError(f"vocab={vocab!r} must be a whole number >= 2 (the vocabulary size).")
    if warmup is not None and (
        isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0
    ):
        raise UsageError(f"warmup={warmup!r} must be a whole number of steps >= 0.")
    if max_norm is not None and not (math.isfinite(max_norm) and max_norm > 0):
        raise UsageError(f"max_norm={max_norm!r} must be a positive number (the clipping norm).")
    if isinstance(path_or_records, LogSeries):
        series = path_or_records
    else:
        series = read_log(path_or_records, max_norm=max_norm)
    sig = _Signals(series=series, vocab=vocab)
    sig.numbers["log"] = {
        "records": len(series),
        "first_step": float(series.step[0]),
        "last_step": float(series.step[-1]),
    }
    _warmup(sig, warmup)
    sig.numbers["warmup"] = {"step": sig.warmup_step, "source": sig.warmup_source}
    for signal in (
        _signal_init,
        _signal_nonfinite,
        _signal_collapse,
        _signal_spikes,
        _signal_trend,
        _signal_clip,
        _signal_grad_norm,
        _signal_lr_changes,
        _plateau,
        _lr_fixed,
        _signal_params,
    ):
        signal(sig)
    rule_key: str = "undecided"
    verdict: LogVerdict = "inconclusive"
    lead: LogFinding | None = None
    for rule in RULES:
        lead = rule.test(sig)
        if lead is not None:
            rule_key, verdict = rule.key, rule.verdict
            break
    if lead is None:
        lead = _undecided(sig)
    others = [f for f in sig.findings.values() if f is not lead]
    support = [f for f in others if f.points_to == verdict]
    context = [f for f in others if f.points_to != verdict]
    headline = lead.text
    if lead.key == "plateau":  # the conclusion first, as the field notes put it
        headline = f"not the learning rate: {lead.observed}"
    return LogReport(
        verdict=verdict,
        headline=headline,
        rule=rule_key,
        findings=(lead, *support, *context),
        next_steps=_next_steps(verdict, rule_key, sig),
        signals=sig.numbers,
        not_computed=sig.not_computed,
        source=series.source,
        records=len(series),
        columns=dict(series.used),
        settings={"vocab": vocab, "warmup": warmup, "max_norm": max_norm},
        notes=series.notes,
        likely_cause=LIKELY_CAUSES.get(verdict, ""),
        series=series,
    )


# --- the command ------------------------------------------------------------------------------


def run_diagnose_log(args: argparse.Namespace, console: Console) -> int:
    """`gradcheck diagnose-log`: print the report, write the plot and the JSON, exit by verdict."""
    from rich.markup import escape

    from . import _logplot

    plot_path: Path | None = None
    if not args.no_plot:
        plot_path = (
            Path(args.plot)
            if args.plot is not None
            else Path(args.log).with_name(Path(args.log).stem + ".diagnosis.png")
        )
        if args.plot is not None and not _logplot.have_matplotlib():
            raise UsageError(
                f"--plot {args.plot} needs matplotlib, which is not installed: {PLOT_INSTALL} "
                "(or leave out --plot)."
            )
    from ._files import check_output_dir

    check_output_dir("--json", args.json)
    check_output_dir("--plot", args.plot)
    report = diagnose_log(args.log, vocab=args.vocab, warmup=args.warmup, max_norm=args.max_norm)
    console.print(report, highlight=False, soft_wrap=True)
    if plot_path is not None:
        if not _logplot.have_matplotlib():
            console.print(f"plot skipped: {escape(PLOT_INSTALL)}", highlight=False)
        else:
            try:
                written = _logplot.plot_log(report, plot_path)
            except OSError as exc:  # e.g. a read-only directory next to the log
                if args.plot is not None:
                    raise UsageError(
                        f"--plot {args.plot}: cannot write it ({exc.strerror or exc})."
                    ) from None
                console.print(
                    f"plot not written to {escape(str(plot_path))} ({escape(exc.strerror or str(exc))}):"
                    " give --plot FILE elsewhere, or --no-plot",
                    highlight=False,
                )
            else:
                console.print(f"plot written to {escape(str(written))}", highlight=False)
    if args.json is not None:
        from ._files import write_atomically

        write_atomically(args.json, report.to_json() + "\n")
        console.print(f"report written to {escape(args.json)}", highlight=False)
    return report.exit_code
