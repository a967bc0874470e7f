"""examples/train_tiny_lm.py: each story gives its verdict, with its evidence, at a small size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_tiny_lm.py"


def run(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--backend", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stderr.count("Traceback") == 0, proc.stderr
    return proc.returncode, proc.stdout


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


def test_healthy_run_passes() -> None:
    code, out = run("--steps", "60", "--diagnose")
    assert last_line(out) == "verdict: pass", out
    assert "gradient verified on 4 of 4 batches" in out
    assert "(above 1 on 0 of 4 batches)" in out
    assert code == 0


def test_too_high_a_learning_rate_is_an_lr_problem() -> None:
    code, out = run("--lr", "1e-2", "--steps", "60", "--diagnose")
    assert "diverged; training stops" in out  # the loss rises, as with a wrong kernel ...
    assert last_line(out) == "verdict: lr-problem", out
    # ... but the gradient holds up and the step is what overshoots
    assert "gradient verified on 4 of 4 batches" in out
    assert "suggested largest stable learning rate" in out and "(you use 0.01)" in out
    assert code == 1


def test_a_catalogue_bug_kernel_is_a_kernel_bug() -> None:
    code, out = run("--kernel", "sign-flipped", "--steps", "60", "--diagnose")
    assert "diverged; training stops" in out
    assert last_line(out) == "verdict: kernel-bug", out
    assert "cosine to the reference -1.00" in out
    assert "flat at -1.00, not 1" in out
    assert "not a descent direction" in out
    assert code == 1


def test_a_faulting_kernel_is_a_kernel_bug() -> None:
    code, out = run("--kernel", "oob-small-vocab", "--steps", "5", "--diagnose")
    assert "the loss-ce kernel faulted: OutOfBounds" in out
    assert last_line(out) == "verdict: kernel-bug", out
    assert code == 1


@pytest.mark.parametrize(
    ("shift", "headline"),
    [(0, "a copy task"), (2, "labels shifted twice")],
)
def test_misaligned_data_stops_before_the_first_step(shift: int, headline: str) -> None:
    code, out = run("--misalign", str(shift), "--diagnose")
    assert f"targets are the inputs shifted by {shift}, not 1" in out
    assert headline in out
    assert "step    1" not in out  # no training step ran on the bad data
    assert last_line(out) == "verdict: data-misalignment", out
    assert code == 1


def test_without_diagnose_it_trains_and_writes_a_log_diagnose_log_reads(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    code, out = run("--steps", "40", "--every", "20", "--log", str(log))
    assert code == 0 and "40 steps in" in out
    from gradcheck import diagnose_log

    report = diagnose_log(log, vocab=29)
    assert report.records == 40
    assert "loss at init 3.35 vs ln V = 3.37" in str(report)
