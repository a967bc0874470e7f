"""Check a cross-entropy gradient kernel from Python, as a kernel repo's script or test would.

    python examples/check_my_kernel.py [path/to/kernel.cu FUNCTION] [--vocab 2000] [--rows 64]

Without arguments it checks two shipped kernels: the correct one and the field notes' old
"one thread per vocab entry" layout, and prints each verdict with its evidence. Exits 1 if a kernel
given on the command line is a kernel-bug (as `gradcheck run` does).
"""

from __future__ import annotations

import argparse
import sys

import gradcheck


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", nargs="?", help="your kernel's .cu file")
    p.add_argument("function", nargs="?", help="the kernel function in it")
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--block", type=int, default=256)
    args = p.parse_args()
    if args.source:
        targets = [(args.source, args.function)]
    else:
        targets = [("ce-grad", None), ("legacy-thread-per-vocab", None)]
    worst = 0
    for kernel, function in targets:
        report = gradcheck.check(
            "loss-ce",
            kernel,
            function=function,
            vocab=args.vocab,
            rows=args.rows,
            block=args.block,
        )
        print(f"{report.kernel}: {report.verdict} on the {report.backend} backend")
        for finding in report.findings[:1]:
            print(f"  {finding.summary}")
            for where in finding.where:
                print(f"  where: {where}")
            print(f"  reproduce: {finding.reproduce}")
        worst = max(worst, report.exit_code if args.source else 0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
