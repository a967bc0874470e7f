"""`gradcheck diagnose-log`: probable verdicts from seeded synthetic training logs, as a user reads them."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from gradcheck._errors import UsageError
from gradcheck._subcommands import add_diagnose_log_parser
from gradcheck._trainlog import (
    LogReport,
    diagnose_log,
    read_log,
    run_diagnose_log,
)

Records = list[dict[str, Any]]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- the synthetic logs ------------------------------------------------------------------------


def healthy_log(seed: int = 0, n: int = 3000) -> Records:
    """Warm-up to 3e-4 then cosine decay; the loss falls from ln 2000 to 2.5; 5 clipped steps."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    cosine = 3e-5 + 0.5 * (3e-4 - 3e-5) * (1 + np.cos(np.pi * (steps - 100) / (n - 100)))
    lr = np.where(steps < 100, 3e-4 * (steps + 1) / 100, cosine)
    loss = 2.5 + 5.1 * np.exp(-steps / 600) + rng.normal(0, 0.05, n)
    loss[0] = 7.61
    gnorm = 0.4 + 0.5 * np.exp(-steps / 300) + np.abs(rng.normal(0, 0.03, n))
    gnorm[rng.choice(np.arange(200, n), 5, replace=False)] = 1.2  # rare clipping at max-norm 1
    dist = 3.0 * np.sqrt(steps / 100 + 0.01)
    return [
        {
            "step": int(s),
            "loss": float(x),
            "grad_norm": float(g),
            "lr": float(r),
            "clipped": bool(g > 1.0),
            "param_dist": float(d),
        }
        for s, x, g, r, d in zip(steps, loss, gnorm, lr, dist, strict=True)
    ]


def lr_too_high_log(seed: int = 1, n: int = 3000, cut: int = 1500) -> Records:
    """lr 3e-3: the loss spikes (with the grad norm) and drifts up; cut to 3e-4: it trains."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    lr = np.where(steps < cut, 3e-3, 3e-4)
    drift = np.clip((steps - 800) / 700, 0, None)
    before = 4.0 + 3.6 * np.exp(-steps / 150) + drift
    after = 3.0 + 2.0 * np.exp(-(steps - cut) / 200)
    loss = np.where(steps < cut, before, after) + rng.normal(0, 0.06, n)
    gnorm = 1.0 + np.abs(rng.normal(0, 0.1, n))
    spikes = np.arange(300, min(cut, n), 40) + rng.integers(0, 10, len(range(300, min(cut, n), 40)))
    loss[spikes] += rng.uniform(1.5, 4.0, spikes.size)
    gnorm[spikes] *= rng.uniform(5, 15, spikes.size)
    return [
        {"step": int(s), "loss": float(x), "grad_norm": float(g), "lr": float(r)}
        for s, x, g, r in zip(steps, loss, gnorm, lr, strict=True)
    ]


def field_notes_log(seed: int = 2, n: int = 6000, clipped_column: bool = True) -> Records:
    """FIELD_NOTES 1: 200 warm-up steps, lr 1e-3, then 1e-4, then 5e-5; max-norm 1.5, 100%
    clipped; grad norm 1.5-5.5 never falling; loss oscillating 5-6; parameter norm 45.5 -> 45.6."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    lr = np.select(
        [steps < 200, steps < 2000, steps < 4000], [1e-3 * steps / 200, 1e-3, 1e-4], 5e-5
    )
    loss = 5.5 + 2.21 * np.exp(-steps / 40) + rng.uniform(-0.5, 0.5, n)
    loss[0] = 7.71
    gnorm = rng.uniform(1.5, 5.5, n)
    pnorm = 45.5 + 0.1 * steps / (n - 1)
    rows: Records = []
    for s, x, g, r, p in zip(steps, loss, gnorm, lr, pnorm, strict=True):
        rec = {"step": int(s), "loss": float(x), "grad_norm": float(g), "lr": float(r)}
        if clipped_column:
            rec["clipped"] = True
        rec["param_norm"] = float(p)
        rows.append(rec)
    return rows


