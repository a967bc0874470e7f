"""gradcheck run against jax.test_util.check_grads on loss-ce: time, peak memory, and detection.

    python benchmarks/vs_check_grads.py [--quick] [--repeat N] [--out FILE]

Run from the repository root in an environment where gradcheck is installed (``pip install -e .``;
jax comes with it). No GPU needed: kernels run on gradcheck's cpu backend. Progress goes to stderr;
the results go into this script's section of benchmarks/RESULTS.md (or FILE), between its markers.
The recorded default run took 454 s on 2 cores other work shared (load average 5); ``--quick``
(1 repetition, gradcheck run's detection sweep at 64x2000 only) does less of the same.

Both tools check the same function at the same sizes (rows 64 x vocab 2000, rows 8 x vocab 301,
rows 4 x vocab 51):

- check_grads(f, (logits,), order=1, modes=("rev",)) with its default eps (1e-4) and float64
  tolerances (atol = rtol = 1e-5), inside a scoped float64 context. f is either the float64 JAX
  reference loss alone (its gradient from jax: correct), or a jax.custom_vjp whose forward is that
  loss and whose backward launches a shipped loss-ce kernel on the cpu backend (float32 inputs,
  block 256, grid rows) through jax.pure_callback, casts the gradient back to float64 and
  multiplies it by the cotangent: the same construction as vs_torch_gradcheck.py's Function.
- ``gradcheck run loss-ce --rows R --vocab V --kernel NAME`` as a fresh process.

Measured: wall time (fresh process and in process), peak memory of a fresh process doing only that
check (see _bench.py: ru_maxrss of the largest process in the tree, and the sampled peak of the
tree's summed PSS), and for every shipped kernel whether each tool fails it or passes it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    RESULTS,
    Measured,
    fmt_mib,
    fmt_s,
    gradcheck_exe,
    header,
    log,
    run_tree,
    write_section,
)
from vs_torch_gradcheck import Inputs, cell, make_inputs, make_launcher

NAME = "vs_check_grads.py"
SIZES = ((64, 2000), (8, 301), (4, 51))  # rows, vocab: the size, > blockDim, < blockDim
TIME_SIZES = SIZES[:2]  # timed and memory-measured (the vocab-51 one differs from 8x301 by noise)
# input kinds, as vs_torch_gradcheck.make_inputs draws them (plain, a quarter of the rows masked,
# logits near +/-200); one seed per kind so every size sees the same kind of input
KINDS = (("plain", "normal", 11), ("masked", "masked", 12), ("large-logits", "large", 13))
DEFAULT_REPEAT = 3
QUICK_REPEAT = 1
# check_grads's float64 defaults (jax/_src/public_test_util.py: EPS, default_gradient_tolerance),
# used here only to print the margin of each comparison; check_grads itself decides pass / fail
CG_EPS = 1e-4
CG_ATOL = CG_RTOL = 1e-5
CHILD_TIMEOUT_S = 300.0  # one fresh check: 10 s at most here; a hang must not stall the run


# ---- the function check_grads checks --------------------------------------------------------------


def loss_fn(inp: Inputs, kernel: str | None) -> Callable[[Any], Any]:
    """f(logits) in float64: the JAX reference, or the reference with ``kernel`` as its VJP.

    Call (and use the result) inside gradcheck.reference._x64.enable_x64().
    """
    import jax
    import jax.numpy as jnp
    from gradcheck.reference import loss_ce

    targets = jnp.asarray(inp.targets)
    mask = jnp.asarray(inp.mask, jnp.float64)

    def ref(x: Any) -> Any:
        return loss_ce.loss(x, targets, mask)

    if kernel is None:
        return jax.jit(ref)
    from gradcheck.ops import get_op

    k = get_op("loss-ce").kernel(kernel)
    if k is None:
        raise SystemExit(f"no shipped loss-ce kernel named {kernel!r}: see `gradcheck list`")
    launch = make_launcher(k.path(), k.function)

    def kernel_grad(x: Any) -> Any:
        g = launch(np.asarray(x, np.float32), inp.targets, inp.mask)
        return g.astype(np.float64)

    @jax.custom_vjp
    def f(x: Any) -> Any:
        return ref(x)

    def fwd(x: Any) -> tuple[Any, Any]:
        return ref(x), x

    def bwd(x: Any, g: Any) -> tuple[Any]:
        out = jax.ShapeDtypeStruct(x.shape, jnp.float64)  # type: ignore[no-untyped-call]
        return (jax.pure_callback(kernel_grad, out, x) * g,)

    f.defvjp(fwd, bwd)
    return jax.jit(f)


def run_check_grads(f: Callable[[Any], Any], inp: Inputs) -> tuple[str, str]:
    """("pass" | "FAIL" | "raised NAME", message) of one check_grads call on f at inp."""
    import jax.numpy as jnp
    from gradcheck.reference._x64 import enable_x64
    from jax.test_util import check_grads

    with enable_x64():
        x = jnp.asarray(inp.logits, jnp.float64)
        try:
            check_grads(f, (x,), order=1, modes=("rev",))  # type: ignore[no-untyped-call]
        except AssertionError as exc:
            return "FAIL", str(exc)
        except Exception as exc:  # a fault raised by the cpu backend inside the callback
            text = f"{type(exc).__name__}: {exc}"
            for name in ("OutOfBounds", "KernelFault", "DataRace", "LaunchError"):
                if name in text:
                    return f"raised {name}", text
            return f"raised {type(exc).__name__}", text
    return "pass", ""


@dataclass
class Margin:
    """The numbers check_grads's VJP test compares, recomputed as it computes them."""

    ip: float  # <t, kernel gradient> * c
    ip_fd: float  # central difference of the float64 loss along t, * c
    tol: float  # atol + rtol * |ip_fd|

    @property
    def ratio(self) -> float:
        return abs(self.ip - self.ip_fd) / self.tol


