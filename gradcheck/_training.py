"""diagnose_training: is the trouble the learning rate or the gradient? (FIELD_NOTES.md section 4)

On a few fixed batches it checks the gradient under test against the float64 reference gradient
(with a noise bound set by the float32 reference's own error), runs the Taylor and Armijo tests on
the float64 loss along it, and only when the gradient holds up looks at the learning rate: the
critical step along the optimizer's real update and the (preconditioned) sharpness from power
iteration on Hessian-vector products.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._errors import KernelFault, UsageError, suggest
from .results import _finite, _jsonable

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

Verdict = Literal["pass", "kernel-bug", "lr-problem", "inconclusive"]
SCHEMA = "gradcheck.training"
SCHEMA_VERSION = 1
GUIDE = "DIAGNOSTIC_GUIDE.md#lr-or-gradient"

U32 = 2.0**-24  # unit roundoff of float32
EPS64 = 2.0**-52  # machine epsilon of float64

# The gradient under test may be this many times as far from the float64 reference as the
# float32 reference is (or as the floor below). Calibrated on correct float32 gradients written
# out in numpy in other orders (reversed rows, chunks of 5-7 rows, one row at a time, einsum) for
# softmax regression and tanh / ReLU MLPs, batches of 8-1024 rows, 800 models x 4 orders: the
# largest ratio seen was 1.6, so 4 leaves room (FlashAttention uses 3 for backward passes,
# PyTorch's attention tests 5).
NOISE_FACTOR = 4.0
# The noise never counts as less than this relative error, so a float32 reference that happens
# to be exact (or merely luckier than a plain loop) does not make the bound tiny: the same
# calibration saw XLA's float32 gradient as close as 0.4 U32 while a correct row-by-row sum over
# 1,024 rows erred by 25 U32 (a sum over n rows errs like sqrt(n) U32).
NOISE_FLOOR = 16.0 * U32
# A kernel-bug whose error is below this, with r -> 1, may still be float32 accumulation over
# many more rows than the calibration's 1,024 (16,384 rows one at a time: 100 U32 = 6e-6): the
# report says so and how to tell (a smaller batch shrinks accumulation error, not a real bug).
PRECISION_SIZED = 1e-4

# The Taylor grid's largest step moves the parameters by 10% of their norm (of 1 when smaller):
# far enough for curvature to bend r(eta) away from 1, so the table shows where it does.
TAYLOR_TOP_STEP = 0.1
TAYLOR_POINTS = 12  # one point per decade of step length, as the field notes ask (about a dozen)
# Relative rounding noise of a float64 loss: the spread of L(theta) over 20 reorderings of the
# batch was at most 3 EPS64 on the test models (32-1,024 rows) and a 49k-parameter MLP; 64
# leaves a margin for longer sums.
LOSS_ROUNDING = 64.0 * EPS64
# A Taylor point counts when its expected loss change eta ||g||^2 is at least this many times
# the loss's rounding noise: r is then resolved to +-0.01.
TAYLOR_RESOLVE = 100.0
# |r - 1| within this reads as "r -> 1"; a wrong gradient sits at <g64, g> / ||g||^2 instead
# (0.5 for a 2x scale, about 0 or below for a sign flip), far outside it.
TAYLOR_TOLERANCE = 0.01

ARMIJO_C = 0.1  # sufficient decrease constant of the Armijo test (field notes)
ARMIJO_SMALLEST_STEP = 1e-8  # the test looks down to eta = 1e-8 / ||g||: a step of length 1e-8

# Critical step: from lr, up to 3 steps by a factor of 10 each way to bracket, then 4 bisections
# in log space (resolution 10^(1/16) = 1.15x): with the reference loss, 9 forward passes (< 10).
CRITICAL_FACTOR = 10.0
CRITICAL_EXPAND = 3
CRITICAL_BISECT = 4

# Power iteration counts as settled when its last two Rayleigh quotients agree to 1%.
POWER_TOLERANCE = 0.01

# Stability thresholds on lr * sharpness, by optimizer (field notes section 4): gradient descent
# with heavy-ball momentum beta is stable on a quadratic while lr * lambda_max(H) < 2 + 2 beta;
# Adam with b1 settles at lr * lambda_max(P^-1 H) = (2 + 2 b1) / (1 - b1) (38 at b1 = 0.9).
STABILITY: dict[str, Callable[[float], float]] = {
    "sgd": lambda momentum: 2.0 + 2.0 * momentum,
    "adam": lambda b1: (2.0 + 2.0 * b1) / (1.0 - b1),
}


# ---------------------------------------------------------------------------------------------
# Optimizers


def _check_unit(owner: str, name: str, value: float) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value < 1.0
    if not ok:
        raise UsageError(
            f"{owner}({name}={value!r}): {name} must be a number in [0, 1), "
            f"e.g. {owner}({name}=0.9)."
        )


@dataclass(frozen=True)
class SGD:
    """SGD with PyTorch's heavy-ball momentum: ``buf = momentum * buf + g; p -= lr * buf``.

    ``buf`` is the momentum buffer (a pytree like params) from your optimizer, optional: with it
    the critical step probes the real update ``-(momentum * buf + g)``, without it ``-g`` (the
    first step). It takes no part in ``==`` or ``repr``.
    """

    momentum: float = 0.0
    buf: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_unit("SGD", "momentum", self.momentum)

    def describe(self) -> str:
        if not self.momentum:
            return "sgd"
        state = ", buffer given" if self.buf is not None else ""
        return f"sgd (momentum {self.momentum:g}{state})"


@dataclass(frozen=True)
class Adam:
    """Adam; ``m`` and ``v`` are the optimizer's moment pytrees (like params) after ``step`` steps.

    Without ``m`` and ``v`` the update is Adam's first step (about ``-sign(g)``). The moments take
    no part in ``==`` or ``repr``.
    """

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    m: Any = field(default=None, repr=False, compare=False)
    v: Any = field(default=None, repr=False, compare=False)
    step: int = 0

    def __post_init__(self) -> None:
        _check_unit("Adam", "b1", self.b1)
        _check_unit("Adam", "b2", self.b2)
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            raise UsageError(f"Adam(eps={self.eps!r}): eps must be a positive number, e.g. 1e-8.")
        if not isinstance(self.step, (int, np.integer)) or isinstance(self.step, bool):
            raise UsageError(
                f"Adam(step={self.step!r}): step must be the number of steps taken, an int >= 0."
            )
        if self.step < 0:
            raise UsageError(f"Adam(step={self.step!r}): step counts steps taken, so >= 0.")
        if (self.m is None) != (self.v is None):
            given = "m" if self.m is not None else "v"
            raise UsageError(
                f"Adam got {given} without {'v' if given == 'm' else 'm'}: pass both moment "
                "pytrees (e.g. from your optimizer state) or neither (Adam's first step)."
            )

    def describe(self) -> str:
        state = f"moments after step {self.step}" if self.m is not None else "first step"
        return f"adam (b1 {self.b1:g}, b2 {self.b2:g}, eps {self.eps:g}, {state})"


OPTIMIZERS: dict[str, SGD | Adam] = {
    "sgd": SGD(),
    "momentum": SGD(momentum=0.9),
    "adam": Adam(),
}


def _resolve_optimizer(optimizer: object) -> SGD | Adam:
    if isinstance(optimizer, (SGD, Adam)):
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.strip().lower()
        if key in OPTIMIZERS:
            return OPTIMIZERS[key]
        close = suggest(key, OPTIMIZERS)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(
            f"optimizer={optimizer!r} is not one diagnose_training knows.{hint} Use one of "
            f"{', '.join(repr(k) for k in OPTIMIZERS)}, or SGD(momentum=...) / Adam(...) from "
            "gradcheck.training."
        )
    raise UsageError(
        f"optimizer={optimizer!r} ({type(optimizer).__name__}) is neither a name nor an optimizer: "
        "pass 'sgd', 'momentum', 'adam', or SGD(...) / Adam(...) from gradcheck.training."
    )


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class BatchResult:
    """The evidence from one batch. Gradient numbers compare g (under test) with g64 (float64)."""

    index: int
    verdict: Literal["pass", "kernel-bug", "inconclusive"]
    loss: float = math.nan  # float64 reference loss at params
    rel_error: float = math.nan  # ||g - g64|| / ||g64||
    ref_error: float = math.nan  # ||g32 - g64|| / ||g64||: the float32 reference's own error
    bound: float = math.nan  # NOISE_FACTOR * max(ref_error, NOISE_FLOOR)
    cosine: float = math.nan  # cos(g, g64)
    norm_ratio: float = math.nan  # ||g|| / ||g64||
    grad_norm: float = math.nan  # ||g||
    taylor: tuple[tuple[float, float | None], ...] = ()  # (eta, r); r None: below resolution
    r_limit: float = math.nan  # r at the smallest resolved eta
    r_flat: bool = False  # the three smallest resolved points agree within TAYLOR_TOLERANCE
    resolved_below: float = math.nan  # smallest eta resolved in float64 (nan: none)
    armijo_eta: float | None = None  # largest eta with sufficient decrease; None: none
    armijo_checked_to: float = math.nan  # the smallest eta the Armijo test looked at
    eta_c: float = math.nan  # critical step along the update (nan: not probed)
    eta_c_bound: Literal["", "above", "below"] = ""  # eta_c lies above / below the value given
    lr_over_eta_c: float = math.nan
    worst_leaf: str = ""  # the parameter array holding most of the error
    worst_leaf_share: float = math.nan
    fault: str = ""  # a KernelFault raised by grad_fn: "Kind: message"
    nonfinite: int = 0  # entries of g that are NaN or inf
    note: str = ""  # why the batch is inconclusive

    @property
    def ratio(self) -> float:
        """The gradient's error in units of the bound (> 1: kernel-bug)."""
        return self.rel_error / self.bound if self.bound > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "verdict": self.verdict,
            "loss": self.loss,
            "rel_error": self.rel_error,
            "ref_error": self.ref_error,
            "bound": self.bound,
            "ratio": self.ratio,
            "cosine": self.cosine,
            "norm_ratio": self.norm_ratio,
            "grad_norm": self.grad_norm,
            "taylor": [{"eta": e, "r": r} for e, r in self.taylor],
            "r_limit": self.r_limit,
            "r_flat": self.r_flat,
            "armijo_eta": self.armijo_eta,
            "armijo_checked_to": self.armijo_checked_to,
            "eta_c": self.eta_c,
            "eta_c_bound": self.eta_c_bound,
            "lr_over_eta_c": self.lr_over_eta_c,
            "worst_leaf": self.worst_leaf,
            "worst_leaf_share": self.worst_leaf_share,
            "fault": self.fault,
            "nonfinite": self.nonfinite,
            "note": self.note,
        }


