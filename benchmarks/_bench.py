"""Helpers shared by vs_check_grads.py and verdict_times.py: measured child processes, RESULTS.md.

Not a benchmark itself. ``run_tree`` starts a command and measures the whole process tree it
starts (the cpu backend launches kernels in a worker process, a child of the gradcheck process):

- ``maxrss_mib``: ru_maxrss from wait4 on the child. On Linux that is the largest peak RSS of any
  single process in the tree (the child, or a descendant it reaped before exiting), not a sum.
- ``peak_pss_mib``: the largest sum of PSS (proportional set size: shared pages split between the
  processes mapping them, so the launch arena the two processes share counts once) over every
  process in the tree, sampled every ``SAMPLE_S`` seconds from /proc (less often for a process of
  several GB, whose reading is slow). A peak shorter than the
  sampling interval can be missed, so this is a lower bound of the true peak.

``write_section`` replaces one script's section of RESULTS.md between its marker comments (as
cold_runs.py does) and leaves the rest of the file as it is.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
OTHER_MARKER = "<!-- other benchmarks"
SAMPLE_S = 0.02  # /proc polling interval (at least): ~1% of one core for a small process
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_s(s: float) -> str:
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_mib(b: float) -> str:
    return f"{b / MIB:,.0f} MiB" if b >= 10 * MIB else f"{b / MIB:.2f} MiB"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine() -> str:
    return (
        f"nproc {os.cpu_count()}, {cpu_model()}, {platform.system()} {platform.release()}, "
        f"{_mem_total_gib():.0f} GiB RAM"
    )


def _mem_total_gib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def versions() -> str:
    import jax
    import numpy as np

    import gradcheck

    return (
        f"python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, "
        f"gradcheck {gradcheck.__version__}"
    )


def gradcheck_exe() -> str:
    exe = Path(sys.executable).with_name("gradcheck")
    if not exe.exists():
        raise SystemExit(f"{exe.name} not found next to {sys.executable}: pip install -e .")
    return str(exe)


# ---- a child process and its tree, measured -----------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                out.extend(int(c) for c in text.split())
    return out


def _tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _pss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Measured:
    cmd: list[str]
    wall_s: float
    rc: int
    maxrss_bytes: int  # largest single process of the tree (ru_maxrss of wait4)
    peak_pss_bytes: int  # largest sampled sum over the tree
    most_processes: int  # most processes seen in the tree at one sample
    stdout: str
    stderr: str


# A small interpreter forks the measured command and reports wait4's rusage. Forking it straight
# from this (large) process would not do: Linux carries the parent's peak RSS into the child's
# ru_maxrss across fork and exec, so every child would report at least this process's size.
_LAUNCHER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
rc = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {rc} {wall!r}")
"""


def run_tree(
    cmd: Sequence[str], env: dict[str, str] | None = None, timeout_s: float | None = None
) -> Measured:
    """Run ``cmd`` to completion; wall time, exit code and the tree's peak memory (module doc)."""
    import signal
    import tempfile

    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="gc-measure-") as tmp,
    ):
        stats = Path(tmp) / "rusage"
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(stats), *cmd]
        proc = subprocess.Popen(launcher, env=env, stdout=out, stderr=err, start_new_session=True)
        peak = [0, 0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                t = time.perf_counter()
                pids = _tree(proc.pid)[1:]  # not the launcher itself
                peak[0] = max(peak[0], sum(_pss_bytes(p) for p in pids))
                peak[1] = max(peak[1], len(pids))
                # Reading smaps_rollup walks the process's pages (and holds its memory map's
                # lock): for a process of several GB one read takes tens of ms. Waiting 4x the
                # read keeps the sampler under a fifth of a core, whatever the size.
                done.wait(max(SAMPLE_S, 4 * (time.perf_counter() - t)))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        done.set()
        th.join()
        maxrss_kib, rc, wall = 0, 137, float(timeout_s or 0.0)
        if stats.exists():
            fields = stats.read_text().split()
            maxrss_kib, rc, wall = int(fields[0]), int(fields[1]), float(fields[2])
        out.seek(0)
        err.seek(0)
        return Measured(
            list(cmd),
            wall,
            rc,
            maxrss_kib * 1024,
            peak[0],
            peak[1],
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


# ---- RESULTS.md ---------------------------------------------------------------------------------


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def write_section(name: str, body: Sequence[str], out: Path = RESULTS) -> None:
    """Put ``body`` between ``name``'s markers in ``out``; add them at the end if missing."""
    begin, end = markers(name)
    section = "\n".join([begin, *body, "", end])
    text = out.read_text() if out.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        if OTHER_MARKER not in text:
            log(f"note: {out.name} has no 'other benchmarks' marker; appending at the end")
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.write_text(text)


def finish(name: str, body: list[str], out: Path, failed: Sequence[str], total_s: float) -> int:
    """The end of a verdict benchmark: its section written and printed; exit 1 if a correct
    kernel did not pass somewhere (``failed`` names where)."""
    if failed:
        body = [*body, "", f"FAIL: a correct kernel did not pass at {', '.join(failed)}."]
    write_section(name, body, out)
    print("\n".join(body))
    log(f"done in {fmt_s(total_s)}; wrote {out}")
    return 1 if failed else 0


def header(title: str, command: str, started: float, total_s: float) -> list[str]:
    import datetime

    stamp = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"## {title}",
        "",
        "Written by the script named in the command below (do not edit by hand; re-run it). See "
        "benchmarks/README.md for what each number means.",
        "",
        f"- date: {stamp}",
        f"- machine: {machine()}, no GPU (gradcheck's cpu backend)",
        f"- {versions()}",
        f"- load average (1 min) at the end: {os.getloadavg()[0]:.2f}",
        f"- command (from the repository root): `{command}`",
        f"- the whole run took {fmt_s(total_s)}",
        "",
    ]
