"""`gradcheck gate`: check every kernel a repository lists, and fail CI when one is wrong.

The kernels live in the ``[tool.gradcheck]`` table of the repository's ``pyproject.toml`` (the one
in the current directory or the nearest parent), or in a TOML file given with ``--config FILE``
that holds the table at its top level or under ``[tool.gradcheck]``::

    [tool.gradcheck]
    backend = "auto"                  # optional: auto (default), cpu or cuda
    seed = 0                          # optional: seed of the input suites (default 0)

    [[tool.gradcheck.kernels]]
    name = "ce-grad"                  # how reports name it: letters, digits, . _ -; unique
    op = "loss-ce"                    # gradcheck list
    source = "kernels/ce_grad.cu"     # relative to the config file; or kernel = "<shipped name>"
    function = "ce_grad"              # optional when the source defines one kernel
    block = 256                       # optional: blockDim.x (default: the op's)
    # optional, as in gradcheck run: grid = [X, Y, Z] (overrides the op's grid),
    # defines = ["NAME=VALUE"] (-D), include_dirs = ["include"] (-I, relative to the config
    # file), no_extern_c = true or false (PyCUDA's option; default: see gradcheck run)
    shapes = [{ rows = 4, vocab = 50 }, { rows = 16, vocab = 2000 }]   # explicit shapes, and/or
    sweep = { vocab = [50, 257, 2000], rows = [4] }                   # their cartesian product

Keys of a shape or a sweep are the op's dimensions and options (``gradcheck list``; a sweep value
that is one value needs no list); a dimension left out takes the op's default, and a kernel with
neither ``shapes`` nor ``sweep`` is checked once at the op's default sizes. A shape listed twice
(in ``shapes`` and in the sweep, say) is checked once. Each kernel x shape is one check, named ``<name>[rows=4,vocab=50]``
(every dimension of the op, then the options that differ from their defaults).

Verdicts of a check are the report's (``pass``, ``fd-noise``, ``kernel-bug``, ``inconclusive``),
or ``error`` when the kernel could not be built or launched. Exit codes: 0 when every check is
pass or fd-noise; 1 when one is kernel-bug or inconclusive (a check without power must not pass a
PR); 3 when one is an error (3 wins over 1); 2 for a mistake in the config, the baseline or the
command line, found before any check runs. ``--junit``, ``--json`` and ``--markdown`` files are
written (atomically) before the command exits, whatever the exit code.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import __version__
from ._errors import (
    BackendUnavailable,
    CompileError,
    GradcheckError,
    KernelNotFound,
    SignatureMismatch,
    UsageError,
    suggest,
)
from ._files import check_output_dir, write_atomically
from .ops import OPS, Op, get_op
from .report import STYLES, finding_lines
from .results import Check, Report, _jsonable

SCHEMA = "gradcheck.gate"
SCHEMA_VERSION = 1
TABLE = "tool.gradcheck"
CONFIG_KEYS = ("backend", "seed", "kernels")
KERNEL_KEYS = (
    "name",
    "op",
    "source",
    "kernel",
    "function",
    "block",
    "grid",
    "defines",
    "include_dirs",
    "no_extern_c",
    "shapes",
    "sweep",
)
BACKENDS = ("auto", "cpu", "cuda")
VERDICTS = ("pass", "fd-noise", "kernel-bug", "inconclusive", "error")
PASSING = ("pass", "fd-noise")
# How bad a verdict is, for "what changed": pass and fd-noise both pass the gate.
RANK = {"pass": 0, "fd-noise": 0, "inconclusive": 1, "kernel-bug": 2, "error": 2}
# Errors that depend on the kernel, never on the shape: the kernel's other shapes are not retried.
BUILD_ERRORS = (CompileError, BackendUnavailable, KernelNotFound, SignatureMismatch)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEFINE = re.compile(r"[A-Za-z_]\w*(=.*)?")
# Characters XML 1.0 cannot hold (a compiler's colour codes, say): a JUnit file with one is refused.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
MAX_FINDINGS = 10  # findings written out in full per check in JUnit; the JSON report has them all
MAX_MD_FINDINGS = 5  # first lines per failing check in the markdown summary
MAX_ERROR_LINES = 20  # of an error message (compiler output) in the console and the markdown

EXAMPLE = """[tool.gradcheck]
[[tool.gradcheck.kernels]]
name = "ce-grad"
op = "loss-ce"
source = "kernels/ce_grad.cu"
function = "ce_grad"
shapes = [{ rows = 4, vocab = 50 }]"""


@dataclass(frozen=True)
class KernelEntry:
    """One ``[[tool.gradcheck.kernels]]`` table, checked, paths resolved, shapes expanded."""

    name: str
    op: str
    kernel: (
        str  # a source path (relative to the working directory when inside it) or a shipped name
    )
    shipped: bool
    function: str | None
    block: int | None
    grid: tuple[int, ...] | None
    defines: tuple[str, ...]
    include_dirs: tuple[str, ...]
    no_extern_c: bool | None
    shapes: tuple[dict[str, Any], ...]  # each: every dimension, then options off their default


@dataclass(frozen=True)
class GateConfig:
    path: Path
    backend: str
    seed: int
    kernels: tuple[KernelEntry, ...]


@dataclass(frozen=True)
class GateCheck:
    """One kernel x shape: its verdict and the report, or the error that stopped it."""

    kernel: str
    op: str
    shape: dict[str, Any]
    verdict: str  # a report verdict, or "error"
    elapsed_s: float
    reproduce: str
    report: Report | None = None
    error_type: str = ""
    error_message: str = ""

    @property
    def id(self) -> str:
        return check_id(self.kernel, self.shape)

    @property
    def findings(self) -> tuple[Check, ...]:
        """The report's findings, each piece of evidence once (the same on several cases: once)."""
        if self.report is None:
            return ()
        seen: set[tuple[str, str, str]] = set()
        out = []
        for c in self.report.findings:
            key = (c.name, c.output, " | ".join(c.where) or c.summary)
            if key not in seen:
                seen.add(key)
                out.append(c)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kernel": self.kernel,
            "op": self.op,
            "shape": self.shape,
            "verdict": self.verdict,
            "elapsed_s": round(self.elapsed_s, 3),
            "reproduce": self.reproduce,
            "error": {"type": self.error_type, "message": self.error_message}
            if self.verdict == "error"
            else None,
            "report": self.report.to_dict() if self.report is not None else None,
        }


