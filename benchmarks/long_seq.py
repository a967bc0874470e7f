"""Time to verdict and peak memory of `gradcheck run attention-bwd` on one head at long seqs (cpu).

    python benchmarks/long_seq.py [--seq S [S ...]] [--out FILE]

Run from the repository root in an environment where gradcheck is installed (``pip install -e .``).
No GPU needed. Each command is ``gradcheck run attention-bwd --batch 1 --heads 1 --seq S
--head-dim 128 --causal`` with the default (correct) kernel, a new process with an empty compile
cache, run once (minutes each). One head is where sampling heads cannot make a case smaller: past
2^22 scores (seq above 2048) the cpu backend runs each such case once on the whole grid and its
repeats (thread orders, the other alignment, the race check) on a sample of its query rows; the
table gives the sample each run reported (``repeats_on`` in its JSON report). seq 2048 (exactly
2^22 scores) repeats whole, for comparison. The default seqs (2048, 4096, 8192) took 656 s on 2
cores. Progress goes to stderr; the results go into this script's section of
benchmarks/RESULTS.md (or FILE).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import RESULTS, finish, fmt_mib, fmt_s, header, log
from verdict_times import Size, run, size

NAME = "long_seq.py"
SEQS = (2048, 4096, 8192)
HEAD_DIM = 128


def long_seq(seq: int) -> Size:
    """One causal head at ``seq``: the command verdict_times.run starts (a new process, an empty
    compile cache, at most 30 minutes)."""
    s = size("attention-bwd", f"seq {seq}", batch=1, heads=1, seq=seq, head_dim=HEAD_DIM)
    return Size(s.op, s.label, (*s.args, "--causal"), s.dims)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seq", type=int, nargs="+", default=list(SEQS), help="seqs to run")
    p.add_argument("--out", default=str(RESULTS), help="the results file to update")
    a = p.parse_args(argv)
    started = time.time()
    t0 = time.perf_counter()
    rows: list[str] = []
    failed: list[str] = []
    for seq in a.seq:
        s = long_seq(seq)
        command = f"gradcheck run {s.op} {' '.join(s.args)}"
        log(f"seq {seq:,}: {command}")
        with tempfile.TemporaryDirectory(prefix="gc-cache-") as cache:
            done = run(s, cache)
        m, data, verdict = done.m, done.report, done.verdict
        if m.rc != 0 or verdict != "pass":
            failed.append(f"seq {seq}")
        samples = sorted(
            {c["repeats_on"] for c in data.get("cases", ()) if c.get("repeats_on")}, key=len
        )
        sampled = [c["name"] for c in data.get("cases", ()) if c.get("repeats_on")]
        on = f"{', '.join(sampled)}: {'; '.join(samples)}" if samples else "none (repeated whole)"
        rows.append(
            f"| {seq:,} | {seq * seq:,} | `{command}` | {fmt_s(m.wall_s)} "
            f"| {fmt_s(done.elapsed)} | {fmt_mib(m.maxrss_bytes)} / {fmt_mib(m.peak_pss_bytes)} "
            f"| {on} | exit {m.rc}, {verdict} |"
        )
        log(f"  {fmt_s(m.wall_s)}, peak RSS {fmt_mib(m.maxrss_bytes)}, {verdict}")
    total = time.perf_counter() - t0
    cmd = "python benchmarks/long_seq.py" + (
        f" --seq {' '.join(map(str, a.seq))}" if tuple(a.seq) != SEQS else ""
    )
    body = header("attention-bwd on one head at long seqs (`long_seq.py`)", cmd, started, total)
    body += [
        "One cold run per seq (a new process, an empty compile cache). Wall: start to exit; "
        "check: the report's elapsed_s; peak memory of the process tree: ru_maxrss of the largest "
        "process / the sampled peak of the tree's summed PSS. Repeats on: the cases whose thread "
        "orders, other alignment and race check ran on a sample of their query rows, and the "
        "sample; the others (and every case at seq 2048) repeat their whole launch.",
        "",
        "| seq | scores a head | command | wall | check | peak RSS / peak PSS | repeats on "
        "| verdict |",
        "| ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
        *rows,
    ]
    return finish(NAME, body, Path(a.out), failed, total)


if __name__ == "__main__":
    raise SystemExit(main())
