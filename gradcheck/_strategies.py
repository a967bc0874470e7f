"""Hypothesis strategies for gradcheck.check's keywords, biased to the shapes where kernels break.

The public names are re-exported by ``gradcheck.strategies``; see its docstring for examples.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ._errors import UsageError, suggest
from .ops import Op, get_op

PROFILE = "gradcheck-ci"
BLOCKS = (32, 64, 96, 128, 256, 512, 1024)
MAX_SEED = 2**16
# Sizes that break kernels whatever the block: primes just below powers of two (no vectorised
# loop divides them), sizes just above 1024 (the largest block: every kernel must loop), and
# GPT-2's vocab (an odd tail at a real size).
PRIMES = (2, 3, 5, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521)
ABOVE_1024 = (1025, 1027, 4099, 50257)
# Values of the ops' float options: eps of PyTorch (1e-5), T5 (1e-6), BERT (1e-12), and a large one.
OPTION_VALUES: dict[str, tuple[float, ...]] = {"eps": (1e-5, 1e-6, 1e-12, 1e-3)}


def _rows_cost(d: Mapping[str, int]) -> int:
    return math.prod(d.values())


def _attention_cost(d: Mapping[str, int]) -> int:
    # The reference holds the batch x heads x seq x seq scores; q, k, v ... are seq x head_dim.
    return d["batch"] * d["heads"] * d["seq"] * max(d["seq"], d["head_dim"])


@dataclass(frozen=True)
class Plan:
    """How to draw one op's sizes: which size to bias to the block, the others' ranges, a budget."""

    along: str  # the size threads stride over (vocab, hidden, seq): biased to the block size
    others: Mapping[str, int | tuple[int, ...]]  # the other sizes: an upper bound, or the values
    blocks: tuple[int, ...]  # the blocks drawn unless blocks= says otherwise
    max_elements: int  # the default budget: elements of the largest array the check holds
    cost: Callable[[Mapping[str, int]], int] = _rows_cost


# Budgets keep the check of a drawn example short on the cpu backend. Measured on 2 cores, kernels
# compiled, 10 derandomized checks(op, case=None) examples each: median 0.85 s (max 1.4) for
# loss-ce, 1.5 s (2.1) for layernorm-bwd, 3.6 s (5.6) for attention-bwd. Most of it is the suite's
# own cases and the first JAX trace at each new shape, not the drawn size: attention-bwd's suite
# adds seq = block - 1, block, block + 1 itself, so its blocks stop at 128 by default.
PLANS: dict[str, Plan] = {
    "loss-ce": Plan("vocab", {"rows": 8}, BLOCKS, 1 << 16),
    "layernorm-bwd": Plan("hidden", {"rows": 8}, BLOCKS, 1 << 15),
    "attention-bwd": Plan(
        "seq",
        {"head_dim": (1, 3, 8, 15, 16, 32, 61, 64, 96, 128), "batch": 2, "heads": 2},
        (32, 64, 96, 128),
        1 << 15,
        _attention_cost,
    ),
}


def _plan(spec: Op) -> Plan:
    """The op's plan; an op without one strides over the last axis of its first output."""
    if spec.id in PLANS:
        return PLANS[spec.id]
    names = [d.name for d in spec.dims]
    along = spec.primary.axes[-1] if spec.primary.axes[-1] in names else names[-1]
    return Plan(along, {n: 4 for n in names if n != along}, BLOCKS, 1 << 15)