@dataclass(frozen=True)
class TrainingReport:
    """What diagnose_training found: the verdict and the numbers behind it."""

    verdict: Verdict
    batches: tuple[BatchResult, ...]  # the batches checked (fewer than n_batches after a fault)
    n_batches: int  # the batches taken from ``batches``
    lr: float
    optimizer: str  # e.g. "sgd (momentum 0.9)"
    n_params: int
    lambda_max: float | None  # sharpness (preconditioned for Adam); None: not measured
    sharpness_batch: int  # the batch lambda_max was measured on
    sharpness: str  # "lambda_max(H)" or "lambda_max(P^-1 H)"
    threshold: float  # stability threshold on lr * lambda_max
    suggested_lr: float | None  # largest stable learning rate; None when the gradient is wrong
    update: str  # the direction the critical step probes, e.g. "-g"
    findings: tuple[str, ...]
    likely_cause: str
    power_iters: int
    power_settled: bool
    seed: int
    elapsed_s: float = 0.0

    @property
    def lr_lambda(self) -> float | None:
        """lr * lambda_max: stable below ``threshold``."""
        return None if self.lambda_max is None else self.lr * self.lambda_max

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "update": self.update,
            "n_params": self.n_params,
            "n_batches": self.n_batches,
            "lambda_max": self.lambda_max,
            "sharpness_batch": self.sharpness_batch,
            "sharpness": self.sharpness,
            "lr_lambda": self.lr_lambda,
            "threshold": self.threshold,
            "suggested_lr": self.suggested_lr,
            "power_iters": self.power_iters,
            "power_settled": self.power_settled,
            "seed": self.seed,
            "findings": list(self.findings),
            "likely_cause": self.likely_cause,
            "elapsed_s": round(self.elapsed_s, 3),
            "batches": [b.to_dict() for b in self.batches],
        }
        result: dict[str, Any] = _finite(out)
        return result

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_jsonable)

    def lines(self) -> list[str]:
        """The report as text lines: the verdict line first, then the evidence."""
        return _render(self)

    def __str__(self) -> str:
        return "\n".join(self.lines()) + "\n"

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        styles = {"pass": "green", "lr-problem": "yellow", "kernel-bug": "bold red"}
        first, *rest = self.lines()
        yield Text(first, style=styles.get(self.verdict, "yellow"))
        for line in rest:
            yield Text(line)