@dataclass(frozen=True)
class Change:
    id: str
    kernel: str
    before: str | None  # None: new
    after: str | None  # None: removed


@dataclass(frozen=True)
class Changes:
    """The checks whose verdict differs from the baseline's, grouped."""

    baseline: str
    previous: dict[str, str]  # check id -> its verdict in the baseline
    worse: tuple[Change, ...]
    better: tuple[Change, ...]
    new: tuple[Change, ...]
    removed: tuple[Change, ...]
    other: tuple[
        Change, ...
    ]  # another verdict just as good or bad: pass <-> fd-noise, bug <-> error

    @property
    def any(self) -> bool:
        return bool(self.worse or self.better or self.new or self.removed or self.other)

    def to_dict(self) -> dict[str, Any]:
        def rows(cs: tuple[Change, ...]) -> list[dict[str, Any]]:
            return [
                {"id": c.id, "kernel": c.kernel, "before": c.before, "after": c.after} for c in cs
            ]

        return {
            "path": self.baseline,
            "worse": rows(self.worse),
            "better": rows(self.better),
            "new": rows(self.new),
            "removed": rows(self.removed),
            "other": rows(self.other),
        }

    def lines(self) -> list[tuple[str, str, str]]:
        """(group, check id, what happened) for each change, the worst group first."""
        out: list[tuple[str, str, str]] = []
        out += [("worse", c.id, f"{c.before} -> {c.after}") for c in self.worse]
        out += [("new", c.id, f"{c.after}") for c in self.new]
        out += [("removed", c.id, f"was {c.before}") for c in self.removed]
        out += [("better", c.id, f"{c.before} -> {c.after}") for c in self.better]
        out += [("other", c.id, f"{c.before} -> {c.after}") for c in self.other]
        return out


@dataclass(frozen=True)
class GateResult:
    config: GateConfig
    checks: tuple[GateCheck, ...]
    started: datetime
    elapsed_s: float
    changes: Changes | None = None

    @property
    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.checks) for v in VERDICTS}

    @property
    def result(self) -> str:
        """``pass``, ``fail`` (a kernel-bug or inconclusive check) or ``error``."""
        verdicts = {c.verdict for c in self.checks}
        if "error" in verdicts:
            return "error"
        return "pass" if verdicts <= set(PASSING) else "fail"

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "fail": 1, "error": 3}[self.result]

    @property
    def backends(self) -> str:
        """The backends the checks ran on (the configured one when none ran)."""
        used = sorted({c.report.backend for c in self.checks if c.report is not None})
        return ", ".join(used) or self.config.backend

    def summary(self) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in self.counts.items() if n)
        n, k = len(self.checks), len(self.config.kernels)
        return (
            f"{counts or 'no checks'} ({n} check{'s' * (n != 1)} of {k} kernel{'s' * (k != 1)}, "
            f"{self.backends} backend, seed {self.config.seed}, {self.elapsed_s:.1f} s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "gradcheck_version": __version__,
            "config": str(self.config.path),
            "result": self.result,
            "exit_code": self.exit_code,
            "backend": self.config.backend,
            "seed": self.config.seed,
            "started": self.started.isoformat(timespec="seconds"),
            "elapsed_s": round(self.elapsed_s, 3),
            "counts": self.counts,
            "checks": [c.to_dict() for c in self.checks],
            "baseline": self.changes.to_dict() if self.changes is not None else None,
        }


