"""The ``gradcheck`` command.

  gradcheck backends            which backends can run here, and why not
  gradcheck compile FILE.cu     build a kernel source for the cpu backend (and nvcc where present):
                                its kernels, their signatures, registers / shared memory / spills

Exit codes: 0 fine, 2 usage error, 3 a kernel could not be built or launched.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from ._errors import GradcheckError


def _backends(args: argparse.Namespace, console: Console) -> int:
    from .backends import resolve_backend
    from .backends._detect import cpu_status, cuda_status, nvcc_path

    rows = [cpu_status(), cuda_status()]
    nvcc = nvcc_path()
    try:
        chosen, why = resolve_backend(None)
    except GradcheckError as exc:
        chosen, why = "none", str(exc)
    if args.json:
        out: dict[str, Any] = {
            "backends": {
                s.name: {"available": s.available, "reason": s.reason, "detail": s.detail}
                for s in rows
            },
            "nvcc": nvcc,
            "auto": chosen,
        }
        print(json.dumps(out, indent=2))
        return 0
    table = Table(title="gradcheck backends", show_lines=False)
    table.add_column("backend")
    table.add_column("usable")
    table.add_column("detail")
    for s in rows:
        table.add_row(s.name, "yes" if s.available else "no", escape(s.detail or s.reason))
    table.add_row(
        "nvcc check",
        "yes" if nvcc else "no",
        f"{nvcc}: cpu builds are also compiled for sm_80 and sm_90"
        if nvcc
        else "nvcc not found: no cross-compile",
    )
    console.print(table)
    console.print(f"auto -> [bold]{chosen}[/bold] ({escape(why)})")
    return 0


def _compile(args: argparse.Namespace, console: Console) -> int:
    from .backends.cpu import CpuSourceModule

    options = [f"-D{d}" for d in args.define] + list(args.option)
    mod = CpuSourceModule(
        args.source,
        options=options,
        include_dirs=args.include,
        no_extern_c=args.no_extern_c,
        nvcc_check=args.nvcc_check,
    )
    res = {(r.kernel, r.arch): r for r in mod.resources}
    if args.json:
        out = {
            "source": mod.source.display_name,
            "cached": mod.build.cached,
            "seconds": round(mod.build.seconds, 3),
            "nvcc_checked": mod.build.nvcc_checked,
            "ignored_options": list(mod.build.ignored_options),
            "kernels": [
                {
                    "symbol": k.symbol,
                    "name": k.name,
                    "signature": k.signature,
                    "resources": {
                        arch: vars(r) for (sym, arch), r in res.items() if sym == k.symbol
                    },
                }
                for k in mod.kernels
            ],
        }
        print(json.dumps(out, indent=2))
        return 0
    state = "cached" if mod.build.cached else "built"
    console.print(f"{mod.source.display_name}: {state} in {mod.build.seconds:.2f} s (cpu backend)")
    table = Table(show_lines=False)
    for col in (
        "get_function name",
        "kernel",
        "sm_80 regs / smem / spills",
        "sm_90 regs / smem / spills",
    ):
        table.add_column(col)
    for k in mod.kernels:
        cells = []
        for arch in ("sm_80", "sm_90"):
            r = res.get((k.symbol, arch))
            cells.append(
                f"{r.registers} / {r.shared_bytes} B / {r.spill_stores + r.spill_loads} B"
                if r
                else "-"
            )
        shown = " ".join(k.signature.replace("__restrict__", "").split())
        table.add_row(escape(k.symbol), escape(f"{k.name}({shown})"), *cells)
    console.print(table)
    if not mod.build.nvcc_checked:
        console.print("nvcc not found: not cross-compiled for GPU architectures")
    if mod.build.ignored_options:
        console.print(
            f"options for nvcc only (not passed to g++): {' '.join(mod.build.ignored_options)}"
        )
    for t in mod.build.templates:
        console.print(
            f"[yellow]template kernel {t} has no explicit instantiation: nothing to launch[/]"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradcheck",
        description="Is my CUDA kernel wrong, or is it finite-difference noise, the learning rate, or my data?",
    )
    p.add_argument("--version", action="version", version=f"gradcheck {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = sub.add_parser("backends", help="which backends can run kernels here")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c = sub.add_parser("compile", help="build a .cu file for the cpu backend and list its kernels")
    c.add_argument("source", help="path to a .cu file")
    c.add_argument(
        "-D",
        dest="define",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="define a macro",
    )
    c.add_argument(
        "-I",
        dest="include",
        action="append",
        default=[],
        metavar="DIR",
        help="add an include directory",
    )
    c.add_argument(
        "--option", action="append", default=[], metavar="OPT", help="another nvcc-style option"
    )
    c.add_argument(
        "--no-extern-c",
        action="store_true",
        help='do not wrap the source in extern "C" (PyCUDA\'s no_extern_c=True)',
    )
    c.add_argument("--nvcc-check", choices=("auto", "off", "require"), default="auto")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    handlers = {"backends": _backends, "compile": _compile}
    try:
        return handlers[args.command](args, console)
    except GradcheckError as exc:
        label = type(exc).__name__
        # soft_wrap: never break a path or a command a user will copy out of the message
        Console(stderr=True).print(
            f"[bold red]{label}[/]: {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
