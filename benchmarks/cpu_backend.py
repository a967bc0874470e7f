"""Launch overhead and throughput of the cpu backend on the cross-entropy gradient.

Compares the backend running kernels_cuda/loss_ce/ce_grad.cu (one block of 256 threads per row) with
benchmarks/ce_loop.cpp, the same gradient as a plain single-threaded C++ loop called through ctypes.
The target (from the issue): the backend's default mode within 10x of the loop at
(rows 64, vocab 2000) and (rows 64, vocab 50257).

    python benchmarks/cpu_backend.py [--repeat N] [--out FILE]

Prints the tables and writes them as Markdown to benchmarks/RESULTS.md (or FILE). Backend times are
the wall time of ``f.launch(...)`` as a user sees it: copying into the launch arena, the round trip
to the worker process, the kernel, and copying the results back. Measurements are taken round-robin
(one sample of every case per repetition), so load from other processes spreads over all cases.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import mmap
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gradcheck.backends import Function

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CE_SOURCE = REPO / "kernels_cuda" / "loss_ce" / "ce_grad.cu"
OVERHEAD_SOURCE = HERE / "overhead_kernels.cu"
LOOP_SOURCE = HERE / "ce_loop.cpp"
DEFAULT_OUT = HERE / "RESULTS.md"
OTHERS_MARKER = "<!-- other benchmarks: kept when this script rewrites the file -->"
DEFAULT_REPEAT = 31

SIZES: tuple[tuple[int, int], ...] = ((64, 2000), (64, 50257))
TINY: tuple[int, int] = (1, 256)
BLOCK = 256
TARGET_RATIO = 10.0
# -O2: the optimisation level the cpu backend compiles kernels with (COMMON_FLAGS in its _build.py).
LOOP_FLAGS = ("-O2", "-shared", "-fPIC")
LOOP_COMMAND = " ".join(["g++", *LOOP_FLAGS, "benchmarks/ce_loop.cpp"])
# Backend and loop add the exponentials in different orders (a block reduction and a sequential
# sum), so they differ by rounding: at most about vocab x 2^-24 relative to the sum for each, which
# moves grad by that much times mask x inv_n_valid. Anything larger is a bug.
UNIT_ROUNDOFF = 2.0**-24
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "workers=1": {"workers": 1},
    "poison=False": {"poison": False},
    # the default launch on arrays from shared_empty(): no copy into the arena or back
    "in place": {"in_place": True},
}

FloatArray = np.ndarray[Any, np.dtype[np.float32]]
IntArray = np.ndarray[Any, np.dtype[np.int32]]


# ---- data and the C++ loop ----------------------------------------------------------------------


@dataclass
class Problem:
    """One cross-entropy gradient problem: inputs, and a grad array per way of computing it."""

    rows: int
    vocab: int
    logits: FloatArray
    targets: IntArray
    mask: FloatArray

    @property
    def elements(self) -> int:
        return self.rows * self.vocab

    @property
    def inv_n_valid(self) -> np.float32:
        return np.float32(1.0 / max(1.0, float(self.mask.sum())))

    def empty_grad(self) -> FloatArray:
        return np.empty((self.rows, self.vocab), dtype=np.float32)

    @property
    def label(self) -> str:
        return f"rows {self.rows}, vocab {self.vocab}"


def make_problem(rows: int, vocab: int, *, masked_every: int = 0, seed: int = 0) -> Problem:
    """Random logits; all rows valid unless ``masked_every`` > 0 (then every n-th is masked)."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((rows, vocab), dtype=np.float32) * 4.0).astype(np.float32)
    targets = rng.integers(0, vocab, size=rows).astype(np.int32)
    mask = np.ones(rows, dtype=np.float32)
    if masked_every:
        mask[::masked_every] = 0.0
    return Problem(rows, vocab, logits, targets, mask)


