"""gradcheck run against torch.autograd.gradcheck on loss-ce: time to verify, and what each detects.

    python benchmarks/vs_torch_gradcheck.py [--quick] [--repeat N] [--slow-budget S]

Needs gradcheck installed (``pip install -e .``) and PyTorch (``pip install torch==2.13.0``) in the
environment that runs it; no GPU (gradcheck runs the kernels on its cpu backend). Prints a Markdown
section to stdout (progress goes to stderr); paste it into benchmarks/RESULTS.md.

In one run:

1. Time: ``gradcheck run loss-ce --vocab 2000`` as a fresh process, with an empty compile cache (a
   new temporary GRADCHECK_CACHE_DIR each time) and with a warm one, ``--repeat`` times each (median,
   min, max, exit codes, verdicts). Then torch.autograd.gradcheck in float64 on the same loss written
   in torch (masked mean cross entropy via log_softmax) at the same size, rows 64 x vocab 2000
   (128,000 inputs): fast mode as a fresh process (default torch threads and 1 thread), fast mode on
   the kernel-backed Function in this process, and slow mode (the full Jacobian: 2 forward calls per
   input) as a fresh process with 1 thread and with torch's default, each with a time limit of
   ``--slow-budget`` seconds (default 600), and its time against gradcheck run's. If slow mode
   does not finish it is stopped, the forward calls it completed are reported, and slow mode is
   measured at a smaller vocab instead (said so in the table). The forward time per call is measured
   on its own, and fast mode on two buggy kernels at full size as fresh processes (a failing fast
   check recomputes the Jacobian in slow mode for its message). ``--quick`` skips slow mode at full
   size and runs it at vocab 50 only.
2. Detection: every shipped loss-ce kernel (the correct ones and the bug catalogue) through
   ``gradcheck run loss-ce --vocab 2000 --kernel NAME`` (exit code, verdict, what it reports), and
   through torch.autograd.gradcheck (fast and slow mode) on a torch.autograd.Function whose forward is
   the float64 torch loss and whose backward launches the CUDA kernel on the cpu backend (inputs cast
   to float32, the result cast back and scaled by grad_output), at three small inputs: rows 8 x vocab
   301 with 2 rows masked, rows 8 x vocab 301 with logits near +/-200, rows 3 x vocab 51 with the
   middle row masked; where fast and slow mode disagree, 10 more inputs of that kind. Then fast mode
   alone at 64x2000 (plain, masked, large logits) with the slow-mode recomputation for its failure
   message patched out, and the number fast mode compares with its tolerance there. Plus variants
   that change one launch option (thread schedule, guard side) and torch gradcheck with float32
   inputs. ``--quick`` also skips the full-size fast-mode runs on buggy kernels (fresh processes).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUN_ARGS = ("run", "loss-ce", "--vocab", "2000")
RUN_TEXT = "gradcheck run loss-ce --vocab 2000"
FULL = (64, 2000)  # rows, vocab: what `gradcheck run loss-ce --vocab 2000` checks
BLOCK = 256
TARGET_S = 10.0
SPEEDUP_TARGET = 50.0  # x torch gradcheck's slow mode at vocab 2000 (issue: LLM scale)
DEFAULT_REPEAT = 5
QUICK_REPEAT = 2
DEFAULT_SLOW_BUDGET_S = 600.0
FALLBACK_VOCAB = 200  # slow mode at (64, this) when the full size does not finish
QUICK_SLOW_VOCAB = 50
# torch threads for every in-process check, slow mode and the full-size failing fast-mode run: with
# other processes on a 2-core machine, torch's default 2-thread pool made single forward calls take
# 8 ms instead of 0.2 ms at times (the forward-call rows show both settings for each run).
LONG_THREADS = 1
# buggy kernels timed in torch fast mode at full size (fresh process, the plain input)
FULL_SIZE_FAST = (
    ("sign-flipped", "every unmasked element negated"),
    ("legacy-thread-per-vocab", "columns >= 256 never written: NaN poison"),
)

FloatArray = np.ndarray[Any, np.dtype[np.float32]]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_s(s: float) -> str:
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} µs"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---- inputs and the torch reference --------------------------------------------------------------


@dataclass
class Inputs:
    """One loss-ce problem; logits are float32 values, so float64 and float32 see the same point."""

    name: str
    logits: FloatArray
    targets: np.ndarray[Any, np.dtype[np.int32]]
    mask: FloatArray

    @property
    def shape(self) -> str:
        return f"{self.logits.shape[0]}x{self.logits.shape[1]}"


def make_inputs(name: str, rows: int, vocab: int, seed: int, kind: str = "normal") -> Inputs:
    rng = np.random.default_rng(seed)
    if kind == "large":
        shift = np.where(np.arange(rows) % 2 == 0, 200.0, -200.0)[:, None]
        logits = (rng.standard_normal((rows, vocab)) * 3.0 + shift).astype(np.float32)
    else:
        logits = (rng.standard_normal((rows, vocab)) * 2.0).astype(np.float32)
    targets = rng.integers(0, vocab, rows).astype(np.int32)
    mask = np.ones(rows, np.float32)
    if kind == "masked":
        mask[1::4] = 0.0  # a quarter of the rows: rows 1, 5, 9, ...
    elif kind == "probe":
        mask[1] = 0.0
    return Inputs(name, logits, targets, mask)


# the same kinds at the size gradcheck run checks (torch fast mode only there)
FULL_SWEEP: tuple[tuple[str, int, int, int, str], ...] = (
    ("plain", 64, 2000, 11, "normal"),
    ("masked", 64, 2000, 12, "masked"),
    ("large-logits", 64, 2000, 13, "large"),
)
# name, rows, vocab, seed, kind
SWEEP: tuple[tuple[str, int, int, int, str], ...] = (
    ("masked", 8, 301, 1, "masked"),  # rows 1 and 5 masked
    ("large-logits", 8, 301, 2, "large"),
    ("vocab=51", 3, 51, 3, "probe"),
)
REDRAWS = 10  # fresh inputs of the same kind where fast and slow mode disagree


def sweep_inputs(seed_offset: int = 0) -> list[Inputs]:
    return [make_inputs(n, r, v, s + seed_offset, k) for n, r, v, s, k in SWEEP]


SWEEP_TEXT = (
    "masked: rows 8 x vocab 301, logits ~ N(0, 2^2), rows 1 and 5 masked; "
    "large-logits: rows 8 x vocab 301, logits ~ N(0, 3^2) + 200 on even rows, - 200 on odd rows, "
    "no row masked; vocab=51: rows 3 x vocab 51, logits ~ N(0, 2^2), the middle row masked"
)


def torch_loss(logits: Any, targets: Any, mask: Any) -> Any:
    """Mean cross entropy over rows with mask != 0, as reference/loss_ce.py, in torch."""
    import torch

    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    valid = mask != 0
    n_valid = int(valid.sum())
    total = torch.where(valid, mask * nll, torch.zeros_like(nll)).sum()
    return total / n_valid if n_valid else total * 0.0


def torch_args(inp: Inputs, dtype: Any = None) -> tuple[Any, Any, Any]:
    import torch

    dtype = dtype or torch.float64
    x = torch.tensor(inp.logits, dtype=dtype).requires_grad_()
    return x, torch.tensor(inp.targets, dtype=torch.long), torch.tensor(inp.mask, dtype=dtype)


def torch_grad64(inp: Inputs) -> np.ndarray[Any, Any]:
    import torch

    x, t, m = torch_args(inp)
    (g,) = torch.autograd.grad(torch_loss(x, t, m), x)
    out: np.ndarray[Any, Any] = g.numpy()
    return out


# ---- the kernel on the cpu backend, and the torch Function around it -----------------------------


Launcher = Callable[[FloatArray, np.ndarray[Any, Any], FloatArray], FloatArray]


def make_launcher(path: Path, function: str, **options: Any) -> Launcher:
    """Launch ``function`` from ``path`` on the cpu backend as the op does (block 256, grid rows).

    ``options`` go to every launch (schedule, guard); schedule="random+" takes a new seed each launch.
    """
    from gradcheck._launch import In, Out
    from gradcheck.backends import SourceModule

    f = SourceModule(str(path), backend="cpu").get_function(function)
    fresh_seed = options.get("schedule") == "random+"
    if fresh_seed:
        del options["schedule"]
    calls = [0]

    def launch(logits: FloatArray, targets: np.ndarray[Any, Any], mask: FloatArray) -> FloatArray:
        rows, vocab = logits.shape
        n_valid = int(np.count_nonzero(mask))
        inv = np.float32(1.0 / n_valid if n_valid else 0.0)
        grad = np.empty_like(logits)
        opts = dict(options)
        if fresh_seed:
            calls[0] += 1
            opts.update(schedule="random", seed=calls[0])
        f.launch(
            In(np.ascontiguousarray(logits)),
            In(np.ascontiguousarray(targets)),
            In(np.ascontiguousarray(mask)),
            Out(grad),
            np.int32(rows),
            np.int32(vocab),
            inv,
            block=(BLOCK, 1, 1),
            grid=(rows, 1),
            **opts,
        )
        return grad

    return launch


def kernel_function(launch: Launcher) -> Callable[..., Any]:
    """loss(logits, targets, mask) whose backward is the kernel: what torch gradcheck checks."""
    import torch

    class KernelCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, logits: Any, targets: Any, mask: Any) -> Any:
            ctx.save_for_backward(logits, targets, mask)
            return torch_loss(logits, targets, mask)

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            logits, targets, mask = ctx.saved_tensors
            g = launch(
                logits.detach().numpy().astype(np.float32),
                targets.numpy().astype(np.int32),
                mask.detach().numpy().astype(np.float32),
            )
            grad = torch.from_numpy(g.astype(np.float64)).to(logits.dtype) * grad_out
            return grad, None, None

    apply: Callable[..., Any] = KernelCE.apply
    return apply


@dataclass
class TorchOutcome:
    result: str  # "pass", "FAIL: ..." or "raised ..."
    seconds: float
    message: str = ""

    @property
    def detected(self) -> bool:
        return self.result != "pass"


def summarize_gradcheck_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if first.startswith("Jacobian mismatch"):
        short = "Jacobian mismatch"
    elif "reentrant" in text:
        short = "backward not reentrant"
    else:
        short = first[:60]
    return short


def run_torch_gradcheck(
    fn: Callable[..., Any], args: tuple[Any, ...], fast: bool, skip_slow_message: bool = False
) -> TorchOutcome:
    """One torch gradcheck call, default eps / atol / rtol.

    skip_slow_message: a failing fast-mode check recomputes the whole Jacobian in slow mode only to
    print it; this skips that (it does not change the pass / fail outcome).
    """
    import importlib
    from unittest import mock

    from torch.autograd.gradcheck import GradcheckError, gradcheck

    # the module (torch.autograd.gradcheck as an attribute is the function)
    tgc = importlib.import_module("torch.autograd.gradcheck")

    name = "_run_slow_mode_and_get_error"
    patch = (
        mock.patch.object(tgc, name, lambda *a, **k: "\n(slow-mode message skipped)")
        if skip_slow_message and hasattr(tgc, name)
        else contextlib.nullcontext()
    )
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), patch:
            warnings.simplefilter("ignore")  # float32 inputs warn; recorded as a variant instead
            gradcheck(fn, args, fast_mode=fast)
        return TorchOutcome("pass", time.perf_counter() - t0)
    except GradcheckError as exc:
        text = str(exc)
        return TorchOutcome(
            f"FAIL: {summarize_gradcheck_error(text)}", time.perf_counter() - t0, text
        )
    except Exception as exc:  # a kernel fault from the cpu backend, raised inside backward
        text = f"{type(exc).__name__}: {exc}"
        return TorchOutcome(f"raised {type(exc).__name__}", time.perf_counter() - t0, text)


def fast_mode_numbers(inp: Inputs) -> tuple[float, float]:
    """(|v^T J u| of the float64 gradient, the tolerance fast mode allows around it).

    u, v drawn as torch's fast mode draws them (torch/autograd/gradcheck.py, _make_vectors): a fresh
    torch.Generator(), u = rand(N) / norm for the one differentiable input, then v = rand(1) / norm
    for the scalar output (so v = 1). Allowed: atol * sum(u) * sum(v) + rtol * |v^T J u|.
    """
    import torch

    g = torch.Generator()
    u = torch.rand(inp.logits.size, generator=g).to(torch.float64)
    u /= u.norm()
    v = torch.rand(1, generator=g).to(torch.float64)
    v /= v.norm()
    jvu = abs(float(v[0]) * float(np.dot(torch_grad64(inp).ravel(), u.numpy())))
    atol, rtol = 1e-5, 1e-3  # torch.autograd.gradcheck's defaults
    return jvu, atol * float(u.sum()) * float(v.sum()) + rtol * jvu


def kernel_vs_reference(launch: Launcher, inp: Inputs) -> str:
    """One launch at ``inp``: how far the kernel's gradient is from the float64 torch gradient."""
    try:
        g = launch(inp.logits, inp.targets, inp.mask).astype(np.float64)
    except Exception as exc:
        return f"{type(exc).__name__}"
    ref = torch_grad64(inp)
    bad = ~np.isfinite(g)
    scale = float(np.abs(ref).max()) or 1.0
    err = float(np.abs(np.where(bad, 0.0, g - ref)).max()) / scale
    return f"{err:.1e}" + (f", {int(bad.sum())} NaN/inf" if bad.any() else "")