def margin(inp: Inputs, grad64: np.ndarray) -> Margin:
    """check_grads draws t = randn(shape), then c = randn() from RandomState(0); same here."""
    import jax.numpy as jnp
    from gradcheck.reference._x64 import enable_x64

    rng = np.random.RandomState(0)
    t = rng.randn(*inp.logits.shape)
    c = float(rng.randn())
    with enable_x64():
        f = loss_fn(inp, None)
        x = jnp.asarray(inp.logits, jnp.float64)
        d = (float(f(x + CG_EPS * t)) - float(f(x - CG_EPS * t))) * (0.5 / CG_EPS)
    with np.errstate(invalid="ignore"):
        ip = float(np.dot(t.ravel(), grad64.ravel())) * c
    return Margin(ip, d * c, CG_ATOL + CG_RTOL * abs(d * c))


def reference_grad(inp: Inputs) -> np.ndarray:
    from gradcheck.reference import loss_ce

    out: np.ndarray = loss_ce.grad(inp.logits, inp.targets, inp.mask, np.float64)
    return out


# ---- child: one check_grads in a fresh process ----------------------------------------------------


def child_main(a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    import jax
    import jax.test_util

    import_s = time.perf_counter() - t0
    _ = jax.__version__
    inp = make_inputs("plain", a.rows, a.vocab, KINDS[0][2], KINDS[0][1])
    t1 = time.perf_counter()
    from gradcheck.reference._x64 import enable_x64

    with enable_x64():
        f = loss_fn(inp, a.kernel or None)
    result, _msg = run_check_grads(f, inp)
    check_s = time.perf_counter() - t1
    print(json.dumps({"result": result, "import_s": import_s, "check_s": check_s}), flush=True)
    return 0


def child(rows: int, vocab: int, kernel: str, cache: str) -> tuple[Measured, dict[str, Any]]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
    cmd += ["--rows", str(rows), "--vocab", str(vocab), "--kernel", kernel]
    m = run_tree(cmd, dict(os.environ, GRADCHECK_CACHE_DIR=cache), CHILD_TIMEOUT_S)
    lines = [ln for ln in m.stdout.splitlines() if ln.startswith("{")]
    if m.rc != 0 or not lines:
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {m.rc}\n{m.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return m, data


# ---- gradcheck run as a fresh process -------------------------------------------------------------


@dataclass
class GcRun:
    m: Measured
    report: dict[str, Any]

    @property
    def verdict(self) -> str:
        return str(self.report.get("verdict", "(no report)"))

    def flagged(self) -> list[str]:
        checks = self.report.get("checks", [])
        return list(dict.fromkeys(c["case"] for c in checks if c.get("verdict") != "pass"))


def gradcheck_run(rows: int, vocab: int, cache: str, kernel: str = "") -> GcRun:
    with tempfile.TemporaryDirectory(prefix="gc-report-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [gradcheck_exe(), "run", "loss-ce", "--rows", str(rows), "--vocab", str(vocab)]
        if kernel:
            cmd += ["--kernel", kernel]
        cmd += ["--json", str(report)]
        m = run_tree(cmd, dict(os.environ, GRADCHECK_CACHE_DIR=cache), CHILD_TIMEOUT_S)
        data = json.loads(report.read_text()) if report.exists() else {}
    if m.rc not in (0, 1) or not data:
        # exit 1 without a report is a crash (an import error, say), not a kernel-bug verdict
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {m.rc} with no report:\n{m.stderr[-3000:]}")
    return GcRun(m, data)


# ---- the run ----------------------------------------------------------------------------------------


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
    return f"{fmt_s(min(xs))} / {fmt_s(max(xs))}" if len(xs) > 1 else "-"


def mem(ms: Sequence[Measured]) -> str:
    return (
        f"{fmt_mib(max(m.maxrss_bytes for m in ms))} / {fmt_mib(max(m.peak_pss_bytes for m in ms))}"
    )


def time_section(repeat: int, out: list[str]) -> None:
    from gradcheck.reference._x64 import enable_x64

    import gradcheck

    out += [
        "### Time and peak memory of one verification (the correct gradient)",
        "",
        f"Fresh process: the command from start to exit, {repeat} run(s), median (min / max). "
        "Memory: ru_maxrss of the largest process in the tree / the sampled peak of the tree's "
        "summed PSS, the largest over the runs. gradcheck's tree is the `gradcheck` process and "
        "its launch worker; check_grads on the kernel launches the same worker. Empty compile "
        "cache: a fresh GRADCHECK_CACHE_DIR per run (builds the backend runtime and the kernel).",
        "",
        "| size | what | runs | median | min / max | peak RSS (largest process) / peak PSS (tree) "
        "| result |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for rows, vocab in TIME_SIZES:
        size = f"{rows}x{vocab}"
        gc_cmd = f"`gradcheck run loss-ce --rows {rows} --vocab {vocab}`"
        log(f"[{size}] gradcheck run, empty and warm compile cache, {repeat}x")
        cold: list[GcRun] = []
        warm: list[GcRun] = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="gc-cache-") as d:
                cold.append(gradcheck_run(rows, vocab, d))
                warm.append(gradcheck_run(rows, vocab, d))
        for label, runs in (("empty", cold), ("warm", warm)):
            walls = [r.m.wall_s for r in runs]
            inside = [float(r.report.get("elapsed_s", float("nan"))) for r in runs]
            verdicts = sorted({f"exit {r.m.rc}, {r.verdict}" for r in runs})
            out.append(
                f"| {size} | {gc_cmd}, fresh process, {label} compile cache | {len(runs)} | "
                f"{fmt_s(med(walls))} | {spread(walls)} | {mem([r.m for r in runs])} | "
                f"{'; '.join(verdicts)}; the report's elapsed_s {fmt_s(med(inside))} |"
            )
        log(f"[{size}] gradcheck.check in process, {repeat}x after one unrecorded call")
        with tempfile.TemporaryDirectory(prefix="gc-cache-") as d:
            old = os.environ.get("GRADCHECK_CACHE_DIR")
            os.environ["GRADCHECK_CACHE_DIR"] = d
            try:
                gradcheck.check("loss-ce", "ce-grad", rows=rows, vocab=vocab)
                ts, verdicts_in = [], set()
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    rep = gradcheck.check("loss-ce", "ce-grad", rows=rows, vocab=vocab)
                    ts.append(time.perf_counter() - t0)
                    verdicts_in.add(str(rep.verdict))
            finally:
                if old is None:
                    os.environ.pop("GRADCHECK_CACHE_DIR", None)
                else:
                    os.environ["GRADCHECK_CACHE_DIR"] = old
        out.append(
            f"| {size} | `gradcheck.check('loss-ce', 'ce-grad', rows={rows}, vocab={vocab})`, "
            f"in process, warm (after one call) | {len(ts)} | {fmt_s(med(ts))} | {spread(ts)} | - "
            f"| {', '.join(sorted(verdicts_in))} |"
        )
        for what, kernel in (("the reference alone", ""), ("ce-grad as the custom_vjp", "ce-grad")):
            log(f"[{size}] check_grads on {what}, fresh process, {repeat}x")
            kids = []
            for _ in range(repeat):
                with tempfile.TemporaryDirectory(prefix="gc-cache-") as d:
                    kids.append(child(rows, vocab, kernel, d))
            walls = [m.wall_s for m, _ in kids]
            results = sorted({str(d["result"]) for _, d in kids})
            imp = med([float(d["import_s"]) for _, d in kids])
            chk = med([float(d["check_s"]) for _, d in kids])
            extra = ", empty compile cache" if kernel else ""
            out.append(
                f"| {size} | check_grads on {what}, fresh process{extra} | {len(kids)} | "
                f"{fmt_s(med(walls))} | {spread(walls)} | {mem([m for m, _ in kids])} | "
                f"{', '.join(results)}; import jax {fmt_s(imp)}, build f + check {fmt_s(chk)} |"
            )
        log(f"[{size}] check_grads in process")
        inp = make_inputs("plain", rows, vocab, KINDS[0][2], KINDS[0][1])
        with tempfile.TemporaryDirectory(prefix="gc-cache-") as d:
            os.environ["GRADCHECK_CACHE_DIR"] = d
            try:
                cases: tuple[tuple[str, str | None], ...] = (
                    ("the reference alone", None),
                    ("ce-grad as the custom_vjp", "ce-grad"),
                )
                for what, kname in cases:
                    with enable_x64():
                        f = loss_fn(inp, kname)
                    t0 = time.perf_counter()
                    first, _ = run_check_grads(f, inp)
                    t_first = time.perf_counter() - t0
                    ts, res = [], {first}
                    for _ in range(max(repeat, 3)):
                        t0 = time.perf_counter()
                        r, _ = run_check_grads(f, inp)
                        ts.append(time.perf_counter() - t0)
                        res.add(r)
                    out.append(
                        f"| {size} | check_grads on {what}, in process: first call (jit "
                        f"compiles) | 1 | {fmt_s(t_first)} | - | - | {first} |"
                    )
                    out.append(
                        f"| {size} | check_grads on {what}, in process, warm | {len(ts)} | "
                        f"{fmt_s(med(ts))} | {spread(ts)} | - | {', '.join(sorted(res))} |"
                    )
            finally:
                os.environ.pop("GRADCHECK_CACHE_DIR", None)
    out += [
        "",
        "check_grads's fresh-process time is `import jax` plus building f (jit; for the kernel, "
        "the cpu backend's build of ce_grad.cu and its worker) plus the check; in process, the "
        "first call jit-compiles f and its VJP, later calls reuse them. gradcheck run at the same "
        "size checks 7 inputs (5 at the size given, 2 around blockDim), each launched 4 times "
        "(3 thread orders, 2 alignments), compares every element with a float64 bound and "
        "checks the reference with finite differences; check_grads checks one input along one "
        "direction.",
        "",
    ]


def detection_section(quick: bool, out: list[str]) -> tuple[dict[Any, GcRun], dict[str, Any]]:
    from gradcheck.reference._x64 import enable_x64

    from gradcheck.ops import get_op

    op = get_op("loss-ce")
    gc_sizes = SIZES[:1] if quick else SIZES
    gc: dict[tuple[str, tuple[int, int]], GcRun] = {}
    with tempfile.TemporaryDirectory(prefix="gc-sweep-") as d:
        for k in op.kernels:
            for rows, vocab in gc_sizes:
                log(f"gradcheck run --rows {rows} --vocab {vocab} --kernel {k.name}")
                gc[k.name, (rows, vocab)] = gradcheck_run(rows, vocab, d, k.name)

    cg: dict[tuple[str, tuple[int, int], str], tuple[str, Margin, str]] = {}
    ref_margin: dict[tuple[tuple[int, int], str], tuple[str, Margin]] = {}
    inputs = {
        (size, kind): make_inputs(kind, size[0], size[1], seed, how)
        for size in SIZES
        for kind, how, seed in KINDS
    }
    with tempfile.TemporaryDirectory(prefix="gc-cg-") as d:
        os.environ["GRADCHECK_CACHE_DIR"] = d
        try:
            for (size, kind), inp in inputs.items():
                with enable_x64():
                    f = loss_fn(inp, None)
                res, _ = run_check_grads(f, inp)
                ref_margin[size, kind] = (res, margin(inp, reference_grad(inp)))
            for k in op.kernels:
                log(f"check_grads on the custom_vjp with {k.name}, {len(inputs)} inputs")
                launch_cache: dict[tuple[int, int], Any] = {}
                for (size, kind), inp in inputs.items():
                    with enable_x64():
                        f = loss_fn(inp, k.name)
                    res, _ = run_check_grads(f, inp)
                    if size not in launch_cache:
                        launch_cache[size] = make_launcher(k.path(), k.function)
                    try:
                        g = launch_cache[size](inp.logits, inp.targets, inp.mask)
                        g64 = g.astype(np.float64)
                        err = kernel_error(g64, reference_grad(inp))
                        mg = margin(inp, g64)
                    except Exception as exc:
                        err, mg = type(exc).__name__, Margin(float("nan"), 0.0, 1.0)
                    cg[k.name, size, kind] = (res, mg, err)
        finally:
            os.environ.pop("GRADCHECK_CACHE_DIR", None)

    # summary
    out += [
        "### Detection: the shipped loss-ce kernels (`gradcheck list --json`)",
        "",
        "gradcheck: `gradcheck run loss-ce --rows R --vocab V --kernel NAME`, a fresh process each "
        "(exit code, verdict). check_grads: the custom_vjp with that kernel's backward, at three "
        "inputs per size: plain (logits ~ N(0, 2^2)), masked (every 4th row from row 1 masked), "
        "large-logits (N(0, 3^2) +/- 200 by row parity); the cell lists the inputs where it "
        "failed (or raised), `passed all` otherwise.",
        "",
    ]
    head = ["kernel", "expect"]
    for r, v in SIZES:
        if (r, v) in gc_sizes:
            head.append(f"gradcheck run {r}x{v}")
        head.append(f"check_grads {r}x{v}")
    out.append("| " + " | ".join(head) + " |")
    out.append("| " + " | ".join(["---"] * len(head)) + " |")
    for k in op.kernels:
        row = [k.name, k.expect]
        for size in SIZES:
            if size in gc_sizes:
                g = gc[k.name, size]
                row.append(f"exit {g.m.rc}, {g.verdict}")
            bad = [
                f"{kind} ({cg[k.name, size, kind][0]})"
                for kind, _, _ in KINDS
                if cg[k.name, size, kind][0] != "pass"
            ]
            row.append("failed: " + ", ".join(bad) if bad else "passed all")
        out.append("| " + " | ".join(cell(c) for c in row) + " |")
    out.append("")

    # gradcheck detail
    out += [
        "#### gradcheck run: which cases flagged each kernel, time and peak memory",
        "",
        "| kernel | size | exit | verdict | cases flagged | wall | peak RSS / peak PSS |",
        "| --- | --- | ---: | --- | --- | ---: | ---: |",
    ]
    for k in op.kernels:
        for size in gc_sizes:
            g = gc[k.name, size]
            out.append(
                f"| {k.name} | {size[0]}x{size[1]} | {g.m.rc} | {g.verdict} | "
                f"{cell(', '.join(g.flagged()) or '-')} | {fmt_s(g.m.wall_s)} | {mem([g.m])} |"
            )
    out += [
        "",
        "One compile cache shared by the sweep, so each kernel's first run includes its build. "
        "The suite at rows R x vocab V: plain, masked, all-masked, large-logits, edge-targets at "
        "R x V, and vocab=51 and vocab=257 at 3 rows (the one equal to V is left out).",
        "",
    ]

    # check_grads margins
    out += [
        "#### check_grads: what it compares, per kernel and input",
        "",
        "In rev mode check_grads compares two scalars: ip = <t, VJP(c)> (t = randn(logits.shape), "
        "c = randn(), both from np.random.RandomState(0), so the same t and c every call) and "
        "ip_fd = c x (f(x + eps t) - f(x - eps t)) / (2 eps), with eps = 1e-4, and fails when "
        "abs(ip - ip_fd) > atol + rtol x abs(ip_fd). For float64 arrays its default atol and "
        "rtol are both 1e-5; it multiplies them by the number of elements compared, and the "
        "compared array is a scalar, so they stay 1e-5 (the size scaling criticised in jax#3130 "
        "bites the JVP check and non-scalar outputs, not this one). Each cell: check_grads's "
        "outcome, then margin = abs(ip - ip_fd) / tolerance recomputed from one launch of the "
        "kernel (above 1 fails), then the kernel's error at that input from the same launch "
        "(max abs difference from the float64 reference gradient / max abs reference entry, and "
        "the NaN/inf count).",
        "",
    ]
    head = ["kernel", *(f"{kind} {r}x{v}" for r, v in SIZES for kind, _, _ in KINDS)]
    out.append("| " + " | ".join(head) + " |")
    out.append("| " + " | ".join(["---"] * len(head)) + " |")
    ref_row = ["(the reference alone: jax's own gradient)"]
    for size in SIZES:
        for kind, _, _ in KINDS:
            res, mg = ref_margin[size, kind]
            ref_row.append(f"{res}; margin {mg.ratio:.2g}")
    out.append("| " + " | ".join(cell(c) for c in ref_row) + " |")
    for k in op.kernels:
        row = [k.name]
        for size in SIZES:
            for kind, _, _ in KINDS:
                res, mg, err = cg[k.name, size, kind]
                ms = "NaN" if np.isnan(mg.ratio) else f"{mg.ratio:.2g}"
                row.append(f"{res}; margin {ms}; err {err}")
        out.append("| " + " | ".join(cell(c) for c in row) + " |")
    out.append("")
    out += [
        "Tolerance at each input (the reference's own ip_fd and its FD error, which is what a "
        "correct kernel's margin is made of):",
        "",
        "| input | N | abs(ip_fd) | tolerance | abs(ip - ip_fd), jax's own gradient |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for (size, kind), (_res, mg) in ref_margin.items():
        out.append(
            f"| {kind} {size[0]}x{size[1]} | {size[0] * size[1]:,} | {abs(mg.ip_fd):.3e} | "
            f"{mg.tol:.3e} | {abs(mg.ip - mg.ip_fd):.1e} |"
        )
    out.append("")
    return gc, {"cg": cg, "gc_sizes": gc_sizes}


def kernel_error(g: np.ndarray, ref: np.ndarray) -> str:
    bad = ~np.isfinite(g)
    scale = float(np.abs(ref).max()) or 1.0
    err = float(np.abs(np.where(bad, 0.0, g - ref)).max()) / scale
    return f"{err:.1e}" + (f", {int(bad.sum())} NaN/inf" if bad.any() else "")


def misses(gc: dict[Any, GcRun], info: dict[str, Any], out: list[str]) -> None:
    """Which buggy kernels each tool passed, from this run's tables."""
    from gradcheck.ops import get_op

    op = get_op("loss-ce")
    cg = info["cg"]
    out += ["### What each tool missed in this run", ""]
    for size in SIZES:
        missed = [
            k.name
            for k in op.kernels
            if k.expect != "pass"
            and all(cg[k.name, size, kind][0] == "pass" for kind, _, _ in KINDS)
        ]
        false = [
            k.name
            for k in op.kernels
            if k.expect == "pass"
            and any(cg[k.name, size, kind][0] != "pass" for kind, _, _ in KINDS)
        ]
        out.append(
            f"- check_grads at {size[0]}x{size[1]}, all three inputs: passed "
            f"{', '.join(missed) or 'no buggy kernel'}; failed "
            f"{', '.join(false) or 'no correct kernel'}."
        )
    for size in info["gc_sizes"]:
        missed = [k.name for k in op.kernels if k.expect != "pass" and gc[k.name, size].m.rc == 0]
        false = [k.name for k in op.kernels if k.expect == "pass" and gc[k.name, size].m.rc != 0]
        out.append(
            f"- gradcheck run at {size[0]}x{size[1]}: passed {', '.join(missed) or 'no buggy kernel'}; "
            f"failed {', '.join(false) or 'no correct kernel'}."
        )
    out += [
        "",
        "Why check_grads misses what it misses: it sees a bug only where the chosen input makes "
        "the kernel's output wrong (a masked-row bug needs masked rows, naive-exp needs large "
        "logits, oob-small-vocab needs vocab < blockDim.x; gradcheck's suite adds those inputs "
        "whatever size is asked for), and only through one projection, <t, error>: an error "
        "the size of the float32 noise passes, an error of any size whose projection on t is "
        "below 1e-5 passes. A kernel that never writes part of its output is caught only because "
        "the cpu backend fills outputs with NaN first; on a GPU those entries hold whatever the "
        "buffer held. A race is seen under the one thread order the backend's default launch "
        "uses; gradcheck runs three orders and compares them bit for bit.",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="1 repetition; gradcheck sweep at 64x2000")
    p.add_argument("--repeat", type=int, default=None, help="fresh-process runs per timing")
    p.add_argument("--out", default=str(RESULTS), help="the results file to update")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=SIZES[0][0], help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, default=SIZES[0][1], help=argparse.SUPPRESS)
    p.add_argument("--kernel", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child_main(a)
    repeat = a.repeat or (QUICK_REPEAT if a.quick else DEFAULT_REPEAT)
    started = time.time()
    t0 = time.perf_counter()
    body: list[str] = [
        "check_grads: `jax.test_util.check_grads(f, (logits,), order=1, modes=('rev',))` with its "
        "defaults for float64 (eps 1e-4, atol = rtol = 1e-5), in a scoped float64 context. f: "
        "the float64 JAX reference loss (a correct gradient), or a jax.custom_vjp whose forward "
        "is that loss and whose backward launches the kernel on the cpu backend via "
        "jax.pure_callback (float32 inputs, block 256, grid rows, the backend's default launch; "
        "the gradient cast to float64 and multiplied by the cotangent).",
        "",
    ]
    time_section(repeat, body)
    gc, info = detection_section(a.quick, body)
    misses(gc, info, body)
    total = time.perf_counter() - t0
    cmd = "python benchmarks/vs_check_grads.py" + (" --quick" if a.quick else "")
    if a.repeat is not None:
        cmd += f" --repeat {a.repeat}"
    head = header("gradcheck run vs jax check_grads (loss-ce)", cmd, started, total)
    head.insert(-1, f"- fresh-process repetitions: {repeat}")
    write_section(NAME, head + body, Path(a.out))
    print("\n".join(head + body))
    log(f"done in {fmt_s(total)}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
