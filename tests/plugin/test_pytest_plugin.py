"""gradcheck's pytest plugin as a kernel repository uses it: pytester runs small test files.

Checks use loss-ce at vocab 50 x rows 4 with the shipped ce-grad and sign-flipped kernels on the
cpu backend, so each run takes seconds (the suite's build cache keeps the kernels compiled).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import gradcheck.backends
from gradcheck.backends import BackendStatus

CPU = ("--gradcheck-backend", "cpu", "-p", "no:cacheprovider")
KERNEL_TESTS = """
import pytest

SIZES = dict(vocab=50, rows=4)


def test_correct_kernel(gradcheck):
    report = gradcheck.check("loss-ce", "ce-grad", **SIZES)
    assert report.verdict == "pass"
    assert (report.backend, report.seed) == ("cpu", gradcheck.seed)


def test_sign_flipped_kernel(gradcheck):
    gradcheck.check("loss-ce", "sign-flipped", **SIZES)
"""
REPRO_BUG = (
    "reproduce: gradcheck run loss-ce --rows 4 --vocab 50 --block 256 --seed 0 "
    "--kernel sign-flipped --backend cpu --case plain"
)


def test_a_pass_passes_and_a_kernel_bug_fails_with_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kernels=KERNEL_TESTS)
    result = pytester.runpytest(*CPU)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_sign_flipped_kernel*",
            "E *gradcheck._errors.KernelBug: gradcheck loss-ce  kernel sign-flipped  backend cpu*",
            "E *kernel-bug: loss-ce ?plain? compare grad (rows=4, vocab=50, block=256, cpu backend)",
            "E *where: every element; sign flipped: kernel = -reference",
            f"E *{REPRO_BUG}",
            "E *verdict: kernel-bug  (7 cases, * checks, * s)",
            "FAILED test_kernels.py::test_sign_flipped_kernel - *",
        ]
    )
    # The failure shows the test's line and the report, not the frames that built the report.
    assert "raise_for_verdict" not in result.stdout.str()


def test_inconclusive_fails_with_its_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_power="""
        def test_no_power(gradcheck):
            gradcheck.check("loss-ce", "ce-grad", vocab=50, rows=4, factor=1e7, case="plain")
        """
    )
    result = pytester.runpytest(*CPU)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E *gradcheck._errors.Inconclusive: *",
            "E *grad: no power: * a pass here would prove nothing",
            "E *verdict: inconclusive *",
        ]
    )


def test_options_header_and_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kernels=KERNEL_TESTS)
    result = pytester.runpytest(*CPU, "--gradcheck-seed", "7", "-k", "correct")
    result.assert_outcomes(passed=1)  # the test asserts report.seed == gradcheck.seed
    result.stdout.fnmatch_lines(["gradcheck *: backend cpu (asked for); seed 7 (--gradcheck-seed)"])
    bad = pytester.runpytest("--gradcheck-seed", "-1")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--gradcheck-seed=-1 must be a whole number >= 0.*"])
    bad = pytester.runpytest("--gradcheck-backend", "gpu")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--gradcheck-backend: invalid choice: 'gpu'*"])


def test_header_says_why_a_backend_cannot_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = BackendStatus("cuda", False, "the CUDA driver sees 0 devices")
    monkeypatch.setattr(gradcheck.backends, "cuda_status", lambda: status)
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest("--gradcheck-backend", "cuda")
    result.stdout.fnmatch_lines(
        ["gradcheck *: backend cuda unavailable: backend='cuda' was asked for, but the CUDA "
         "driver sees 0 devices. *; seed 0 (--gradcheck-seed)"]
    )  # fmt: skip


def test_report_file_has_every_check(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kernels=KERNEL_TESTS)
    result = pytester.runpytest(*CPU, "--gradcheck-report", "out/checks.json")
    result.assert_outcomes(passed=1, failed=1)
    doc = json.loads((pytester.path / "out/checks.json").read_text())
    assert [p.name for p in (pytester.path / "out").iterdir()] == ["checks.json"]  # no temp file
    assert doc["schema"] == "gradcheck.pytest-session"
    assert (doc["backend_option"], doc["seed"]) == ("cpu", 0)
    assert doc["verdicts"] == {"pass": 1, "fd-noise": 0, "kernel-bug": 1, "inconclusive": 0}
    rows = [(c["nodeid"], c["op"], c["kernel"], c["sizes"], c["verdict"]) for c in doc["checks"]]
    assert rows == [
        ("test_kernels.py::test_correct_kernel", "loss-ce", "ce-grad",
         {"rows": 4, "vocab": 50, "block": 256}, "pass"),
        ("test_kernels.py::test_sign_flipped_kernel", "loss-ce", "sign-flipped",
         {"rows": 4, "vocab": 50, "block": 256}, "kernel-bug"),
    ]  # fmt: skip
    bug = doc["checks"][1]["report"]
    assert bug["schema"] == "gradcheck.report" and bug["verdict"] == "kernel-bug"
    assert any(c["reproduce"] == REPRO_BUG.removeprefix("reproduce: ") for c in bug["checks"])


def test_gpu_marker_skips_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = BackendStatus("cuda", False, "the CUDA driver sees 0 devices")
    monkeypatch.setattr(gradcheck.backends, "cuda_status", lambda: status)
    pytester.makepyfile(
        test_gpu="""
        import pytest

        @pytest.mark.gpu
        def test_on_the_gpu():
            raise AssertionError("must not run without a device")

        def test_anywhere():
            pass
        """
    )
    result = pytester.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1] test_gpu.py:*: no usable CUDA device: the CUDA driver sees 0 devices"]
    )
    # A project with a gpu marker of its own (torch.cuda tests, say) decides for itself.
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs torch.cuda\n")
    result = pytester.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(passed=1, failed=1)


def test_sweep_fails_with_the_falsifying_examples_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_sweeps="""
        import pytest

        def test_sweep_finds_the_bug(gradcheck):
            gradcheck.sweep("loss-ce", "sign-flipped", max_examples=3, rows=2, blocks=[32, 64])

        def test_sweep_of_a_correct_kernel(gradcheck):
            reports = gradcheck.sweep("loss-ce", "ce-grad", max_examples=2, rows=2, vocab=40)
            assert reports and all(r.verdict == "pass" for r in reports)
            assert {r.shapes["vocab"] for r in reports} == {40}

        @pytest.mark.gradcheck_sweep("loss-ce", "sign-flipped", max_examples=2, rows=2)
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest(*CPU)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_sweep_finds_the_bug*",
            "E *gradcheck._errors.KernelBug: gradcheck loss-ce  kernel sign-flipped  backend cpu*",
            "E *reproduce: gradcheck run loss-ce --rows 2 --vocab * --block * --seed * "
            "--kernel sign-flipped --backend cpu --case plain",
            "E *example(",
            "E *kwargs={'rows': 2, 'vocab': *, 'block': *, 'seed': *, 'case': None},",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_sweeps.py::test_marked - *KernelBug*"])


