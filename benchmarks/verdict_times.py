"""Time to verdict and peak memory of a cold `gradcheck run`, per op, at a small, medium and LLM size.

    python benchmarks/verdict_times.py [--quick] [--repeat N] [--out FILE]

Run from the repository root in an environment where gradcheck is installed (``pip install -e .``).
No GPU needed: the cpu backend runs the kernels. Progress goes to stderr; the results go into this
script's section of benchmarks/RESULTS.md (or FILE), between its markers. The default run (2 cold
runs and 1 warm run of each command; 1 cold run at the LLM sizes) took 595 s on 2 cores; ``--quick`` does 1 cold run and no warm run.

Each command is ``gradcheck run OP <sizes>`` with the op's default (correct) kernel, started as a
new process with an empty compile cache (a fresh GRADCHECK_CACHE_DIR: the backend runtime, the
kernel and its race-checking build are all built), as a user meets it the first time; then once
more with that cache warm, to separate the builds from the check. Peak memory is that of the
whole process tree (the cpu backend launches kernels in a worker process; see _bench.py), also
given relative to the bytes of the kernel's own outputs at that size. The LLM sizes run once
each (minutes), without a warm run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    RESULTS,
    Measured,
    finish,
    fmt_mib,
    fmt_s,
    gradcheck_exe,
    header,
    log,
    run_tree,
)

NAME = "verdict_times.py"
DEFAULT_REPEAT = 2
QUICK_REPEAT = 1
# One run may take this long before it is stopped and reported as not finished: the medium sizes
# took 11 to 56 s cold when they were chosen (this machine, 2 cores), the LLM sizes up to a few
# minutes; 30 minutes is a hang.
RUN_LIMIT_S = 1800.0
F32 = 4  # bytes per float32 output element


@dataclass(frozen=True)
class Size:
    op: str
    label: str
    args: tuple[str, ...]
    dims: dict[str, int] = field(hash=False)

    def output_bytes(self) -> int:
        """Bytes of the kernel's outputs (float32), as the op's signature defines them."""
        d = self.dims
        if self.op == "loss-ce":
            return d["rows"] * d["vocab"] * F32  # grad
        if self.op == "layernorm-bwd":
            return (d["rows"] * d["hidden"] + 2 * d["hidden"]) * F32  # dx, dgamma, dbeta
        n = d["batch"] * d["heads"] * d["seq"] * d["head_dim"]
        return 3 * n * F32  # dq, dk, dv

    def text(self) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in self.dims.items())


def size(op: str, label: str, **dims: int) -> Size:
    args: list[str] = []
    for k, v in dims.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return Size(op, label, tuple(args), dims)


SIZES = (
    size("loss-ce", "small", rows=64, vocab=2000),
    size("loss-ce", "medium", rows=256, vocab=32000),
    size("loss-ce", "LLM", rows=4096, vocab=128256),
    size("layernorm-bwd", "small", rows=64, hidden=768),
    size("layernorm-bwd", "medium", rows=256, hidden=4096),
    size("layernorm-bwd", "LLM", rows=4096, hidden=4096),
    size("attention-bwd", "small", batch=1, heads=4, seq=128, head_dim=64),
    size("attention-bwd", "medium", batch=1, heads=8, seq=512, head_dim=64),
    size("attention-bwd", "LLM", batch=1, heads=32, seq=2048, head_dim=128),
)
# LLM sizes take minutes: one cold run each, and no warm run (the builds are the same seconds as
# at the other sizes; the check is what grows).
LLM_REPEAT = 1


@dataclass
class Run:
    m: Measured
    report: dict[str, Any]

    @property
    def verdict(self) -> str:
        return str(self.report.get("verdict", "(no report)"))

    @property
    def elapsed(self) -> float:
        return float(self.report.get("elapsed_s", float("nan")))


def run(s: Size, cache: str) -> Run:
    with tempfile.TemporaryDirectory(prefix="gc-report-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [gradcheck_exe(), "run", s.op, *s.args, "--json", str(report)]
        m = run_tree(cmd, dict(os.environ, GRADCHECK_CACHE_DIR=cache), RUN_LIMIT_S)
        data: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    if m.rc != 0:
        log(f"{' '.join(cmd)} exited {m.rc}: {m.stderr[-1500:]}")
    if m.rc in (0, 1) and not data:
        # exit 1 without a report is a crash (an import error, say), not a verdict
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {m.rc} with no report:\n{m.stderr[-3000:]}")
    return Run(m, data)


def ratio(b: int, out: int) -> str:
    return f"{b / out:,.0f}x" if b / out >= 10 else f"{b / out:.1f}x"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="1 cold run per command, no warm run")
    p.add_argument("--repeat", type=int, default=None, help="cold runs per command")
    p.add_argument("--out", default=str(RESULTS), help="the results file to update")
    a = p.parse_args(argv)
    repeat = a.repeat or (QUICK_REPEAT if a.quick else DEFAULT_REPEAT)
    started = time.time()
    t0 = time.perf_counter()
    rows: list[str] = []
    failed: list[str] = []
    for s in SIZES:
        cold: list[Run] = []
        warm: Run | None = None
        llm = s.label == "LLM"
        n = min(repeat, LLM_REPEAT) if llm else repeat
        for i in range(n):
            with tempfile.TemporaryDirectory(prefix="gc-cache-") as cache:
                log(f"{s.op} {s.label} ({s.text()}): cold run {i + 1} of {n}")
                cold.append(run(s, cache))
                if i == 0 and not a.quick and not llm:
                    log(f"{s.op} {s.label}: warm run")
                    warm = run(s, cache)
        walls = [r.m.wall_s for r in cold]
        verdicts = sorted({f"exit {r.m.rc}, {r.verdict}" for r in cold})
        if any(r.verdict != "pass" for r in cold):
            failed.append(f"{s.op} {s.label}")
        rss = max(r.m.maxrss_bytes for r in cold)
        pss = max(r.m.peak_pss_bytes for r in cold)
        out_b = s.output_bytes()
        spread = f"{fmt_s(min(walls))} / {fmt_s(max(walls))}" if len(walls) > 1 else "-"
        warm_cell = (
            f"{fmt_s(warm.m.wall_s)} (check {fmt_s(warm.elapsed)})" if warm is not None else "-"
        )
        rows.append(
            f"| {s.op} | {s.label}: {s.text()} | `gradcheck run {s.op} {' '.join(s.args)}` | "
            f"{fmt_s(statistics.median(walls))} | {spread} | "
            f"{fmt_s(statistics.median(r.elapsed for r in cold))} | {warm_cell} | "
            f"{fmt_mib(rss)} / {fmt_mib(pss)} | {fmt_mib(out_b)} | "
            f"{ratio(rss, out_b)} / {ratio(pss, out_b)} | {'; '.join(verdicts)} |"
        )
        log(f"  median {fmt_s(statistics.median(walls))}, peak RSS {fmt_mib(rss)}")
    total = time.perf_counter() - t0

    cmd = "python benchmarks/verdict_times.py" + (" --quick" if a.quick else "")
    if a.repeat is not None:
        cmd += f" --repeat {a.repeat}"
    body = header("Time to verdict per op, cold process (`verdict_times.py`)", cmd, started, total)
    body.insert(-1, f"- cold runs per command: {repeat}; warm runs: {0 if a.quick else 1}")
    body += [
        "`gradcheck run OP <sizes>` with the op's default (correct) kernel, each run a new process "
        "with an empty compile cache (a fresh GRADCHECK_CACHE_DIR: every build included). Wall: "
        "start to exit, median (min / max) of the cold runs; check: the report's elapsed_s (the "
        "input suite, launches, comparisons and finite differences, without process start, "
        "imports and builds). Warm: one more run right after the first, with its cache. Peak "
        "memory of the process tree (the gradcheck process and the cpu backend's launch worker): "
        "ru_maxrss of the largest process / the sampled peak of the tree's summed PSS (shared "
        "pages such as the launch arena counted once), the largest over the cold runs; relative: "
        "each divided by the bytes of the kernel's own float32 outputs at that size (loss-ce: "
        "grad; layernorm-bwd: dx, dgamma, dbeta; attention-bwd: dq, dk, dv).",
        "",
        "| op | size | command | cold: wall | min / max | cold: check | warm: wall (check) "
        "| peak RSS / peak PSS | output bytes | peak / output bytes | verdict |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *rows,
        "",
        f"LLM sizes: {LLM_REPEAT} cold run each, no warm run. Above 2^22 elements (scores) the "
        "plain case is the whole problem run once on every core, with its large buffers in "
        "memory the cpu backend's launch worker uses in place, compared a block of rows (heads "
        "for attention-bwd) at a time; layernorm-bwd's dgamma and dbeta, sums over the rows, "
        "add up each block's share; the other cases run on a sample. Peak memory includes the "
        "process at rest (Python, JAX, the compiled references; the small sizes' peaks are "
        "mostly that), which the ratio to the output bytes does not subtract; at the LLM sizes "
        "of layernorm-bwd and attention-bwd it and the sampled cases are most of the peak.",
    ]
    return finish(NAME, body, Path(a.out), failed, total)


if __name__ == "__main__":
    raise SystemExit(main())
