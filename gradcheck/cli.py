"""The ``gradcheck`` command.

  gradcheck run loss-ce --vocab 2000   check a gradient kernel against the float64 reference
  gradcheck list [--json]       the ops and their shipped kernels (correct ones and known bugs)
  gradcheck backends            which backends can run here, and why not
  gradcheck compile FILE.cu     build a kernel source for the cpu backend (and nvcc where present):
                                its kernels, their signatures, registers / shared memory / spills
  gradcheck gate                the CI gate: check every kernel x shape in [tool.gradcheck]
                                (pyproject.toml); JUnit XML, JSON and markdown reports

Exit codes: 0 pass or fd-noise (and inconclusive, with a warning, unless --strict), 1 kernel-bug,
2 usage error, 3 a kernel could not be built or launched.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from ._errors import GradcheckError, UsageError


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
        _print_json(out)
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
        _print_json(out)
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


def _list(args: argparse.Namespace, console: Console) -> int:
    from .ops import OPS

    if args.json:
        out = {
            op.id: {
                "summary": op.summary,
                "signature": op.signature(),
                "launch": op.launch_note(),
                "dims": {d.name: d.default for d in op.dims},
                "options": {o.name: o.default for o in op.options},
                "block": op.default_block,
                "outputs": [{"name": o.name, "wrt": o.wrt, "init": o.init} for o in op.outputs],
                "kernels": [
                    {"name": k.name, "expect": k.expect, "description": k.description}
                    for k in op.kernels
                ],
            }
            for op in OPS.values()
        }
        _print_json(out)
        return 0
    for op in OPS.values():
        dims = " ".join(f"--{d.name.replace('_', '-')} {d.default}" for d in op.dims)
        console.print(
            f"[bold]{op.id}[/]: {escape(op.summary)}  (defaults: {dims} --block {op.default_block})",
            soft_wrap=True,
        )
        console.print(f"  kernel signature: {escape(op.signature())}", soft_wrap=True)
        outs = ", ".join(
            f"{o.name} (d loss / d {o.wrt}; starts as {'NaN poison' if o.init == 'poison' else 'zeros'})"
            for o in op.outputs
        )
        console.print(f"  launch: {escape(op.launch_note())}", soft_wrap=True)
        console.print(f"  outputs: {escape(outs)}", soft_wrap=True)
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("  kernel", no_wrap=True)
        table.add_column("expect", no_wrap=True)
        table.add_column("description")
        for k in op.kernels:
            mark = " (default)" if k.name == op.default_kernel else ""
            style = "green" if k.expect == "pass" else "red"
            table.add_row(f"  {k.name}{mark}", f"[{style}]{k.expect}[/]", escape(k.description))
        console.print(table)
    return 0


def _run(args: argparse.Namespace, console: Console) -> int:
    from ._check import check
    from .ops import OPS, get_op
    from .report import renderables

    spec = get_op(args.op)
    dims: dict[str, Any] = {}
    own_names = [x.name for x in spec.dims] + [x.name for x in spec.options]
    for op in OPS.values():
        for name in [x.name for x in op.dims] + [x.name for x in op.options]:
            value = getattr(args, name, None)
            if value is None or value is False:
                continue
            if name not in own_names:
                own = ", ".join(f"--{x.replace('_', '-')}" for x in own_names)
                raise UsageError(
                    f"--{name.replace('_', '-')} is not a setting of {spec.id} (it belongs to "
                    f"{op.id}). {spec.id} takes: {own}."
                )
            dims[name] = value
    grid = None
    if args.grid is not None:
        try:
            grid = tuple(int(v) for v in args.grid.split(","))
        except ValueError:
            raise UsageError(
                f"--grid {args.grid}: give 1 to 3 whole numbers separated by commas, e.g. --grid 128,8"
            ) from None
    if args.source is not None and args.kernel is not None:
        raise UsageError("give either --kernel NAME (a shipped kernel) or --source FILE, not both.")
    if args.function is not None and args.source is None:
        raise UsageError("--function names a kernel in --source FILE; give --source too.")
    from ._files import check_output_dir

    check_output_dir("--json", args.json)
    kernel = args.source if args.source is not None else args.kernel
    err = Console(stderr=True)
    # A terminal gets a progress bar over the check's stages (cases x runs, references, FD); a
    # log or a pipe gets nothing, so the report stays the only output.
    bar = None
    if err.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        task = bar.add_task("starting", total=None)
        bar.start()
    try:
        report = check(
            args.op,
            kernel,
            function=args.function,
            backend=args.backend,
            block=args.block,
            grid=grid,
            seed=args.seed,
            factor=args.factor,
            fd32=args.fd32,
            fd32_eps=args.fd32_eps,
            fd32_rtol=args.fd32_rtol,
            fd32_atol=args.fd32_atol,
            fd32_samples=args.fd32_samples,
            case=args.case,
            shared_bytes=args.shared_bytes,
            defines=args.define,
            include_dirs=args.include,
            no_extern_c=args.no_extern_c,
            progress=(
                (lambda msg: bar.update(task, description=escape(msg))) if bar is not None else None
            ),
            steps=(
                (lambda done, total: bar.update(task, completed=done, total=total))
                if bar is not None
                else None
            ),
            **dims,
        )
    finally:
        if bar is not None:
            bar.stop()
    for r in renderables(report):
        # soft_wrap: a reproduce line must stay one line to copy; the table wraps its own cells
        console.print(r, highlight=False, soft_wrap=not isinstance(r, Table))
    if args.json is not None:
        from ._files import write_atomically

        write_atomically(args.json, report.to_json() + "\n")
        console.print(f"report written to {escape(args.json)}", highlight=False)
    if report.verdict == "inconclusive" and args.strict:
        return 1
    return report.exit_code


def _gate(args: argparse.Namespace, console: Console) -> int:
    from .gate import run_command

    return run_command(
        config=args.config,
        junit=args.junit,
        json_path=args.json,
        markdown_path=args.markdown,
        baseline=args.baseline,
        console=console,
    )


def _probe_data(args: argparse.Namespace, console: Console) -> int:
    from ._alignment import run_probe_data

    return run_probe_data(args, console)


def _diagnose_log(args: argparse.Namespace, console: Console) -> int:
    from ._trainlog import run_diagnose_log

    return run_diagnose_log(args, console)


def _add_compiler_options(p: argparse.ArgumentParser) -> None:
    """-D and -I, the same for every command that compiles a source."""
    p.add_argument(
        "-D",
        dest="define",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="define a macro",
    )
    p.add_argument(
        "-I",
        dest="include",
        action="append",
        default=[],
        metavar="DIR",
        help="add an include directory",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradcheck",
        description="Is my CUDA kernel wrong, or is it finite-difference noise, the learning rate, or my data?",
    )
    p.add_argument("--version", action="version", version=f"gradcheck {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .ops._spec import SAMPLE_ELEMENTS

    r = sub.add_parser(
        "run",
        help="check a gradient kernel against the float64 reference",
        description="Run an op's input suite through a kernel and give a verdict with evidence.",
        epilog=f"Large problems: above 2^{SAMPLE_ELEMENTS.bit_length() - 1} elements (scores for "
        "attention-bwd) the other cases run on a sample of the rows (heads) at the full width, "
        "and plain runs the whole problem once, on every core, compared a block of rows at a "
        "time; the report says which cases repeated the thread orders, alignment and race "
        "check, and on how many rows. On the cpu backend an attention case past that many scores "
        "(one head at a long seq) runs once and repeats those on a sample of its query rows. "
        "A check that would not fit in the available memory is "
        "refused before it runs (exit 2). DIAGNOSTIC_GUIDE.md#verdicts has the details.",
    )
    r.add_argument("op", help="the op id, e.g. loss-ce (gradcheck list)")
    seen: dict[str, list[str]] = {}
    helps: dict[str, str] = {}
    from .ops import OPS

    for op in OPS.values():
        for d in op.dims:
            seen.setdefault(d.name, []).append(f"{op.id} {d.default}")
            helps.setdefault(d.name, d.help)
    for name, where in seen.items():
        r.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=int,
            default=None,
            metavar="N",
            help=f"{helps[name]} (default: {', '.join(where)})",
        )
    for op in OPS.values():
        for o in op.options:
            flag = f"--{o.name.replace('_', '-')}"
            if o.kind == "flag":
                r.add_argument(flag, dest=o.name, action="store_true", help=f"{o.help} ({op.id})")
            else:
                r.add_argument(
                    flag,
                    dest=o.name,
                    type=float,
                    default=None,
                    metavar="X",
                    help=f"{o.help} ({op.id}; default {o.default:g})",
                )
    r.add_argument(
        "--block",
        type=int,
        default=None,
        metavar="N",
        help="blockDim.x (default: the op's, 256; attention-bwd 128)",
    )
    r.add_argument(
        "--grid",
        default=None,
        metavar="X[,Y[,Z]]",
        help="override the op's canonical grid (e.g. --grid 64,8)",
    )
    r.add_argument(
        "--kernel", default=None, metavar="NAME", help="a shipped kernel (gradcheck list)"
    )
    r.add_argument("--source", default=None, metavar="FILE.cu", help="your kernel's source file")
    r.add_argument("--function", default=None, metavar="NAME", help="the kernel in --source")
    r.add_argument("--backend", choices=("auto", "cpu", "cuda"), default=None)
    r.add_argument("--seed", type=int, default=0, help="seed of the input suite (default 0)")
    r.add_argument("--case", default=None, metavar="NAME", help="run one case of the suite only")
    r.add_argument("--shared-bytes", type=int, default=0, metavar="N", help="dynamic shared memory")
    _add_compiler_options(r)
    linkage = r.add_mutually_exclusive_group()
    linkage.add_argument(
        "--no-extern-c",
        dest="no_extern_c",
        action="store_const",
        const=True,
        default=None,
        help='compile the source as written (default when it declares extern "C" itself)',
    )
    linkage.add_argument(
        "--extern-c",
        dest="no_extern_c",
        action="store_const",
        const=False,
        help='wrap the source in extern "C" { ... }, as PyCUDA does (default otherwise)',
    )
    r.add_argument(
        "--factor",
        type=float,
        default=3.0,
        metavar="X",
        help="kernel error allowed, in units of the float32 noise (default 3)",
    )
    r.add_argument(
        "--fd32",
        action="store_true",
        help="also run the hand-written float32 finite-difference check and explain it",
    )
    r.add_argument("--fd32-eps", type=float, default=1e-3, metavar="H", help="its step (1e-3)")
    r.add_argument("--fd32-rtol", type=float, default=1e-2, metavar="R", help="its rtol (1e-2)")
    r.add_argument("--fd32-atol", type=float, default=0.0, metavar="A", help="its atol (0)")
    r.add_argument(
        "--fd32-samples", type=int, default=100, metavar="N", help="elements it checks (100)"
    )
    r.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    r.add_argument(
        "--strict", action="store_true", help="exit 1 on inconclusive (as a CI gate does)"
    )
    ls = sub.add_parser("list", help="the ops and their shipped kernels")
    ls.add_argument("--json", action="store_true", help="print JSON: op id -> kernels")
    b = sub.add_parser("backends", help="which backends can run kernels here")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c = sub.add_parser("compile", help="build a .cu file for the cpu backend and list its kernels")
    c.add_argument("source", help="path to a .cu file")
    _add_compiler_options(c)
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
    g = sub.add_parser(
        "gate",
        help="the CI gate: check every kernel in [tool.gradcheck] of pyproject.toml",
        description="Check every kernel x shape listed in [tool.gradcheck] (README: In CI). "
        "Exit 0: all pass or fd-noise; 1: a kernel-bug or inconclusive check; 3: a kernel "
        "could not be built or launched; 2: a mistake in the config.",
    )
    g.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a TOML file with the table at its top level or under [tool.gradcheck] "
        "(default: pyproject.toml here or in the nearest parent directory)",
    )
    g.add_argument("--junit", default=None, metavar="FILE", help="write JUnit XML for the CI")
    g.add_argument("--json", default=None, metavar="FILE", help="write every report as JSON")
    g.add_argument("--markdown", default=None, metavar="FILE", help="write a PR-comment summary")
    g.add_argument(
        "--baseline",
        default=None,
        metavar="FILE",
        help="an earlier --json file: show which checks got worse or better",
    )
    from ._subcommands import add_diagnose_log_parser, add_probe_data_parser

    add_probe_data_parser(sub)
    add_diagnose_log_parser(sub)
    return p


def persistent_jax_cache() -> None:
    """Keep JAX's compiled references between `gradcheck` processes, under gradcheck's cache.

    A new process otherwise compiles every reference again (about 0.1 s a function and shape),
    over half of a warm `gradcheck run loss-ce --vocab 2000`. Only the console command does this:
    JAX's cache is a process-wide setting, not one a library should change in its user's process.
    A cache the user configured for JAX (JAX_COMPILATION_CACHE_DIR) is left as it is.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    from .backends.cpu._build import cache_root

    where = str(cache_root().parent / "jax")
    if "jax" in sys.modules:  # already imported (console_main called from Python): set it there
        config: Any = sys.modules["jax"].config
        if not config.jax_compilation_cache_dir:
            config.update("jax_compilation_cache_dir", where)
            config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        return
    # Read by JAX when it is imported (child processes inherit them; the kernel worker has no JAX).
    os.environ["JAX_COMPILATION_CACHE_DIR"] = where
    # the references compile in well under JAX's default 1 s threshold: cache them all
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def _import_jax() -> None:
    with contextlib.suppress(Exception):  # the first reference imports it again and reports
        import jax.numpy  # noqa: F401