class CeLoop:
    """benchmarks/ce_loop.cpp built with g++ -O2 into ``build_dir`` and called through ctypes."""

    def __init__(self, build_dir: Path) -> None:
        library = build_dir / "ce_loop.so"
        cmd = [cxx(), *LOOP_FLAGS, str(LOOP_SOURCE), "-o", str(library)]
        subprocess.run(cmd, check=True)
        floats = np.ctypeslib.ndpointer(dtype=np.float32, flags="C_CONTIGUOUS")
        ints = np.ctypeslib.ndpointer(dtype=np.int32, flags="C_CONTIGUOUS")
        self._fn = ctypes.CDLL(str(library)).ce_grad_loop
        self._fn.argtypes = [
            floats,
            ints,
            floats,
            floats,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_float,
        ]
        self._fn.restype = None

    def __call__(self, p: Problem, grad: FloatArray) -> None:
        self._fn(p.logits, p.targets, p.mask, grad, p.rows, p.vocab, float(p.inv_n_valid))


def cxx() -> str:
    """The compiler the cpu backend uses ($GRADCHECK_CXX, else g++), so both sides match."""
    return os.environ.get("GRADCHECK_CXX", "g++")


# ---- launching ----------------------------------------------------------------------------------


def launch_ce(f: Function, p: Problem, grad: FloatArray, **options: Any) -> tuple[float, float]:
    """One launch of a kernel with ce_grad's signature: (wall seconds, Launch.elapsed_s)."""
    import gradcheck

    t0 = time.perf_counter()
    result = f.launch(
        gradcheck.In(p.logits),
        gradcheck.In(p.targets),
        gradcheck.In(p.mask),
        gradcheck.Out(grad),
        np.int32(p.rows),
        np.int32(p.vocab),
        p.inv_n_valid,
        block=(BLOCK, 1, 1),
        grid=(p.rows, 1),
        **options,
    )
    return time.perf_counter() - t0, result.elapsed_s