# ---------------------------------------------------------------------------------------------
# Pytrees as flat vectors, and the jitted reference functions


@dataclass(frozen=True)
class _Layout:
    """How a flat vector maps back onto the params pytree (hashable: a jit static argument)."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]

    def unflatten(self, x: Any) -> Any:
        import jax

        leaves, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            leaves.append(x[start : start + size].reshape(shape))
            start += size
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


@dataclass(frozen=True)
class _BatchSpec:
    """A batch split into array leaves (traced) and other leaves (static, hashed)."""

    treedef: Any
    static: tuple[tuple[int, Any], ...]  # (leaf position, value) of the non-array leaves
    n_leaves: int

    def rebuild(self, arrays: tuple[Any, ...]) -> Any:
        import jax

        fixed = dict(self.static)
        it = iter(arrays)
        leaves = [fixed[i] if i in fixed else next(it) for i in range(self.n_leaves)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def _is_array(leaf: object) -> bool:
    return isinstance(leaf, np.ndarray | np.generic) or type(leaf).__module__.startswith("jax")


def _split_batch(batch: object, index: int) -> tuple[_BatchSpec, list[Any]]:
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(batch)
    static = tuple((i, leaf) for i, leaf in enumerate(leaves) if not _is_array(leaf))
    for i, leaf in static:
        try:
            hash(leaf)
        except TypeError:
            raise UsageError(
                f"batch {index} holds a {type(leaf).__name__} at leaf {i} that is neither an "
                "array nor hashable: batches are pytrees of arrays (numpy or JAX) and hashable "
                "constants; convert it with np.asarray."
            ) from None
    arrays = [leaf for leaf in leaves if _is_array(leaf)]
    return _BatchSpec(treedef, static, len(leaves)), arrays


def _cast_floats(arrays: list[Any], dtype: Any) -> tuple[Any, ...]:
    """Floating arrays as ``dtype``; integer (and bool) arrays left as they are."""
    import jax.numpy as jnp

    out = []
    for a in arrays:
        if jnp.issubdtype(jnp.result_type(a), jnp.floating):
            out.append(jnp.asarray(a, dtype))
        else:
            out.append(jnp.asarray(a))
    return tuple(out)


class _ByIdentity:
    """Wraps an unhashable callable (a module object with __eq__) so jit can key on it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __hash__(self) -> int:
        return id(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.fn is self.fn


def _hashable(fn: Callable[..., Any]) -> Callable[..., Any]:
    try:
        hash(fn)
    except TypeError:
        return _ByIdentity(fn)
    return fn


def _loss(x: Any, arrays: Any, loss_fn: Any, layout: _Layout, spec: _BatchSpec) -> Any:
    return loss_fn(layout.unflatten(x), spec.rebuild(arrays))


_STATIC = ("loss_fn", "layout", "spec")


@functools.cache
def _compiled() -> dict[str, Any]:
    """The jitted reference functions, built on first use (no jax import at module import).

    loss_fn, the params layout and the batch structure are static arguments, so a training
    script that diagnoses every few hundred steps compiles once.
    """
    import jax
    import jax.numpy as jnp

    def value_and_grad(
        x: Any, arrays: Any, *, loss_fn: Any, layout: _Layout, spec: _BatchSpec
    ) -> Any:
        return jax.value_and_grad(lambda y: _loss(y, arrays, loss_fn, layout, spec))(x)

    def line(
        etas: Any, x: Any, d: Any, arrays: Any, *, loss_fn: Any, layout: _Layout, spec: _BatchSpec
    ) -> Any:
        """The loss at x + eta d for every eta: one vmapped program for the whole grid."""
        return jax.vmap(lambda eta: _loss(x + eta * d, arrays, loss_fn, layout, spec))(etas)

    def power(
        x: Any,
        scale: Any,
        v0: Any,
        arrays: Any,
        iters: Any,
        shift: Any,
        *,
        loss_fn: Any,
        layout: _Layout,
        spec: _BatchSpec,
    ) -> Any:
        """Power iteration on A = S H S (S = diag(scale)) shifted by -shift; Rayleigh quotients of A."""
        grad = jax.grad(lambda y: _loss(y, arrays, loss_fn, layout, spec))

        def body(_: Any, carry: Any) -> Any:
            v, rq, _prev = carry
            w = scale * jax.jvp(grad, (x,), (scale * v,))[1]
            rq_new = jnp.vdot(v, w)
            w = w - shift * v
            norm = jnp.linalg.norm(w)
            v_new = jnp.where(norm > 0, w / jnp.where(norm > 0, norm, 1.0), v)
            return v_new, rq_new, rq

        v0 = v0 / jnp.linalg.norm(v0)
        nan = jnp.asarray(jnp.nan, x.dtype)
        _, rq, prev = jax.lax.fori_loop(0, iters, body, (v0, nan, nan))
        return rq, prev

    return {
        "value_and_grad": jax.jit(value_and_grad, static_argnames=_STATIC),
        "line": jax.jit(line, static_argnames=_STATIC),
        "power": jax.jit(power, static_argnames=_STATIC),
    }


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_args(lr: object, max_batches: object, power_iters: object, seed: object) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise UsageError(
            f"lr={lr!r} must be a number: the learning rate your training uses, e.g. lr=3e-4."
        )
    lr_f = float(lr)
    if not (math.isfinite(lr_f) and lr_f > 0):
        raise UsageError(
            f"lr={lr!r} must be positive and finite: the learning rate your training uses, "
            "e.g. lr=3e-4."
        )
    for name, value, least in (("max_batches", max_batches, 1), ("power_iters", power_iters, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise UsageError(
                f"{name}={value!r} must be an int >= {least} (defaults: max_batches=4, "
                "power_iters=20)."
            )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed={seed!r} must be an int >= 0, e.g. seed=0.")
    return lr_f


def _take_batches(batches: object, max_batches: int) -> list[Any]:
    if isinstance(batches, np.ndarray) or type(batches).__module__.startswith("jax"):
        shape = getattr(batches, "shape", "?")
        raise UsageError(
            f"batches is one array (shape {shape}), not a sequence of batches: wrap a single "
            "batch in a list, batches=[batch], or pass several, batches=[b0, b1, ...]."
        )
    if isinstance(batches, dict):
        raise UsageError(
            f"batches is a dict (keys {list(batches)[:4]}), not a sequence of batches: wrap a "
            "single batch in a list, batches=[batch]."
        )
    if not isinstance(batches, Iterable):
        raise UsageError(
            f"batches={batches!r} is not iterable: pass a list of fixed batches (or a loader), "
            "e.g. batches=[(x0, y0), (x1, y1)]."
        )
    taken = list(itertools.islice(iter(batches), max_batches))
    if not taken:
        raise UsageError(
            "batches gave no batch: diagnose_training needs at least one fixed batch, passed to "
            "loss_fn and grad_fn as given, e.g. batches=[(x, y)]."
        )
    return taken


def _flatten_params(params: Any) -> tuple[_Layout, list[str], np.ndarray]:
    import jax
    import jax.numpy as jnp

    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not with_path:
        raise UsageError(
            f"params={params!r} holds no arrays: pass the model's parameter pytree, e.g. "
            "{'w': w, 'b': b}."
        )
    names, shapes, parts = [], [], []
    for path, leaf in with_path:
        name = jax.tree_util.keystr(path) or "params"
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise UsageError(
                f"params{name if name != 'params' else ''} has dtype {dtype}: every parameter "
                "must be a floating array (keep integer constants in the batch or in loss_fn)."
            )
        arr = np.asarray(leaf, dtype=np.float64)
        names.append(name)
        shapes.append(tuple(int(s) for s in arr.shape))
        parts.append(arr.ravel())
    return _Layout(treedef, tuple(shapes)), names, np.concatenate(parts)


def _flatten_like(
    tree: Any, layout: _Layout, names: list[str], what: str, where: str
) -> np.ndarray:
    """A pytree like params (gradient, Adam moment) as one float64 vector, checked leaf by leaf."""
    import jax

    leaves = jax.tree_util.tree_leaves(tree)
    if len(leaves) != len(layout.shapes):
        raise UsageError(
            f"{what} ({where}) has {len(leaves)} arrays, params has {len(layout.shapes)} "
            f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}): it must be a pytree "
            "like params, one array per parameter array."
        )
    parts = []
    for name, shape, leaf in zip(names, layout.shapes, leaves, strict=True):
        arr = np.asarray(leaf, dtype=np.float64)
        if tuple(arr.shape) != shape:
            raise UsageError(
                f"{what} ({where}) has shape {tuple(arr.shape)} for {name}, whose parameter has "
                f"shape {shape}: return one array per parameter array, of the parameter's shape."
            )
        parts.append(arr.ravel())
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------------------
# The reference loss on one batch


@dataclass(frozen=True)
class _Reference:
    """loss_fn on one batch, through the jitted functions (call inside the matching precision)."""

    loss_fn: Any
    layout: _Layout
    spec: _BatchSpec
    arrays: tuple[Any, ...]  # the batch's arrays, floating ones cast to the reference's dtype

    def _static(self) -> dict[str, Any]:
        return {"loss_fn": self.loss_fn, "layout": self.layout, "spec": self.spec}

    def value_and_grad(self, x: Any) -> tuple[float, np.ndarray]:
        value, grad = _compiled()["value_and_grad"](x, self.arrays, **self._static())
        return float(value), np.asarray(grad, dtype=np.float64)

    def line(self, x: Any, etas: np.ndarray, d: np.ndarray) -> np.ndarray:
        """The float64 loss at x + eta d for each eta (one vmapped call)."""
        import jax.numpy as jnp

        out = _compiled()["line"](
            jnp.asarray(etas, jnp.float64), x, jnp.asarray(d, jnp.float64), self.arrays,
            **self._static(),
        )  # fmt: skip
        return np.asarray(out, dtype=np.float64)

    def sharpness(self, x: Any, scale: np.ndarray, iters: int, seed: int) -> tuple[float, bool]:
        """The largest eigenvalue of S H S (S = diag(scale)) by power iteration, and whether it settled.

        Power iteration finds the eigenvalue of largest magnitude; when that one is negative
        (a saddle), a second run on S H S - lambda I finds the largest positive one.
        """
        import jax.numpy as jnp

        v0 = jnp.asarray(np.random.default_rng(seed).standard_normal(scale.size), jnp.float64)
        s = jnp.asarray(scale, jnp.float64)
        power = _compiled()["power"]
        rq, prev = (float(a) for a in power(x, s, v0, self.arrays, iters, 0.0, **self._static()))
        if rq < 0:
            shift = rq
            rq, prev = (
                float(a) for a in power(x, s, v0, self.arrays, iters, shift, **self._static())
            )
        settled = math.isfinite(prev) and abs(rq - prev) <= POWER_TOLERANCE * abs(rq)
        return rq, settled


# ---------------------------------------------------------------------------------------------
# The tests


def _norm(x: np.ndarray) -> float:
    return float(np.linalg.norm(x))


def _gradient_numbers(
    g: np.ndarray, g64: np.ndarray, g32: np.ndarray, layout: _Layout, names: list[str]
) -> dict[str, Any]:
    n64, ng = _norm(g64), _norm(g)
    err = g - g64
    n_err = _norm(err)
    if n64 > 0:
        rel, ref = n_err / n64, _norm(g32 - g64) / n64
    else:  # a stationary point of the reference: any gradient at all is wrong
        rel, ref = (0.0 if n_err == 0 else math.inf), 0.0
    cosine = float(np.dot(g, g64)) / (ng * n64) if ng > 0 and n64 > 0 else math.nan
    worst, share = "", math.nan
    if n_err > 0:
        sizes = [math.prod(s) for s in layout.shapes]
        per_leaf = [float(np.sum(p**2)) for p in np.split(err, np.cumsum(sizes)[:-1])]
        k = int(np.argmax(per_leaf))
        worst, share = names[k], per_leaf[k] / n_err**2
    return {
        "rel_error": rel,
        "ref_error": ref,
        # a float32 reference that overflowed sets no scale: the floor does
        "bound": NOISE_FACTOR * (max(ref, NOISE_FLOOR) if math.isfinite(ref) else NOISE_FLOOR),
        "cosine": cosine,
        "norm_ratio": ng / n64 if n64 > 0 else math.inf,
        "grad_norm": ng,
        "worst_leaf": worst,
        "worst_leaf_share": share,
    }


def _taylor(ref: _Reference, x: Any, theta_norm: float, g: np.ndarray) -> dict[str, Any]:
    """r(eta) along -g on a decade grid of step lengths, and the Armijo test on the same grid."""
    g2 = float(np.dot(g, g))
    gn = math.sqrt(g2)
    # Step lengths ||eta g|| on whole decades of ARMIJO_SMALLEST_STEP, from TAYLOR_TOP_STEP of
    # the parameter norm down to at least ARMIJO_SMALLEST_STEP itself.
    largest = TAYLOR_TOP_STEP * max(theta_norm, 1.0)
    top = math.floor(math.log10(largest / ARMIJO_SMALLEST_STEP))
    decades = np.arange(min(top - TAYLOR_POINTS + 1, 0), top + 1)
    etas = ARMIJO_SMALLEST_STEP * 10.0**decades / gn  # ascending
    losses = ref.line(x, np.concatenate([[0.0], etas]), -g)
    l0, ls = float(losses[0]), losses[1:]
    resolved = (etas * g2 >= TAYLOR_RESOLVE * LOSS_ROUNDING * abs(l0)) & np.isfinite(ls)
    r = (l0 - ls) / (etas * g2)
    out: dict[str, Any] = {
        "taylor": tuple(
            (float(e), float(v) if ok else None) for e, v, ok in zip(etas, r, resolved, strict=True)
        )
    }
    good = np.flatnonzero(resolved)
    if good.size == 0:
        return out
    small = r[good[:3]]
    out["r_limit"] = float(r[good[0]])
    out["r_flat"] = bool(small.size >= 2 and np.ptp(small) <= TAYLOR_TOLERANCE)
    out["resolved_below"] = float(etas[good[0]])
    armijo = [int(i) for i in good if etas[i] * gn >= ARMIJO_SMALLEST_STEP * (1 - 1e-9)]
    if armijo:
        out["armijo_checked_to"] = float(etas[armijo[0]])
        ok = [i for i in armijo if r[i] >= ARMIJO_C]
        out["armijo_eta"] = float(etas[ok[-1]]) if ok else None
    return out


def _critical_step(
    ref: _Reference, x: Any, u: np.ndarray, lr: float
) -> tuple[float, Literal["", "above", "below"]]:
    """The smallest eta with L(theta + eta u) > L(theta): bracket around lr, bisect in log space.

    Returns the estimate and, when the bracket ran out, whether eta_c lies above or below it.
    """

    def loss_at(eta: float) -> float:
        return float(ref.line(x, np.array([eta]), u)[0])

    l0 = loss_at(0.0)
    noise = LOSS_ROUNDING * abs(l0)

    def rises(eta: float) -> bool:
        value = loss_at(eta)
        return not math.isfinite(value) or value - l0 > noise

    lo: float | None = None
    hi: float | None = None
    if rises(lr):
        hi = lr
        for k in range(1, CRITICAL_EXPAND + 1):
            eta = lr / CRITICAL_FACTOR**k
            if not rises(eta):
                lo = eta
                break
            hi = eta
        if lo is None:
            return hi, "below"
    else:
        lo = lr
        for k in range(1, CRITICAL_EXPAND + 1):
            eta = lr * CRITICAL_FACTOR**k
            if rises(eta):
                hi = eta
                break
            lo = eta
        if hi is None:
            return lo, "above"
    for _ in range(CRITICAL_BISECT):
        mid = math.sqrt(lo * hi)
        if rises(mid):
            hi = mid
        else:
            lo = mid
    return math.sqrt(lo * hi), ""


def _adam_direction(
    opt: Adam, g: np.ndarray, m: np.ndarray | None, v: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Adam's step per unit lr at these params (the current g in the moments), and sqrt(vhat)+eps."""
    t = opt.step + 1
    m1 = (1 - opt.b1) * g if m is None else opt.b1 * m + (1 - opt.b1) * g
    v1 = (1 - opt.b2) * g * g if v is None else opt.b2 * v + (1 - opt.b2) * g * g
    p = np.sqrt(v1 / (1 - opt.b2**t)) + opt.eps
    return -(m1 / (1 - opt.b1**t)) / p, p


def _check_batch(
    i: int,
    g: np.ndarray | None,
    fault: str,
    g32: np.ndarray,
    ref: _Reference,
    x64: Any,
    theta: np.ndarray,
    names: list[str],
) -> BatchResult:
    """The gradient, Taylor and Armijo evidence from one batch (inside the float64 context)."""
    if g is None:
        return BatchResult(index=i, verdict="kernel-bug", fault=fault)
    loss, g64 = ref.value_and_grad(x64)
    if not (math.isfinite(loss) and np.all(np.isfinite(g64))):
        what = (
            f"the float64 loss is {loss:g}"
            if not math.isfinite(loss)
            else (
                f"the float64 reference gradient has {int(np.sum(~np.isfinite(g64))):,} non-finite "
                f"entries (loss {loss:.4g})"
            )
        )
        return BatchResult(index=i, verdict="inconclusive", loss=loss, note=what)
    bad = ~np.isfinite(g)
    if bad.any():
        sizes = np.cumsum([math.prod(s) for s in ref.layout.shapes])
        first = names[int(np.searchsorted(sizes, int(np.argmax(bad)), side="right"))]
        return BatchResult(
            index=i, verdict="kernel-bug", loss=loss, nonfinite=int(bad.sum()), worst_leaf=first
        )
    numbers = _gradient_numbers(g, g64, g32, ref.layout, names)
    taylor: dict[str, Any] = {}
    if numbers["grad_norm"] > 0:
        taylor = _taylor(ref, x64, _norm(theta), g)
    verdict: Literal["pass", "kernel-bug", "inconclusive"] = "pass"
    note = ""
    if numbers["rel_error"] > numbers["bound"]:
        verdict = "kernel-bug"
    elif "r_limit" not in taylor:
        verdict = "inconclusive"
        note = (
            "the gradient is zero: no step to test"
            if numbers["grad_norm"] == 0
            else f"the Taylor test resolves no step: the largest changes the loss ({loss:.4g}) by "
            f"less than float64 resolution (||g|| = {numbers['grad_norm']:.1e})"
        )
    return BatchResult(index=i, verdict=verdict, loss=loss, note=note, **numbers, **taylor)


def _gradient_verdict(results: list[BatchResult]) -> tuple[Verdict | None, list[str], str]:
    """kernel-bug, inconclusive, or None (the gradient holds up: go on to the learning rate)."""
    bugs = [b for b in results if b.verdict == "kernel-bug"]
    findings: list[str] = []
    if bugs:
        for b in bugs:
            if b.fault:
                findings.append(f"batch {b.index}: grad_fn raised {b.fault}")
            elif b.nonfinite:
                findings.append(
                    f"batch {b.index}: {b.nonfinite:,} gradient entries not finite (first in "
                    f"{b.worst_leaf})"
                )
            else:
                findings.append(
                    f"batch {b.index}: relative error {_num(b.rel_error)}, {b.ratio:.2g}x the bound"
                )
                if b.armijo_eta is None and not math.isnan(b.armijo_checked_to):
                    findings.append(f"batch {b.index}: not a descent direction (Armijo)")
        return "kernel-bug", findings, _cause(bugs[0])
    broken = [b for b in results if not math.isfinite(b.loss)] + [
        b for b in results if b.verdict == "inconclusive" and "reference gradient" in b.note
    ]
    if broken:
        findings = [f"batch {b.index}: {b.note}" for b in broken]
        return (
            "inconclusive",
            findings,
            "the loss is not finite at these params (already diverged, or it overflows): run "
            f"the diagnosis on an earlier checkpoint; {GUIDE}",
        )
    unresolved = [b for b in results if b.verdict == "inconclusive"]
    findings = [f"batch {b.index}: {b.note}" for b in unresolved]
    if len(unresolved) == len(results):
        return (
            "inconclusive",
            findings,
            "the Taylor test resolved no step on any batch, so nothing ties the gradient to the "
            f"loss here; run it at parameters where the gradient is not negligible; {GUIDE}",
        )
    return None, findings, ""


def _cause(b: BatchResult) -> str:
    if b.fault:
        return (
            "the gradient kernel faulted: a fault is a kernel bug whatever the learning rate; "
            f"fix it first; {GUIDE}"
        )
    if b.nonfinite:
        return (
            "the gradient path overflows or divides by zero where the reference loss is finite, "
            f"not the learning rate; {GUIDE}"
        )
    return f"the gradient path (kernel or backward) is wrong, not the learning rate; {GUIDE}"


def _lr_verdict(
    results: list[BatchResult],
    lr: float,
    lam: float,
    threshold: float,
    settled: bool,
    sharpness: str,
    findings: list[str],
) -> tuple[Verdict, str, float | None]:
    """lr-problem or pass from the critical steps and the sharpness, and the suggested lr."""
    probed = [b for b in results if not math.isnan(b.eta_c)]
    above = [b for b in probed if b.lr_over_eta_c > 1]
    most = len(above) > len(probed) / 2
    unstable = lr * lam > threshold
    limits = [statistics.median(b.eta_c for b in probed)] if probed else []
    if lam > 0:
        limits.append(threshold / lam)
    suggested = min(limits) if limits else None
    if most:
        findings.append(
            f"lr/eta_c > 1 on {len(above)} of {len(probed)} batches: one step at lr raises "
            "the batch loss"
        )
    if unstable:
        findings.append(
            f"lr * {sharpness} = {lr * lam:.3g} > {threshold:g}: beyond the stability threshold"
        )
    if not settled:
        findings.append("power iteration did not settle: lambda_max may be underestimated")
    if most or unstable:
        return (
            "lr-problem",
            {
                (True, True): "a step at this learning rate raises the loss and it is beyond the "
                "stable limit for this curvature",
                (True, False): "a step at this learning rate raises the batch loss on most "
                "batches: it overshoots along the update",
                (False, True): "the learning rate is beyond the stable limit for this curvature: "
                "this step still descends, but the sharpest direction will oscillate and grow",
            }[(most, unstable)]
            + f"; lower it to the suggested value or warm up to it; {GUIDE}",
            suggested,
        )
    return (
        "pass",
        "neither the gradient nor the learning rate at these params; if training still fails, "
        f"probe the data (gradcheck.probe) and diagnose again later in training; {GUIDE}",
        suggested,
    )


# ---------------------------------------------------------------------------------------------
# The entry point


def diagnose_training(
    loss_fn: Callable[[Any, Any], Any],
    grad_fn: Callable[[Any, Any], Any],
    params: Any,
    batches: Iterable[Any],
    *,
    lr: float,
    optimizer: str | SGD | Adam = "sgd",
    max_batches: int = 4,
    power_iters: int = 20,
    seed: int = 0,
) -> TrainingReport:
    """Is the training trouble a wrong gradient (kernel-bug) or the learning rate (lr-problem)?

    ``loss_fn(params, batch)`` is the JAX reference loss (evaluated here in float64, with params
    and the batch's floating arrays cast); ``grad_fn(params, batch)`` is the gradient path under
    test, returning a pytree like params. Uses the first ``max_batches`` of ``batches`` (drawn
    from an iterator when it is one); calls ``grad_fn`` once per batch, the reference loss about
    25 times per batch and ``power_iters`` Hessian-vector products on the first batch. A
    ``KernelFault`` from ``grad_fn`` is kernel-bug evidence; any other exception propagates.
    """
    t0 = time.perf_counter()
    for name, fn in (("loss_fn", loss_fn), ("grad_fn", grad_fn)):
        if not callable(fn):
            raise UsageError(
                f"{name}={fn!r} is not callable: pass loss_fn(params, batch) -> scalar and "
                "grad_fn(params, batch) -> pytree like params."
            )
    lr_f = _check_args(lr, max_batches, power_iters, seed)
    loss_fn = _hashable(loss_fn)  # a static argument of the jitted references
    opt = _resolve_optimizer(optimizer)
    taken = _take_batches(batches, int(max_batches))
    layout, names, theta = _flatten_params(params)
    m_flat: np.ndarray | None = None
    v_flat: np.ndarray | None = None
    if isinstance(opt, Adam) and opt.m is not None:
        m_flat = _flatten_like(opt.m, layout, names, "Adam m", "the first moment")
        v_flat = _flatten_like(opt.v, layout, names, "Adam v", "the second moment")
        if np.any(v_flat < 0):
            raise UsageError(
                "Adam v has negative entries: it must be the second-moment estimate (a running "
                "mean of g**2), e.g. the optimizer state's exp_avg_sq or nu."
            )
    buf_flat: np.ndarray | None = None
    if isinstance(opt, SGD) and opt.buf is not None and opt.momentum:
        buf_flat = _flatten_like(opt.buf, layout, names, "SGD buf", "the momentum buffer")
    splits = [_split_batch(b, i) for i, b in enumerate(taken)]
    _check_loss_fn(loss_fn, layout, theta, splits[0])

    # The caller's precision: the gradients under test and the float32 references.
    grads: list[np.ndarray | None] = []
    faults: list[str] = []
    refs32: list[np.ndarray] = []
    for i, (batch, (spec, arrays)) in enumerate(zip(taken, splits, strict=True)):
        try:
            raw = grad_fn(params, batch)
        except KernelFault as fault:
            grads.append(None)
            faults.append(f"{type(fault).__name__}: {fault}")
            refs32.append(np.zeros(0))
            break  # a fault decides: no need to look further
        faults.append("")
        grads.append(_flatten_like(raw, layout, names, "grad_fn's gradient", f"batch {i}"))
        ref32 = _Reference(loss_fn, layout, spec, _cast_floats(arrays, np.float32))
        refs32.append(ref32.value_and_grad(theta.astype(np.float32))[1])

    # float64: the reference gradient, Taylor, Armijo, critical steps, curvature.
    from .reference._x64 import enable_x64

    results: list[BatchResult] = []
    lam: float | None = None
    settled = False
    suggested: float | None = None
    sharpness_batch = 0
    threshold = (
        STABILITY["adam"](opt.b1) if isinstance(opt, Adam) else STABILITY["sgd"](opt.momentum)
    )
    sharpness = "lambda_max(P^-1 H)" if isinstance(opt, Adam) else "lambda_max(H)"
    with enable_x64():
        import jax.numpy as jnp

        x64 = jnp.asarray(theta, jnp.float64)
        refs = [
            _Reference(loss_fn, layout, spec, _cast_floats(arrays, jnp.float64))
            for spec, arrays in splits[: len(grads)]
        ]
        for i, g in enumerate(grads):
            results.append(_check_batch(i, g, faults[i], refs32[i], refs[i], x64, theta, names))
        verdict, findings, cause = _gradient_verdict(results)
        if verdict is None:  # the gradient holds up: now the learning rate
            probed: list[BatchResult] = []
            scale = np.ones_like(theta)
            first = next(b.index for b in results if b.verdict == "pass")
            for i, b in enumerate(results):
                g = grads[i]
                if b.verdict != "pass" or g is None:
                    probed.append(b)
                    continue
                if isinstance(opt, Adam):
                    u, p = _adam_direction(opt, g, m_flat, v_flat)
                    if i == first:
                        scale = 1.0 / np.sqrt(p)  # P^-1/2 H P^-1/2 with P = diag(sqrt(vhat)+eps)
                elif buf_flat is not None:
                    u = -(opt.momentum * buf_flat + g)  # the step torch.optim.SGD would take
                else:
                    u = -g  # SGD, and heavy-ball momentum with no buffer kept: buf = g
                eta_c, side = _critical_step(refs[i], x64, u, lr_f)
                probed.append(
                    dataclasses.replace(
                        b, eta_c=eta_c, eta_c_bound=side, lr_over_eta_c=lr_f / eta_c
                    )
                )
            results = probed
            sharpness_batch = first
            lam, settled = refs[first].sharpness(x64, scale, int(power_iters), int(seed))
            verdict, cause, suggested = _lr_verdict(
                results, lr_f, lam, threshold, settled, sharpness, findings
            )
    return TrainingReport(
        verdict=verdict,
        batches=tuple(results),
        n_batches=len(taken),
        lr=lr_f,
        optimizer=opt.describe(),
        n_params=int(theta.size),
        lambda_max=lam,
        sharpness_batch=sharpness_batch,
        sharpness=sharpness,
        threshold=threshold,
        suggested_lr=suggested,
        update=(
            "-mhat/(sqrt(vhat)+eps)"
            if isinstance(opt, Adam)
            else "-(momentum*buf+g)"
            if buf_flat is not None
            else "-g"
        ),
        findings=tuple(findings),
        likely_cause=cause,
        power_iters=int(power_iters),
        power_settled=settled,
        seed=int(seed),
        elapsed_s=time.perf_counter() - t0,
    )


def _check_loss_fn(
    loss_fn: Any, layout: _Layout, theta: np.ndarray, split: tuple[_BatchSpec, list[Any]]
) -> None:
    """loss_fn must trace to one floating scalar: say so before anything deeper fails."""
    import jax
    import jax.numpy as jnp

    spec, arrays = split
    try:
        out = jax.eval_shape(
            lambda x, a: _loss(x, a, loss_fn, layout, spec),
            theta.astype(np.float32),
            _cast_floats(arrays, np.float32),
        )
    except jax.errors.ConcretizationTypeError as err:
        raise UsageError(
            "loss_fn(params, batch) cannot be traced by JAX: it branches on, or converts, a "
            "traced value. diagnose_training differentiates and jits it: use jnp.where or "
            "jax.lax.cond instead of Python control flow on arrays."
        ) from err
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise UsageError(
            f"loss_fn(params, batch) returned shape {shape}, dtype {dtype}: it must return one "
            "floating scalar, the batch loss (e.g. the mean cross entropy over tokens)."
        )


# ---------------------------------------------------------------------------------------------
# Text


def _e(x: float | None, digits: int = 1) -> str:
    if x is None or not math.isfinite(x):
        return "n/a" if x is None or math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}e}"


