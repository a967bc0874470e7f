"""The argument parsers of `gradcheck probe-data` and `gradcheck diagnose-log`.

Kept apart from the modules that run them, so that building the command line (every `gradcheck`
call) does not import the data probe and the training-log reader.
"""

from __future__ import annotations

import argparse

# The npz keys the data probe looks for, in order, when it is not told which to read.
INPUT_KEYS = ("inputs", "input_ids", "tokens", "x")
TARGET_KEYS = ("targets", "labels", "y")
MASK_KEYS = ("attention_mask", "mask")
TRAINING_LOG_GUIDE = "DIAGNOSTIC_GUIDE.md#training-log"


def add_probe_data_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gradcheck probe-data BATCH.npz``: the probe on a batch dumped from any training code."""
    p = sub.add_parser(
        "probe-data",
        help="check that a dumped batch's targets are its inputs shifted by one",
        description="Probe a batch saved with np.savez(FILE, inputs=..., targets=...) for "
        "misaligned targets (copy task, double shift, unrelated labels) and broken labels "
        "(out of range, mostly ignored, on padding, every EOS masked). Exit 0: pass or "
        "inconclusive; 1: data-misalignment; 2: a usage error.",
    )
    p.add_argument("batch", metavar="BATCH.npz", help="the batch, saved with numpy.savez")
    p.add_argument(
        "--inputs",
        default=None,
        metavar="KEY",
        help=f"array of input ids (default: the first of {', '.join(INPUT_KEYS)})",
    )
    p.add_argument(
        "--targets",
        default=None,
        metavar="KEY",
        help=f"array of target ids (default: the first of {', '.join(TARGET_KEYS)})",
    )
    p.add_argument(
        "--mask",
        default=None,
        metavar="KEY",
        help=f"attention mask, 0 on padding (default: {', '.join(MASK_KEYS)} if present)",
    )
    p.add_argument(
        "--ignore-index",
        type=int,
        default=-100,
        metavar="N",
        help="the label value the loss skips (default -100)",
    )
    p.add_argument("--vocab", type=int, default=None, metavar="V", help="vocabulary size")
    p.add_argument(
        "--expected-shift",
        type=int,
        default=1,
        metavar="K",
        help="targets[i] == inputs[i + K] (default 1; 0 for labels the model shifts itself)",
    )
    p.add_argument("--pad-id", type=int, default=None, metavar="ID", help="the padding id")
    p.add_argument("--eos-id", type=int, default=None, metavar="ID", help="the end-of-text id")
    p.add_argument(
        "--max-ignored",
        type=float,
        default=0.5,
        metavar="F",
        help="largest share of ignored labels that passes (default 0.5)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")


def add_diagnose_log_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `gradcheck diagnose-log` to the CLI's subcommands."""
    p = sub.add_parser(
        "diagnose-log",
        help="probable verdict from a training log (JSON lines or CSV), with a PNG plot",
        description="Read a training log (step, loss, grad norm before clipping, lr, clipped, "
        "param distance from init) and give a probable verdict: pass, kernel-bug, lr-problem, "
        "data-misalignment or inconclusive, with the findings and the checks that settle it. "
        f"Exit 0: pass or inconclusive; 1: a probable problem; 2: a usage error. See {TRAINING_LOG_GUIDE}.",
    )
    p.add_argument("log", help="the training log: JSON lines or CSV with a header")
    p.add_argument(
        "--vocab",
        type=int,
        default=None,
        metavar="V",
        help="vocabulary size: compare loss_0 with ln V",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="N",
        help="warm-up steps (default: the end of the lr ramp in the log)",
    )
    p.add_argument(
        "--max-norm",
        dest="max_norm",
        type=float,
        default=None,
        metavar="X",
        help="gradient clipping norm: clipped = grad_norm > X when the log has no clipped column",
    )
    plot = p.add_mutually_exclusive_group()
    plot.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help="write the PNG plot there (default: <log stem>.diagnosis.png next to the log)",
    )
    plot.add_argument("--no-plot", dest="no_plot", action="store_true", help="write no plot")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