def reference64(p: Problem) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The same gradient in float64 with numpy: tells which float32 result rounds more."""
    x = p.logits.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    grad: np.ndarray[Any, np.dtype[np.float64]] = e / e.sum(axis=1, keepdims=True)
    grad[np.arange(p.rows), p.targets] -= 1.0
    grad *= (p.mask.astype(np.float64) * float(p.inv_n_valid))[:, None]
    return grad


def tolerance(p: Problem) -> float:
    """Worst-case rounding of the two float32 sums of vocab terms, in units of grad."""
    return 2.0 * p.vocab * UNIT_ROUNDOFF * float(np.max(p.mask) * p.inv_n_valid)


def max_abs_diff(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def arena_model(p: Problem, grad: FloatArray, scratch: np.ndarray[Any, Any] | None) -> None:
    """What the backend's arena does with the bytes of one launch, without the backend.

    With ``scratch`` None: a fresh memfd mapping per call (what a launch would cost if the arena
    were not reused), inputs copied in, the output filled, then copied out and unmapped. With
    ``scratch``: the same copies into memory already mapped, as the reused arena does.
    """
    inputs = [p.logits, p.targets, p.mask]
    size = sum(a.nbytes for a in inputs) + grad.nbytes

    def copies(buf: np.ndarray[Any, Any]) -> None:
        pos = 0
        for a in inputs:
            buf[pos : pos + a.nbytes] = a.reshape(-1).view(np.uint8)
            pos += a.nbytes
        out = buf[pos : pos + grad.nbytes]
        out[...] = 0xFF
        grad.reshape(-1).view(np.uint8)[...] = out

    if scratch is not None:
        copies(scratch[:size])
        return
    fd = os.memfd_create("gradcheck-bench-arena", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
        copies(np.frombuffer(mm, dtype=np.uint8))  # the view is gone when copies() returns
        mm.close()
    finally:
        os.close(fd)


def check_against_loop(name: str, p: Problem, got: FloatArray, want: FloatArray) -> float:
    """Max abs difference; raises if the backend's output is not the loop's up to rounding."""
    if not np.all(np.isfinite(got)):
        bad = int(np.count_nonzero(~np.isfinite(got)))
        raise SystemExit(f"FAIL {name}: {bad} non-finite elements (unwritten or NaN) in grad")
    diff = max_abs_diff(got, want)
    if diff > tolerance(p):
        raise SystemExit(
            f"FAIL {name}: max abs diff {diff:.3g} against the C++ loop exceeds the rounding "
            f"bound {tolerance(p):.3g}"
        )
    return diff


# ---- measurement --------------------------------------------------------------------------------


@dataclass
class Case:
    """Something timed once per repetition. ``run`` returns (wall s, worker round trip s or nan)."""

    key: str
    run: Callable[[], tuple[float, float]]
    elements: int = 0
    wall: list[float] = field(default_factory=list)
    inner: list[float] = field(default_factory=list)

    def sample(self) -> None:
        wall, inner = self.run()
        self.wall.append(wall)
        self.inner.append(inner)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def min(self) -> float:
        return min(self.wall)

    @property
    def inner_median(self) -> float:
        return statistics.median(self.inner)

    @property
    def caller_median(self) -> float:
        """Median of (wall - worker round trip): arena, copies in and out, poison checks."""
        return statistics.median(w - i for w, i in zip(self.wall, self.inner, strict=True))


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, float("nan")


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_rate(elements: int, seconds: float) -> str:
    return f"{elements / seconds / 1e6:.1f} M/s" if elements else "-"


# ---- report -------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def compiler_version() -> str:
    out = subprocess.run([cxx(), "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    # Right-align the columns that hold numbers (with units), left-align the others.
    numeric = [
        all(r[i][:1].isdigit() or r[i][:1] in "-(" for r in rows) for i in range(len(header))
    ]
    right = ["---:" if n else "---" for n in numeric]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(right) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells)

    return [line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]]


@dataclass
class Report:
    """What is printed and written: sections of (title, header, rows, notes)."""

    sections: list[tuple[str, list[str], list[list[str]], list[str]]] = field(default_factory=list)

    def add(self, title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> None:
        self.sections.append((title, header, rows, notes))
        print(f"\n{title}")
        for line in text_table(header, rows):
            print("  " + line)
        for note in notes:
            print(f"  {note}")

    def markdown(self, preamble: list[str]) -> str:
        out = list(preamble)
        for title, header, rows, notes in self.sections:
            out += ["", f"## {title}", ""]
            out += markdown_table(header, rows)
            for note in notes:
                out += ["", note]
        return "\n".join(out) + "\n"


# ---- the benchmark ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="samples per case")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    started = datetime.datetime.now(datetime.UTC)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    saved_cache = os.environ.get("GRADCHECK_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="gradcheck-bench-") as tmp:
        # A fresh compile cache, set before gradcheck is imported: the first build is a cold one.
        os.environ["GRADCHECK_CACHE_DIR"] = str(Path(tmp) / "cache")
        try:
            report, verdicts = run(args.repeat, Path(tmp))
        finally:
            if saved_cache is None:
                del os.environ["GRADCHECK_CACHE_DIR"]
            else:
                os.environ["GRADCHECK_CACHE_DIR"] = saved_cache
    load_after = os.getloadavg()

    rerun = "python benchmarks/cpu_backend.py" + (
        f" --repeat {args.repeat}" if args.repeat != DEFAULT_REPEAT else ""
    )
    if args.out != DEFAULT_OUT:
        rerun += f" --out {args.out}"
    preamble = [
        "# cpu backend benchmark: cross-entropy gradient",
        "",
        "Written by `benchmarks/cpu_backend.py` (do not edit by hand; re-run it). "
        "See benchmarks/README.md for what each number means.",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}, "
        f"{platform.system()} {platform.release()}",
        f"- load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}",
        f"- python {platform.python_version()}, numpy {np.__version__}, {compiler_version()}",
        f"- C++ loop built with `{LOOP_COMMAND} -o <tmp>/ce_loop.so`; the backend's default mode: "
        "all cores as workers, schedule asc, poison on, guard pages, worker process",
        f"- re-run from the repository root: `{rerun}`",
        f"- samples: {args.repeat} per case, taken round-robin (one of each case per round), "
        "after one unrecorded warm-up launch of each",
        f"- the whole run took {time.perf_counter() - t_start:.0f} s",
        "",
        "## Verdict (default mode against the C++ loop, medians; target: within "
        f"{TARGET_RATIO:g}x)",
        "",
        *[f"- {v}" for v in verdicts],
    ]
    text = report.markdown(preamble)
    # Other benchmarks paste their sections below a marker in the same file: keep them.
    if args.out.exists() and OTHERS_MARKER in (old := args.out.read_text()):
        text = text.rstrip("\n") + "\n\n" + old[old.index(OTHERS_MARKER) :]
    args.out.write_text(text)
    print()
    for v in verdicts:
        print(v)
    print(f"\nwrote {args.out}")
    return 0


def run(repeat: int, tmp: Path) -> tuple[Report, list[str]]:
    import gradcheck

    report = Report()

    # Builds. Constructing the first module also starts the launch worker process.
    t0 = time.perf_counter()
    ce_mod = gradcheck.SourceModule(CE_SOURCE, no_extern_c=True, backend="cpu")
    cold = time.perf_counter() - t0
    warm: list[float] = []
    for _ in range(3):
        t0 = time.perf_counter()
        gradcheck.SourceModule(CE_SOURCE, no_extern_c=True, backend="cpu")
        warm.append(time.perf_counter() - t0)
    ce_grad = ce_mod.get_function("ce_grad")
    helpers = gradcheck.SourceModule(OVERHEAD_SOURCE, no_extern_c=True, backend="cpu")
    write_one = helpers.get_function("write_one")
    ce_nop = helpers.get_function("ce_nop")
    ce_reduce_only = helpers.get_function("ce_reduce_only")
    loop = CeLoop(tmp)

    tiny = make_problem(*TINY)
    problems = [make_problem(rows, vocab) for rows, vocab in SIZES]
    one = np.empty(1, dtype=np.float32)

    t0 = time.perf_counter()
    launch_ce(ce_grad, tiny, tiny.empty_grad())
    first_launch = time.perf_counter() - t0

    report.add(
        "Builds (excluded from everything below)",
        ["what", "time"],
        [
            [
                "build, cold cache (ce_grad.cu; also builds the runtime, starts the worker)",
                fmt_s(cold),
            ],
            [f"build, warm cache (median of {len(warm)})", fmt_s(statistics.median(warm))],
            ["first ce_grad launch after the build (tiny size)", fmt_s(first_launch)],
        ],
        ["The cold build uses a fresh temporary GRADCHECK_CACHE_DIR."],
    )

    # Correctness before timing: every mode, both sizes, and one problem with masked rows.
    checks: list[list[str]] = []
    for p in [*problems, make_problem(16, 3001, masked_every=3, seed=1)]:
        want = p.empty_grad()
        loop(p, want)
        exact = reference64(p)
        masked = int(np.count_nonzero(p.mask == 0))
        label = p.label + (f" ({masked} rows masked)" if masked else "")
        for mode, options in MODES.items():
            q, got, opts = for_mode(p, options)
            launch_ce(ce_grad, q, got, **opts)
            diff = check_against_loop(f"{mode} at {p.label}", p, got, want)
            checks.append(
                [
                    label,
                    mode,
                    f"{diff:.2e}",
                    f"{tolerance(p):.2e}",
                    f"{max_abs_diff(got, exact):.2e}",
                    f"{max_abs_diff(want, exact):.2e}",
                    f"{float(np.max(np.abs(want))):.2e}",
                ]
            )
    report.add(
        "Correctness: backend output against the C++ loop",
        ["size", "mode", "max abs diff", "bound", "backend vs f64", "loop vs f64", "max abs grad"],
        checks,
        [
            "bound = 2 x vocab x 2^-24 x mask x inv_n_valid: the worst-case rounding of the two "
            "float32 sums (block reduction, sequential loop); the run stops if a difference "
            "exceeds it. f64: the same gradient in float64 with numpy. Timed outputs are checked "
            "again after timing.",
        ],
    )

    # Cases, timed round-robin.
    outputs: dict[str, tuple[Problem, FloatArray, FloatArray]] = {}
    cases: list[Case] = [
        Case("trivial", lambda: launch_one(write_one, one)),
        Case("tiny", _bind(ce_grad, tiny, tiny.empty_grad(), {}), tiny.elements),
    ]
    for p in problems:
        ref = p.empty_grad()
        cases.append(Case(f"loop {p.label}", _bind_loop(loop, p, ref), p.elements))
        for mode, options in MODES.items():
            q, g, opts = for_mode(p, options)
            outputs[f"{mode} {p.label}"] = (p, g, ref)
            run_fn = _bind(ce_grad, q, g, opts)
            cases.append(Case(f"{mode} {p.label}", run_fn, p.elements))
        cases.append(Case(f"nop {p.label}", _bind(ce_nop, p, p.empty_grad(), {}), p.elements))
        scratch = np.empty(2 * p.logits.nbytes + 2 * p.mask.nbytes, dtype=np.uint8)
        for key, buf in (("memfd", None), ("copies", scratch)):
            grad_copy = p.empty_grad()
            cases.append(
                Case(
                    f"{key} {p.label}",
                    _bind_model(p, grad_copy, buf),
                    p.elements,
                )
            )
        cases.append(
            Case(f"reduce {p.label}", _bind(ce_reduce_only, p, p.empty_grad(), {}), p.elements)
        )
    for case in cases:  # warm-up: one unrecorded sample each (page faults, caches, branch history)
        case.run()
    t0 = time.perf_counter()
    for _ in range(repeat):
        for case in cases:
            case.sample()
    timing_s = time.perf_counter() - t0
    by_key = {c.key: c for c in cases}
    for name, (p, got, want) in outputs.items():
        check_against_loop(f"{name} (timed)", p, got, want)

    c_triv, c_tiny = by_key["trivial"], by_key["tiny"]
    report.add(
        "Launch overhead (wall time of f.launch)",
        ["launch", "median", "min", "worker round trip (median)"],
        [
            [
                "write_one: grid 1, block 32, one float",
                fmt_s(c_triv.median),
                fmt_s(c_triv.min),
                fmt_s(c_triv.inner_median),
            ],
            [
                f"ce_grad tiny: rows {TINY[0]}, vocab {TINY[1]}, block {BLOCK}",
                fmt_s(c_tiny.median),
                fmt_s(c_tiny.min),
                fmt_s(c_tiny.inner_median),
            ],
        ],
        [
            "Worker round trip = Launch.elapsed_s: request to the worker process, kernel, reply. "
            "The rest of the wall time is the caller's side (arena, copies, poison checks).",
        ],
    )

    rows: list[list[str]] = []
    verdicts: list[str] = []
    for p in problems:
        c_loop = by_key[f"loop {p.label}"]
        rows.append(
            [
                p.label,
                "C++ loop, 1 thread",
                fmt_s(c_loop.median),
                fmt_s(c_loop.min),
                "1.0x",
                "1.0x",
                fmt_rate(p.elements, c_loop.median),
            ]
        )
        for mode in MODES:
            c = by_key[f"{mode} {p.label}"]
            rows.append(
                [
                    p.label,
                    f"backend, {mode}",
                    fmt_s(c.median),
                    fmt_s(c.min),
                    f"{c.median / c_loop.median:.1f}x",
                    f"{c.min / c_loop.min:.1f}x",
                    fmt_rate(p.elements, c.median),
                ]
            )
        ratio = by_key[f"default {p.label}"].median / c_loop.median
        within = "within" if ratio <= TARGET_RATIO else "NOT within"
        verdicts.append(
            f"{p.label}: default mode is {ratio:.1f}x the C++ loop: {within} {TARGET_RATIO:g}x"
        )
    report.add(
        f"ce_grad per launch, block {BLOCK} (wall time of f.launch; loop: the ctypes call)",
        ["size", "how", "median", "min", "ratio (median)", "ratio (min)", "elements/s (median)"],
        rows,
        [
            "ratio = backend time / C++ loop time at the same size; "
            "elements/s = rows x vocab / time.",
            f"Timing took {timing_s:.1f} s for {repeat} rounds of {len(cases)} cases.",
        ],
    )

    breakdown: list[list[str]] = []
    for p in problems:
        c = by_key[f"default {p.label}"]
        nop, red = by_key[f"nop {p.label}"], by_key[f"reduce {p.label}"]
        loop_t = by_key[f"loop {p.label}"].median
        parts = [
            ("fixed per launch (write_one, grid 1, block 32)", c_triv.median),
            (
                "caller side beyond that: arena, copies in/out, poison count "
                "(ce_grad wall - round trip)",
                c.caller_median - c_triv.caller_median,
            ),
            (
                f"worker: {p.rows} blocks x {BLOCK} fibers, no work "
                "(ce_nop round trip - write_one's)",
                nop.inner_median - c_triv.inner_median,
            ),
            (
                "worker: 2 block reductions (ce_reduce_only - ce_nop)",
                red.inner_median - nop.inner_median,
            ),
            (
                "worker: per-element math (ce_grad - ce_reduce_only)",
                c.inner_median - red.inner_median,
            ),
        ]
        for what, t in parts:
            breakdown.append(
                [p.label, what, fmt_s(t), f"{t / c.median * 100:.0f}%", f"{t / loop_t:.2f}x"]
            )
            if what.startswith("caller side"):
                for key, model in (
                    ("memfd", "compare: a fresh memfd with the same bytes copied in and out"),
                    ("copies", "compare: the same copies into memory already mapped"),
                ):
                    t_model = by_key[f"{key} {p.label}"].median
                    breakdown.append(
                        [
                            p.label,
                            f"  {model} (numpy alone, not counted in the total)",
                            fmt_s(t_model),
                            f"({t_model / c.median * 100:.0f}%)",
                            f"({t_model / loop_t:.2f}x)",
                        ]
                    )
        breakdown.append(
            [
                p.label,
                "total (ce_grad default, wall)",
                fmt_s(c.median),
                "100%",
                f"{c.median / loop_t:.2f}x",
            ]
        )
    (p_small, p_large) = problems
    per_elem = (
        by_key[f"default {p_large.label}"].median - by_key[f"default {p_small.label}"].median
    ) / (p_large.elements - p_small.elements)
    per_elem_loop = (
        by_key[f"loop {p_large.label}"].median - by_key[f"loop {p_small.label}"].median
    ) / (p_large.elements - p_small.elements)
    fixed = by_key[f"default {p_small.label}"].median - per_elem * p_small.elements
    report.add(
        "Where the time goes (default mode, differences of medians)",
        ["size", "part", "time", "share", "in units of the loop's time"],
        breakdown,
        [
            "Differences of medians on a noisy machine: a part smaller than the run-to-run noise "
            "can come out near zero or negative. The worker parts run on all workers at once, so "
            "with several cores the per-element math is divided among them.",
            f"Linear fit over the two sizes (rows {p_small.rows}, block {BLOCK}): backend = "
            f"{fmt_s(fixed)} + {per_elem * 1e9:.2f} ns/element; "
            f"C++ loop: {per_elem_loop * 1e9:.2f} ns/element; "
            f"per-element ratio {per_elem / per_elem_loop:.1f}x.",
        ],
    )
    return report, verdicts


def launch_one(f: Function, out: FloatArray) -> tuple[float, float]:
    import gradcheck

    t0 = time.perf_counter()
    result = f.launch(gradcheck.Out(out), block=(32, 1, 1), grid=(1, 1))
    return time.perf_counter() - t0, result.elapsed_s


def _bind_model(
    p: Problem, grad: FloatArray, scratch: np.ndarray[Any, Any] | None
) -> Callable[[], tuple[float, float]]:
    return lambda: timed(lambda: arena_model(p, grad, scratch))


def _bind_loop(loop: CeLoop, p: Problem, grad: FloatArray) -> Callable[[], tuple[float, float]]:
    return lambda: timed(lambda: loop(p, grad))


def _bind(
    f: Function, p: Problem, grad: FloatArray, options: dict[str, Any]
) -> Callable[[], tuple[float, float]]:
    return lambda: launch_ce(f, p, grad, **options)


def for_mode(p: Problem, options: dict[str, Any]) -> tuple[Problem, FloatArray, dict[str, Any]]:
    """The problem, a grad array and the launch options of a mode: "in place" puts the inputs and
    the grad in shared_empty() arrays, which launches use without copies."""
    if not options.get("in_place"):
        return p, p.empty_grad(), options
    from gradcheck.backends.cpu import shared_empty

    def shared(a: np.ndarray) -> Any:
        out = shared_empty(a.shape, a.dtype)
        out[...] = a
        return out

    q = Problem(p.rows, p.vocab, shared(p.logits), shared(p.targets), shared(p.mask))
    rest = {k: v for k, v in options.items() if k != "in_place"}
    return q, shared_empty((p.rows, p.vocab), np.float32), rest


if __name__ == "__main__":
    sys.exit(main())
