"""gradcheck.check(): verdicts and evidence for the shipped kernels, callables, and bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradcheck
from gradcheck import KernelBug, SignatureMismatch, UsageError
from gradcheck.ops import Case, get_op

OP = get_op("loss-ce")
ROOT = Path(__file__).resolve().parents[2]

# Each catalogue kernel at the size, the check that must catch it, and the "where" it shows.
CATALOGUE = {
    "legacy-thread-per-vocab": (
        "plain",
        "compare",
        "every element with vocab index >= 256 (= blockDim.x)",
    ),
    "missing-barrier": ("plain", "schedules", "schedule-dependent output"),
    "oob-small-vocab": ("vocab=51", "fault", "threadIdx.x = 153 >= vocab = 51"),
    "mask-ignored-norm": ("masked", "compare", "normalised by all rows, not the unmasked ones"),
    "masked-rows-skipped": ("masked", "compare", "only masked rows (all of them)"),
    "naive-exp": ("large-logits", "compare", "NaN or inf where the reference is finite"),
    "vec4-tail": ("vocab=257", "compare", "the vocab % 4 = 1 tail after the last full float4"),
    "sign-flipped": ("plain", "compare", "sign flipped: kernel = -reference"),
}


def test_catalogue_is_covered() -> None:
    bugs = {k.name for k in OP.kernels if k.expect == "kernel-bug"}
    assert bugs == set(CATALOGUE)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_catalogue_kernel_is_a_kernel_bug_with_its_where(name: str) -> None:
    case, check_name, where = CATALOGUE[name]
    report = gradcheck.check("loss-ce", name, vocab=2000, rows=64, backend="cpu")
    assert report.verdict == "kernel-bug" and report.exit_code == 1
    found = [c for c in report.checks if c.case == case and c.name == check_name]
    assert found and found[0].verdict == "kernel-bug"
    text = found[0].summary + " | " + " | ".join(found[0].where)
    assert where in text
    assert found[0].reproduce.startswith("gradcheck run loss-ce --rows ")
    assert f"--kernel {name}" in found[0].reproduce
    with pytest.raises(KernelBug) as info:
        report.raise_for_verdict()
    assert isinstance(info.value, AssertionError)
    assert "reproduce: gradcheck run loss-ce" in str(info.value)


@pytest.mark.parametrize("name", [k.name for k in OP.kernels if k.expect == "pass"])
def test_correct_kernels_pass(name: str) -> None:
    report = gradcheck.check("loss-ce", name, vocab=2000, rows=16, backend="cpu", seed=3)
    assert report.verdict == "pass", str(report)
    compares = [c for c in report.checks if c.name == "compare"]
    assert len(compares) == len(report.cases) >= 6
    assert all(c.numbers["max_ratio"] <= 1.0 for c in compares)
    report.raise_for_verdict(allow_inconclusive=False)


def _numpy_kernel(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(x)), targets] -= 1
    n = np.count_nonzero(mask)
    return (p * (mask[:, None] / max(n, 1))).astype(np.float32)


def test_python_callable_kernel() -> None:
    report = gradcheck.check("loss-ce", _numpy_kernel, vocab=100, rows=8)
    assert report.verdict == "pass" and report.backend == "python"

    def off_by_rows(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n = np.count_nonzero(mask)
        return _numpy_kernel(logits, targets, mask) * np.float32(n / len(mask))

    bad = gradcheck.check("loss-ce", off_by_rows, vocab=100, rows=8)
    assert bad.verdict == "kernel-bug"
    masked = next(c for c in bad.checks if c.case == "masked")
    assert any("normalised by all rows" in w for w in masked.where)


def test_user_source_and_json_schema(tmp_path: Path) -> None:
    src = tmp_path / "mine.cu"
    src.write_text((ROOT / "kernels_cuda/loss_ce/ce_grad.cu").read_text())
    report = gradcheck.check("loss-ce", str(src), function="ce_grad", vocab=300, rows=4, seed=7)
    assert report.verdict == "pass" and report.kernel == "mine.cu:ce_grad"
    d = report.to_dict()
    assert d["schema"] == "gradcheck.report" and d["schema_version"] == 2
    assert {"verdict", "op", "backend", "kernel", "shapes", "seed", "checks"} <= set(d)
    assert d["shapes"] == {"rows": 4, "vocab": 300, "block": 256} and d["seed"] == 7
    assert all({"name", "case", "output", "verdict", "numbers"} <= set(c) for c in d["checks"])
    assert {c["output"] for c in d["checks"] if c["name"] == "compare"} == {"grad"}
    assert "--source" in d["reproduce"] and "--function ce_grad" in d["reproduce"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"op": "loss-cee"}, "Did you mean 'loss-ce'"),
        ({"kernel": "legacy-thread-per-voca"}, "Did you mean 'legacy-thread-per-vocab'"),
        ({"vocab": 0}, "vocab=0 must be at least 1"),
        ({"rows": -3}, "rows=-3 must be at least 1"),
        ({"block": 0}, "block=0 must be at least 1"),
        ({"block": 2048}, "block=2048 is too large: at most 1,024"),
        ({"vocab": 2.5}, "vocab=2.5 must be a whole number"),
        ({"hidden": 7}, "loss-ce has no dimension or option 'hidden'"),
        ({"kernel": "missing.cu"}, "does not exist"),
        ({"case": "plian"}, "Did you mean 'plain'"),
    ],
)
def test_bad_input_is_a_named_usage_error(kwargs: dict[str, object], message: str) -> None:
    args = {"op": "loss-ce", "vocab": 50, "rows": 2, **kwargs}
    op = args.pop("op")
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gradcheck.check(op, **args)  # type: ignore[arg-type]


def test_function_not_in_source_and_wrong_signature(tmp_path: Path) -> None:
    src = tmp_path / "k.cu"
    src.write_text(
        'extern "C" __global__ void wrong(const float* logits, float* grad, int rows) {}\n'
        'extern "C" __global__ void right_count(const float* a, const float* b, const float* c,'
        " float* d, int e, int f, float g) {}\n"
    )
    with pytest.raises(gradcheck.KernelNotFound, match="Did you mean 'wrong'"):
        gradcheck.check("loss-ce", str(src), function="wron", vocab=8, rows=2)
    with pytest.raises(SignatureMismatch, match="takes 3 parameters; loss-ce kernels take 7"):
        gradcheck.check("loss-ce", str(src), function="wrong", vocab=8, rows=2)
    with pytest.raises(
        SignatureMismatch, match=r"parameter 1 .* should be a pointer to int32 targets"
    ):
        gradcheck.check("loss-ce", str(src), function="right_count", vocab=8, rows=2)
    with pytest.raises(UsageError, match="defines 2 kernels"):
        gradcheck.check("loss-ce", str(src), vocab=8, rows=2)


def test_a_compiled_function_is_checked_on_its_own_backend() -> None:
    mod = gradcheck.SourceModule(
        str(ROOT / "kernels_cuda/loss_ce/online_softmax.cu"), backend="cpu"
    )
    report = gradcheck.check("loss-ce", mod.get_function("ce_grad_online"), vocab=100, rows=4)
    assert report.verdict == "pass" and report.backend == "cpu"
    assert "(kernel given from Python)" in report.reproduce


def test_a_check_too_large_for_the_machine_is_refused_before_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not the out-of-memory killer midway: a UsageError that says how much and what to lower."""
    import gradcheck._check as check_module

    monkeypatch.setattr(check_module, "available_memory", lambda: 3 << 30)
    with pytest.raises(gradcheck.UsageError) as exc:
        gradcheck.check("loss-ce", rows=4096, vocab=128256, backend="cpu")
    msg = str(exc.value)
    assert "checking loss-ce at rows=4,096, vocab=128,256 needs about 7 GiB" in msg
    assert "3 GiB are available" in msg and "Use fewer rows" in msg
    with pytest.raises(gradcheck.UsageError, match="Use fewer heads"):
        gradcheck.check("attention-bwd", batch=2, heads=8, seq=1024, backend="cpu")
    # one head at seq 8192 is 64M scores, which the references take a block of query rows at a
    # time (measured: 1.2 GiB for a head's references, noise bound, formulas and FD)
    monkeypatch.setattr(check_module, "available_memory", lambda: 2 << 30)
    with pytest.raises(gradcheck.UsageError) as exc:
        gradcheck.check("attention-bwd", batch=1, heads=1, seq=8192, head_dim=64, backend="cpu")
    assert "needs about 4 GiB" in str(exc.value) and "or a shorter seq" in str(exc.value)
    # 8 rows cannot be sampled further: every case holds all of a 16M vocab
    monkeypatch.setattr(check_module, "available_memory", lambda: 8 << 30)
    with pytest.raises(gradcheck.UsageError) as exc:
        gradcheck.check("loss-ce", rows=8, vocab=1 << 24, backend="cpu")
    assert "needs about 12 GiB" in str(exc.value)
    # where the available memory cannot be read, nothing is refused on that account
    monkeypatch.setattr(check_module, "available_memory", lambda: None)
    report = gradcheck.check("loss-ce", rows=2, vocab=40, backend="cpu", case="plain")
    assert report.verdict == "pass"


