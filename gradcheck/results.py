"""What a check found: plain frozen records, a JSON form with a versioned schema, and the verdict."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._errors import Inconclusive, KernelBug

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

Verdict = Literal["pass", "fd-noise", "kernel-bug", "inconclusive"]
SCHEMA = "gradcheck.report"
SCHEMA_VERSION = 2
# The likely cause of a kernel bug whose evidence names none (diagnose.likely_cause).
UNNAMED_CAUSE = "see DIAGNOSTIC_GUIDE.md#kernel-bug"
# Exit code of `gradcheck run` for each verdict (inconclusive: 1 under --strict).
EXIT_CODES: dict[str, int] = {"pass": 0, "fd-noise": 0, "kernel-bug": 1, "inconclusive": 0}


def repeat_note(on: str, unit: str) -> str:
    """What a case whose repeats ran on a sample of its blocks (``on``) did, and why that holds."""
    return (
        "ran once on the whole grid, on every core, and compared there; the thread orders, the "
        f"other alignment and the race check repeat on {on}: every {unit} runs the same code, so "
        "an order, alignment or race bug shows there as in the rest"
    )


@dataclass(frozen=True)
class Check:
    """One piece of evidence: a named check on one case of the input suite."""

    name: str  # compare | schedules | alignment | fault | reference-fd | fd32
    case: str
    verdict: Verdict
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    where: tuple[str, ...] = ()
    heatmap: tuple[str, ...] = ()
    likely_cause: str = ""
    reproduce: str = ""
    output: str = ""  # the output a compare (or bitwise finding) is about: grad, dx, dgamma, dq ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "case": self.case,
            "output": self.output,
            "verdict": self.verdict,
            "summary": self.summary,
            "numbers": _finite(self.numbers),
            "where": list(self.where),
            "likely_cause": self.likely_cause,
            "reproduce": self.reproduce,
        }


@dataclass(frozen=True)
class Report:
    """Everything one `gradcheck run` (or gradcheck.check) found, with the overall verdict."""

    verdict: Verdict
    op: str
    backend: str
    backend_reason: str
    kernel: str
    shapes: dict[str, int]
    seed: int
    checks: tuple[Check, ...]
    cases: tuple[dict[str, Any], ...] = ()
    elapsed_s: float = 0.0
    reproduce: str = ""
    version: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # the op's settings: eps, causal ...
    grid: tuple[int, int, int] | None = None  # the grid asked for, when not the op's own

    @property
    def findings(self) -> tuple[Check, ...]:
        """The checks that did not pass, worst first; of equal verdicts, those that name a cause
        before those that only point at the guide (a race seen on a sampled case says more than
        the whole problem's compare, which ran once)."""
        order = {"kernel-bug": 0, "inconclusive": 1, "fd-noise": 2}
        return tuple(
            sorted(
                (c for c in self.checks if c.verdict != "pass"),
                key=lambda c: (order[c.verdict], c.likely_cause == UNNAMED_CAUSE),
            )
        )

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "gradcheck_version": self.version,
            "verdict": self.verdict,
            "op": self.op,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "kernel": self.kernel,
            "shapes": self.shapes,
            "options": self.options,
            "grid": list(self.grid) if self.grid else None,
            "seed": self.seed,
            "elapsed_s": round(self.elapsed_s, 3),
            "reproduce": self.reproduce,
            "cases": list(self.cases),
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_jsonable)

    def raise_for_verdict(self, *, allow_inconclusive: bool = True) -> None:
        """Raise KernelBug (also an AssertionError) on kernel-bug; Inconclusive if not allowed."""
        from .report import render_text

        if self.verdict == "kernel-bug":
            raise KernelBug(render_text(self), self)
        if self.verdict == "inconclusive" and not allow_inconclusive:
            raise Inconclusive(render_text(self), self)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from .report import renderables

        yield from renderables(self)

    def __str__(self) -> str:
        from .report import render_text

        return render_text(self)


def _finite(value: Any) -> Any:
    """JSON-ready: JSON has no inf or NaN, so those numbers become null (e.g. the ratio at an
    unwritten element); numpy scalars and arrays become Python numbers and lists, tuples lists,
    dict keys strings. Every report's to_dict goes through it."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_finite(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