# ---------------------------------------------------------------------------------------------
# The config


def find_config(start: Path) -> Path:
    """The ``pyproject.toml`` in ``start`` or its nearest parent."""
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file():
            return d / "pyproject.toml"
    raise UsageError(
        f"no pyproject.toml in {start} or any directory above it: run gradcheck gate in your "
        "repository, or pass --config FILE (a TOML file with the [tool.gradcheck] table)."
    )


def load_config(
    path: str | os.PathLike[str] | None = None, *, cwd: Path | None = None
) -> GateConfig:
    """Read and check the gate's config; every mistake is a UsageError naming key and value.

    ``path``: a TOML file holding the table at its top level or under ``[tool.gradcheck]``;
    None looks for ``pyproject.toml`` in ``cwd`` (default: the working directory) and its parents.
    Source and include paths come back relative to ``cwd`` when inside it, as the reproduce lines
    show them: call run_gate() with ``cwd`` as the working directory.
    """
    here = (cwd or Path.cwd()).resolve()
    if path is None:
        file = find_config(here)
    else:
        file = here / Path(path)
        if not file.is_file():
            raise UsageError(f"--config {path}: no such file.")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file}: not valid TOML: {exc}. Fix the file and run again.") from None
    tool = data.get("tool")
    if isinstance(tool, dict) and "gradcheck" in tool:
        table, prefix = tool["gradcheck"], TABLE
    elif path is not None and any(k in data for k in CONFIG_KEYS):
        table, prefix = data, ""
    else:
        raise UsageError(
            f"{file} has no [tool.gradcheck] table: add one with a [[tool.gradcheck.kernels]] "
            f"table per kernel to check, e.g.\n{EXAMPLE}"
        )
    return _config(file.resolve(), table, prefix, here)


def _hint(name: str, choices: Sequence[str]) -> str:
    close = suggest(name, choices)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _unknown_keys(table: dict[str, Any], known: Sequence[str], where: str = "") -> None:
    for key in table:
        if key not in known:
            raise UsageError(
                f"{where}{': ' if where else ''}unknown key {key!r}.{_hint(key, known)} "
                f"Keys: {', '.join(known)}."
            )


def _config(file: Path, table: object, prefix: str, cwd: Path) -> GateConfig:
    top = f"[{prefix}]" if prefix else "the top level"
    kernels_t = f"[[{prefix}.kernels]]" if prefix else "[[kernels]]"
    if not isinstance(table, dict):
        raise UsageError(f"{file}: {prefix or 'the config'} must be a table, got {table!r}.")
    _unknown_keys(table, CONFIG_KEYS, f"{file} {top}")
    backend = table.get("backend", "auto")
    if backend not in BACKENDS:
        raise UsageError(
            f"{file} {top}: backend = {backend!r} is not a backend.{_hint(str(backend), BACKENDS)} "
            f"Use one of {', '.join(repr(b) for b in BACKENDS)} (gradcheck backends)."
        )
    seed = table.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"{file} {top}: seed = {seed!r} must be a whole number >= 0.")
    kernels = table.get("kernels")
    if kernels is None or kernels == []:
        raise UsageError(
            f"{file} {top}: no kernels to check: add a {kernels_t} table for each, e.g.\n{EXAMPLE}"
        )
    if not isinstance(kernels, list) or not all(isinstance(k, dict) for k in kernels):
        raise UsageError(
            f"{file} {top}: kernels must be an array of tables (write each as {kernels_t}), "
            f"got {kernels!r}."
        )
    entries: list[KernelEntry] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(kernels):
        name = raw.get("name")
        where = f"{file} {kernels_t} #{i + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
        try:
            entry = _kernel(raw, file.parent, cwd)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        if entry.name in seen:
            raise UsageError(
                f"{where}: name = {entry.name!r} is also the name of kernel #{seen[entry.name] + 1}: "
                "reports and baselines tell kernels apart by name; give each a name of its own."
            )
        seen[entry.name] = i
        entries.append(entry)
    return GateConfig(path=file, backend=str(backend), seed=seed, kernels=tuple(entries))


def _display(path: Path, cwd: Path) -> str:
    """A path as a command run from ``cwd`` can use it: relative when inside ``cwd``."""
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def _str_list(raw: dict[str, Any], key: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f'{key} = {value!r} must be a list of strings, e.g. {key} = ["..."].')
    return value