def _num(x: float) -> str:
    """A relative error or ratio: two decimals from 0.01 up, else scientific."""
    if math.isfinite(x) and abs(x) >= 0.01:
        return f"{x:.2f}"
    return _e(x)


def _ratio_text(b: BatchResult) -> str:
    if b.eta_c_bound == "above":
        return f"<{b.lr_over_eta_c:.2g}"
    if b.eta_c_bound == "below":
        return f">{b.lr_over_eta_c:.2g}"
    return f"{b.lr_over_eta_c:.2g}"


def _bound_text(b: BatchResult) -> str:
    if b.ref_error >= NOISE_FLOOR:
        return f"{_e(b.bound)}: {NOISE_FACTOR:g}x the float32 reference's own {_e(b.ref_error)}"
    return (
        f"{_e(b.bound)}: {NOISE_FACTOR:g}x the noise floor {_e(NOISE_FLOOR)}; the float32 "
        f"reference's own error is {_e(b.ref_error)}"
    )


def _taylor_text(b: BatchResult) -> list[str]:
    points = [(e, r) for e, r in b.taylor if r is not None]
    if not points:
        return ["  Taylor r(eta): no step resolved in float64"]
    shown = points[:4]
    cells = "  ".join(f"{e:.0e} {r:.3f}" for e, r in shown)
    if len(points) > len(shown):
        cells += f" ... {points[-1][0]:.0e} {points[-1][1]:.3f}"
    if abs(b.r_limit - 1) <= TAYLOR_TOLERANCE:
        tail = f"-> {b.r_limit:.3f} as eta -> 0 (a correct gradient gives r -> 1)"
    elif b.r_flat:
        tail = f"flat at {b.r_limit:.2f}, not 1 (a correct gradient gives r -> 1)"
    else:
        tail = f"{b.r_limit:.2f} at the smallest step, not 1 (a correct gradient gives r -> 1)"
    lines = [f"  Taylor r(eta): {cells}; {tail}"]
    skipped = [e for e, r in b.taylor if r is None]
    if skipped:
        lines.append(
            f"  ({len(skipped)} smaller step{'s' if len(skipped) > 1 else ''} skipped: below eta = {b.resolved_below:.0e} the loss "
            f"change is under {TAYLOR_RESOLVE:g}x float64 rounding ({LOSS_ROUNDING:.0e} |L|))"
        )
    return lines