def _quiet_stdout() -> None:
    """The reader of stdout went away (`gradcheck list | head -1`): what is left to print goes
    nowhere, and the command ends with its own exit code rather than a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _Console(Console):
    """rich's Console, but a closed pipe does not end the process with exit 1 (rich's default):
    a `gradcheck run ... | head` in CI still exits with the verdict."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _quiet_stdout()


def _print_json(out: Any) -> None:
    try:
        print(json.dumps(out, indent=2), flush=True)
    except BrokenPipeError:
        _quiet_stdout()


def console_main() -> NoReturn:
    """The `gradcheck` command: main(), with JAX's compile cache kept for run and gate, and JAX
    imported on a thread of its own while the kernel is built and launched (the first reference
    waits for it: Python's import lock).

    Once main() has returned, the process ends without the interpreter's teardown: the output is
    flushed and the exit handlers run (the kernel worker is stopped), but the millions of objects
    JAX and XLA hold are not freed one by one (about 0.13 s of a 1.2 s `gradcheck run`). An
    exception still ends the process the usual way, with its traceback."""
    if len(sys.argv) > 1 and sys.argv[1] in ("run", "gate"):
        persistent_jax_cache()
        threading.Thread(target=_import_jax, daemon=True).start()
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (| head) is no error of ours
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Not a terminal (a CI log, a pipe): lay tables out for 120 columns rather than rich's 80.
    console = _Console() if sys.stdout.isatty() else _Console(width=120)
    handlers = {
        "run": _run,
        "list": _list,
        "backends": _backends,
        "compile": _compile,
        "gate": _gate,
        "probe-data": _probe_data,
        "diagnose-log": _diagnose_log,
    }
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
    console_main()
