"""gradcheck.check(): run an op's input suite through a kernel and decide, with evidence."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from . import __version__
from ._errors import DataRace, KernelFault, OutOfBounds, UsageError, suggest
from ._launch import MAX_GRID, normalize_dims
from ._runner import CaseRun, KernelRef, Runner, resolve_kernel
from ._stream import Block, block_count, compare_streamed
from .compare import DEFAULT_FACTOR, POWER_ERROR, Comparison, compare_output
from .diagnose import likely_cause, overall
from .fd import FD32_POWER_ERROR, Difference, NaiveFD32, difference, directional, naive_fd32
from .ops import Arrays, BlockSample, Case, Op, Variant, get_op, sample_of
from .results import Check, Report, repeat_note
from .where import Pattern, describe, heatmap, keys, matching_variants, texts, value_patterns

# The bitwise checks: name -> (the evidence key diagnose knows, what differing outputs did)
BITWISE = {
    "schedules": ("schedule-dependent", "differ between thread orders {orders}"),
    "alignment": ("alignment-dependent", "change when the buffers start at another address"),
}
FD32_DEFAULTS = {"eps": 1e-3, "rtol": 1e-2, "atol": 0.0, "samples": 100}
MAX_BLOCK = 1024


def _positive_int(name: str, value: object, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UsageError(f"{name}={value!r} must be a whole number.")
    if value <= 0:
        raise UsageError(f"{name}={value} must be at least 1.")
    if value > maximum:
        raise UsageError(f"{name}={value} is too large: at most {maximum:,}.")
    return int(value)


def _positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value > 0:
        raise UsageError(f"{name}={value!r} must be a positive number.")
    if not np.isfinite(value):
        raise UsageError(f"{name}={value!r} must be finite.")
    return float(value)


def check(
    op: str = "loss-ce",
    kernel: object = None,
    *,
    function: str | None = None,
    backend: str | None = None,
    block: int | None = None,
    grid: Sequence[int] | None = None,
    seed: int = 0,
    factor: float = DEFAULT_FACTOR,
    fd32: bool = False,
    fd32_eps: float = FD32_DEFAULTS["eps"],
    fd32_rtol: float = FD32_DEFAULTS["rtol"],
    fd32_atol: float = FD32_DEFAULTS["atol"],
    fd32_samples: int = int(FD32_DEFAULTS["samples"]),
    case: str | None = None,
    shared_bytes: int = 0,
    defines: Sequence[str] = (),
    include_dirs: Sequence[str] = (),
    no_extern_c: bool | None = None,
    progress: Callable[[str], None] | None = None,
    steps: Callable[[int, int], None] | None = None,
    **dims: Any,
) -> Report:
    """Check a gradient kernel against the op's float64 reference on its whole input suite.

    ``kernel`` is a shipped kernel name (``gradcheck list``), CUDA source text or a ``.cu`` path
    (with ``function=``), a kernel function from ``gradcheck.SourceModule``, or a Python callable
    taking the op's inputs (loss-ce: ``logits, targets, mask``) and returning its outputs (one
    array, or a tuple / dict of them for ops with several, e.g. layernorm-bwd's dx, dgamma, dbeta).
    Sizes and options are keywords named as on the command line (loss-ce: ``rows``, ``vocab``;
    attention-bwd: ``batch``, ``heads``, ``seq``, ``head_dim``, ``causal``; layernorm-bwd:
    ``rows``, ``hidden``, ``eps``). ``block`` defaults to the op's (256; attention-bwd 128);
    ``grid`` overrides the canonical grid. ``defines`` (``"NAME=VALUE"``) and ``include_dirs`` go
    to the compiler, as in ``gradcheck compile``. ``no_extern_c``: PyCUDA's option; by default a
    source is wrapped in ``extern "C"`` unless it declares ``extern "C"`` itself. ``progress``
    gets a line saying what runs now; ``steps(done, total)`` counts the stages of the whole check
    (per case: the runs, the references, finite differences, and --fd32's check) for a progress bar.

    >>> import gradcheck
    >>> report = gradcheck.check("loss-ce", vocab=50, rows=4, backend="cpu")  # doctest: +SKIP
    >>> report.verdict  # doctest: +SKIP
    'pass'
    """
    t0 = time.perf_counter()
    spec = get_op(op)
    sizes, options = _sizes(spec, dims)
    block = _positive_int("block", spec.default_block if block is None else block, MAX_BLOCK)
    grid_t = None
    if grid is not None:
        grid_t = normalize_dims(tuple(grid) if isinstance(grid, list) else grid, "grid", MAX_GRID)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed={seed!r} must be a whole number >= 0.")
    factor = _positive_float("factor", factor)
    if fd32:
        fd32_eps = _positive_float("fd32_eps", fd32_eps)
        fd32_rtol = _positive_float("fd32_rtol", fd32_rtol) if fd32_rtol else 0.0
        fd32_atol = _positive_float("fd32_atol", fd32_atol) if fd32_atol else 0.0
        fd32_samples = _positive_int("fd32_samples", fd32_samples, 1 << 20)
    if isinstance(shared_bytes, bool) or not isinstance(shared_bytes, int) or shared_bytes < 0:
        raise UsageError(f"shared_bytes={shared_bytes!r} must be a whole number >= 0.")
    spec.validate(sizes, block)
    _check_memory(spec, sizes)
    say = progress or (lambda _msg: None)
    ref = resolve_kernel(spec, kernel, function)
    say(f"building {ref.label}")
    if (defines or include_dirs) and ref.source is None:
        raise UsageError(
            "defines and include_dirs apply to CUDA source; this kernel is not source."
        )
    runner = Runner(
        spec,
        ref,
        backend=backend,
        shared_bytes=shared_bytes,
        options=[f"-D{d}" for d in defines] or None,
        include_dirs=[str(d) for d in include_dirs] or None,
        no_extern_c=no_extern_c,
        seed=int(seed),
    )
    cases = spec.cases(sizes, block, int(seed), options)
    if case is not None:
        names = [c.name for c in cases]
        if case not in names:
            close = suggest(case, names)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UsageError(f"case={case!r} is not in the suite.{hint} Cases: {', '.join(names)}.")
        cases = [c for c in cases if c.name == case]

    def reproduce(c: Case | None = None) -> str:
        d = sizes
        if c is not None and c.name.startswith(tuple(f"{k}=" for k in c.dims)):
            d = dict(c.dims)
        return command_line(
            spec, ref, d, options, block=block, grid=grid_t, seed=int(seed), backend=backend,
            shared_bytes=shared_bytes, defines=defines, include_dirs=include_dirs,
            no_extern_c=no_extern_c, factor=factor, case=c.name if c is not None else case,
        )  # fmt: skip

    fd32_flags = fd32_arguments(
        {"eps": fd32_eps, "rtol": fd32_rtol, "atol": fd32_atol, "samples": fd32_samples}
    )
    # A case that runs once is compared a block of rows at a time where the op allows: a stage each.
    n_blocks = [block_count(spec, c) if c.run_once else 0 for c in cases]
    per_case = [
        2 + max(1, b) + (fd32 and c.name in spec.fd32_cases)
        for c, b in zip(cases, n_blocks, strict=True)
    ]
    total, done = sum(per_case), 0

    def step(n: int = 1) -> None:
        nonlocal done
        done += n
        if steps is not None:
            steps(done, total)

    step(0)
    checks: list[Check] = []
    # The references do not depend on the kernel: small cases' are computed on threads while the
    # kernels run, since the launches mostly wait on the backend: the case's own, the next one's,
    # and further ones' while those ahead hold no more than PREFETCH_UNITS work units (elements;
    # scores for attention: what the references' temporaries grow with).
    # Large cases compute theirs when their turn comes, so that no more than one case's float64
    # temporaries are held at a time (the memory the refusal and the benchmarks measured).
    pool = ThreadPoolExecutor(max_workers=2)
    pending: dict[int, Future[tuple[Arrays, Arrays, Arrays, Difference]]] = {}

    def references(c: Case) -> tuple[Arrays, Arrays, Arrays, Difference]:
        ref64 = spec.reference(c, np.float64)
        floor = spec.noise_floor(c, ref64)
        return ref64, spec.reference(c, np.float32), floor, difference(spec, c, int(seed))

    def prefetch(i: int) -> None:
        room = PREFETCH_UNITS - sum(spec.work_units(cases[j].dims) for j in pending)
        for j in range(i, len(cases)):
            size = spec.work_units(cases[j].dims)
            if size > PREFETCH_UNITS or (j > i + 1 and size > room):
                return
            if j not in pending:
                pending[j] = pool.submit(references, cases[j])
                room -= size

    launched: dict[int, CaseRun] = {}  # kernels run ahead while a case's references compute

    # The blocks each case's repeats run on, where it is too large to repeat whole (cpu).
    samples = [runner.repeat_sample(c, block, grid_t) for c in cases]

    def launch(j: int) -> CaseRun:
        c = cases[j]
        runs = runner.schedules[:1] if c.run_once else runner.schedules
        sample = samples[j]
        if sample is not None:
            say(
                f"case {c.name}: running {ref.label} ({runs[0]}, every core; then "
                f"{', '.join(runs)} on a sample of the blocks)"
            )
        else:
            say(f"case {c.name}: running {ref.label} ({', '.join(runs) or 'once'})")

        def blocks(run: str, finished: int, total: int) -> None:
            say(f"case {c.name}: running {ref.label} ({run}): {finished:,} of {total:,} blocks")

        done = runner.run(c, block, grid_t, once=c.run_once, blocks=blocks, sample=sample)
        if done.fault is None and done.output is not None:
            step()
        return done

    def launch_ahead(i: int) -> None:
        """Run the kernels of the prefetched cases after i until case i's references are in:
        the launches wait on the backend and the references on JAX, so both go on at once."""
        ahead = pending.get(i)
        for j in range(i + 1, len(cases)):
            if ahead is None or ahead.done() or j not in pending:
                return
            if j not in launched:
                launched[j] = launch(j)

    try:
        for i, (c, stages, blocks) in enumerate(zip(cases, per_case, n_blocks, strict=True)):
            prefetch(i)
            run = launched.pop(i, None) or launch(i)
            if run.fault is not None or run.output is None:
                assert run.fault is not None
                checks.append(_fault_check(spec, c, block, run.fault, reproduce(c), run.sample))
                pending.pop(i, None)
                step(stages)
                continue
            output = run.output
            scope = fd_scope = ""  # the rows the value checks saw; what the reference FD moved
            diff: Difference | None = None  # the FD along u, when computed ahead
            if blocks:
                say(
                    f"case {c.name}: references and comparison, {blocks} blocks of {spec.stream_unit}"
                )
                merged, ev, totals = compare_streamed(spec, c, output, factor, tick=step)
                found, worst = _streamed_checks(
                    spec, c, block, run, merged, ev, totals, factor, reproduce(c)
                )
                # The checks that need values (FD) look at the block holding the worst element;
                # the FD moves the inputs of the outputs cut into rows (a summed output is only
                # that block's share there).
                fd_case, ref64, fd_out, scope = ev.case, ev.ref64, ev.output, ev.rows_text
                fd_outputs = list(ev.comparisons)
                fd_scope = scope
                if len(fd_outputs) < len(spec.outputs):
                    moved = ", ".join(o.wrt for o in spec.outputs if o.name in fd_outputs)
                    fd_scope = f"{moved} of {scope}"
                fd_bad = {name: cmp.bad for name, cmp in ev.comparisons.items()}
            else:
                launch_ahead(i)
                say(f"case {c.name}: float64 and float32 references")
                ahead = pending.pop(i, None)
                ref64, ref32, floor, diff = ahead.result() if ahead is not None else references(c)
                found, worst = _case_checks(
                    spec, c, block, run, ref64, ref32, floor, factor, reproduce(c)
                )
                fd_case, fd_out, fd_outputs = c, output, None
                fd_bad = {name: cmp.bad for name, cmp in worst.items()}
                step()
            checks.extend(found)
            say(f"case {c.name}: finite differences of the float64 reference")
            checks.append(
                _reference_fd_check(
                    spec,
                    fd_case,
                    ref64,
                    fd_out,
                    int(seed),
                    reproduce(c),
                    fd_scope,
                    diff,
                    fd_outputs,
                )
            )
            step()
            if fd32 and c.name in spec.fd32_cases:
                say(f"case {c.name}: the float32 finite-difference check ({fd32_samples} elements)")
                p = spec.primary.name
                naive = naive_fd32(
                    spec, fd_case, ref64[p], fd_out[p], fd_bad[p],
                    eps=fd32_eps, rtol=fd32_rtol, atol=fd32_atol, samples=fd32_samples, seed=int(seed),
                )  # fmt: skip
                checks.append(_fd32_check(c, naive, reproduce(c) + fd32_flags, scope))
                step()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return Report(
        verdict=overall(checks),
        op=spec.id,
        backend=runner.backend,
        backend_reason=runner.backend_reason,
        kernel=ref.label,
        shapes={**sizes, "block": block},
        seed=int(seed),
        checks=tuple(checks),
        cases=tuple(
            {
                "name": c.name,
                "description": c.description + _once_note(spec, c, b, cases) + _sample_note(sample),
                "dims": c.dims,
                "run_once": c.run_once,
                "repeats_on": sample.text if sample is not None else None,
            }
            for c, b, sample in zip(cases, n_blocks, samples, strict=True)
        ),
        elapsed_s=time.perf_counter() - t0,
        reproduce=reproduce() + (fd32_flags if fd32 else ""),
        version=__version__,
        options={o.name: options[o.name] for o in spec.options},
        grid=grid_t,
    )


def command_line(
    spec: Op,
    ref: KernelRef,
    dims: dict[str, int],
    options: dict[str, Any],
    *,
    block: int,
    seed: int,
    grid: Sequence[int] | None = None,
    backend: str | None = None,
    shared_bytes: int = 0,
    defines: Sequence[str] = (),
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    no_extern_c: bool | None = None,
    factor: float = DEFAULT_FACTOR,
    case: str | None = None,
) -> str:
    """The ``gradcheck run`` command that checks the same thing (every reproduce line)."""
    parts = [f"gradcheck run {spec.id}"]
    parts += [f"--{k.replace('_', '-')} {v}" for k, v in dims.items()]
    for o in spec.options:
        value = options[o.name]
        if value != o.default:
            flag = f"--{o.name.replace('_', '-')}"
            parts.append(flag if o.kind == "flag" else f"{flag} {value:g}")
    parts.append(f"--block {block}")
    if grid is not None:
        parts.append(f"--grid {','.join(map(str, grid))}")
    parts.append(f"--seed {seed}")
    if ref.shipped is None or ref.shipped.name != spec.default_kernel:
        parts.append(ref.cli_args() or "(kernel given from Python)")
    if backend not in (None, "auto"):
        parts.append(f"--backend {backend}")
    if shared_bytes:
        parts.append(f"--shared-bytes {shared_bytes}")
    parts += [f"-D {d}" for d in defines] + [f"-I {os.fspath(i)}" for i in include_dirs]
    if no_extern_c is not None:
        parts.append("--no-extern-c" if no_extern_c else "--extern-c")
    if factor != DEFAULT_FACTOR:
        parts.append(f"--factor {factor:g}")
    if case is not None:
        parts.append(f"--case {case}")
    return " ".join(parts)


def fd32_arguments(values: dict[str, float]) -> str:
    """`` --fd32`` and the --fd32-* options that differ from their defaults."""
    return " --fd32" + "".join(
        f" --fd32-{k} {v:g}" for k, v in values.items() if v != FD32_DEFAULTS[k]
    )


# Cases of at most this many work units (Op.work_units: elements, or attention's scores) get their
# references computed ahead, on threads (_check's loop): there the per-call overheads of JAX, not
# the arithmetic, take the time; larger ones would hold two cases' float64 temporaries at once.
PREFETCH_UNITS = 1 << 20


# The process at rest (Python, JAX, the compiled references) before any case's arrays.
BASE_BYTES = 1 << 30


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_memory(spec: Op, sizes: dict[str, int]) -> None:
    """Refuse, before anything runs, a check this machine cannot hold: the alternative is the
    kernel's out-of-memory killer ending the user's process midway."""
    need = BASE_BYTES + spec.memory_bytes(sizes)
    have = available_memory()
    if have is None or need <= have:
        return
    shown = ", ".join(f"{k}={v:,}" for k, v in sizes.items())
    raise UsageError(
        f"checking {spec.id} at {shown} needs about {need / 2**30:.0f} GiB of memory here, and "
        f"{have / 2**30:.0f} GiB are available. {spec.smaller}"
    )


def _case_checks(
    spec: Op,
    c: Case,
    block: int,
    run: CaseRun,
    ref64: Arrays,
    ref32: Arrays,
    floor: Arrays,
    factor: float,
    repro: str,
) -> tuple[list[Check], dict[str, Comparison]]:
    """compare (one per output), then the bitwise checks (schedules, alignment) of one case;
    and each output's worst comparison."""
    assert run.output is not None
    first = run.output
    worst: dict[str, tuple[str, np.ndarray, Comparison]] = {}
    for o in spec.outputs:
        # Compare every run's output and keep the worst: a bug may show in one thread order only.
        # Runs bit-identical to the first are not compared again.
        compared = [
            (name, outs[o.name], compare_output(outs[o.name], ref64[o.name], ref32[o.name], floor[o.name], factor=factor))
            for k, (name, outs) in enumerate(run.outputs)
            if k == 0 or not np.array_equal(outs[o.name].view(np.uint32), first[o.name].view(np.uint32))
        ]  # fmt: skip
        worst[o.name] = max(compared, key=lambda t: (t[2].n_bad, t[2].max_ratio))
    noise = {name: w[2].noise * factor for name, w in worst.items()}
    bitwise = [
        b
        for kind in BITWISE
        if (b := _bitwise_check(kind, spec, c, block, run, ref64, noise, repro)) is not None
    ]
    extra: list[Pattern] = []
    for b in bitwise:
        if b.verdict != "pass":
            label = BITWISE[b.name][0]
            extra.append(Pattern((label,), f"{label}: see the {b.name} check"))
            break
    variants: list[Variant] | None = None
    out: list[Check] = []
    for o in spec.outputs:
        run_name, output, cmp = worst[o.name]
        found: list[Pattern] = []
        if cmp.n_bad:
            if variants is None:
                variants = spec.variants(c)
            found = matching_variants(variants, o.name, output, cmp.noise * factor)
        causes = [(f"variant:{v.key}", v.cause) for v in variants or ()]
        out.append(
            _compare_check(
                spec,
                c,
                block,
                o.name,
                output,
                ref64[o.name],
                cmp,
                repro,
                run_name,
                [*found, *extra],
                causes,
            )
        )
    return out + bitwise, {name: w[2] for name, w in worst.items()}


def _once_note(spec: Op, c: Case, blocks: int, cases: Sequence[Case]) -> str:
    """What a case that runs once says about it: what was repeated where (the sampled cases and
    their sample), and why that holds."""
    if not c.run_once:
        return ""
    compared = f", compared in {blocks} blocks of {spec.stream_unit}" if blocks else ""
    samples: dict[str, list[str]] = {}
    for other in cases:
        if (sample := sample_of(other.description)) is not None:
            samples.setdefault(sample, []).append(other.name)
    where = "; ".join(f"{', '.join(names)} on {sample}" for sample, names in samples.items())
    return (
        f"; the whole problem, run once on every core{compared}. The thread orders, the other "
        f"alignment and the race check repeat on the sampled cases ({where or 'none'}): all "
        f"{spec.stream_unit} run the same code, so an order, alignment or race bug shows there "
        "as here"
    )


def _sample_note(sample: BlockSample | None) -> str:
    """What a case whose repeats ran on a sample of its blocks says about it, and why that holds."""
    return "" if sample is None else "; " + repeat_note(sample.text, sample.unit)


def _streamed_checks(
    spec: Op,
    c: Case,
    block: int,
    run: CaseRun,
    merged: dict[str, Comparison],
    ev: Block,
    totals: Arrays,
    factor: float,
    repro: str,
) -> tuple[list[Check], dict[str, Comparison]]:
    """The compare checks of a case compared a block of rows at a time (it ran once: no bitwise
    checks). Counts and the map of wrong elements cover every row; the wrong formulas and value
    patterns are read off the block holding the worst element, those of a summed output off the
    whole of it (``totals``: its float64 reference)."""
    assert run.output is not None
    run_name = run.outputs[0][0] if run.outputs else ""
    variants: list[Variant] | None = None
    out: list[Check] = []
    for o in spec.outputs:
        cmp = merged[o.name]
        found: list[Pattern] = []
        if cmp.n_bad and o.name in totals:
            found = value_patterns(
                cmp.bad, run.output[o.name], totals[o.name], cmp.unwritten, spec, c, o.name
            )
        elif cmp.n_bad:
            bc = ev.comparisons[o.name]
            if variants is None:
                variants = spec.variants(ev.case)
            seen = [
                *matching_variants(variants, o.name, ev.output[o.name], bc.noise * factor),
                *value_patterns(
                    bc.bad, ev.output[o.name], ev.ref64[o.name], bc.unwritten, spec, ev.case, o.name
                ),
            ]
            found = [Pattern(p.keys, f"{p.text} (in {ev.rows_text})") for p in seen]
        causes = [(f"variant:{v.key}", v.cause) for v in variants or ()]
        out.append(
            _compare_check(
                spec,
                c,
                block,
                o.name,
                run.output[o.name],
                None,
                cmp,
                repro,
                run_name,
                found,
                causes,
            )
        )
    return out, merged


def _sizes(spec: Op, given: dict[str, Any]) -> tuple[dict[str, int], dict[str, Any]]:
    """Split keywords into the op's sizes and options, each checked, defaults filled in."""
    known = {d.name: d for d in spec.dims}
    opts = {o.name: o for o in spec.options}
    sizes = {d.name: d.default for d in spec.dims}
    options: dict[str, Any] = {o.name: o.default for o in spec.options}
    for name, value in given.items():
        if name in opts:
            o = opts[name]
            if o.kind == "flag":
                if not isinstance(value, (bool, np.bool_)):
                    raise UsageError(f"{name}={value!r} must be True or False.")
                options[name] = bool(value)
            else:
                options[name] = _positive_float(name, value)
            continue
        if name not in known:
            names = [*known, *opts]
            close = suggest(name, names)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UsageError(
                f"{spec.id} has no dimension or option {name!r}.{hint} "
                f"Its dimensions: {', '.join(known)}"
                + (f"; options: {', '.join(opts)}." if opts else ".")
            )
        sizes[name] = _positive_int(name, value, known[name].maximum)
    return sizes, options


def _heatmap(bad: np.ndarray, block: int, axis: str) -> tuple[str, ...]:
    if bad.ndim < 2:
        return ()
    return (f"where errors fall (rows down, {axis} across):", *heatmap(bad, block=block))


def _compare_check(
    spec: Op,
    c: Case,
    block: int,
    output: str,
    out: np.ndarray,
    ref64: np.ndarray | None,
    cmp: Comparison,
    repro: str,
    run_name: str = "",
    extra: Sequence[Pattern] = (),
    causes: Sequence[tuple[str, str]] = (),
) -> Check:
    axis = spec.output(output).axes[-1]
    numbers: dict[str, Any] = {
        "elements": cmp.n,
        "beyond_bound": cmp.n_bad,
        "unwritten": cmp.n_unwritten,
        "nonfinite": cmp.n_nonfinite,
        "max_ratio": cmp.max_ratio,
        "factor": cmp.factor,
        "worst_index": list(cmp.worst),
        "worst_kernel": cmp.worst_kernel,
        "worst_reference": cmp.worst_ref,
        "worst_bound": cmp.worst_bound,
        "reference_f32_ratio": cmp.ref32_ratio,
        "detectable_rel_error": cmp.detectable_rel,
        "power_share": cmp.power_share,
        "run": run_name,
    }
    if cmp.n_bad:
        where = [
            *describe(
                cmp.bad,
                out,
                out if ref64 is None else ref64,
                cmp.unwritten,
                op=spec,
                case=c,
                block=block,
                output=output,
                values=ref64 is not None,  # else the caller read them off a block of rows
            ),
            *extra,
        ]
        # A named wrong formula first: it is the strongest evidence.
        where.sort(key=lambda p: not any(k.startswith("variant:") for k in p.keys))
        rel = (
            abs(cmp.worst_kernel - cmp.worst_ref) / abs(cmp.worst_ref)
            if cmp.worst_ref
            else float("inf")
        )
        worst = f"[{', '.join(map(str, cmp.worst))}]"
        err = (
            "never written"
            if cmp.unwritten[cmp.worst]
            else (
                f"max rel err {rel:.2g}"
                if np.isfinite(rel)
                else f"kernel {cmp.worst_kernel:.3g} where the reference is {cmp.worst_ref:.3g}"
            )
        )
        return Check(
            name="compare",
            case=c.name,
            output=output,
            verdict="kernel-bug",
            summary=(
                f"{cmp.n_bad:,} of {cmp.n:,} elements of {output} beyond the noise bound "
                f"({err} at {worst}; bound {cmp.worst_bound:.2g})"
            ),
            numbers=numbers,
            where=tuple(texts(where)),
            heatmap=_heatmap(cmp.bad, block, axis),
            likely_cause=likely_cause(keys(where), axis, [*causes, *spec.causes]),
            reproduce=repro,
        )
    power = (
        f"would see a relative error of {cmp.detectable_rel:.1e} (median element)"
        if cmp.n_exact < cmp.n
        else "every element must be exactly zero: checked to within 1e-37"
    )
    if not cmp.has_power:
        return Check(
            name="compare",
            case=c.name,
            output=output,
            verdict="inconclusive",
            summary=(
                f"{output}: no power: the bound ({cmp.factor:g}x the noise) would miss a "
                f"{POWER_ERROR:.0%} error on elements carrying {1 - cmp.power_share:.0%} of the "
                "gradient's magnitude; a pass here would prove nothing"
            ),
            numbers=numbers,
            likely_cause=(
                f"the tolerance factor is above the signal; lower --factor (default {DEFAULT_FACTOR:g})"
                if cmp.factor > DEFAULT_FACTOR
                else f"{output} is at float32's rounding level in this case (its terms cancel), so "
                "no float32 kernel can be held to 1% here; larger sizes or other inputs decide"
            ),
            reproduce=repro,
        )
    return Check(
        name="compare",
        case=c.name,
        output=output,
        verdict="pass",
        summary=(
            f"{output}: max error {cmp.max_ratio:.2g}x the noise bound (allowed {cmp.factor:g}x); "
            f"float32 reference {cmp.ref32_ratio:.2g}x the rounding floor; {power}"
        ),
        numbers=numbers,
        reproduce=repro,
    )


def _abs_difference(base: np.ndarray, others: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(elements whose bits differ from ``base`` in any of ``others``, the largest |difference|)."""
    bits = np.zeros(base.shape, bool)
    diff = np.zeros(base.shape, np.float64)
    for other in others:
        differ = base.view(np.uint32) != other.view(np.uint32)
        if differ.any():
            bits |= differ
            with np.errstate(invalid="ignore", over="ignore"):
                d = np.abs(base.astype(np.float64) - other.astype(np.float64))
            diff = np.maximum(diff, np.where(np.isnan(d), np.inf, d))
    return bits, diff


def _bitwise_check(
    kind: str,
    spec: Op,
    c: Case,
    block: int,
    run: CaseRun,
    ref64: Arrays,
    bound: Arrays,
    repro: str,
) -> Check | None:
    """Runs that should agree bit for bit: thread orders ("schedules") or buffer alignments.

    Outputs that start at zero are accumulated, usually with float atomics, whose order (and so
    whose last bits) may change with the thread order: there, differences within the noise bound
    are rounding, not a race; only larger ones count."""
    label, changed = BITWISE[kind]
    others = run.runs(kind)
    base = run.base
    if not others or base is None:
        return None
    if kind == "schedules":
        same = f"under {len(run.schedules)} thread orders ({', '.join(run.schedules)})"
        changed = changed.format(orders=", ".join(run.schedules))
    else:
        same = "with the buffers at another alignment (page-aligned start)"
    if run.sample:
        same += f", on {run.sample}"
    n_real = n_rounding = n_total = 0
    max_diff = 0.0
    first_bad: tuple[str, np.ndarray] | None = None
    per_output: dict[str, int] = {}
    for o in spec.outputs:
        bits, diff = _abs_difference(base[o.name], [r[o.name] for r in others])
        rounding = bits & (diff <= bound[o.name]) if o.init == "zero" else np.zeros_like(bits)
        real = bits & ~rounding
        n_total += bits.size
        n_rounding += int(np.count_nonzero(rounding))
        n = int(np.count_nonzero(real))
        per_output[o.name] = n
        if n:
            n_real += n
            max_diff = max(max_diff, float(np.max(diff[real])))
            if first_bad is None:
                first_bad = (o.name, real)
    numbers: dict[str, Any] = {
        "differing": n_real,
        "max_difference": max_diff,
        "within_rounding": n_rounding,
        "by_output": per_output,
    }
    if kind == "schedules":
        numbers["schedules"] = list(run.schedules)
    if run.sample:
        numbers["repeated_on"] = run.sample
    if first_bad is None:
        text = f"bitwise identical {same}"
        if n_rounding:
            text = (
                f"identical {same}, but for {n_rounding:,} accumulated elements that differ within "
                "the noise bound (float atomics add in another order: rounding, not a race)"
            )
        return Check(kind, c.name, "pass", text, numbers)
    name, real = first_bad
    no_poison = np.zeros(real.shape, bool)
    out = base[name]
    where = describe(
        real, out, ref64[name], no_poison, op=spec, case=c, block=block, output=name, values=False
    )
    where_all = ", ".join(f"{n:,} of {name2}" for name2, n in per_output.items() if n)
    axis = spec.output(name).axes[-1]
    return Check(
        name=kind,
        case=c.name,
        output=name,
        verdict="kernel-bug",
        summary=f"{label} output: {n_real:,} of {n_total:,} elements {changed} ({where_all}; max difference {max_diff:.3g})"
        + (f", on {run.sample}" if run.sample else ""),
        numbers=numbers,
        where=tuple(texts(where)),
        heatmap=_heatmap(real, block, axis),
        likely_cause=likely_cause([label], axis, spec.causes),
        reproduce=repro,
    )


def _fault_check(
    spec: Op, c: Case, block: int, fault: KernelFault, repro: str, sample: str = ""
) -> Check:
    """A launch that failed; ``sample``: the blocks it ran, when it ran a sample of them."""
    axis = spec.primary.axes[-1]
    where: list[str] = []
    if isinstance(fault, DataRace):
        what = f"{fault.arg_name or 'argument'}[{fault.element}]"
        if fault.scope == "shared":
            what = f"shared {fault.shared_array or 'memory'} at byte {fault.offset_bytes}"
        apart = "in different blocks" if not fault.same_block else "in one block, unordered"
        where.append(
            f"{what}: written by block {fault.other_block} thread {fault.other_thread}, then with "
            f"another value by block {fault.block} thread {fault.thread} ({apart}); "
            f"{fault.n_elements:,} elements raced"
        )
    elif fault.block is not None and fault.thread is not None:
        where.append(f"block {fault.block}, thread {fault.thread}")
        extent = c.dims.get(axis)
        if extent is not None and extent < block and fault.thread[0] >= extent:
            where.append(
                f"threadIdx.x = {fault.thread[0]} >= {axis} = {extent} (< blockDim.x = {block}): "
                f"the kernel assumes {axis} >= blockDim.x"
            )
    numbers: dict[str, Any] = {"fault": fault.kind}
    if isinstance(fault, OutOfBounds):
        numbers.update(
            argument=fault.arg_name, access=fault.access, offset_bytes=fault.offset_bytes
        )
    for attr in ("arg_name", "element", "n_elements", "other_block", "other_thread", "scope"):
        value = getattr(fault, attr, None)
        if value is not None and attr not in numbers:
            numbers[attr] = list(value) if isinstance(value, tuple) else value
    if sample:
        where.append(f"found running {sample}")
        numbers["repeated_on"] = sample
    if fault.block is not None:
        numbers["block"] = list(fault.block)
    if fault.thread is not None:
        numbers["thread"] = list(fault.thread)
    first = str(fault).strip().splitlines()[0] if str(fault).strip() else fault.kind
    return Check(
        name="fault",
        case=c.name,
        verdict="kernel-bug",
        summary=f"{fault.kind}: {first}",
        numbers=numbers,
        where=tuple(where),
        likely_cause=likely_cause([fault.kind], axis, spec.causes),
        reproduce=repro,
    )


def _reference_fd_check(
    spec: Op,
    c: Case,
    ref64: Arrays,
    out: Arrays,
    seed: int,
    repro: str,
    scope: str = "",
    diff: Difference | None = None,
    outputs: Sequence[str] | None = None,
) -> Check:
    """FD of the float64 reference along a random direction (``scope``: the rows it spans,
    when the case is too large for the whole of it; ``outputs``: the outputs whose inputs it
    moves, default all)."""
    d = directional(spec, c, ref64, out, seed, diff, outputs)
    kernel_bars = abs(d.kernel - d.fd) / d.error_bar if d.error_bar else float("inf")
    numbers = {
        "fd": d.fd,
        "error_bar": d.error_bar,
        "autodiff": d.autodiff,
        "kernel": d.kernel,
        "steps": list(d.steps),
        "kernel_minus_fd_in_error_bars": kernel_bars,
    }
    along = f"a random direction in {scope}" if scope else "a random direction"
    text = (
        f"FD of the float64 loss along {along}: {d.fd:.10g} +/- {d.error_bar:.1g}; "
        f"autodiff {d.autodiff:.10g}; kernel {d.kernel:.10g}"
    )
    if d.agrees:
        return Check("reference-fd", c.name, "pass", text, numbers)
    return Check(
        "reference-fd",
        c.name,
        "inconclusive",
        text + ": the reference disagrees with finite differences of itself",
        numbers,
        likely_cause="the reference cannot be trusted at these inputs; please report it",
        reproduce=repro,
    )


def _fd32_check(c: Case, fd: NaiveFD32, repro: str, scope: str = "") -> Check:
    numbers: dict[str, Any] = {
        "eps": fd.eps,
        "rtol": fd.rtol,
        "atol": fd.atol,
        "checked": fd.n,
        "failed": fd.n_failed,
        "explained_by_fd_error": fd.n_noise,
        "max_fd_rounding": float(np.max(np.abs(fd.rounding))) if fd.n else 0.0,
        "predicted_rounding": fd.predicted_rounding,
        "max_fd_step_error": float(np.max(np.abs(fd.step))) if fd.n else 0.0,
        "max_fd_truncation": float(np.max(np.abs(fd.truncation))) if fd.n else 0.0,
        "loss": fd.loss,
        "power_share_20pct": fd.power_share,
    }
    tol = f"eps {fd.eps:g}, rtol {fd.rtol:g}, atol {fd.atol:g}" + (
        f"; the loss of {scope} only" if scope else ""
    )
    parts = (
        f"FD rounding up to {numbers['max_fd_rounding']:.2g} (model eps32*|loss|/eps = "
        f"{fd.predicted_rounding:.2g}), step {numbers['max_fd_step_error']:.2g}, "
        f"truncation {numbers['max_fd_truncation']:.2g}"
    )
    if fd.n_failed == 0:
        if fd.power_share < 0.5:
            return Check(
                "fd32", c.name, "inconclusive",
                f"0 of {fd.n} elements fail ({tol}), but the check could see a "
                f"{FD32_POWER_ERROR:.0%} error on only {fd.power_share:.0%} of them: no power",
                numbers,
                likely_cause="the tolerance is above the gradient's size: this pass proves nothing",
                reproduce=repro,
            )  # fmt: skip
        return Check("fd32", c.name, "pass", f"0 of {fd.n} elements fail ({tol}); {parts}", numbers)
    if fd.n_noise == fd.n_failed:
        return Check(
            "fd32", c.name, "fd-noise",
            f"{fd.n_failed} of {fd.n} elements 'fail' ({tol}); all {fd.n_failed} are "
            f"finite-difference error, not the kernel: {parts}; the kernel is within its "
            "noise bound at every one",
            numbers,
            likely_cause="float32 finite differences cannot resolve this gradient; "
            "DIAGNOSTIC_GUIDE.md#fd-noise",
            reproduce=repro,
        )  # fmt: skip
    return Check(
        "fd32", c.name, "kernel-bug",
        f"{fd.n_failed} of {fd.n} elements fail ({tol}); {fd.n_failed - fd.n_noise} at elements "
        f"where the kernel is beyond its noise bound; {parts}",
        numbers,
        likely_cause="the kernel, not the finite differences (see the compare check)",
        reproduce=repro,
    )  # fmt: skip


__all__ = ["KernelRef", "check"]