def _armijo_text(b: BatchResult) -> str:
    if math.isnan(b.armijo_checked_to):
        return (
            f"  Armijo (c = {ARMIJO_C:g}): not tested: no resolved step as small as "
            f"{ARMIJO_SMALLEST_STEP:g}/||g||"
        )
    if b.armijo_eta is None:
        step = b.armijo_checked_to * b.grad_norm
        limit = "" if step < 1.01 * ARMIJO_SMALLEST_STEP else " (smaller: below float64 resolution)"
        return (
            f"  Armijo (c = {ARMIJO_C:g}): no step down to {step:.0e}/||g||{limit} decreases the "
            "loss: not a descent direction"
        )
    return (
        f"  Armijo (c = {ARMIJO_C:g}): sufficient decrease up to eta = {b.armijo_eta:.1e} "
        "(a descent direction)"
    )


def _render(rep: TrainingReport) -> list[str]:
    n = rep.n_batches
    nb = f"{n} batch{'es' if n != 1 else ''}"
    size = f"{rep.n_params:,} parameters"
    lines: list[str] = []
    bugs = [b for b in rep.batches if b.verdict == "kernel-bug"]
    if rep.verdict == "kernel-bug":
        worst = max(bugs, key=lambda b: (bool(b.fault), b.nonfinite, b.ratio))
        where = f"batch {worst.index} of {n}; {size}"
        if worst.fault:
            lines += [f"kernel-bug: grad_fn raised a kernel fault ({where})", f"  {worst.fault}"]
        elif worst.nonfinite:
            lines += [
                f"kernel-bug: the gradient under test is not finite ({where})",
                f"  {worst.nonfinite:,} of {rep.n_params:,} entries are NaN or inf (first in "
                f"{worst.worst_leaf}) where the float64 loss is finite ({worst.loss:.4g})",
            ]
        else:
            lines += [
                f"kernel-bug: the gradient under test is wrong ({where})",
                f"  relative error {_num(worst.rel_error)} of the float64 reference, "
                f"{worst.ratio:.2g}x the bound ({_bound_text(worst)})",
                f"  cosine to the reference {worst.cosine:.2f}; norm ratio {worst.norm_ratio:.2f}",
                *_taylor_text(worst),
                _armijo_text(worst),
            ]
            if worst.worst_leaf and worst.worst_leaf_share >= 0.5:
                lines.append(
                    f"  where: {worst.worst_leaf_share:.0%} of the error is in {worst.worst_leaf}"
                )
            if worst.rel_error < PRECISION_SIZED and abs(worst.r_limit - 1) <= TAYLOR_TOLERANCE:
                lines.append(
                    f"  note: an error below {PRECISION_SIZED:g} with r -> 1 can also be float32 "
                    "accumulation over many rows (it grows like sqrt(rows)); rerun with a batch "
                    "a quarter the size: accumulation error halves, a real bug's does not"
                )
        if len(rep.batches) > 1:
            which = ", ".join(str(b.index) for b in bugs)
            lines.append(f"  wrong on {len(bugs)} of {len(rep.batches)} batches checked ({which})")
    elif rep.verdict == "inconclusive":
        lines.append(f"inconclusive: the evidence cannot decide ({nb}; {size})")
        lines += [f"  {f}" for f in rep.findings]
    else:
        head = {
            "pass": "the gradient is right and the learning rate is stable",
            "lr-problem": "the learning rate is too high; the gradient is right",
        }[rep.verdict]
        lines.append(f"{rep.verdict}: {head} ({nb}; {size}; {rep.optimizer}, lr {rep.lr:.3g})")
        checked = [b for b in rep.batches if b.verdict == "pass"]
        worst = max(checked, key=lambda b: b.ratio)
        lines.append(
            f"  gradient verified on {len(checked)} of {n} batches: relative error at most "
            f"{_e(worst.rel_error)} of the float64 reference, {worst.ratio:.2g}x the bound "
            f"({_bound_text(worst)})"
        )
        lines += _taylor_text(checked[0])
        ratios = "  ".join(_ratio_text(b) for b in checked)
        above = sum(b.lr_over_eta_c > 1 for b in checked)
        lines.append(
            f"  critical step along the update ({rep.update}): lr/eta_c {ratios} (above 1 on "
            f"{above} of {len(checked)} batches)"
        )
        if rep.lambda_max is not None:
            settled = "" if rep.power_settled else ", not settled: raise power_iters"
            lines.append(
                f"  curvature: lr * {rep.sharpness} = {rep.lr * rep.lambda_max:.3g} "
                f"({rep.sharpness} {_e(rep.lambda_max, 2)} on batch {rep.sharpness_batch}, "
                f"{rep.power_iters} Hessian-vector products{settled}); stable below "
                f"{rep.threshold:g}"
            )
        for b in rep.batches:
            if b.verdict == "inconclusive":
                lines.append(f"  batch {b.index}: {b.note}")
        if rep.suggested_lr is not None:
            lines.append(
                f"  suggested largest stable learning rate: {_e(rep.suggested_lr)} "
                f"(you use {rep.lr:.3g})"
            )
    if rep.likely_cause:
        lines.append(f"  likely cause: {rep.likely_cause}")
    lines.append(
        f"verdict: {rep.verdict}  ({nb}, {rep.optimizer}, lr {rep.lr:.3g}, {rep.elapsed_s:.1f} s)"
    )
    if rep.verdict == "inconclusive":
        lines.append("warning: inconclusive is not a pass: the evidence could not decide")
    return lines