def _kernel(raw: dict[str, Any], base: Path, cwd: Path) -> KernelEntry:
    _unknown_keys(raw, KERNEL_KEYS)
    name = raw.get("name")
    if name is None:
        raise UsageError('no name: add name = "..." (how reports name this kernel; unique).')
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(
            f"name = {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or "
            'digit (e.g. name = "ce-grad"): it names the checks in reports and baselines.'
        )
    op_id = raw.get("op")
    if op_id is None:
        raise UsageError(f'no op: add op = "..." (one of {", ".join(OPS)}; gradcheck list).')
    if not isinstance(op_id, str):
        raise UsageError(f"op = {op_id!r} must be a string: one of {', '.join(OPS)}.")
    spec = get_op(op_id)
    source, shipped_name, function = raw.get("source"), raw.get("kernel"), raw.get("function")
    if (source is None) == (shipped_name is None):
        raise UsageError(
            'give either source = "path/to/kernel.cu" (your kernel, with function = "...") or '
            'kernel = "<name>" (a shipped kernel: gradcheck list)'
            + (", not both." if source is not None else ".")
        )
    if function is not None and (not isinstance(function, str) or not function):
        raise UsageError(f"function = {function!r} must be the kernel's name, a string.")
    if shipped_name is not None:
        if not isinstance(shipped_name, str) or spec.kernel(shipped_name) is None:
            names = [k.name for k in spec.kernels]
            raise UsageError(
                f"kernel = {shipped_name!r} is not a shipped {spec.id} kernel."
                f"{_hint(str(shipped_name), names)} Shipped: {', '.join(names)} (gradcheck list)."
            )
        if function is not None:
            raise UsageError(
                f"function = {function!r} names a kernel in source = ...; a shipped kernel "
                "(kernel = ...) knows its function: remove function."
            )
        kernel = shipped_name
    else:
        if not isinstance(source, str) or not source:
            raise UsageError(f"source = {source!r} must be a path to a .cu file (a string).")
        path = (base / source).resolve()
        if not path.is_file():
            raise UsageError(
                f"source = {source!r}: no such file ({path}). Paths are relative to the config "
                "file's directory."
            )
        if function is None:
            function = _only_kernel(path, source)
        kernel = _display(path, cwd)
    if shipped_name is not None and (raw.get("defines") or raw.get("include_dirs")):
        raise UsageError(
            "defines and include_dirs apply to source = ...; this is a shipped kernel."
        )
    block = raw.get("block")
    if block is not None and (
        isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 1024
    ):
        raise UsageError(f"block = {block!r} must be a whole number from 1 to 1024 (blockDim.x).")
    grid = raw.get("grid")
    if grid is not None:
        from ._launch import MAX_GRID, normalize_dims

        grid = tuple(normalize_dims(grid, "grid", MAX_GRID))
    defines = _str_list(raw, "defines")
    for d in defines:
        if not DEFINE.fullmatch(d):
            raise UsageError(f"defines: {d!r} is not NAME or NAME=VALUE (as -D takes it).")
    include_dirs = []
    for d in _str_list(raw, "include_dirs"):
        path = (base / d).resolve()
        if not path.is_dir():
            raise UsageError(
                f"include_dirs: {d!r} is not a directory ({path}). Paths are relative to the "
                "config file's directory."
            )
        include_dirs.append(_display(path, cwd))
    no_extern_c = raw.get("no_extern_c")
    if no_extern_c is not None and not isinstance(no_extern_c, bool):
        raise UsageError(f"no_extern_c = {no_extern_c!r} must be true or false.")
    shapes = _shapes(spec, raw, spec.default_block if block is None else block)
    return KernelEntry(
        name=name,
        op=spec.id,
        kernel=kernel,
        shipped=shipped_name is not None,
        function=function,
        block=block,
        grid=grid,
        defines=tuple(defines),
        include_dirs=tuple(include_dirs),
        no_extern_c=no_extern_c,
        shapes=shapes,
    )


def _only_kernel(path: Path, source: str) -> str:
    """The one kernel a source defines, so the reproduce line can name it."""
    from .backends._source import declared_kernel_names

    names = declared_kernel_names(path.read_text(encoding="utf-8", errors="replace"))
    if len(names) != 1:
        raise UsageError(
            f"source = {source!r} defines {len(names)} kernels ({', '.join(names) or 'none found'}): "
            'name the one to check with function = "...".'
        )
    return names[0]