def _largest(fits: Callable[[int], bool], hi: int) -> int:
    """The largest n in [1, hi] with fits(n) (fits is monotone); 1 when none fits."""
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _along_values(block: int, cap: int) -> tuple[list[int], list[int]]:
    """(sizes at the block's edges, other sizes that break kernels), each at most ``cap``."""
    edges = [block - 1, block, block + 1, 2 * block + 1]
    powers = [1 << k for k in range(cap.bit_length())]
    breaking = {1, 3, block // 2 + 1, 4 * block + 3, *powers, *PRIMES, *ABOVE_1024}
    return sorted({n for n in edges if 1 <= n <= cap}), sorted(n for n in breaking if 1 <= n <= cap)


class _Fixed:
    """The keywords a caller fixed: plain values, or strategies to draw them from."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)

    def has(self, name: str) -> bool:
        return name in self.values

    def draw(self, draw: st.DrawFn, name: str, default: SearchStrategy[Any]) -> Any:
        value = self.values.get(name, default)
        return draw(value) if isinstance(value, SearchStrategy) else value


def _check_names(spec: Op, fixed: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for name in fixed:
        if name not in allowed:
            close = suggest(name, allowed)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            others = "" if where == "sizes" else " and the other keywords of gradcheck.check"
            raise UsageError(
                f"{where}({spec.id!r}, {name}={fixed[name]!r}): {spec.id} has no such keyword."
                f"{hint} {where}() takes its sizes, options and block "
                f"({', '.join(_size_names(spec))}){others}."
            )


def _size_names(spec: Op) -> list[str]:
    return [*(d.name for d in spec.dims), *(o.name for o in spec.options), "block"]


def _check_keywords() -> list[str]:
    from ._check import check

    params = inspect.signature(check).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY]


@st.composite
def _draw_sizes(
    draw: st.DrawFn, spec: Op, plan: Plan, blocks: tuple[int, ...], budget: int, fixed: _Fixed
) -> dict[str, Any]:
    dims = {d.name: d for d in spec.dims}
    out: dict[str, Any] = {"block": fixed.draw(draw, "block", st.sampled_from(blocks))}
    drawn: dict[str, int] = {}

    def fits(name: str) -> Callable[[int], bool]:
        """Does ``name = n`` keep the problem in budget, with the sizes not yet drawn at 1?"""
        return lambda n: plan.cost({**{d: 1 for d in dims}, **drawn, name: n}) <= budget

    for name in [plan.along, *(n for n in plan.others if n != plan.along), *dims]:
        if name in drawn:
            continue
        maximum = dims[name].maximum
        if name == plan.along:
            cap = _largest(fits(name), maximum)
            edges, breaking = _along_values(int(out["block"]), cap)
            choices = [st.sampled_from(v) for v in (edges, breaking) if v]
            default: SearchStrategy[int] = st.one_of(*choices, st.integers(1, cap))
        else:
            spread = plan.others.get(name, 4)
            if isinstance(spread, tuple):
                values = [v for v in spread if v <= maximum and fits(name)(v)] or [min(spread)]
                default = st.sampled_from(values)
            else:
                default = st.integers(1, _largest(fits(name), min(spread, maximum)))
        drawn[name] = fixed.draw(draw, name, default)
    out = {**{d: drawn[d] for d in dims}, **out}
    for o in spec.options:
        if o.kind == "flag":
            default_o: SearchStrategy[Any] = st.booleans()
        else:
            values_o = OPTION_VALUES.get(o.name, ())
            default_o = st.sampled_from([o.default, *(v for v in values_o if v != o.default)])
        out[o.name] = fixed.draw(draw, o.name, default_o)
    return out


def sizes(
    op: str,
    *,
    blocks: Sequence[int] | None = None,
    max_elements: int | None = None,
    **fixed: Any,
) -> SearchStrategy[dict[str, Any]]:
    """A strategy for an op's sizes, ``block`` and options: keywords for ``gradcheck.check``.

    The size the kernel's threads stride over (loss-ce ``vocab``, layernorm-bwd ``hidden``,
    attention-bwd ``seq``) is drawn from block - 1, block, block + 1 and 2 * block + 1, from
    other sizes that break kernels (1, 3, block / 2 + 1, 4 * block + 3: a % 4 tail, powers of
    two, primes, sizes above 1024, 50257), or as any whole number; the other sizes are small
    (rows up to 8; attention-bwd: batch and heads up to 2, head_dim from 1, 3, 8, 15, 16, 32,
    61, 64, 96, 128); options are drawn too (``causal``; ``eps`` from 1e-5, 1e-6, 1e-12, 1e-3).

    ``blocks``: the block sizes to draw (default: 32 to 1024; attention-bwd: up to 128, since its
    suite adds seq around the block itself). ``max_elements``: the largest array of a drawn
    problem (attention-bwd: its batch * heads * seq^2 scores), by default sized so that a check
    of a drawn example takes about a second on the cpu backend (measured medians on 2 cores:
    loss-ce 0.85 s, layernorm-bwd 1.5 s, attention-bwd 3.6 s, most of it the suite's own cases
    and JAX's first trace at each new shape). ``fixed`` keywords override a drawn value,
    with a plain value or a strategy; a fixed value is not held to ``max_elements``.

    >>> from hypothesis import given
    >>> import gradcheck
    >>> from gradcheck.strategies import sizes
    >>> @given(sizes("loss-ce", blocks=[256], rows=4))
    ... def test_ce_grad(kw):
    ...     gradcheck.check("loss-ce", "ce-grad", backend="cpu", **kw).raise_for_verdict()
    >>> sizes("loss-ce", rows=4).example()["rows"]  # doctest: +SKIP
    4
    """
    spec = get_op(op)
    plan = _plan(spec)
    _check_names(spec, fixed, _size_names(spec), "sizes")
    chosen = tuple(plan.blocks if blocks is None else blocks)
    if not chosen:
        raise UsageError("blocks=() is empty: give at least one block size, e.g. blocks=[256].")
    for b in chosen:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 1024:
            raise UsageError(f"blocks contains {b!r}: a block size is a whole number in 1..1024.")
    budget = plan.max_elements if max_elements is None else max_elements
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UsageError(f"max_elements={budget!r} must be a whole number >= 1.")
    return _draw_sizes(spec, plan, chosen, budget, _Fixed(fixed))


def checks(
    op: str,
    *,
    blocks: Sequence[int] | None = None,
    max_elements: int | None = None,
    **fixed: Any,
) -> SearchStrategy[dict[str, Any]]:
    """``sizes(op)`` plus a ``seed`` and a ``case``: everything ``gradcheck.check`` needs but the
    kernel.

    ``case`` is ``None`` (the whole input suite: what failing examples shrink to) or one of the
    suite's input distributions at the drawn sizes (``distributions``): loss-ce's plain, masked,
    large-logits ...; layernorm-bwd's large-activations, near-constant ...; attention-bwd's
    saturated, large-scores and the other mask mode. Pass ``case=None`` to run the whole suite on
    every example. ``fixed`` keywords (plain values or strategies) override drawn ones, and any
    other keyword of ``gradcheck.check`` (``function``, ``defines``, ``factor`` ...) rides along.

    >>> from hypothesis import given, settings
    >>> import gradcheck
    >>> from gradcheck.strategies import checks
    >>> @settings(max_examples=5, deadline=None)
    ... @given(checks("layernorm-bwd", case=None))
    ... def test_my_layernorm(kw):
    ...     report = gradcheck.check("layernorm-bwd", "ln-bwd", backend="cpu", **kw)
    ...     assert report.verdict == "pass", str(report)
    """
    spec = get_op(op)
    names = _size_names(spec)
    _check_names(spec, fixed, [*names, *(k for k in _check_keywords() if k not in names)], "checks")
    size_fixed = {k: v for k, v in fixed.items() if k in names}
    rest = {k: v for k, v in fixed.items() if k not in names}
    base = sizes(op, blocks=blocks, max_elements=max_elements, **size_fixed)

    @st.composite
    def draw_check(draw: st.DrawFn) -> dict[str, Any]:
        out = draw(base)
        f = _Fixed(rest)
        out["seed"] = f.draw(draw, "seed", st.integers(0, MAX_SEED))
        if f.has("case"):
            out["case"] = f.draw(draw, "case", st.none())
        else:
            out["case"] = draw(st.sampled_from((None, *distributions(op, **out))))
        out.update({k: f.draw(draw, k, st.none()) for k in rest if k not in ("seed", "case")})
        return out

    return draw_check()


def distributions(op: str, **sizes_and_options: Any) -> tuple[str, ...]:
    """The names of the op's input distributions at these sizes: the suite's cases that are not
    one of its own size probes (``vocab=257``, ``seq=1`` ...).

    >>> from gradcheck.strategies import distributions
    >>> distributions("loss-ce", rows=4, vocab=50)
    ('plain', 'masked', 'all-masked', 'large-logits', 'edge-targets')
    >>> distributions("loss-ce", rows=1, vocab=50)
    ('plain', 'all-masked', 'large-logits', 'edge-targets')
    """
    spec = get_op(op)
    dims = {d.name: d.default for d in spec.dims}
    given = {k: v for k, v in sizes_and_options.items() if k in dims}
    dims.update(given)
    # Which distributions a suite holds depends on whether a size is 1 or more (one row cannot
    # be masked against another) and on the flags (attention-bwd's other mask mode), never on how
    # large a size is: build the suite at sizes clipped to 2, which is cheap.
    clipped = tuple(min(int(v), 2) for v in dims.values())
    flags = tuple(
        bool(sizes_and_options.get(o.name, o.default)) for o in spec.options if o.kind == "flag"
    )
    return _distributions(op, clipped, flags)


@functools.cache
def _distributions(op: str, clipped: tuple[int, ...], flags: tuple[bool, ...]) -> tuple[str, ...]:
    spec = get_op(op)
    dims = dict(zip((d.name for d in spec.dims), clipped, strict=True))
    flag_names = [o.name for o in spec.options if o.kind == "flag"]
    options: dict[str, Any] = {o.name: o.default for o in spec.options}
    options.update(zip(flag_names, flags, strict=True))
    cases = spec.cases(dims, 1, 0, options)
    return tuple(c.name for c in cases if "=" not in c.name)


def reproduce(op: str, kernel: object = None, **example: Any) -> str:
    """The ``gradcheck run`` command line that checks ``example`` as ``gradcheck.check(op,
    kernel, **example)`` does: a drawn example before it runs (a Report has its own,
    ``report.reproduce``; this is the same line, plus ``--case`` when one case was drawn).

    >>> from gradcheck.strategies import reproduce
    >>> reproduce("loss-ce", "sign-flipped", rows=4, vocab=50, block=256, seed=3, case="plain")
    'gradcheck run loss-ce --rows 4 --vocab 50 --block 256 --seed 3 --kernel sign-flipped --case plain'
    """
    from ._check import FD32_DEFAULTS, _sizes, command_line, fd32_arguments
    from ._runner import resolve_kernel
    from .compare import DEFAULT_FACTOR

    spec = get_op(op)
    kw = dict(example)
    _check_names(spec, kw, [*_size_names(spec), *_check_keywords()], "reproduce")
    case = kw.pop("case", None)
    function = kw.pop("function", None)
    block = kw.pop("block", None) or spec.default_block
    grid, seed, backend = kw.pop("grid", None), kw.pop("seed", 0), kw.pop("backend", None)
    shared_bytes = kw.pop("shared_bytes", 0)
    defines, include_dirs = kw.pop("defines", ()), kw.pop("include_dirs", ())
    no_extern_c, factor = kw.pop("no_extern_c", None), kw.pop("factor", DEFAULT_FACTOR)
    extra = {k: kw.pop(k) for k in list(kw) if k not in _size_names(spec)}
    dims, options = _sizes(spec, kw)
    ref = resolve_kernel(spec, kernel, function)
    line = command_line(
        spec, ref, dims, options, block=block, grid=grid, seed=seed, backend=backend,
        shared_bytes=shared_bytes, defines=defines, include_dirs=include_dirs,
        no_extern_c=no_extern_c, factor=factor, case=case,
    )  # fmt: skip
    if extra.get("fd32"):
        line += fd32_arguments({k: extra.get(f"fd32_{k}", d) for k, d in FD32_DEFAULTS.items()})
    return line


def _register_profile() -> None:
    # CI runs must be repeatable and must not fail on timing: the first launch of each kernel
    # compiles it (seconds), and a check of a drawn example takes about a second.
    settings.register_profile(
        PROFILE,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )


_register_profile()