# ---- child processes (fresh interpreters for the cold-process torch timings) ---------------------


def child_main(args: argparse.Namespace) -> int:
    """Import torch, build the input, run torch gradcheck once; print JSON.

    On the reference loss, or with --kernel NAME on the Function whose backward is that kernel.
    """
    t_start = time.perf_counter()
    import torch
    from torch.autograd import gradcheck
    from torch.autograd.gradcheck import GradcheckError

    t_import = time.perf_counter() - t_start
    if args.threads:
        torch.set_num_threads(args.threads)
    inp = make_inputs("plain", args.rows, args.vocab, 0)
    x, t, m = torch_args(inp)
    calls = [0]
    fn: Callable[..., Any] = torch_loss
    if args.kernel:
        from gradcheck.ops import get_op

        k = get_op("loss-ce").kernel(args.kernel)
        assert k is not None
        fn = kernel_function(make_launcher(k.path(), k.function))
        fn(x, t, m)  # build and first launch happen here, not in the timed check

    def counted(*a: Any) -> Any:
        calls[0] += 1
        return fn(*a)

    t_check = time.perf_counter()

    def report(status: str, ok: bool | None) -> None:
        print(
            json.dumps(
                {
                    "status": status,
                    "ok": ok,
                    "import_s": t_import,
                    "check_s": time.perf_counter() - t_check,
                    "forward_calls": calls[0],
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )

    def on_term(signum: int, frame: Any) -> None:
        report("stopped", None)
        os._exit(3)

    signal.signal(signal.SIGTERM, on_term)
    try:
        ok = gradcheck(counted, (x, t, m), fast_mode=args.mode == "fast")
    except GradcheckError:
        ok = False
    report("done", bool(ok))
    return 0


@dataclass
class ChildResult:
    wall_s: float
    data: dict[str, Any]


def run_child(
    mode: str, rows: int, vocab: int, threads: int, limit_s: float | None, kernel: str = ""
) -> ChildResult:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--mode", mode]
    cmd += ["--rows", str(rows), "--vocab", str(vocab), "--threads", str(threads)]
    if kernel:
        cmd += ["--kernel", kernel]
    with tempfile.TemporaryDirectory(prefix="gc-child-") as cache:
        env = dict(os.environ, GRADCHECK_CACHE_DIR=cache)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            out, err = proc.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        wall = time.perf_counter() - t0
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {cmd} printed no result (rc {proc.returncode}): {err[-2000:]}")
    return ChildResult(wall, json.loads(lines[-1]))


# ---- gradcheck run as a fresh process ------------------------------------------------------------


def gradcheck_exe() -> str:
    exe = Path(sys.executable).with_name("gradcheck")
    if not exe.exists():
        raise SystemExit(
            f"{exe} not found: install gradcheck in this environment (pip install -e .)"
        )
    return str(exe)


@dataclass
class RunResult:
    wall_s: float
    rc: int
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return str(self.report.get("verdict", "(no report)"))


def gradcheck_run(cache_dir: str, extra: Sequence[str] = ()) -> RunResult:
    env = dict(os.environ, GRADCHECK_CACHE_DIR=cache_dir)
    # Python as installed writes its bytecode cache: without it an editable install compiles
    # gradcheck's sources again in every process (pip precompiles a regular install; torch's
    # files in site-packages were precompiled when it was installed).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="gc-report-") as tmp:
        out = Path(tmp) / "report.json"
        cmd = [gradcheck_exe(), *RUN_ARGS, *extra, "--json", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        report = json.loads(out.read_text()) if out.exists() else {}
    if proc.returncode not in (0, 1):
        log(proc.stdout[-3000:] + proc.stderr[-3000:])
    return RunResult(wall, proc.returncode, report)


def stats(xs: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


# ---- the run -------------------------------------------------------------------------------------


@dataclass
class TimeRow:
    what: str
    samples: list[float]
    result: str

    def md(self) -> str:
        med, lo, hi = stats(self.samples)
        n = len(self.samples)
        rng = f"{fmt_s(lo)} / {fmt_s(hi)}" if n > 1 else "-"
        return f"| {cell(self.what)} | {n} | {fmt_s(med)} | {rng} | {cell(self.result)} |"


def verdict_counts(runs: Sequence[RunResult]) -> str:
    seen: dict[str, int] = {}
    for r in runs:
        key = f"exit {r.rc}, {r.verdict}"
        seen[key] = seen.get(key, 0) + 1
    return "; ".join(f"{k} ({v} of {len(runs)})" for k, v in seen.items())


def per_call(fn: Callable[[], Any], n: int) -> float:
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def time_section(args: argparse.Namespace, out: list[str]) -> dict[str, Any]:
    import torch

    reps = args.repeat
    rows: list[TimeRow] = []
    notes: list[str] = []

    log(f"gradcheck run, empty compile cache, {reps}x")
    cold: list[RunResult] = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="gc-cold-") as d:
            cold.append(gradcheck_run(d))
    rows.append(
        TimeRow(
            f"`{RUN_TEXT}`, fresh process, empty compile cache",
            [r.wall_s for r in cold],
            verdict_counts(cold),
        )
    )
    rows.append(
        TimeRow(
            "↳ of which inside the check (the report's elapsed_s: cases, launches, FD)",
            [float(r.report.get("elapsed_s", float("nan"))) for r in cold],
            "",
        )
    )
    log(f"gradcheck run, warm compile cache, {reps}x (after one unrecorded run)")
    with tempfile.TemporaryDirectory(prefix="gc-warm-") as d:
        gradcheck_run(d)
        warm = [gradcheck_run(d) for _ in range(reps)]
    rows.append(
        TimeRow(
            f"`{RUN_TEXT}`, fresh process, warm compile cache",
            [r.wall_s for r in warm],
            verdict_counts(warm),
        )
    )
    rows.append(
        TimeRow(
            "↳ of which inside the check (elapsed_s)",
            [float(r.report.get("elapsed_s", float("nan"))) for r in warm],
            "",
        )
    )

    default_threads = args.default_threads
    rows_, vocab = FULL
    for threads in (default_threads, 1):
        log(f"torch gradcheck fast mode, reference, fresh process, {threads} thread(s), {reps}x")
        kids = [run_child("fast", rows_, vocab, threads, None) for _ in range(reps)]
        ok = sum(1 for k in kids if k.data["ok"])
        rows.append(
            TimeRow(
                f"torch gradcheck fast_mode=True, reference, fresh process (import torch + input + check), {threads} thread(s)",
                [k.wall_s for k in kids],
                f"passed {ok} of {len(kids)}",
            )
        )
        rows.append(TimeRow("↳ of which `import torch`", [k.data["import_s"] for k in kids], ""))
        rows.append(
            TimeRow(
                "↳ of which the gradcheck call",
                [k.data["check_s"] for k in kids],
                f"{kids[0].data['forward_calls']} forward calls",
            )
        )

    # forward time per call at full size, in this process
    inp = make_inputs("plain", rows_, vocab, 0)
    x, t, m = torch_args(inp)
    fwd: dict[int, float] = {}
    with torch.no_grad():
        for threads in (default_threads, 1):
            torch.set_num_threads(threads)
            fwd[threads] = per_call(lambda: torch_loss(x, t, m), 50)
    torch.set_num_threads(default_threads)
    for threads, s in fwd.items():
        rows.append(
            TimeRow(
                f"torch reference forward, 64x2000 float64, one call, {threads} thread(s) (median of 50)",
                [s],
                "",
            )
        )

    # fast mode on the kernel-backed Function, in this process
    log("torch gradcheck fast mode, kernel Function (ce-grad on the cpu backend), in process")
    from gradcheck.ops import get_op

    ce = get_op("loss-ce").kernel("ce-grad")
    assert ce is not None
    with tempfile.TemporaryDirectory(prefix="gc-inproc-") as d:
        old = os.environ.get("GRADCHECK_CACHE_DIR")
        os.environ["GRADCHECK_CACHE_DIR"] = d
        try:
            launch = make_launcher(ce.path(), ce.function)
            fn = kernel_function(launch)
            fast_threads = LONG_THREADS
            torch.set_num_threads(fast_threads)
            outs = [run_torch_gradcheck(fn, torch_args(inp), True) for _ in range(reps)]
            torch.set_num_threads(default_threads)
        finally:
            if old is None:
                os.environ.pop("GRADCHECK_CACHE_DIR", None)
            else:
                os.environ["GRADCHECK_CACHE_DIR"] = old
    rows.append(
        TimeRow(
            f"torch gradcheck fast_mode=True, kernel Function (ce-grad backward on the cpu backend), in process, {fast_threads} thread(s)",
            [o.seconds for o in outs],
            "; ".join(sorted({o.result for o in outs})),
        )
    )

    # slow mode: with 1 thread and, at full size, also with torch's default thread count
    slow_threads = LONG_THREADS
    slow_rows: list[TimeRow] = []
    slow_full: dict[int, float] = {}  # threads -> wall time of a finished slow mode at 64x2000
    if args.quick:
        sizes = [(rows_, QUICK_SLOW_VOCAB)]
        notes.append(
            f"--quick: slow mode was not run at 64x2000; it ran at 64x{QUICK_SLOW_VOCAB} "
            f"({rows_ * QUICK_SLOW_VOCAB:,} inputs) only."
        )
    else:
        sizes = [FULL]
        if default_threads != LONG_THREADS:
            sizes.append(FULL)  # once more with the default threads
    for i, (r_, v_) in enumerate(sizes):
        slow_threads = LONG_THREADS if i == 0 else default_threads
        log(
            f"torch gradcheck slow mode, reference, {r_}x{v_}, {slow_threads} thread(s), limit {args.slow_budget:.0f} s"
        )
        k = run_child("slow", r_, v_, slow_threads, args.slow_budget)
        if k.data["status"] == "done" and (r_, v_) == FULL:
            slow_full[slow_threads] = k.wall_s
        n = r_ * v_
        calls = k.data["forward_calls"]
        per = k.data["check_s"] / calls if calls else float("nan")
        if k.data["status"] == "done":
            res = f"{'passed' if k.data['ok'] else 'failed'}; {calls:,} forward calls ({n:,} inputs), {fmt_s(per)} per forward call incl. gradcheck's own work"
        else:
            res = (
                f"DID NOT FINISH: stopped after {fmt_s(k.data['check_s'])} having made {calls:,} of the "
                f"{2 * n:,}+ forward calls it needs; {fmt_s(per)} per call"
            )
        slow_rows.append(
            TimeRow(
                f"torch gradcheck fast_mode=False (slow), reference, {r_}x{v_}, fresh process, {slow_threads} thread(s)",
                [k.wall_s],
                res,
            )
        )
        if k.data["status"] != "done" and (r_, v_) == FULL and i == 0:
            v2 = FALLBACK_VOCAB
            notes.append(
                f"slow mode did not finish at 64x2000 within {args.slow_budget:.0f} s; measured at "
                f"64x{v2} ({r_ * v2:,} inputs) instead."
            )
            k2 = run_child("slow", r_, v2, slow_threads, args.slow_budget)
            c2 = k2.data["forward_calls"]
            slow_rows.append(
                TimeRow(
                    f"torch gradcheck slow, reference, {r_}x{v2} (smaller vocab), fresh process, {slow_threads} thread(s)",
                    [k2.wall_s],
                    f"{k2.data['status']}, ok={k2.data['ok']}; {c2:,} forward calls, {fmt_s(k2.data['check_s'] / max(c2, 1))} per call",
                )
            )
    rows.extend(slow_rows)

    slow_threads = LONG_THREADS
    # fast mode on buggy kernels at full size: when fast mode fails, torch recomputes the Jacobian
    # in slow mode for its error message
    for name, why in FULL_SIZE_FAST if not args.quick else ():
        log(
            f"torch gradcheck fast mode, {name} kernel Function, 64x2000, limit {args.slow_budget:.0f} s"
        )
        k = run_child("fast", rows_, vocab, slow_threads, args.slow_budget, kernel=name)
        calls = k.data["forward_calls"]
        if k.data["status"] == "done":
            res = f"{'passed' if k.data['ok'] else 'failed (GradcheckError)'}; {calls:,} forward calls"
        else:
            res = f"DID NOT FINISH in {fmt_s(k.data['check_s'])}; {calls:,} forward calls made"
        rows.append(
            TimeRow(
                f"torch gradcheck fast_mode=True, {name} kernel Function ({why}), 64x2000, fresh process, {slow_threads} thread(s)",
                [k.wall_s],
                res,
            )
        )
        rows.append(TimeRow("↳ of which the gradcheck call", [k.data["check_s"]], ""))

    cold_med = stats([r.wall_s for r in cold])[0]
    out.append("### Time: one verification of loss-ce at rows 64 x vocab 2000 (128,000 logits)")
    out.append("")
    met = "met" if cold_med < TARGET_S else "NOT met"
    out.append(
        f"Target: a cold `{RUN_TEXT}` under {TARGET_S:.0f} s on this machine. Median of {reps} fresh "
        f"processes with an empty compile cache: {fmt_s(cold_med)}: {met}."
    )
    warm_med = stats([r.wall_s for r in warm])[0]
    if slow_full:
        threads, fastest = min(slow_full.items(), key=lambda kv: kv[1])
        ratio_warm, ratio_cold = fastest / warm_med, fastest / cold_med
        out.append("")
        out.append(
            f"Target: at vocab 2000, every element checked, at least {SPEEDUP_TARGET:.0f}x faster "
            f"than torch gradcheck's slow mode. Its fastest run here ({threads} thread(s)): "
            f"{fmt_s(fastest)}, i.e. {ratio_warm:.0f}x the median `{RUN_TEXT}` with a warm "
            f"compile cache ({fmt_s(warm_med)}): "
            f"{'met' if ratio_warm >= SPEEDUP_TARGET else 'NOT met'}; {ratio_cold:.0f}x the "
            f"median with an empty one ({fmt_s(cold_med)}, which builds the cpu backend's runtime "
            "and the kernel first): "
            f"{'met' if ratio_cold >= SPEEDUP_TARGET else 'NOT met'}."
        )
    out.append("")
    out.append("| what | runs | median | min / max | result |")
    out.append("| --- | ---: | ---: | ---: | --- |")
    out.extend(r.md() for r in rows)
    out.append("")
    out.append(
        "Fresh process: wall time from starting the command to its exit. Empty compile cache: a new "
        "temporary GRADCHECK_CACHE_DIR per run (builds the cpu backend's runtime and the kernel); warm: "
        "the same directory after one unrecorded run. torch timings use the same loss in torch float64 "
        "(log_softmax, masked mean) on the same kind of input (logits ~ N(0, 2^2), every row unmasked), "
        "torch's default eps / atol / rtol. Fast mode as a fresh process runs with torch's default "
        f"thread count ({default_threads}) and with 1, and so does slow mode at full size; "
        "everything else in torch uses 1 thread "
        "(torch.set_num_threads(1)): while this script was written, torch's 2-thread pool made "
        "single forward calls erratic whenever other processes shared the two cores (the two "
        "forward-call rows give both settings for this run)."
    )
    for n_ in notes:
        out.append("")
        out.append(f"Note: {n_}")
    out.append("")
    return {
        "cold_median": cold_med,
        "default_threads": default_threads,
        "fast_threads": fast_threads,
    }


def gradcheck_detection(out: list[str]) -> dict[str, RunResult]:
    from gradcheck.ops import get_op

    op = get_op("loss-ce")
    results: dict[str, RunResult] = {}
    with tempfile.TemporaryDirectory(prefix="gc-sweep-") as d:
        for k in op.kernels:
            log(f"gradcheck run --kernel {k.name}")
            results[k.name] = gradcheck_run(d, ["--kernel", k.name])
    out.append(f"#### `{RUN_TEXT} --kernel NAME`")
    out.append("")
    out.append(
        "| kernel | expect | exit | verdict | cases flagged (of 7) | by checks | first finding: where | time |"
    )
    out.append("| --- | --- | ---: | --- | --- | --- | --- | ---: |")
    for k in op.kernels:
        r = results[k.name]
        checks = r.report.get("checks", [])
        bad = [c for c in checks if c.get("verdict") != "pass"]
        cases = list(dict.fromkeys(c["case"] for c in bad))
        names = sorted({c["name"] for c in bad})
        first = bad[0] if bad else None
        where = ""
        if first:
            where = f"[{first['case']}] {first['name']}: " + "; ".join(
                first.get("where") or []
            ) or first.get("summary", "")
            if not first.get("where"):
                where += first.get("summary", "")[:120]
        out.append(
            f"| {k.name} | {k.expect} | {r.rc} | {r.verdict} | {cell(', '.join(cases) or '-')} | "
            f"{cell(', '.join(names) or '-')} | {cell(where[:220] or '-')} | {fmt_s(r.wall_s)} |"
        )
    out.append("")
    out.append(
        "Fresh process each, one compile cache shared by the sweep (each kernel's first build is in its "
        "time). Cases: plain, masked, all-masked, large-logits, edge-targets at 64x2000, and vocab=51, "
        "vocab=257 at 3 rows; each launched 4 times (thread schedules asc, desc, random, and the "
        "buffers at another alignment), compared with the float64 JAX reference under a noise bound."
    )
    out.append("")
    return results


@dataclass
class TorchCell:
    fast: TorchOutcome
    slow: TorchOutcome | None
    kernel: str


FullTable = dict[str, list[tuple[TorchOutcome, str]]]


def torch_detection(
    torch_threads: int, out: list[str]
) -> tuple[dict[str, dict[str, TorchCell]], FullTable]:
    import torch

    from gradcheck.ops import get_op

    op = get_op("loss-ce")
    inputs = sweep_inputs()
    torch.set_num_threads(torch_threads)

    # the torch loss agrees with the JAX reference (float64) at every sweep input
    from gradcheck.reference import loss_ce as jax_ref

    agree = 0.0
    for inp in inputs:
        g_jax = jax_ref.grad(inp.logits, inp.targets, inp.mask, np.float64)
        agree = max(agree, float(np.abs(torch_grad64(inp) - g_jax).max()))

    table: dict[str, dict[str, TorchCell]] = {}
    variants: list[tuple[str, str, dict[str, Any], str]] = [
        ("missing-barrier", "schedule='desc'", {"schedule": "desc"}, "masked"),
        (
            "missing-barrier",
            "schedule='random', a new seed every launch",
            {"schedule": "random+"},
            "masked",
        ),
        ("oob-small-vocab", "guard='start'", {"guard": "start"}, "vocab=51"),
        ("vec4-tail", "guard='start'", {"guard": "start"}, "masked"),
    ]
    with tempfile.TemporaryDirectory(prefix="gc-torch-") as d:
        os.environ["GRADCHECK_CACHE_DIR"] = d
        for k in op.kernels:
            launch = make_launcher(k.path(), k.function)
            fn = kernel_function(launch)
            table[k.name] = {}
            for inp in inputs:
                log(f"torch gradcheck: {k.name} at {inp.name}")
                fast = run_torch_gradcheck(fn, torch_args(inp), True)
                slow = run_torch_gradcheck(fn, torch_args(inp), False)
                table[k.name][inp.name] = TorchCell(fast, slow, kernel_vs_reference(launch, inp))
        # fast mode at full size
        full_inputs = [make_inputs(n, r, v, s, k) for n, r, v, s, k in FULL_SWEEP]
        full: FullTable = {}
        for k in op.kernels:
            log(f"torch gradcheck fast mode at 64x2000: {k.name}")
            launch = make_launcher(k.path(), k.function)
            fn = kernel_function(launch)
            full[k.name] = [
                (
                    run_torch_gradcheck(fn, torch_args(inp), True, skip_slow_message=True),
                    kernel_vs_reference(launch, inp),
                )
                for inp in full_inputs
            ]
        # where fast and slow mode disagreed: the same kernel at freshly drawn inputs of that kind
        redraw_rows: list[str] = []
        for k in op.kernels:
            for i, inp in enumerate(inputs):
                c = table[k.name][inp.name]
                if c.slow is None or c.fast.detected == c.slow.detected:
                    continue
                log(f"torch gradcheck: {k.name} at {REDRAWS} more draws of {inp.name}")
                fn = kernel_function(make_launcher(k.path(), k.function))
                n_fast = n_slow = 0
                for r in range(REDRAWS):
                    again = sweep_inputs(1000 * (r + 1))[i]
                    n_fast += run_torch_gradcheck(fn, torch_args(again), True).detected
                    n_slow += run_torch_gradcheck(fn, torch_args(again), False).detected
                redraw_rows.append(
                    f"| {k.name} | {inp.name} ({inp.shape}) | {n_fast} of {REDRAWS} | "
                    f"{n_slow} of {REDRAWS} |"
                )
        var_rows: list[str] = []
        by_name = {i.name: i for i in inputs}
        for name, label, opts, at in variants:
            k = op.kernel(name)
            assert k is not None
            log(f"torch gradcheck variant: {name} {label}")
            launch = make_launcher(k.path(), k.function, **opts)
            fn = kernel_function(launch)
            inp = by_name[at]
            fast = run_torch_gradcheck(fn, torch_args(inp), True)
            slow = run_torch_gradcheck(fn, torch_args(inp), False)
            var_rows.append(
                f"| {name} | launch with {cell(label)} | {at} ({inp.shape}) | {cell(fast.result)} | "
                f"{cell(slow.result)} | {kernel_vs_reference(launch, inp)} |"
            )
        # float32 inputs: torch's default eps (1e-6) and tolerances on a float32 forward
        ce = op.kernel("ce-grad")
        assert ce is not None
        inp = by_name["masked"]
        fn = kernel_function(make_launcher(ce.path(), ce.function))
        for what, f in (("reference (torch autograd)", torch_loss), ("ce-grad Function", fn)):
            log(f"torch gradcheck float32: {what}")
            a32 = torch_args(inp, torch.float32)
            fast = run_torch_gradcheck(f, a32, True)
            slow = run_torch_gradcheck(f, a32, False)
            var_rows.append(
                f"| {what} | float32 inputs (forward in float32) | masked ({inp.shape}) | "
                f"{cell(fast.result)} | {cell(slow.result)} | - |"
            )
        os.environ.pop("GRADCHECK_CACHE_DIR", None)

    out.append("#### torch.autograd.gradcheck on a Function whose backward is the kernel (float64)")
    out.append("")
    out.append(f"Inputs: {SWEEP_TEXT}. torch threads: {torch_threads}.")
    out.append("")
    head = ["kernel", "expect"]
    for inp in inputs:
        head += [f"{inp.name} fast", f"{inp.name} slow"]
    head += ["kernel vs f64 grad, one launch (max abs err / max abs grad)"]
    out.append("| " + " | ".join(head) + " |")
    out.append("| " + " | ".join(["---"] * len(head)) + " |")
    for k in op.kernels:
        cells = [k.name, k.expect]
        kern = []
        for inp in inputs:
            c = table[k.name][inp.name]
            cells += [c.fast.result, c.slow.result if c.slow else "-"]
            kern.append(f"{inp.name}: {c.kernel}")
        cells.append("; ".join(kern))
        out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    out.append("")
    fast_t = [c.fast.seconds for row in table.values() for c in row.values()]
    slow_t = [c.slow.seconds for row in table.values() for c in row.values() if c.slow]
    out.append(
        f"Time per torch gradcheck call in this sweep: fast mode median {fmt_s(statistics.median(fast_t))} "
        f"(max {fmt_s(max(fast_t))}), slow mode median {fmt_s(statistics.median(slow_t))} "
        f"(max {fmt_s(max(slow_t))}). The torch loss agrees with the JAX reference's float64 "
        f"gradient at these inputs to {agree:.1e} (max abs difference). Launches use the cpu "
        "backend's defaults (schedule 'asc', guard 'end'): one schedule, one alignment."
    )
    out.append("")
    if redraw_rows:
        out.append(
            f"Where fast and slow mode disagreed in this table, the same kernel at {REDRAWS} freshly drawn "
            "inputs of the same kind (other seeds): how often each mode failed it."
        )
        out.append("")
        out.append("| kernel | input kind | torch fast failed it | torch slow failed it |")
        out.append("| --- | --- | ---: | ---: |")
        out.extend(redraw_rows)
        out.append("")
    out.append("#### torch fast mode at the size gradcheck run checks (64x2000)")
    out.append("")
    out.append(
        "Inputs: plain: logits ~ N(0, 2^2), no row masked; masked: the same with every 4th row "
        "(1, 5, 9, ...) masked, 16 of 64; large-logits: N(0, 3^2) +/- 200 by row parity. Fast mode "
        "only (slow mode takes minutes per call at this size, see the time table); the slow-mode "
        "recomputation a failing fast-mode check does for its message is skipped here."
    )
    out.append("")
    head = ["kernel", "expect", *(f"{i.name} fast" for i in full_inputs)]
    head.append("kernel vs f64 grad, one launch")
    out.append("| " + " | ".join(head) + " |")
    out.append("| " + " | ".join(["---"] * len(head)) + " |")
    for k in op.kernels:
        res = full[k.name]
        errs = "; ".join(f"{i.name}: {e}" for i, (_, e) in zip(full_inputs, res, strict=True))
        cells = [k.name, k.expect, *(o.result for o, _ in res), errs]
        out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    out.append("")
    fast_full = [o.seconds for row in full.values() for o, _ in row]
    out.append(
        f"Time per call: median {fmt_s(statistics.median(fast_full))}, max {fmt_s(max(fast_full))}."
    )
    out.append("")
    out.append(
        "Fast mode compares one number, v^T J u (u: a random unit vector with non-negative entries "
        "from a fresh torch.Generator, the same u every call), with tolerance atol x sum(u) x sum(v) "
        "+ rtol x abs(v^T J u). Computed here from the float64 gradient the same way:"
    )
    out.append("")
    out.append(
        "| input | N | abs(v^T J u) (correct gradient) | tolerance | tolerance / abs(v^T J u) |"
    )
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for inp in [*full_inputs, *inputs]:
        jvu, tol = fast_mode_numbers(inp)
        out.append(
            f"| {inp.name} ({inp.shape}) | {inp.logits.size:,} | {jvu:.2e} | {tol:.2e} | "
            f"{tol / jvu if jvu else float('inf'):.2g} |"
        )
    out.append("")
    out.append(
        "Where the tolerance is more than twice abs(v^T J u), a kernel that returns the gradient "
        "negated passes (it is off by 2 abs(v^T J u)), and so does any error whose projection on u "
        "is below the tolerance (a scaled gradient, wrong rows). Each row of this loss's gradient "
        "sums to zero, so its projection on a non-negative u largely cancels, while sum(u) grows "
        "as sqrt(N)."
    )
    out.append("")
    out.append("#### Variants: one launch option changed, and float32 inputs")
    out.append("")
    out.append(
        "| kernel / function | what changed | input | torch fast | torch slow | kernel vs f64 grad |"
    )
    out.append("| --- | --- | --- | --- | --- | --- |")
    out.extend(var_rows)
    out.append("")

    # what the messages say, for one bug
    sf = table.get("sign-flipped", {}).get("masked")
    if sf is not None:
        out.append("#### What a failure says (sign-flipped, masked 8x301)")
        out.append("")
        for mode, o in (("fast", sf.fast), ("slow", sf.slow)):
            if o is None or not o.message:
                continue
            lines = [ln.rstrip() for ln in o.message.splitlines() if ln.strip()]
            shown = lines[:3]
            extra = [ln for ln in lines if "max per-element difference" in ln]
            out.append(
                f"- torch {mode} mode ({len(o.message):,} characters, {len(lines)} lines; first lines"
                f"{' and the max-difference line' if extra else ''}):"
            )
            out.append("")
            out.append("  ```")
            out.extend(
                f"  {ln[:160]}" for ln in [*shown, *(["..."] if len(lines) > 3 else []), *extra]
            )
            out.append("  ```")
            out.append("")
    return table, full


def summary_section(
    runs: dict[str, RunResult],
    table: dict[str, dict[str, TorchCell]],
    full: FullTable,
    out: list[str],
) -> None:
    from gradcheck.ops import get_op

    op = get_op("loss-ce")
    out.append("#### Side by side: detected (a failing kernel) or passed (a correct one)?")
    out.append("")
    out.append(
        "torch at 64x2000: plain, masked, large-logits; at the small inputs: masked and "
        "large-logits at 8x301, vocab=51 at 3x51 (tables below)."
    )
    out.append("")
    out.append(
        "| kernel | expect | gradcheck run --vocab 2000 | torch fast, 64x2000 | torch fast, small "
        "inputs | torch slow, small inputs |"
    )
    out.append("| --- | --- | --- | --- | --- | --- |")
    names = [n for n, _, _, _, _ in FULL_SWEEP]

    def said(hits: list[str]) -> str:
        return ("failed at " + ", ".join(hits)) if hits else "passed all"

    for k in op.kernels:
        r = runs.get(k.name)
        row = table.get(k.name, {})
        gc = f"exit {r.rc}, {r.verdict}" if r else "(not run)"
        big = said([n for n, (o, _) in zip(names, full.get(k.name, []), strict=True) if o.detected])
        fast = said([n for n, c in row.items() if c.fast.detected])
        slow = said([n for n, c in row.items() if c.slow is not None and c.slow.detected])
        out.append(f"| {k.name} | {k.expect} | {gc} | {big} | {fast} | {slow} |")
    out.append("")


def versions(default_threads: int) -> str:
    import jax
    import torch

    import gradcheck

    return (
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"({default_threads} threads by default), jax {jax.__version__}, numpy {np.__version__}, "
        f"gradcheck {gradcheck.__version__}"
    )


def machine() -> str:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}, {platform.system()} {platform.release()}, no GPU"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="fewer repetitions, slow mode at vocab 50 only"
    )
    p.add_argument("--repeat", type=int, default=None, help="fresh-process repetitions per timing")
    p.add_argument(
        "--slow-budget", type=float, default=DEFAULT_SLOW_BUDGET_S, help="seconds for slow mode"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("fast", "slow"), default="fast", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=FULL[0], help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, default=FULL[1], help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--kernel", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else DEFAULT_REPEAT
    try:
        import torch
    except ImportError:
        raise SystemExit("PyTorch is not installed here: pip install torch==2.13.0") from None
    args.default_threads = torch.get_num_threads()

    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body: list[str] = []
    info = time_section(args, body)
    body.append("### Detection: the shipped loss-ce kernels, correct ones and the bug catalogue")
    body.append("")
    runs = gradcheck_detection(body)
    det: list[str] = []
    table, full = torch_detection(info["fast_threads"], det)
    summary_section(runs, table, full, body)
    body.extend(det)
    load1 = os.getloadavg()[0]
    total = time.perf_counter() - t_start

    cmd = "python benchmarks/vs_torch_gradcheck.py" + (" --quick" if args.quick else "")
    head = [
        "## gradcheck run vs torch.autograd.gradcheck (loss-ce)",
        "",
        "Written by `benchmarks/vs_torch_gradcheck.py` to stdout and pasted here. See "
        "benchmarks/README.md for what it needs and what each number means.",
        "",
        f"- date: {stamp}",
        f"- machine: {machine()}; gradcheck's backend: cpu",
        f"- load average (1 min) before / after: {load0:.2f} / {load1:.2f}",
        f"- {versions(args.default_threads)}",
        f"- command (from the repository root): `{cmd}`",
        f"- fresh-process repetitions: {args.repeat}; slow-mode limit: {args.slow_budget:.0f} s",
        f"- the whole run took {fmt_s(total)}",
        "",
    ]
    print("\n".join(head + body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