def _shapes(spec: Op, raw: dict[str, Any], block: int) -> tuple[dict[str, Any], ...]:
    """The explicit shapes, then the sweep's product; each checked as gradcheck.check would."""
    given: list[tuple[str, dict[str, Any]]] = []
    shapes = raw.get("shapes")
    if shapes is not None:
        if not isinstance(shapes, list) or not all(isinstance(s, dict) for s in shapes):
            raise UsageError(
                f"shapes = {shapes!r} must be a list of tables, e.g. shapes = [{{ rows = 4 }}]."
            )
        if not shapes:
            raise UsageError(
                "shapes = [] gives no checks: list at least one shape, e.g. "
                "shapes = [{ rows = 4 }], or leave shapes out (the op's default sizes)."
            )
        given += [(f"shapes[{j}] = {_toml(s)}", s) for j, s in enumerate(shapes)]
    sweep = raw.get("sweep")
    if sweep is not None:
        if not isinstance(sweep, dict):
            raise UsageError(
                f"sweep = {sweep!r} must be a table of lists, e.g. sweep = {{ vocab = [50, 2000] }}."
            )
        if not sweep:
            raise UsageError(
                "sweep = {} gives no checks: name a dimension and its values, e.g. "
                "sweep = { vocab = [50, 2000] }, or leave sweep out."
            )
        axes: list[list[Any]] = []
        for key, values in sweep.items():
            vals = values if isinstance(values, list) else [values]
            if not vals:
                raise UsageError(
                    f"sweep.{key} = [] is an empty sweep: it gives no checks. List at least one "
                    f"value (sweep = {{ {key} = [...] }}), or remove {key}."
                )
            axes.append(vals)
        for combo in itertools.product(*axes):
            s = dict(zip(sweep, combo, strict=True))
            given.append((f"sweep {_toml(s)}", s))
    if not given:
        given = [("the op's default sizes", {})]
    from ._check import _sizes

    out: dict[str, dict[str, Any]] = {}
    for label, s in given:
        try:
            sizes, options = _sizes(spec, s)
            spec.validate(sizes, block)
        except UsageError as exc:
            raise UsageError(f"{label}: {exc}") from None
        shape: dict[str, Any] = dict(sizes)
        shape.update(
            {o.name: options[o.name] for o in spec.options if options[o.name] != o.default}
        )
        # A shape both listed and swept (or a default written out) is one check, run once.
        out.setdefault(check_id("", shape), shape)
    return tuple(out.values())


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _toml(shape: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in shape.items()) + " }"


def check_id(kernel: str, shape: dict[str, Any]) -> str:
    """How reports and baselines name a check: ``ce-grad[rows=4,vocab=50]``."""
    return f"{kernel}[{','.join(f'{k}={_value(v)}' for k, v in shape.items())}]"


# ---------------------------------------------------------------------------------------------
# Running


def _reproduce(config: GateConfig, entry: KernelEntry, shape: dict[str, Any]) -> str:
    """The `gradcheck run` command for a check that has no report (its kernel did not build)."""
    from ._check import _sizes, command_line
    from ._runner import KernelRef

    spec = get_op(entry.op)
    dims, options = _sizes(spec, dict(shape))
    shipped = spec.kernel(entry.kernel) if entry.shipped else None
    ref = KernelRef(
        label=entry.name,
        shipped=shipped,
        source=None if entry.shipped else Path(entry.kernel),
        function=entry.function,
    )
    return command_line(
        spec, ref, dims, options, block=entry.block or spec.default_block, grid=entry.grid,
        seed=config.seed, backend=config.backend, defines=entry.defines,
        include_dirs=entry.include_dirs, no_extern_c=entry.no_extern_c,
    )  # fmt: skip


def run_gate(
    config: GateConfig, *, progress: Callable[[GateCheck, int, int], None] | None = None
) -> GateResult:
    """Run gradcheck.check for every kernel x shape; ``progress(check, i, n)`` after each.

    A kernel that cannot be built (or launched) gives ``error`` checks, never an exception.
    """
    from ._check import check

    started = datetime.now().astimezone()
    t_start = time.perf_counter()
    total = sum(len(k.shapes) for k in config.kernels)
    done: list[GateCheck] = []
    for entry in config.kernels:
        broken: tuple[str, str] | None = None
        for shape in entry.shapes:
            t0 = time.perf_counter()
            common: dict[str, Any] = {"kernel": entry.name, "op": entry.op, "shape": shape}
            error: tuple[str, str] | None = broken
            report = None
            if broken is None:
                try:
                    report = check(
                        entry.op,
                        entry.kernel if entry.shipped else Path(entry.kernel),
                        function=None if entry.shipped else entry.function,
                        backend=config.backend,
                        block=entry.block,
                        grid=entry.grid,
                        seed=config.seed,
                        defines=entry.defines,
                        include_dirs=entry.include_dirs,
                        no_extern_c=entry.no_extern_c,
                        **shape,
                    )
                except GradcheckError as exc:
                    error = (type(exc).__name__, str(exc).strip())
                    if isinstance(exc, BUILD_ERRORS):
                        broken = error
            elapsed = time.perf_counter() - t0
            if report is not None:
                gc = GateCheck(
                    **common,
                    verdict=report.verdict,
                    elapsed_s=elapsed,
                    reproduce=report.reproduce,
                    report=report,
                )
            else:
                assert error is not None
                gc = GateCheck(
                    **common,
                    verdict="error",
                    elapsed_s=elapsed,
                    reproduce=_reproduce(config, entry, shape),
                    error_type=error[0],
                    error_message=error[1],
                )
            done.append(gc)
            if progress is not None:
                progress(gc, len(done), total)
    return GateResult(
        config=config,
        checks=tuple(done),
        started=started,
        elapsed_s=time.perf_counter() - t_start,
    )


