"""gradcheck's pytest plugin: the ``gradcheck`` fixture, ``--gradcheck-*`` options, the ``gpu`` marker.

pytest loads it through the ``pytest11`` entry point wherever gradcheck is installed::

    def test_my_ce_kernel(gradcheck):
        gradcheck.check("loss-ce", "kernels/my_ce.cu", function="my_ce", vocab=50257, rows=8)

    def test_my_ce_kernel_at_any_size(gradcheck):
        gradcheck.sweep("loss-ce", "kernels/my_ce.cu", function="my_ce", max_examples=10)

A check fails the test with the report (its ``reproduce:`` lines included) on ``kernel-bug`` and
on ``inconclusive``: a test that passes without the power to see an error proves nothing.

Importing this module is cheap: JAX, PyCUDA, Hypothesis and the backends' implementations are
imported when a test first checks a kernel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import __version__

if TYPE_CHECKING:
    from .results import Report

BACKEND_CHOICES = ("auto", "cpu", "cuda")
REPORT_SCHEMA = "gradcheck.pytest-session"
REPORT_SCHEMA_VERSION = 1
CI_TRUE = ("1", "true", "yes", "on")
_WORKER_KEY = "gradcheck_checks"  # what each xdist worker sends the controller
MARKERS = (
    "gpu: needs a usable CUDA device through PyCUDA (skipped with the reason otherwise)",
    "gradcheck_sweep(op, kernel, *, function=None, max_examples=10, **fixed): after the test's "
    "body, a Hypothesis search over gradcheck.strategies.checks(op, **fixed) for a kernel-bug",
)


@dataclass
class _Session:
    """What the options asked for and the checks made so far (this process's, or all of them)."""

    backend: str | None
    seed: int
    report: Path | None
    skip_gpu: bool = True  # False where the project declares its own gpu marker
    entries: list[dict[str, Any]] = field(default_factory=list)


_SESSION = pytest.StashKey[_Session]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradcheck (checks of CUDA gradient kernels)")
    group.addoption(
        "--gradcheck-backend",
        choices=BACKEND_CHOICES,
        default=None,
        help="where the gradcheck fixture runs kernels: auto (a usable CUDA device, else the cpu "
        "emulator), cpu or cuda. Default: $GRADCHECK_BACKEND, else auto.",
    )
    group.addoption(
        "--gradcheck-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the input suites of gradcheck.check (default 0; the header prints it).",
    )
    group.addoption(
        "--gradcheck-report",
        default=None,
        metavar="FILE",
        help="write every check of the session to FILE as JSON: test id, op, kernel, sizes, "
        "verdict and the full report (one file under pytest-xdist too).",
    )


def pytest_configure(config: pytest.Config) -> None:
    # A project that declares a `gpu` marker of its own (a torch.cuda test suite, say) keeps its
    # meaning: the plugin skips gpu tests only where it registered the marker itself.
    own_gpu = "gpu" in {_marker_name(line) for line in config.getini("markers")}
    for line in MARKERS:
        if not (own_gpu and _marker_name(line) == "gpu"):
            config.addinivalue_line("markers", line)
    seed = config.getoption("--gradcheck-seed")
    if seed < 0:
        raise pytest.UsageError(f"--gradcheck-seed={seed} must be a whole number >= 0.")
    path = config.getoption("--gradcheck-report")
    report = Path(config.invocation_params.dir, path) if path else None
    state = _Session(config.getoption("--gradcheck-backend"), seed, report, skip_gpu=not own_gpu)
    config.stash[_SESSION] = state
    _load_ci_profile(config)


def _marker_name(line: str) -> str:
    return line.split(":", 1)[0].split("(", 1)[0].strip()


def _load_ci_profile(config: pytest.Config) -> None:
    """Under CI, load the "gradcheck-ci" Hypothesis profile unless the user chose a profile."""
    if os.environ.get("CI", "").strip().lower() not in CI_TRUE:
        return
    if config.getoption("--hypothesis-profile", None):
        return
    from hypothesis import settings

    from .strategies import PROFILE

    # A conftest that loaded a profile of its own has chosen too; "ci" is Hypothesis's automatic one.
    if settings.get_current_profile_name() in ("default", "ci"):
        settings.load_profile(PROFILE)


def pytest_report_header(config: pytest.Config) -> str:
    # No JAX: a cached probe that imports PyCUDA where installed and asks g++ for its version.
    from ._errors import GradcheckError
    from .backends import resolve_backend

    state = config.stash[_SESSION]
    try:
        name, reason = resolve_backend(state.backend)
        where = f"backend {name} ({reason})"
    except GradcheckError as exc:
        where = f"backend {state.backend or 'auto'} unavailable: {exc}"
    return f"gradcheck {__version__}: {where}; seed {state.seed} (--gradcheck-seed)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or not config.stash[_SESSION].skip_gpu:
        return
    from .backends import cuda_status

    status = cuda_status()  # covers nvcc too: PyCUDA compiles with it
    if status.available:
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA device: {status.reason}")
    for item in gpu_items:
        item.add_marker(skip)


class GradcheckFixture:
    """The ``gradcheck`` fixture: checks kernels, records each report, fails the test on a bug.

    ``check`` and ``sweep`` use the session's ``--gradcheck-backend`` and ``--gradcheck-seed``
    unless given ``backend=`` / ``seed=``. ``reports`` holds every report this test made.
    """

    def __init__(self, session: _Session, nodeid: str) -> None:
        self._session = session
        self.nodeid = nodeid
        self.reports: list[Report] = []

    @property
    def backend(self) -> str | None:
        """The backend asked for with --gradcheck-backend (None: $GRADCHECK_BACKEND or auto)."""
        return self._session.backend

    @property
    def seed(self) -> int:
        """The seed asked for with --gradcheck-seed."""
        return self._session.seed

    def check(
        self,
        op: str,
        kernel: object = None,
        *,
        function: str | None = None,
        **kwargs: Any,
    ) -> Report:
        """``gradcheck.check(op, kernel, function=..., **kwargs)``; fails the test on kernel-bug
        or inconclusive with the report's text, and returns the report on pass or fd-noise."""
        __tracebackhide__ = True
        report = self._run(op, kernel, function, kwargs, sweep=False)
        _fail_unless_decided(report)
        return report

    def sweep(
        self,
        op: str,
        kernel: object = None,
        *,
        function: str | None = None,
        max_examples: int = 10,
        shrink: bool = False,
        blocks: Sequence[int] | None = None,
        max_elements: int | None = None,
        **fixed: Any,
    ) -> list[Report]:
        """Search ``gradcheck.strategies.checks(op, **fixed)`` with Hypothesis for an example
        the kernel gets wrong (kernel-bug) or cannot be judged on (inconclusive), and fail the
        test with that example's report. Each example runs the whole input suite unless
        ``case=`` is given, and draws its own seed unless ``seed=`` is given (Hypothesis's
        ``--hypothesis-seed`` or the "gradcheck-ci" profile make the draws repeatable). ``shrink=True`` makes Hypothesis look for a smaller failing example
        (each step is a check: seconds). Returns the reports when every example passes."""
        __tracebackhide__ = True
        from hypothesis import HealthCheck, Phase, given, settings

        from .strategies import checks

        if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
            from ._errors import UsageError

            raise UsageError(f"max_examples={max_examples!r} must be a whole number >= 1.")
        fixed.setdefault("case", None)
        strategy = checks(op, blocks=blocks, max_elements=max_elements, **fixed)
        phases = [Phase.explicit, Phase.reuse, Phase.generate, *([Phase.shrink] * shrink)]
        reports: list[Report] = []

        @settings(
            max_examples=max_examples,
            deadline=None,  # the first example compiles the kernel
            phases=phases,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(strategy)
        def example(kwargs: dict[str, Any]) -> None:
            __tracebackhide__ = True
            report = self._run(op, kernel, function, dict(kwargs), sweep=True)
            reports.append(report)
            _fail_unless_decided(report)

        # Keep each sweep's failing examples apart in Hypothesis's database.
        inner = example.hypothesis.inner_test  # type: ignore[attr-defined]
        label = kernel if isinstance(kernel, (str, os.PathLike)) else type(kernel).__qualname__
        inner._hypothesis_internal_add_digest = f"{self.nodeid} {op} {label}".encode()
        example()
        return reports

    def _run(
        self, op: str, kernel: object, function: str | None, kwargs: dict[str, Any], *, sweep: bool
    ) -> Report:
        from ._check import check

        kwargs.setdefault("backend", self.backend)
        kwargs.setdefault("seed", self.seed)
        report = check(op, kernel, function=function, **kwargs)
        self.reports.append(report)
        self._session.entries.append(_entry(self.nodeid, report, sweep=sweep))
        return report


def _fail_unless_decided(report: Report) -> None:
    """Raise the report's KernelBug (kernel-bug) or Inconclusive (inconclusive), cut off from the
    frames that built it, so pytest shows the test's line and the report."""
    __tracebackhide__ = True
    from ._errors import VerdictError

    try:
        report.raise_for_verdict(allow_inconclusive=False)
    except VerdictError as exc:
        raise exc.with_traceback(None) from None


def _entry(nodeid: str, report: Report, *, sweep: bool) -> dict[str, Any]:
    """One check of the --gradcheck-report file; plain JSON values (it crosses xdist's wire)."""
    full = json.loads(report.to_json(indent=None))
    return {
        "nodeid": nodeid,
        "op": report.op,
        "kernel": report.kernel,
        "sizes": full["shapes"],
        "options": full["options"],
        "seed": report.seed,
        "backend": report.backend,
        "verdict": report.verdict,
        "reproduce": report.reproduce,
        "sweep": sweep,
        "report": full,
    }


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> GradcheckFixture:
    """Check gradient kernels in a test: ``gradcheck.check(op, kernel, **sizes)`` and
    ``gradcheck.sweep(op, kernel, max_examples=10)``; a kernel-bug or inconclusive verdict fails
    the test with the report, and --gradcheck-report records every check."""
    return GradcheckFixture(request.config.stash[_SESSION], request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    result = yield
    __tracebackhide__ = True
    # Only marks on the test function itself: a module's pytestmark would sweep after every test.
    for mark in pyfuncitem.own_markers:
        if mark.name == "gradcheck_sweep":
            fixture = GradcheckFixture(pyfuncitem.config.stash[_SESSION], pyfuncitem.nodeid)
            fixture.sweep(*mark.args, **mark.kwargs)
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = config.stash.get(_SESSION, None)
    if state is None:
        return
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller writes the file
        workeroutput[_WORKER_KEY] = state.entries
        return
    if state.report is not None:
        _write_report(state)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist: a worker finished; keep the checks it made for the controller's report."""
    state = node.config.stash.get(_SESSION, None)
    output = getattr(node, "workeroutput", None) or {}
    if state is not None:
        state.entries.extend(output.get(_WORKER_KEY, ()))


def _write_report(state: _Session) -> None:
    """Write the session's checks to --gradcheck-report atomically: a reader never sees half."""
    assert state.report is not None
    entries = sorted(state.entries, key=lambda e: str(e["nodeid"]))  # stable: a test's own order
    doc = {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "gradcheck_version": __version__,
        "backend_option": state.backend,
        "seed": state.seed,
        "verdicts": {v: sum(e["verdict"] == v for e in entries) for v in _VERDICTS},
        "checks": entries,
    }
    path = state.report
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_VERDICTS = ("pass", "fd-noise", "kernel-bug", "inconclusive")

__all__ = ["GradcheckFixture", "gradcheck"]
