"""`gradcheck run` and `gradcheck list` as a user types them: output, exit codes, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradcheck.cli import main


def test_run_passes_the_shipped_kernel(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "report.json"
    code = main(["run", "loss-ce", "--vocab", "300", "--rows", "8", "--json", str(out_file)])
    out = capsys.readouterr().out
    assert code == 0
    assert "verdict: pass" in out and "backend cpu" in out
    report = json.loads(out_file.read_text())
    assert report["verdict"] == "pass" and report["op"] == "loss-ce"
    assert report["kernel"] == "ce-grad" and report["shapes"]["vocab"] == 300


def test_run_catalogue_kernel_exits_1_with_where_and_reproduce(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["run", "loss-ce", "--vocab", "2000", "--rows", "8", "--kernel", "legacy-thread-per-vocab"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "kernel-bug: loss-ce [plain] compare" in out
    assert "where: every element with vocab index >= 256 (= blockDim.x)" in out
    assert (
        "reproduce: gradcheck run loss-ce --rows 8 --vocab 2000 --block 256 --seed 0 --kernel legacy-thread-per-vocab --case plain"
        in out
    )
    assert "^ = blockDim.x (256)" in out  # the heat map


def test_fd32_story_is_fd_noise(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "loss-ce", "--vocab", "50", "--fd32", "--case", "plain"])
    out = capsys.readouterr().out
    assert code == 0
    assert "verdict: fd-noise" in out
    assert "are finite-difference error, not the kernel" in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["run", "loss-cee"], 2, "Did you mean 'loss-ce'"),
        (["run", "loss-ce", "--vocab", "0"], 2, "vocab=0 must be at least 1"),
        (["run", "loss-ce", "--block", "1025"], 2, "block=1025 is too large"),
        (["run", "loss-ce", "--kernel", "nope-kernel"], 2, "not a shipped loss-ce kernel"),
        (["run", "loss-ce", "--source", "missing.cu"], 2, "does not exist"),
        (["run", "loss-ce", "--function", "f"], 2, "give --source too"),
        (["run", "loss-ce", "--json", "no/such/dir/r.json"], 2, "does not exist"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    assert message in capsys.readouterr().err


def test_kernel_that_does_not_compile_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(const float* l) { nope; }\n')
    assert main(["run", "loss-ce", "--source", str(bad), "--vocab", "8"]) == 3
    assert "bad.cu:1" in capsys.readouterr().err


def test_list_json_maps_ops_to_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"loss-ce", "layernorm-bwd", "attention-bwd"}
    ln = out["layernorm-bwd"]
    assert ln["options"] == {"eps": 1e-05} and ln["dims"] == {"rows": 64, "hidden": 768}
    assert [(o["name"], o["init"]) for o in ln["outputs"]] == [
        ("dx", "poison"), ("dgamma", "zero"), ("dbeta", "zero"),
    ]  # fmt: skip
    assert "float* dgamma" in ln["signature"] and out["attention-bwd"]["block"] == 128
    kernels = out["loss-ce"]["kernels"]
    assert {"name", "expect", "description"} == set(kernels[0])
    by_name = {k["name"]: k["expect"] for k in kernels}
    assert by_name["ce-grad"] == "pass"
    for bug in (
        "legacy-thread-per-vocab",
        "missing-barrier",
        "oob-small-vocab",
        "mask-ignored-norm",
    ):
        assert by_name[bug] == "kernel-bug"


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "loss-ce" in out and "ce-grad (default)" in out and "inv_n_valid" in out


def test_source_with_defines_and_include_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inc = tmp_path / "include"
    inc.mkdir()
    (inc / "scale.cuh").write_text("#define GRAD_SCALE(x) ((x) * SCALE)\n")
    src = tmp_path / "scaled.cu"
    src.write_text(
        '#include "scale.cuh"\n'
        'extern "C" __global__ void k(const float* logits, const int* targets, const float* mask,\n'
        "    float* grad, int rows, int vocab, float inv_n_valid) {\n"
        "  int r = blockIdx.x; const float* x = logits + (size_t)r * vocab;\n"
        "  float m = -INFINITY, s = 0.f;\n"
        "  for (int v = 0; v < vocab; ++v) m = fmaxf(m, x[v]);\n"
        "  for (int v = 0; v < vocab; ++v) s += expf(x[v] - m);\n"
        "  float sc = mask[r] * inv_n_valid;\n"
        "  for (int v = threadIdx.x; v < vocab; v += blockDim.x)\n"
        "    grad[(size_t)r * vocab + v] = GRAD_SCALE((expf(x[v] - m) / s - (v == targets[r])) * sc);\n"
        "}\n"
    )
    argv = ["run", "loss-ce", "--source", str(src), "--vocab", "40", "--rows", "4", "-I", str(inc)]
    assert main([*argv, "-D", "SCALE=1.0f"]) == 0
    assert "verdict: pass" in capsys.readouterr().out
    assert main([*argv, "-D", "SCALE=2.0f"]) == 1
    out = capsys.readouterr().out
    assert "scale off by a constant factor 2" in out
    assert f"-D SCALE=2.0f -I {inc}" in out  # the reproduce line carries them


def test_attention_with_its_options_and_another_grid(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "report.json"
    args = ["run", "attention-bwd", "--batch", "1", "--heads", "2", "--seq", "20", "--head-dim"]
    args += ["8", "--causal", "--block", "32", "--grid", "7,3", "--json", str(out_file)]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: pass" in out and "causal" in out and "grid=(7, 3, 1)" in out
    report = json.loads(out_file.read_text())
    assert report["options"] == {"causal": True} and report["grid"] == [7, 3, 1]
    assert "--causal --block 32 --grid 7,3,1" in report["reproduce"]
    compared = {c["output"] for c in report["checks"] if c["name"] == "compare"}
    assert compared == {"dq", "dk", "dv"}


def test_an_option_of_another_op_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "loss-ce", "--vocab", "30", "--causal"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--causal is not a setting of loss-ce (it belongs to attention-bwd)" in err
    code = main(["run", "layernorm-bwd", "--grid", "2,x"])
    assert code == 2 and "--grid 2,x: give 1 to 3 whole numbers" in capsys.readouterr().err


def test_list_shows_every_op_with_its_launch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for op in ("loss-ce", "layernorm-bwd", "attention-bwd"):
        assert f"{op}:" in out
    assert "grid = (seq, batch * heads, 1)" in out
    assert "dgamma (d loss / d gamma; starts as zeros)" in out


def test_the_command_keeps_jax_compilations_under_gradcheck_cache(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def command(env: dict[str, str]) -> None:
        code = (
            "import sys; from gradcheck.cli import console_main; "
            "sys.argv = ['gradcheck', 'run', 'loss-ce', '--rows', '2', '--vocab', '40', "
            "'--case', 'plain', '--backend', 'cpu']; sys.exit(console_main())"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    command({"GRADCHECK_CACHE_DIR": str(tmp_path / "gc")})
    assert any((tmp_path / "gc" / "jax").iterdir())
    # a JAX cache the user set up is theirs: gradcheck does not put its own in place
    env = {
        "GRADCHECK_CACHE_DIR": str(tmp_path / "gc3"),
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine"),
    }
    command(env)
    assert not (tmp_path / "gc3" / "jax").exists()


def test_the_command_exits_with_the_verdict_and_its_whole_output(tmp_path: Path) -> None:
    # the console command skips the interpreter's teardown: nothing it wrote may be lost
    import os
    import subprocess
    import sys

    out_file = tmp_path / "report.json"
    code = (
        "import sys; from gradcheck.cli import console_main; "
        "sys.argv = ['gradcheck', 'run', 'loss-ce', '--rows', '4', '--vocab', '300', "
        f"'--kernel', 'sign-flipped', '--backend', 'cpu', '--json', {str(out_file)!r}]; "
        "console_main()"
    )
    # stdout to a pipe is block-buffered unless PYTHONUNBUFFERED says otherwise (as a user has it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.rstrip().splitlines()
    assert lines[-2].startswith("verdict: kernel-bug  (7 cases")
    assert lines[-1] == f"report written to {out_file}"
    assert "sign flipped: kernel = -reference" in proc.stdout
    assert json.loads(out_file.read_text())["verdict"] == "kernel-bug"
    # a usage error: its message on stderr, exit 2
    bad = code.replace("'sign-flipped'", "'sign-flip'")
    proc = subprocess.run([sys.executable, "-c", bad], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Did you mean 'sign-flipped'?" in proc.stderr
    # plain print() output (list --json) sits in Python's buffer until the command flushes it
    listing = "import sys; from gradcheck.cli import console_main; "
    listing += "sys.argv = ['gradcheck', 'list', '--json']; console_main()"
    proc = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "loss-ce" in json.loads(proc.stdout)


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["list"], 0),
        (["list", "--json"], 0),
        (["run", "loss-ce", "--rows", "4", "--vocab", "300"], 0),  # rich's default: exit 1
        (["run", "loss-ce", "--rows", "4", "--vocab", "300", "--kernel", "sign-flipped"], 1),
    ],
)
def test_a_reader_that_goes_away_leaves_the_exit_code_and_no_traceback(
    argv: list[str], code: int
) -> None:
    # `gradcheck list | head -1`: the pipe is closed before the command writes
    import subprocess
    import sys

    script = f"import sys; from gradcheck.cli import console_main; sys.argv = {['gradcheck', *argv]!r}; console_main()"
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == code, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_run_help_says_what_happens_at_large_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Large problems: above 2^22 elements (scores for attention-bwd)" in out
    assert "refused before it runs (exit 2)" in out
