"""Achieved memory bandwidth of the shipped (correct) kernels, as a share of the GPU's peak.

    python benchmarks/gpu_bandwidth.py [--backend cuda|cpu] [--size llm|small] [--repeat N] [--out FILE]

Needs a CUDA GPU and PyCUDA (``pip install -e ".[cuda]"``) for what it is for: ``--backend cuda``
(the default). ``--backend cpu`` runs the same steps on the cpu backend (a dry run of the script on
a machine without a GPU; its numbers say nothing about a GPU and are not written to RESULTS.md).

For each op and each of its shipped kernels that are correct (``gradcheck list``):

1. ``gradcheck.check`` at the op's default size on the same backend: a kernel whose verdict is not
   pass (or fd-noise) is not timed, since the speed of a wrong kernel means nothing.
2. The op's plain case at the timed size (``--size llm``, the default: the sizes of
   verdict_times.py's LLM rows), launched once to warm up and then ``--repeat`` times (default 20).
   cuda: the kernel alone, timed with CUDA events around the launch (the copies to and from the
   device are outside them); cpu: the launch's worker round trip (Launch.elapsed_s).
3. Bytes: every input array read once and every output written once, the least traffic the
   kernel can do (a kernel that reads its input twice moves more than this; the share then
   says how close it comes to streaming its data once at full speed).
4. Peak: the driver's figure (2 x memory clock x bus width), and a device-to-device copy of
   1 GiB timed with events in the same run (what the memory system gives a plain stream of
   bytes); the kernel's bandwidth is given as a share of both. cpu: a numpy copy of 1 GiB.

Prints a Markdown section; with ``--backend cuda`` it also goes into benchmarks/RESULTS.md (or
FILE) between this script's markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import RESULTS, fmt_s, log, machine, versions, write_section
from verdict_times import SIZES

NAME = "gpu_bandwidth.py"
DEFAULT_REPEAT = 20
COPY_BYTES = 1 << 30  # the copy that measures what the memory system gives a plain stream
# The default sizes of `gradcheck run` (the check before the timing) and the small timed sizes.
SMALL = {s.op: s.dims for s in SIZES if s.label == "small"}
LLM = {s.op: s.dims for s in SIZES if s.label == "LLM"}


@dataclass
class Timed:
    op: str
    kernel: str
    dims: dict[str, int]
    verdict: str
    seconds: list[float]
    bytes_moved: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def bandwidth(self) -> float:
        return self.bytes_moved / self.median_s if self.seconds else float("nan")


def gbs(bytes_per_s: float) -> str:
    return "-" if bytes_per_s != bytes_per_s else f"{bytes_per_s / 1e9:,.3g} GB/s"


def share(part: float, whole: float | None) -> str:
    if whole is None or part != part:
        return "-"
    return f"{100 * part / whole:.2g}%"


def device_peak(backend: str) -> tuple[float | None, str]:
    """The memory bandwidth the vendor's numbers give, and the device's name."""
    if backend != "cuda":
        return None, machine()
    import pycuda.driver as drv

    drv.init()
    dev = drv.Device(0)
    attr = drv.device_attribute
    clock_hz = dev.get_attribute(attr.MEMORY_CLOCK_RATE) * 1e3  # reported in kHz
    bus_bytes = dev.get_attribute(attr.GLOBAL_MEMORY_BUS_WIDTH) / 8
    major, minor = dev.compute_capability()
    return 2 * clock_hz * bus_bytes, f"{dev.name()} (sm_{major}{minor})"


def copy_bandwidth(backend: str, repeat: int) -> float:
    """Bytes per second of a plain copy (read + write) of COPY_BYTES, median of ``repeat``."""
    n = COPY_BYTES // 4
    times: list[float] = []
    if backend == "cuda":
        import pycuda.autoprimaryctx  # noqa: F401  (the device's primary context, as gradcheck's)
        import pycuda.driver as drv

        src, dst = drv.mem_alloc(COPY_BYTES), drv.mem_alloc(COPY_BYTES)
        drv.memset_d32(src, 0, n)
        for i in range(repeat + 1):
            start, end = drv.Event(), drv.Event()
            start.record()
            drv.memcpy_dtod(dst, src, COPY_BYTES)
            end.record()
            end.synchronize()
            if i:  # the first one warms up
                times.append(start.time_till(end) / 1000.0)
        src.free()
        dst.free()
    else:
        a, b = np.ones(n, np.float32), np.empty(n, np.float32)
        for i in range(repeat + 1):
            t0 = time.perf_counter()
            np.copyto(b, a)
            if i:
                times.append(time.perf_counter() - t0)
    return 2 * COPY_BYTES / statistics.median(times)


def time_kernel(op_id: str, kernel: str, dims: dict[str, int], backend: str, repeat: int) -> Timed:
    import gradcheck
    from gradcheck import In, InOut, Out
    from gradcheck._runner import Runner, resolve_kernel
    from gradcheck.ops import get_op

    spec = get_op(op_id)
    log(f"{op_id} {kernel}: check at {SMALL[op_id]} ({backend})")
    verdict = gradcheck.check(op_id, kernel=kernel, backend=backend, **SMALL[op_id]).verdict
    if verdict not in ("pass", "fd-noise"):
        return Timed(op_id, kernel, dims, verdict, [], 0)
    log(f"{op_id} {kernel}: plain case at {dims}, {repeat} timed launches")
    block = spec.default_block
    case = next(c for c in spec.cases(dims, block, 0, {}) if c.name == "plain")
    # built the way `gradcheck run` builds it (the kernel's own linkage, options and function)
    fn = Runner(spec, resolve_kernel(spec, kernel, None), backend=backend).fn
    blk, grid = spec.geometry(case, block)
    args = case.kernel_args(spec.params)
    outputs = {o.name: np.zeros(case.output_shapes[o.name], np.float32) for o in spec.outputs}
    wrap: dict[str, Callable[[np.ndarray], Any]] = {
        o.name: (InOut if o.init == "zero" else Out) for o in spec.outputs
    }
    call = [
        wrap[p.name](outputs[p.name]) if p.name in outputs else (In(a) if p.kind == "in" else a)
        for p, a in zip(spec.params, args, strict=True)
    ]
    options: dict[str, Any] = {"block": blk, "grid": grid}
    if backend == "cuda":
        options["time_kernel"] = True  # CUDA events around the kernel alone
    else:
        options["workers"] = None  # every core
    seconds: list[float] = []
    for i in range(repeat + 1):
        for o in outputs.values():
            o[...] = 0.0  # accumulating outputs start from zero each time, as in a check
        elapsed = float(fn.launch(*call, **options).elapsed_s)
        if i:  # the first launch warms up (module load, page faults)
            seconds.append(elapsed)
    moved = sum(a.nbytes for p, a in zip(spec.params, args, strict=True) if p.kind == "in")
    moved += sum(o.nbytes for o in outputs.values())
    return Timed(op_id, kernel, dims, verdict, seconds, moved)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--size", choices=("llm", "small"), default="llm")
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.backend == "cuda":
        from gradcheck.backends import cuda_status

        status = cuda_status()
        if not status.available:
            raise SystemExit(
                f"no usable CUDA device: {status.reason}. This benchmark measures a GPU; "
                "`--backend cpu` runs its steps on the cpu backend as a dry run."
            )
    started = time.time()
    from gradcheck.ops import get_op

    peak, device = device_peak(args.backend)
    log(f"copy bandwidth ({args.backend}, {COPY_BYTES >> 20} MiB)")
    copy = copy_bandwidth(args.backend, args.repeat)
    sizes = LLM if args.size == "llm" else SMALL
    rows: list[Timed] = []
    for op_id, dims in sizes.items():
        for k in get_op(op_id).kernels:
            if k.expect == "pass":
                rows.append(time_kernel(op_id, k.name, dims, args.backend, args.repeat))
    total = time.time() - started
    peak_text = gbs(peak) if peak is not None else "- (a dry run on the cpu backend)"
    lines = [
        "## Achieved memory bandwidth of the shipped kernels (`gpu_bandwidth.py`)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}",
        f"- device: {device}; backend: {args.backend}",
        f"- {versions()}",
        f"- command: `python benchmarks/{NAME} --backend {args.backend} --size {args.size}"
        f" --repeat {args.repeat}`",
        f"- the whole run took {fmt_s(total)}",
        f"- peak from the driver (2 x memory clock x bus width): {peak_text}",
        f"- a {COPY_BYTES >> 30} GiB "
        + ("device-to-device copy" if args.backend == "cuda" else "numpy copy in host memory")
        + f", read + write, median of {args.repeat}: {gbs(copy)}",
        "",
        "| op | kernel | size | check | bytes (inputs once, outputs once) | kernel time (median,"
        " min / max) | bandwidth | of peak | of the copy |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in rows:
        size = ", ".join(f"{k} {v:,}" for k, v in t.dims.items())
        spread = (
            f"{fmt_s(t.median_s)} ({fmt_s(min(t.seconds))} / {fmt_s(max(t.seconds))})"
            if t.seconds
            else "not timed"
        )
        lines.append(
            f"| {t.op} | {t.kernel} | {size} | {t.verdict} | {t.bytes_moved / 2**20:,.3g} MiB | "
            f"{spread} | {gbs(t.bandwidth)} | {share(t.bandwidth, peak)} | "
            f"{share(t.bandwidth, copy)} |"
        )
    print("\n".join(lines))
    if args.backend == "cuda":
        write_section(NAME, lines, args.out)
        log(f"written to {args.out}")
    return 0 if all(t.seconds for t in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