def copy_task_log(seed: int = 3, n: int = 2000) -> Records:
    """targets == inputs: the loss collapses 8.6 -> 0.0000 and the grad norm -> 0 (aliased columns)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    loss = 8.6 * np.exp(-steps / 60) * rng.uniform(0.95, 1.05, n) + rng.uniform(0, 1e-4, n)
    loss[0] = 8.6
    gnorm = 3.0 * np.exp(-steps / 80) * rng.uniform(0.8, 1.2, n)
    return [
        {"iter": int(s), "train_loss": float(x), "gnorm": float(g)}
        for s, x, g in zip(steps, loss, gnorm, strict=True)
    ]


def write_jsonl(path: Path, rows: Records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: Records) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())
    return path


def first_line(report: LogReport) -> str:
    return str(report).splitlines()[0]


# --- verdicts ----------------------------------------------------------------------------------


def test_healthy_log_passes(tmp_path: Path) -> None:
    report = diagnose_log(write_jsonl(tmp_path / "train.jsonl", healthy_log()), vocab=2000)
    text = str(report)
    assert report.verdict == "pass" and report.probable and report.exit_code == 0
    assert first_line(report).startswith("pass (probable, from the log): the loss fell from ")
    assert "clip rate after warm-up is 0.172% (healthy <= 0.5%)" in first_line(report)
    assert "loss at init 7.61 vs ln V = 7.60 (vocab 2,000): a sane start" in text
    assert "clip rate after warm-up (step 99, lr ramp): 0.172% of 2,901 logged steps" in text
    assert "distance from init 0.3 -> 16.4 over 2,999 steps" in text
    assert "next:" not in text  # nothing to do


def test_csv_and_jsonl_give_the_same_report(tmp_path: Path) -> None:
    rows = healthy_log()
    from_json = diagnose_log(write_jsonl(tmp_path / "a.jsonl", rows), vocab=2000)
    from_csv = diagnose_log(write_csv(tmp_path / "a.csv", rows), vocab=2000)
    assert from_csv.verdict == from_json.verdict == "pass"
    assert [f.to_dict() for f in from_csv.findings] == [f.to_dict() for f in from_json.findings]


def test_format_is_chosen_by_content_not_suffix(tmp_path: Path) -> None:
    rows = healthy_log()[:200]
    as_csv = write_csv(tmp_path / "run.jsonl", rows)  # CSV content under a .jsonl name
    as_json = write_jsonl(tmp_path / "run.log", rows)
    assert len(read_log(as_csv)) == len(read_log(as_json)) == 200
    assert read_log(as_csv).used == read_log(as_json).used


def test_lr_too_high_then_cut(tmp_path: Path) -> None:
    report = diagnose_log(write_jsonl(tmp_path / "train.jsonl", lr_too_high_log()))
    head = first_line(report)
    assert report.verdict == "lr-problem" and report.exit_code == 1
    assert head.startswith("lr-problem (probable, from the log): 30 loss spikes and a rise ")
    assert "at lr 3e-3 stopped after the cut to 3e-4 at step 1,500" in head
    assert head.endswith("the lower lr removed the instability: lr 3e-3 was too high")
    spikes = next(f for f in report.findings if f.key == "spikes")
    assert spikes.numbers["count"] == 30 and spikes.numbers["with_grad_norm_spike"] == 30
    assert "lr changes: 3e-3 -> 3e-4 at step 1,500: loss 4.85 -> 4.19, moved" in str(report)
    assert report.next_steps[0] == "gradcheck.diagnose_training(...)"


def test_spikes_at_the_last_lr_are_an_lr_problem() -> None:
    report = diagnose_log(lr_too_high_log(n=2000, cut=2001))  # never cut
    assert report.verdict == "lr-problem" and report.rule == "unstable"
    assert "loss spikes (above the rolling median + 6 MAD)" in first_line(report)


def test_field_notes_case_is_a_probable_kernel_bug(tmp_path: Path) -> None:
    log = write_jsonl(tmp_path / "train.jsonl", field_notes_log())
    report = diagnose_log(log, vocab=2000, max_norm=1.5)
    lines = str(report).splitlines()
    assert report.verdict == "kernel-bug" and report.probable and report.exit_code == 1
    assert re.fullmatch(
        r"kernel-bug \(probable, from the log\): not the learning rate: the loss plateau at "
        r"5\.\d+ did not move when lr fell 20x \(1e-3 -> 5e-5 at step 4,000\)",
        lines[0],
    )
    assert lines[1] == (
        "  likely cause: a wrong gradient (a loss or backward kernel), or data the model cannot "
        "learn from: probe the data first, then verify the gradient"
    )
    assert lines[2] == (
        "  clip rate after warm-up (step 200, lr ramp): 100% of 5,800 logged steps "
        "(healthy <= 0.5%): every update is a fixed-length step of max-norm 1.5 along the "
        "gradient direction: the gradient is far larger than the optimizer expects"
    )
    text = str(report)
    assert "grad norm 1.5 - 5.5, not falling: weak evidence alone" in text
    assert "loss at init 7.71 vs ln V = 7.60 (vocab 2,000): a sane start" in text
    assert "parameter norm logged, not the distance from init: 45.5 -> 45.6" in text
    assert "fits a step of size 3.0 orthogonal to the weights" in text
    assert (
        "  next: 1. gradcheck probe-data batch.npz  2. gradcheck run loss-ce --vocab 2000 --fd32"
        "  3. gradcheck.diagnose_training(...)" in text
    )
    assert "guide: DIAGNOSTIC_GUIDE.md#training-log" in text
    plateau = report.findings[0]
    assert plateau.key == "plateau" and plateau.points_to == "kernel-bug"
    assert plateau.numbers["lr_ratio"] == pytest.approx(20.0)
    assert [f.key for f in report.findings if f.points_to == "kernel-bug"] == [
        "plateau",
        "clip-rate",
    ]


def test_clipped_derived_from_max_norm() -> None:
    report = diagnose_log(field_notes_log(clipped_column=False), max_norm=1.5, warmup=200)
    clip = next(f for f in report.findings if f.key == "clip-rate")
    assert report.verdict == "kernel-bug"
    assert clip.numbers["source"] == "max-norm" and clip.numbers["rate"] == 1.0
    assert "clip rate after warm-up (step 200, --warmup): 100% of 5,800" in clip.observed


def test_clip_rate_not_computed_without_column_or_max_norm() -> None:
    report = diagnose_log(field_notes_log(clipped_column=False))
    assert report.not_computed["clip rate"] == (
        "no clipped column; give --max-norm X to derive it from grad_norm"
    )
    assert "not computed: " in str(report) and "clip rate (no clipped column" in str(report)
    assert report.verdict == "kernel-bug"  # the plateau alone decides, with or without clipping


def test_copy_task_is_data_misalignment(tmp_path: Path) -> None:
    report = diagnose_log(write_csv(tmp_path / "copy.csv", copy_task_log()))
    head = first_line(report)
    assert report.verdict == "data-misalignment" and report.exit_code == 1
    assert head.startswith(
        "data-misalignment (probable, from the log): the loss collapsed towards 0: 8.6 -> 0.0001"
    )
    assert "grad norm 2.84 -> 1.4e-10" in head
    assert report.columns == {"step": "iter", "loss": "train_loss", "grad_norm": "gnorm"}
    assert report.next_steps[0] == "gradcheck probe-data batch.npz"


def test_loss_at_init_far_below_ln_v_is_data() -> None:
    rng = np.random.default_rng(10)
    loss = 2.0 + np.exp(-np.arange(1000) / 200) + rng.normal(0, 0.05, 1000)
    report = diagnose_log([{"loss": float(x)} for x in loss], vocab=50257)
    assert report.verdict == "data-misalignment" and report.rule == "init-below-ln-v"
    assert "vs ln V = 10.82 (vocab 50,257): 7.8" in first_line(report)
    assert "nats below: the model predicts the targets" in first_line(report)


def test_nan_loss_after_a_rise_is_divergence() -> None:
    rng = np.random.default_rng(7)
    steps = np.arange(1500)
    blowup = np.clip(steps - 1000, 0, None)
    loss = 3 + 4.6 * np.exp(-steps / 200) + blowup**2 / 2e4 + rng.normal(0, 0.05, 1500)
    loss[1300:] = np.nan
    gnorm = 1 + blowup / 20.0
    rows = [
        {"step": int(s), "loss": float(x), "grad_norm": float(g), "lr": 1e-3}
        for s, x, g in zip(steps, loss, gnorm, strict=True)
    ]
    report = diagnose_log(rows)
    assert report.verdict == "lr-problem"
    assert first_line(report).startswith(
        "lr-problem (probable, from the log): loss nan at 200 logged steps, first at step 1,300: "
        "divergence"
    )
    data = report.to_dict()
    json.dumps(data, allow_nan=False)  # NaN became null
    assert data["signals"]["non-finite"]["count"] == 200


def test_flat_loss_with_no_lr_change_is_inconclusive() -> None:
    rng = np.random.default_rng(6)
    rows = [{"loss": float(5.5 + u), "lr": 1e-3} for u in rng.uniform(-0.5, 0.5, 1500)]
    report = diagnose_log(rows)
    assert report.verdict == "inconclusive" and report.exit_code == 0
    assert "without a falling trend" in first_line(report)
    assert "no lr change of >= 5x tested it" in first_line(report)
    assert report.next_steps[:2] == (
        "gradcheck probe-data batch.npz",
        "gradcheck run loss-ce --vocab V --fd32",
    )


def test_too_little_log_is_inconclusive() -> None:
    report = diagnose_log([{"loss": 7.0 - 0.1 * i} for i in range(12)])
    assert report.verdict == "inconclusive" and report.rule == "too-little"
    assert "too little log to judge: 12 finite losses (need >= 30)" in first_line(report)


def test_converged_loss_that_ignores_an_lr_cut_is_not_a_plateau() -> None:
    rng = np.random.default_rng(9)
    steps = np.arange(3000)
    loss = 2.5 + 5.1 * np.exp(-steps / 200) + rng.normal(0, 0.05, 3000)
    lr = np.where(steps < 2000, 1e-3, 1e-4)
    report = diagnose_log(
        [{"loss": float(x), "lr": float(r)} for x, r in zip(loss, lr, strict=True)]
    )
    assert report.verdict == "pass"
    assert "converged, not stuck" in str(report)


def test_to_dict_schema() -> None:
    report = diagnose_log(field_notes_log(), vocab=2000, max_norm=1.5)
    data = json.loads(report.to_json())
    assert data["schema"] == "gradcheck.training-log" and data["schema_version"] == 1
    assert data["verdict"] == "kernel-bug" and data["probable"] is True
    assert data["findings"][0]["key"] == "plateau"
    assert data["findings"][0]["points_to"] == "kernel-bug"
    assert data["settings"] == {"vocab": 2000, "warmup": None, "max_norm": 1.5}
    assert data["signals"]["clip-rate"]["rate"] == 1.0
    changes = data["signals"]["lr-changes"]["changes"]
    assert [(c["step"], c["moved"]) for c in changes] == [(2000.0, False), (4000.0, False)]


def test_docstring_example_runs() -> None:
    import doctest

    import gradcheck._trainlog

    result = doctest.testmod(gradcheck._trainlog, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_resumed_run_keeps_the_last_record_of_each_step() -> None:
    rows = [{"step": i, "loss": 5.0} for i in range(40)] + [
        {"step": 30 + i, "loss": 4.0} for i in range(20)
    ]
    series = read_log(rows)
    assert len(series) == 50 and series.loss[35] == 4.0
    assert "kept the last record of each step" in series.notes[0]


# --- usage errors -------------------------------------------------------------------------------


def test_missing_and_empty_logs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.jsonl: no such file"):
        diagnose_log(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UsageError, match=r"empty\.jsonl is empty: no records"):
        diagnose_log(tmp_path / "empty.jsonl")
    (tmp_path / "header.csv").write_text("step,loss\n")
    with pytest.raises(UsageError, match=r"a header \(step, loss\) and no records"):
        diagnose_log(tmp_path / "header.csv")


def test_bad_json_line_quotes_the_line(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text('{"step": 1, "loss": 7.7}\n\n{"step": 2, "loss": 7.6\n')
    with pytest.raises(UsageError) as exc:
        diagnose_log(log)
    msg = str(exc.value)
    assert "train.jsonl: line 3 is not JSON" in msg
    assert '\'{"step": 2, "loss": 7.6\'' in msg
    assert "partial last line: delete it" in msg


def test_no_loss_column_lists_the_columns_and_suggests(tmp_path: Path) -> None:
    log = tmp_path / "train.csv"
    log.write_text("step,train_los,lr\n1,7.7,1e-3\n")
    with pytest.raises(UsageError) as exc:
        diagnose_log(log)
    msg = str(exc.value)
    assert "has no loss column (columns found: 'step', 'train_los', 'lr')" in msg
    assert "'train_los' looks like a loss column: rename it" in msg
    assert "one of loss, train_loss" in msg


def test_bad_values_name_the_line(tmp_path: Path) -> None:
    log = tmp_path / "train.csv"
    log.write_text("step,loss\n1,7.7\n2,oops\n")
    with pytest.raises(UsageError, match=r"line 3: loss='oops' is not a number"):
        diagnose_log(log)
    log.write_text("step,loss,clip\n1,7.7,0.73\n")
    with pytest.raises(UsageError, match=r"holds 0\.73 .* give --max-norm X"):
        diagnose_log(log)
    with pytest.raises(UsageError, match=r"vocab=1 must be a whole number >= 2"):
        diagnose_log([{"loss": 1.0}], vocab=1)
    with pytest.raises(UsageError, match=r"record 2 is a list, not a mapping"):
        diagnose_log([{"loss": 1.0}, [1.0]])  # type: ignore[list-item]


# --- the plot and the command -------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gradcheck")
    add_diagnose_log_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["diagnose-log", *argv])


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = run_diagnose_log(_parse(argv), Console(file=out, width=120))
    return code, out.getvalue()


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_plot_is_a_readable_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from gradcheck._logplot import plot_log

    report = diagnose_log(field_notes_log(), vocab=2000, max_norm=1.5)
    out = plot_log(report, tmp_path / "fn.png")
    assert out == tmp_path / "fn.png"
    assert _png_size(out) == (1100, 850)
    assert 30_000 < out.stat().st_size < 2_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fn.png"]  # no temp file left


def test_cli_writes_plot_next_to_log_and_json(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    log = write_jsonl(tmp_path / "train.jsonl", field_notes_log())
    out_json = tmp_path / "report.json"
    code, text = _run([str(log), "--vocab", "2000", "--max-norm", "1.5", "--json", str(out_json)])
    assert code == 1
    assert text.startswith("kernel-bug (probable, from the log): not the learning rate:")
    png = tmp_path / "train.diagnosis.png"
    assert f"plot written to {png}" in text
    assert _png_size(png) == (1100, 850)
    data = json.loads(out_json.read_text())
    assert data["verdict"] == "kernel-bug" and data["schema"] == "gradcheck.training-log"
    assert not (tmp_path / "report.json.tmp").exists()


def test_cli_no_plot_and_exit_codes(tmp_path: Path) -> None:
    log = write_csv(tmp_path / "healthy.csv", healthy_log())
    code, text = _run([str(log), "--vocab", "2000", "--no-plot"])
    assert code == 0 and text.startswith("pass (probable, from the log)")
    assert "plot written" not in text and "plot skipped" not in text
    assert not (tmp_path / "healthy.diagnosis.png").exists()
    with pytest.raises(SystemExit):
        _parse([str(log), "--plot", "x.png", "--no-plot"])


def test_cli_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    log = write_jsonl(tmp_path / "train.jsonl", copy_task_log())
    code, text = _run([str(log)])
    assert code == 1 and text.startswith("data-misalignment (probable, from the log)")
    assert 'plot skipped: pip install "gradcheck[plot]"' in text
    assert not (tmp_path / "train.diagnosis.png").exists()
    with pytest.raises(
        UsageError, match=r'--plot out\.png needs matplotlib.*pip install "gradcheck\[plot\]"'
    ):
        _run([str(log), "--plot", "out.png"])


def test_cli_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        _run([str(tmp_path / "missing.jsonl"), "--no-plot"])
    log = write_jsonl(tmp_path / "t.jsonl", healthy_log()[:100])
    with pytest.raises(UsageError, match=r"--json .* does not exist"):
        _run([str(log), "--no-plot", "--json", str(tmp_path / "no" / "r.json")])


def test_diagnose_log_is_a_gradcheck_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradcheck.cli import main

    log = tmp_path / "train.jsonl"
    log.write_text("".join(f'{{"step": {i}, "loss": {8.6 * 0.8**i:.6f}}}\n' for i in range(60)))
    assert main(["diagnose-log", str(log), "--no-plot"]) == 1
    assert "data-misalignment (probable" in capsys.readouterr().out
    assert main(["diagnose-log", str(tmp_path / "missing.jsonl")]) == 2
