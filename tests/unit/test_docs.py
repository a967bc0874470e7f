"""The examples in docstrings run as written."""

from __future__ import annotations

import doctest

import gradcheck.backends


def test_source_module_docstring_example() -> None:
    result = doctest.testmod(gradcheck.backends, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_every_guide_link_the_reports_print_exists() -> None:
    """Findings point at DIAGNOSTIC_GUIDE.md#anchor: each anchor must be there."""
    import re
    from pathlib import Path

    from gradcheck import diagnose
    from gradcheck.ops import OPS

    root = Path(__file__).resolve().parents[2]
    guide = (root / "DIAGNOSTIC_GUIDE.md").read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', guide))
    causes = [c for _, c in diagnose.CAUSES] + [c for op in OPS.values() for _, c in op.causes]
    printed = {a for cause in causes for a in re.findall(r"#([a-z0-9-]+)", cause)}
    printed |= {"layernorm-bwd", "attention-bwd"}  # the named wrong formulas' causes point there
    printed |= {"fd-noise", "kernel-bug", "noise-bound"}
    # and every anchor written anywhere in the package (the probe, diagnose_training, diagnose-log)
    for source in (root / "gradcheck").rglob("*.py"):
        printed |= set(re.findall(r"DIAGNOSTIC_GUIDE\.md#([a-z0-9-]+)", source.read_text()))
    assert {"data-misalignment", "lr-or-gradient", "training-log"} <= printed
    assert printed <= anchors, printed - anchors
    for op in OPS.values():  # every shipped kernel is a worked example in the guide
        for k in op.kernels:
            if k.expect == "kernel-bug":
                assert f"--kernel {k.name}" in guide, k.name


def test_check_my_kernel_example_runs() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [
            sys.executable,
            str(root / "examples/check_my_kernel.py"),
            "--vocab",
            "600",
            "--rows",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "ce-grad: pass" in out
    assert "legacy-thread-per-vocab: kernel-bug" in out
    assert "where: every element with vocab index >= 256 (= blockDim.x)" in out
