"""Cold-process wall time of `gradcheck run` for each op, at the sizes the docs use.

Each command runs in a new Python process (as a user types it), first with an empty compile cache
(a fresh GRADCHECK_CACHE_DIR: the backend's runtime library, the kernel module and its race-checking
build, and the nvcc cross-check where nvcc is installed, are all built), then with that cache warm.
Reported: the median wall time over --repeat runs of each, the `elapsed_s` the report itself states,
the peak resident memory of the gradcheck process, and the verdict (which must be pass).

    python benchmarks/cold_runs.py [--repeat N] [--out FILE]

prints the table and writes it into its own section of benchmarks/RESULTS.md (or FILE), between
markers, leaving the rest of the file as it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN = "<!-- cold_runs.py: begin -->"
END = "<!-- cold_runs.py: end -->"
COMMANDS = (
    ("loss-ce", ["loss-ce", "--vocab", "2000"]),
    ("layernorm-bwd", ["layernorm-bwd", "--rows", "64", "--hidden", "768"]),
    (
        "attention-bwd",
        [
            "attention-bwd",
            "--batch",
            "2",
            "--heads",
            "4",
            "--seq",
            "128",
            "--head-dim",
            "64",
            "--causal",
        ],
    ),
)


def run_once(args: list[str], cache: str) -> tuple[float, float, int, str]:
    """(wall seconds, the report's elapsed_s, peak RSS in MiB, verdict) of one cold process."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "gradcheck.cli", "run", *args, "--json", str(report)]
        env = dict(os.environ, GRADCHECK_CACHE_DIR=cache)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode not in (0, 1) or not report.exists():
            raise SystemExit(f"FAIL: {' '.join(cmd)} exited {proc.returncode}\n{err}")
        data = json.loads(report.read_text())
        return wall, float(data["elapsed_s"]), usage.ru_maxrss // 1024, str(data["verdict"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="runs of each kind (default 3)")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="the results file to update")
    a = p.parse_args()
    rows = []
    for name, args in COMMANDS:
        cold, warm = [], []
        for _ in range(a.repeat):
            with tempfile.TemporaryDirectory() as cache:
                cold.append(run_once(args, cache))
                warm.append(run_once(args, cache))
            print(f"{name}: cold {cold[-1][0]:.2f} s, warm {warm[-1][0]:.2f} s", file=sys.stderr)
        verdicts = {r[3] for r in cold + warm}
        if verdicts != {"pass"}:
            raise SystemExit(
                f"FAIL: {name} gave {verdicts}; a benchmark of a failing check means nothing"
            )
        rows.append((name, args, cold, warm))
    lines = [
        BEGIN,
        "## Cold-process `gradcheck run` (`cold_runs.py`)",
        "",
        f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, no GPU (cpu backend). Medians of {a.repeat} runs; "
        "each run is a new process. Empty cache: a fresh GRADCHECK_CACHE_DIR, so every build is "
        "included; warm: the same cache right after. Re-run: `python benchmarks/cold_runs.py`.",
        "",
        "| command | empty cache: wall | warm cache: wall | check itself (warm, report's elapsed_s) | peak RSS (warm) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for _name, args, cold, warm in rows:
        med = statistics.median
        lines.append(
            f"| `gradcheck run {' '.join(args)}` | {med(r[0] for r in cold):.1f} s | "
            f"{med(r[0] for r in warm):.1f} s | {med(r[1] for r in warm):.1f} s | "
            f"{med(r[2] for r in warm)} MiB | pass |"
        )
    lines += ["", END]
    section = "\n".join(lines)
    print(section)
    out = Path(a.out)
    text = out.read_text() if out.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.write_text(text)


if __name__ == "__main__":
    main()