def test_xdist_workers_write_one_merged_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kernels=KERNEL_TESTS)
    result = pytester.runpytest_subprocess(*CPU, "-n", "2", "--gradcheck-report", "checks.json")
    result.assert_outcomes(passed=1, failed=1)
    doc = json.loads((pytester.path / "checks.json").read_text())
    assert [(c["nodeid"], c["verdict"]) for c in doc["checks"]] == [
        ("test_kernels.py::test_correct_kernel", "pass"),
        ("test_kernels.py::test_sign_flipped_kernel", "kernel-bug"),
    ]


@pytest.mark.parametrize(
    ("ci", "args", "profile"),
    [
        ("true", (), "gradcheck-ci"),
        ("true", ("--hypothesis-profile", "default"), "default"),  # the user's choice stands
        (None, (), "default"),
        ("false", (), "ci"),  # Hypothesis's own profile: it takes any CI variable for CI
    ],
)
def test_ci_loads_the_gradcheck_ci_profile(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    ci: str | None,
    args: tuple[str, ...],
    profile: str,
) -> None:
    for name in ("GITHUB_ACTIONS", "TF_BUILD", "GITLAB_CI", "BUILD_ID", "TEAMCITY_VERSION"):
        monkeypatch.delenv(name, raising=False)  # Hypothesis's own CI detection: "ci", not ours
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(
        test_profile=f"""
        from hypothesis import settings

        def test_profile():
            assert settings.get_current_profile_name() == {profile!r}
        """
    )
    # A new process: loading a profile changes Hypothesis's settings for the whole process.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)


def test_importing_the_plugin_imports_no_jax_pycuda_or_backend() -> None:
    heavy = ["jax", "jaxlib", "pycuda", "hypothesis", "gradcheck.backends.cpu",
             "gradcheck.backends.cuda", "gradcheck.reference", "rich"]  # fmt: skip
    code = (
        "import sys, gradcheck.pytest_plugin\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