# ---------------------------------------------------------------------------------------------
# The baseline


def load_baseline(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """check id -> (kernel, verdict), from a file ``gradcheck gate --json`` wrote."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(
            f"--baseline {path}: no such file. Give a file gradcheck gate --json wrote."
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--baseline {path}: not JSON ({exc}).") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != SCHEMA:
        raise UsageError(
            f"--baseline {path}: schema is {schema!r}, not {SCHEMA!r}: give a file that "
            "gradcheck gate --json wrote (gradcheck run --json writes one check's report)."
        )
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UsageError(
            f"--baseline {path}: schema_version {version!r}; this gradcheck ({__version__}) reads "
            f"versions up to {SCHEMA_VERSION}: upgrade gradcheck."
        )
    out: dict[str, tuple[str, str]] = {}
    checks = data.get("checks")
    if not isinstance(checks, list):
        raise UsageError(f"--baseline {path}: no list of checks in it.")
    for c in checks:
        if (
            not isinstance(c, dict)
            or not isinstance(c.get("id"), str)
            or c.get("verdict") not in VERDICTS
        ):
            raise UsageError(f"--baseline {path}: a check without an id or a known verdict: {c!r}.")
        out[c["id"]] = (str(c.get("kernel", "")), c["verdict"])
    return out


def compare_baseline(
    checks: Sequence[GateCheck], baseline: dict[str, tuple[str, str]], path: str
) -> Changes:
    now = {c.id: c for c in checks}
    worse, better, new, other = [], [], [], []
    for c in checks:
        if c.id not in baseline:
            new.append(Change(c.id, c.kernel, None, c.verdict))
            continue
        before = baseline[c.id][1]
        if before == c.verdict:
            continue
        change = Change(c.id, c.kernel, before, c.verdict)
        if RANK[c.verdict] > RANK[before]:
            worse.append(change)
        elif RANK[c.verdict] < RANK[before]:
            better.append(change)
        else:
            other.append(change)
    removed = [Change(i, k, v, None) for i, (k, v) in baseline.items() if i not in now]
    return Changes(
        baseline=path,
        previous={i: v for i, (_, v) in baseline.items()},
        worse=tuple(worse),
        better=tuple(better),
        new=tuple(new),
        removed=tuple(removed),
        other=tuple(other),
    )


# ---------------------------------------------------------------------------------------------
# Reports: JUnit XML, JSON, markdown, console


def _secs(t: float) -> str:
    return f"{max(t, 0.0):.3f}"


def _xml_text(text: str) -> str:
    return NOT_XML.sub("?", text)


def _finding_text(report: Report, c: Check) -> list[str]:
    """A finding's lines without its heat map (the JSON report keeps everything)."""
    lines = finding_lines(report, c)
    return lines[: len(lines) - len(c.heatmap)] if c.heatmap else lines


def failure_message(gc: GateCheck) -> str:
    """One line: the worst finding (or the error's first line)."""
    if gc.verdict == "error":
        first = gc.error_message.splitlines()[0] if gc.error_message else ""
        return f"{gc.error_type}: {first}"
    assert gc.report is not None
    findings = gc.findings
    if not findings:
        return gc.verdict
    c = findings[0]
    return f"{finding_lines(gc.report, c)[0]}: {c.summary}"


def failure_text(gc: GateCheck) -> str:
    """The findings (or the error) in full, ending with the command that reproduces the check."""
    lines: list[str] = []
    if gc.verdict == "error":
        lines += [f"{gc.error_type}: {gc.error_message}"]
    elif gc.report is not None:
        findings = gc.findings
        for c in findings[:MAX_FINDINGS]:
            lines += _finding_text(gc.report, c)
        if len(findings) > MAX_FINDINGS:
            lines.append(
                f"... {len(findings) - MAX_FINDINGS} more findings (the --json report has them all)"
            )
    lines.append(f"reproduce: {gc.reproduce}")
    return "\n".join(lines)


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one <testsuite> per kernel, one <testcase> per kernel x shape.

    kernel-bug and inconclusive are <failure> (type = the verdict), a kernel that could not be
    built or launched an <error> (type = the error's class); pass and fd-noise pass (fd-noise
    with a <system-out> saying so). Follows Jenkins' junit-10.xsd, which GitLab, GitHub actions'
    test reporters and Azure also read.
    """

    def counts(cs: Sequence[GateCheck]) -> dict[str, str]:
        return {
            "tests": str(len(cs)),
            "failures": str(sum(c.verdict in ("kernel-bug", "inconclusive") for c in cs)),
            "errors": str(sum(c.verdict == "error" for c in cs)),
            "skipped": "0",
            "time": _secs(sum(c.elapsed_s for c in cs)),
        }

    config = result.config
    root = ET.Element("testsuites", {"name": "gradcheck gate", **counts(result.checks)})
    root.set("time", _secs(result.elapsed_s))
    stamp = result.started.replace(tzinfo=None).isoformat(timespec="seconds")
    host = socket.gethostname()
    for i, entry in enumerate(config.kernels):
        cs = [c for c in result.checks if c.kernel == entry.name]
        suite = ET.SubElement(
            root,
            "testsuite",
            {
                "name": entry.name,
                **counts(cs),
                "timestamp": stamp,
                "hostname": host,
                "id": str(i),
                "package": f"gradcheck.{entry.op}",
            },
        )
        props = ET.SubElement(suite, "properties")
        for key, value in (
            ("op", entry.op),
            ("kernel" if entry.shipped else "source", entry.kernel),
            ("function", entry.function or ""),
            ("backend", result.backends),
            ("seed", str(config.seed)),
            ("gradcheck_version", __version__),
        ):
            if value:
                ET.SubElement(props, "property", {"name": key, "value": _xml_text(value)})
        for c in cs:
            case = ET.SubElement(
                suite,
                "testcase",
                {
                    "name": c.id,
                    "classname": f"gradcheck.{c.op}.{c.kernel}",
                    "time": _secs(c.elapsed_s),
                },
            )
            if c.verdict in ("kernel-bug", "inconclusive", "error"):
                tag = "error" if c.verdict == "error" else "failure"
                kind = c.error_type if c.verdict == "error" else c.verdict
                el = ET.SubElement(
                    case, tag, {"message": _xml_text(failure_message(c)), "type": kind}
                )
                el.text = _xml_text(failure_text(c))
            elif c.verdict == "fd-noise":
                out = ET.SubElement(case, "system-out")
                out.text = _xml_text(
                    "fd-noise: the kernel is right; a float32 finite-difference check disagrees "
                    "by its own error only.\n" + failure_text(c)
                )
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def gate_json(result: GateResult) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False, default=_jsonable) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _shape_text(shape: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in shape.items()) or "defaults"


def markdown(result: GateResult) -> str:
    """A summary for a pull-request comment: table, what changed, then each failure."""
    fence = "```"
    lines = [
        f"## gradcheck gate: {result.result}",
        "",
        f"{result.summary()}; config `{result.config.path.name}`, gradcheck {__version__}.",
        "",
    ]
    head = ["kernel", "op", "shape", "verdict", "time"]
    if result.changes is not None:
        head.append("baseline")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in result.checks:
        verdict = c.verdict if c.verdict in PASSING else f"**{c.verdict}**"
        row = [c.kernel, c.op, _shape_text(c.shape), verdict, f"{c.elapsed_s:.1f} s"]
        if result.changes is not None:
            row.append(result.changes.previous.get(c.id, "new"))
        lines.append("| " + " | ".join(_md_cell(x) for x in row) + " |")
    if result.changes is not None:
        lines += ["", f"### What changed since the baseline (`{result.changes.baseline}`)", ""]
        titles = {
            "worse": "Got worse",
            "new": "New",
            "removed": "Removed",
            "better": "Got better",
            "other": "Other verdict changes",
        }
        if not result.changes.any:
            lines.append("Nothing: every check has the verdict it had.")
        shown = ""
        for group, check, text in result.changes.lines():
            if group != shown:
                lines += ([""] if shown else []) + [f"**{titles[group]}**", ""]
                shown = group
            lines.append(f"- `{check}`: {text}")
    failing = [c for c in result.checks if c.verdict not in PASSING]
    if failing:
        lines += ["", "### Failures"]
    printed: dict[str, str] = {}
    for c in failing:
        lines += ["", f"#### `{c.id}`: {c.verdict}", ""]
        if c.verdict == "error" and c.error_message in printed:
            lines += [f"{c.error_type}, as `{printed[c.error_message]}`.", ""]
            lines += ["reproduce:", "", fence + "sh", c.reproduce, fence]
            continue
        lines.append(fence + "text")
        if c.verdict == "error":
            printed[c.error_message] = c.id
            msg = f"{c.error_type}: {c.error_message}".splitlines()
            lines += msg[:MAX_ERROR_LINES]
            if len(msg) > MAX_ERROR_LINES:
                lines.append(f"... {len(msg) - MAX_ERROR_LINES} more lines (--json FILE has them)")
        elif c.report is not None:
            findings = c.findings
            for f in findings[:MAX_MD_FINDINGS]:
                lines += finding_lines(c.report, f)[:2]
            if len(findings) > MAX_MD_FINDINGS:
                lines.append(f"... {len(findings) - MAX_MD_FINDINGS} more findings")
        lines += [fence, "", "reproduce:", "", fence + "sh", c.reproduce, fence]
    return "\n".join(lines) + "\n"


def renderables(result: GateResult) -> Iterator[RenderableType]:
    """The console report: a table of the checks, the findings, what changed, the overall line."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("kernel", "op", "shape", "verdict", "time"):
        table.add_column(col, no_wrap=col != "shape")
    for c in result.checks:
        style = STYLES.get(c.verdict, "bold red")
        table.add_row(
            escape(c.kernel),
            c.op,
            escape(_shape_text(c.shape)),
            f"[{style}]{c.verdict}[/]",
            f"{c.elapsed_s:.1f} s",
        )
    yield table
    printed: dict[str, str] = {}
    for c in result.checks:
        if c.verdict == "pass":
            continue
        style = STYLES.get(c.verdict, "bold red")
        yield Text("")
        if c.verdict == "error":
            same = printed.get(c.error_message)
            if same is not None:
                yield Group(
                    Text(f"{c.id}: error ({c.error_type}, as {same})", style=style),
                    Text(f"  reproduce: {c.reproduce}"),
                )
                continue
            printed[c.error_message] = c.id
            msg = c.error_message.splitlines()
            body = [f"  {line}" for line in msg[:MAX_ERROR_LINES]]
            if len(msg) > MAX_ERROR_LINES:
                body.append(f"  ... {len(msg) - MAX_ERROR_LINES} more lines (--json FILE has them)")
            yield Group(
                Text(f"{c.id}: error ({c.error_type})", style=style),
                *(Text(line) for line in body),
                Text(f"  reproduce: {c.reproduce}"),
            )
            continue
        assert c.report is not None
        findings = c.findings
        more = f"; {len(findings) - 1} more in --json FILE" if len(findings) > 1 else ""
        first = _finding_text(c.report, findings[0]) if findings else []
        yield Group(
            Text(
                f"{c.id}: {c.verdict} ({len(findings)} findings, the worst first{more})",
                style=style,
            ),
            *(Text(line) for line in first),
            Text(f"  reproduce the whole check: {c.reproduce}"),
        )
    if result.changes is not None:
        yield Text("")
        yield Text(f"what changed since {result.changes.baseline}:", style="bold")
        if not result.changes.any:
            yield Text("  nothing: every check has the verdict it had")
        for group, check, text in result.changes.lines():
            style = {"worse": "red", "better": "green"}.get(group, "")
            yield Text(f"  {group}: {check}: {text}", style=style)
    yield Text("")
    style = {"pass": "green", "fail": "bold red", "error": "bold red"}[result.result]
    yield Text.from_markup(f"gate: [{style}]{result.result}[/]  {escape(result.summary())}")


def run_command(
    *,
    config: str | None,
    junit: str | None,
    json_path: str | None,
    markdown_path: str | None,
    baseline: str | None,
    console: Console,
) -> int:
    """`gradcheck gate`: everything a CI step needs; returns the exit code."""
    outputs = {"--junit": junit, "--json": json_path, "--markdown": markdown_path}
    for flag, value in outputs.items():
        check_output_dir(flag, value)
    base = load_baseline(baseline) if baseline is not None else None
    cfg = load_config(config)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    n = sum(len(k.shapes) for k in cfg.kernels)
    err.print(f"gradcheck gate: {n} checks from {escape(str(cfg.path))}")

    def progress(c: GateCheck, i: int, total: int) -> None:
        style = STYLES.get(c.verdict, "bold red")
        err.print(
            f"{escape(f'[{i}/{total}]')} {escape(c.id)}: [{style}]{c.verdict}[/] ({c.elapsed_s:.1f} s)"
        )

    result = run_gate(cfg, progress=progress)
    if base is not None:
        assert baseline is not None
        changes = compare_baseline(result.checks, base, baseline)
        result = GateResult(result.config, result.checks, result.started, result.elapsed_s, changes)
    written = []
    for value, render in (
        (junit, junit_xml),
        (json_path, gate_json),
        (markdown_path, markdown),
    ):
        if value is not None:
            write_atomically(value, render(result))
            written.append(value)
    for r in renderables(result):
        # soft_wrap: a reproduce line must stay one line to copy; the table wraps its own cells
        console.print(r, highlight=False, soft_wrap=not isinstance(r, Table))
    if written:
        console.print(f"reports written to {escape(', '.join(written))}", highlight=False)
    return result.exit_code


__all__ = [
    "Changes",
    "GateCheck",
    "GateConfig",
    "GateResult",
    "KernelEntry",
    "check_id",
    "compare_baseline",
    "find_config",
    "gate_json",
    "junit_xml",
    "load_baseline",
    "load_config",
    "markdown",
    "run_command",
    "run_gate",
]