def test_steps_count_the_whole_check_for_a_progress_bar() -> None:
    seen: list[tuple[int, int]] = []
    lines: list[str] = []
    gradcheck.check(
        "loss-ce", rows=3, vocab=40, backend="cpu", case="plain", fd32=True,
        steps=lambda done, total: seen.append((done, total)), progress=lines.append,
    )  # fmt: skip
    # one case: its runs, the references, reference FD and the fd32 check
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert lines[0] == "building ce-grad" and lines[-1].startswith("case plain: the float32")


def test_a_long_launch_shows_how_many_of_its_blocks_are_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race check of a whole head at seq 8192 is one launch of minutes: past BLOCKS_AFTER_S
    the progress line counts its blocks (here from the start: the launches are short)."""
    import gradcheck._runner as runner_module

    monkeypatch.setattr(runner_module, "BLOCKS_AFTER_S", 0.0)
    lines: list[str] = []
    gradcheck.check("loss-ce", rows=3, vocab=40, backend="cpu", case="plain", progress=lines.append)
    counts = [line for line in lines if line.endswith(" of 3 blocks")]
    for run in ("asc, race check", "desc", "random:0", "asc, page-aligned"):
        assert any(line.startswith(f"case plain: running ce-grad ({run}): ") for line in counts), (
            run
        )


def test_each_case_runs_once_and_the_steps_only_go_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # small cases' kernels run ahead of their turn while references compute on threads
    from gradcheck._runner import Runner

    ran: list[str] = []
    run = Runner.run

    def counted(self: Runner, case: Case, *args: Any, **kwargs: Any) -> Any:
        ran.append(case.name)
        return run(self, case, *args, **kwargs)

    monkeypatch.setattr(Runner, "run", counted)
    seen: list[int] = []
    report = gradcheck.check(
        "loss-ce", rows=4, vocab=300, backend="cpu", steps=lambda done, total: seen.append(done)
    )
    names = [c["name"] for c in report.cases]
    assert sorted(ran) == sorted(names) and len(names) == 7
    assert [c.case for c in report.checks if c.name == "schedules"] == names
    assert seen == sorted(seen) and seen[-1] == sum(1 for _ in seen) - 1


def test_large_problems_run_the_other_distributions_on_a_sample_of_rows() -> None:
    spec = get_op("loss-ce")
    cases = {c.name: c for c in spec.cases({"rows": 1024, "vocab": 32000}, 256, 0, {})}
    assert cases["plain"].dims == {"rows": 1024, "vocab": 32000}
    assert cases["masked"].dims == {"rows": 131, "vocab": 32000}
    note = "(131 of 1,024 rows at the full vocab; plain runs them all)"
    assert all(note in cases[n].description for n in ("masked", "large-logits", "edge-targets"))
    small = spec.cases({"rows": 64, "vocab": 2000}, 256, 0, {})
    assert all(c.dims["rows"] == 64 for c in small if not c.name.startswith("vocab="))
    # the sample keeps its power: a bug that shows only with masked rows is still found
    report = gradcheck.check(
        "loss-ce", "mask-ignored-norm", rows=512, vocab=16384, case="masked", backend="cpu"
    )
    assert report.verdict == "kernel-bug"
    assert report.cases[0]["dims"] == {"rows": 256, "vocab": 16384}
