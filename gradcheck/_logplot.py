"""The PNG plot of `gradcheck diagnose-log`: loss, grad norm and clip rate over the steps.

matplotlib is optional (``pip install "gradcheck[plot]"``) and imported only here, inside the
functions. The figure is drawn with matplotlib.figure.Figure and the Agg canvas directly, never
through pyplot, so the user's backend and global state stay as they were.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._errors import UsageError
from ._logread import FloatArray, LogSeries
from ._trainlog import (
    PLOT_INSTALL,
    LogReport,
    _lr,
    diagnose_log,
    rolling_median,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# The rolling median drawn over the loss and the grad norm spans 2% of the records.
SMOOTH_FRACTION = 0.02
# Rolling clip-rate window: 2% of the records (at least 10) shows the rate change at a regime
# boundary without drowning in 0/1 noise.
CLIP_WINDOW_FRACTION = 0.02
CLIP_WINDOW_MIN = 10
# A loss or grad norm spanning more than 30x is drawn on a log axis (a healthy LM loss spans
# ~3x: ln V to ~2.5 nats; a collapse to 0 or a grad-norm spike would flatten the rest).
LOG_AXIS_SPAN = 30.0
# A clip rate that never exceeds 5% is drawn on a 0-5% axis (the healthy line at 0.5% stays visible).
ZOOM_BELOW_PCT = 5.0
# Non-finite losses are marked at most 40 times (a run that stays NaN would draw a solid bar).
MAX_NAN_MARKERS = 40
# lr-change labels closer than 15% of the step axis are stacked (a label is ~120 px of 1,000).
LABEL_GAP = 0.15
# At most 7 findings labelled on the plot, in lines of up to 120 characters (fits 11 inches at 10pt).
MAX_LABELS = 7
LABELS_PER_LINE = 120
COLORS = {
    "pass": "#2e7d32",
    "kernel-bug": "#c62828",
    "lr-problem": "#8e24aa",
    "data-misalignment": "#ef6c00",
    "inconclusive": "#757575",
}


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def plot_log(report_or_series: LogReport | LogSeries, path: str | os.PathLike[str]) -> Path:
    """Write the diagnosis plot of a log as a PNG at ``path`` (via a temp file and a rename).

    A LogSeries is diagnosed first (with no vocab, warm-up or max-norm). Returns the path written.
    """
    try:
        import matplotlib  # noqa: F401  (a missing or blocked matplotlib fails here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(
            f"the plot needs matplotlib, which is not installed: {PLOT_INSTALL}"
        ) from None
    report = (
        report_or_series
        if isinstance(report_or_series, LogReport)
        else diagnose_log(report_or_series)
    )
    s = report.series
    if s is None:
        raise UsageError(
            "this LogReport carries no series to plot (built by hand?): pass the report that "
            "diagnose_log() returned, or the LogSeries."
        )
    target = Path(path)
    if not target.parent.is_dir():
        raise UsageError(f"cannot write the plot to {target}: {target.parent} does not exist.")

    fig = Figure(figsize=(11, 8.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_g, ax_c = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3.0, 2.0, 1.3]}
    )
    color = COLORS[report.verdict]
    name = Path(report.source).name if report.source != "<records>" else "training log"
    fig.suptitle(
        f"probable {report.verdict} (from the log): {name}",
        color=color,
        fontsize=14,
        fontweight="bold",
    )
    _loss_panel(ax_loss, report, s)
    _grad_panel(ax_g, report, s)
    _clip_panel(ax_c, report, s)
    for ax in (ax_loss, ax_g, ax_c):
        _regimes(ax, report, first=ax is ax_loss)
        ax.grid(True, alpha=0.25)
    ax_c.set_xlabel("step")
    _findings_title(ax_loss, report)

    # a temp name beside the target (not mkstemp: its 0600 mode would stick to the PNG)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _loss_panel(ax: Axes, report: LogReport, s: LogSeries) -> None:
    ok = np.isfinite(s.loss)
    ax.plot(s.step[ok], s.loss[ok], color="#1f77b4", lw=0.7, alpha=0.55, label="loss")
    smooth = _smooth(s.step, s.loss)
    if smooth is not None:
        ax.plot(*smooth, color="#0d47a1", lw=1.6, label="rolling median")
    spikes = report.signals.get("spikes", {}).get("steps")
    if spikes:
        at = np.isin(s.step, np.asarray(spikes, dtype=np.float64))
        ax.plot(
            s.step[at], s.loss[at], "v", color="#d32f2f", ms=6, label=f"spike ({int(at.sum())})"
        )
    bad = np.flatnonzero(~ok)
    if bad.size:
        # a vertical line where the loss first went non-finite, and at most 40 markers after it
        top = float(np.nanmax(s.loss[ok])) if ok.any() else 1.0
        shown = bad[:: max(1, bad.size // MAX_NAN_MARKERS)]
        ax.axvline(float(s.step[bad[0]]), color="black", lw=1.0, ls=":")
        ax.plot(
            s.step[shown],
            np.full(shown.size, top),
            "x",
            color="black",
            ms=6,
            label=f"NaN / inf ({bad.size})",
        )
    init = report.signals.get("init")
    if init:
        ax.axhline(init["ln_vocab"], ls="--", color="#555555", lw=1.1)
        ax.annotate(
            f"ln V = {init['ln_vocab']:.2f}",
            xy=(1.0, init["ln_vocab"]),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=9,
            color="#555555",
        )
    positive = s.loss[ok & (s.loss > 0)]
    if (
        positive.size == ok.sum()
        and positive.size
        and positive.max() > LOG_AXIS_SPAN * positive.min()
    ):
        ax.set_yscale("log")  # a collapse towards 0: only a log axis shows where it ends
    ax.set_ylabel("loss")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.85)


def _grad_panel(ax: Axes, report: LogReport, s: LogSeries) -> None:
    g = s.grad_norm
    if g is None:
        _empty(ax, "grad norm: not logged")
        ax.set_ylabel("grad norm")
        return
    ok = np.isfinite(g)
    ax.plot(s.step[ok], g[ok], color="#2e7d32", lw=0.7, alpha=0.6, label="grad norm (pre-clip)")
    smooth = _smooth(s.step, g)
    if smooth is not None:
        ax.plot(*smooth, color="#1b5e20", lw=1.4, label="rolling median")
    spikes = report.signals.get("grad-norm-spikes", {}).get("steps")
    if spikes:
        at = np.isin(s.step, np.asarray(spikes, dtype=np.float64))
        ax.plot(s.step[at], g[at], "^", color="#d32f2f", ms=4, label=f"spike ({int(at.sum())})")
    positive = g[ok & (g > 0)]
    if positive.size and positive.max() / max(positive.min(), 1e-30) > LOG_AXIS_SPAN:
        ax.set_yscale("log")
    if s.max_norm is not None:
        ax.axhline(s.max_norm, ls="--", color="#c62828", lw=1.1, label=f"max-norm {s.max_norm:g}")
    ax.set_ylabel("grad norm")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)


def _clip_panel(ax: Axes, report: LogReport, s: LogSeries) -> None:
    ax.set_ylabel("clip rate")
    c = s.clipped
    if c is None:
        _empty(ax, f"clip rate: not computed ({report.not_computed.get('clip rate', 'no data')})")
        return
    n = c.size
    w = max(CLIP_WINDOW_MIN, int(CLIP_WINDOW_FRACTION * n))
    filled = np.where(np.isfinite(c), c, 0.0)
    counted = np.isfinite(c).astype(np.float64)
    kernel = np.ones(w)
    num = np.convolve(filled, kernel, mode="full")[:n]
    den = np.convolve(counted, kernel, mode="full")[:n]
    rate = np.divide(num, den, out=np.full(n, np.nan), where=den > 0)
    ax.plot(s.step, 100 * rate, color="#6a1b9a", lw=1.3, label=f"clipped, last {w} records")
    ax.axhline(0.5, ls="--", color="#555555", lw=1.0, label="healthy <= 0.5%")
    top = float(np.nanmax(100 * rate)) if np.isfinite(rate).any() else 0.0
    # rare clipping on a 0-100 axis is a flat line: zoom in so the 0.5% line and the bumps show
    if top > ZOOM_BELOW_PCT:
        ax.set_ylim(-3, 103)
    else:
        ax.set_ylim(-0.05 * ZOOM_BELOW_PCT, ZOOM_BELOW_PCT)
    ax.set_ylabel("clipped %")
    ax.legend(loc="center right", fontsize=8, framealpha=0.85)


def _regimes(ax: Axes, report: LogReport, *, first: bool) -> None:
    """The warm-up shaded, lr changes as vertical lines (labelled on the top panel)."""
    lr = report.signals.get("lr-changes", {})
    s = report.series
    warm = report.signals.get("warmup", {}).get("step")
    if warm is not None and s is not None and warm > s.step[0]:
        ax.axvspan(float(s.step[0]), float(warm), color="#ffe082", alpha=0.25, lw=0)
        if first:
            ax.annotate(
                "warm-up",
                xy=(float(warm), 0.5),
                xycoords=("data", "axes fraction"),
                xytext=(-3, 0),
                textcoords="offset points",
                rotation=90,
                ha="right",
                va="center",
                fontsize=8,
                color="#8d6e00",
            )
    changes = lr.get("changes", [])
    span = float(s.step[-1] - s.step[0]) if s is not None and len(s) > 1 else 1.0
    row = 0
    for j, ch in enumerate(changes):
        ax.axvline(ch["step"], color="#ef6c00", lw=1.2, ls="-.")
        if not first:
            continue
        # labels of changes closer than 15% of the run would overlap: stack them downwards
        close = j > 0 and ch["step"] - changes[j - 1]["step"] < LABEL_GAP * span
        row = row + 1 if close else 0
        ax.annotate(
            f"lr {_lr(float(ch['lr_before']))} -> {_lr(float(ch['lr_after']))}",
            xy=(ch["step"], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12 - 12 * row),
            textcoords="offset points",
            fontsize=9,
            color="#bf360c",
        )


def _findings_title(ax: Axes, report: LogReport) -> None:
    """The findings' short labels above the loss panel, the lead one first: never over the data."""
    labels = [f.label for f in report.findings if f.label][:MAX_LABELS]
    lines: list[str] = []
    for lab in labels:
        if lines and len(lines[-1]) + len(lab) + 5 <= LABELS_PER_LINE:
            lines[-1] += "  |  " + lab
        else:
            lines.append(lab)
    ax.set_title("\n".join(lines), fontsize=10, color="#333333")


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="#757575")
    ax.set_yticks([])


def _smooth(step: FloatArray, x: FloatArray) -> tuple[FloatArray, FloatArray] | None:
    """A rolling median over ~2% of the records, at the centre steps of its windows."""
    ok = np.isfinite(x)
    w = max(5, int(SMOOTH_FRACTION * ok.sum()))
    if ok.sum() < 3 * w:
        return None
    starts, med = rolling_median(x, w)
    centres = step[ok][starts + w // 2]
    return centres, med
