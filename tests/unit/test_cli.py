"""The gradcheck command as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradcheck.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_backends_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backends"]["cpu"]["available"] is True
    assert out["auto"] in ("cpu", "cuda")
    if not out["backends"]["cuda"]["available"]:
        assert out["backends"]["cuda"]["reason"]


def test_compile_lists_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    src = ROOT / "kernels_cuda/loss_ce/ce_grad.cu"
    assert main(["compile", str(src), "--no-extern-c", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (k,) = out["kernels"]
    assert k["symbol"] == "ce_grad" and "inv_n_valid" in k["signature"]


def test_compile_errors_exit_2_and_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(tmp_path / "missing.cu")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(float* y) { y[0] = nope; }\n')
    assert main(["compile", str(bad)]) == 3
    assert "bad.cu:1" in capsys.readouterr().err
