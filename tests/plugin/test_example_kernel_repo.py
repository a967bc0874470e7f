"""examples/kernel_repo, copied elsewhere, as its users run it: its pytest tests pass and its gate
exits 0; with one kernel swapped for a catalogue bug kernel, both fail with a reproduce line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "kernel_repo"
SIGN_FLIPPED = ROOT / "kernels_cuda" / "loss_ce" / "bugs" / "sign_flipped.cu"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The example's users run it with gradcheck installed; here the suite's own install is used,
    # with its pytest plugin found through the entry point (as for them).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    dest = tmp_path / "kernel_repo"
    shutil.copytree(EXAMPLE, dest)
    return dest


@pytest.mark.slow
def test_the_example_passes_its_tests_and_its_gate(repo: Path) -> None:
    tests = _run(["pytest", "-q", "-p", "no:cacheprovider"], repo)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout
    gate = _run(["gradcheck.cli", "gate", "--junit", "junit.xml", "--markdown", "pr.md"], repo)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    suites = ET.parse(repo / "junit.xml").getroot()
    cases = suites.findall(".//testcase")
    assert len(cases) == 5 and not suites.findall(".//failure")  # 3 + 2 shapes in pyproject.toml
    assert "gradcheck gate: pass" in (repo / "pr.md").read_text()
    workflow = (repo / ".github" / "workflows" / "gradcheck.yml").read_text()
    assert "gradcheck gate --junit" in workflow and "upload-artifact" in workflow


@pytest.mark.slow
def test_a_catalogue_bug_kernel_fails_both_with_a_reproduce_line(repo: Path) -> None:
    bug = SIGN_FLIPPED.read_text().replace("ce_grad_sign_flipped", "xent_grad")
    (repo / "kernels" / "xent_grad.cu").write_text(bug)
    tests = _run(["pytest", "-q", "-p", "no:cacheprovider", "-x", "-k", "below_and_above"], repo)
    assert tests.returncode == 1, tests.stdout + tests.stderr
    assert "kernel-bug: loss-ce" in tests.stdout
    assert "reproduce: gradcheck run loss-ce" in tests.stdout
    gate = _run(["gradcheck.cli", "gate", "--junit", "junit.xml"], repo)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "reproduce: gradcheck run loss-ce" in gate.stdout
    failures = ET.parse(repo / "junit.xml").getroot().findall(".//failure")
    assert len(failures) == 3  # every xent-grad shape; layernorm-bwd still passes
