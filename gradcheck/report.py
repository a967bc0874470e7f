"""The only module that formats for humans: a Report as rich renderables, or as plain text."""

from __future__ import annotations

import io
from collections.abc import Iterator

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .diagnose import overall
from .results import Check, Report, repeat_note

MAX_DETAILED = 4  # findings shown in full; the rest are in the table and the JSON report
STYLES = {"pass": "green", "fd-noise": "cyan", "kernel-bug": "bold red", "inconclusive": "yellow"}


def _verdict(v: str) -> str:
    return f"[{STYLES.get(v, '')}]{v}[/]"


def _settings(report: Report) -> str:
    """Sizes, options and an explicit grid, as `key=value` words."""
    words = [f"{k}={v}" for k, v in report.shapes.items()]
    for k, v in report.options.items():
        if isinstance(v, bool):
            words.append(k if v else f"no-{k}")
        else:
            words.append(f"{k}={v:g}")
    if report.grid:
        words.append(f"grid={report.grid}")
    return " ".join(words)


def _header(report: Report) -> Text:
    shapes = _settings(report)
    return Text.from_markup(
        f"[bold]gradcheck[/] {escape(report.op)}  kernel [bold]{escape(report.kernel)}[/]  "
        f"backend {escape(report.backend)} ({escape(report.backend_reason)})  {shapes} seed={report.seed}"
    )


def _cell(c: Check | None) -> str:
    """The few numbers of one check that fit in a table cell."""
    if c is None:
        return "-"
    n = c.numbers
    if c.name == "fault":
        return f"[red]{escape(str(n.get('fault', 'fault')))}[/]"
    if c.name == "compare":
        if c.verdict == "kernel-bug":
            return f"[red]{escape(c.output)}: {n['beyond_bound']:,} of {n['elements']:,} wrong[/]"
        ratio = n["max_ratio"]
        power = (
            f"sees {n['detectable_rel_error']:.0e}" if n["elements"] > n.get("exact", -1) else ""
        )
        head = f"{ratio:.2g}x of {n['factor']:g}x" + (
            f", {power}" if n["detectable_rel_error"] else ""
        )
        return head if c.verdict == "pass" else f"[yellow]{head}: no power[/]"
    if c.name in ("schedules", "alignment"):
        sample = ", sample" if n.get("repeated_on") else ""  # the line under the table says which
        if c.verdict != "pass":
            return f"[red]{n['differing']:,} differ{sample}[/]"
        runs = [str(len(n["schedules"]))] if c.name == "schedules" else []
        runs += ["sample"] if sample else []
        return f"identical ({', '.join(runs)})" if runs else "identical"
    if c.name == "reference-fd":
        return (
            f"agrees (+/-{n['error_bar']:.0e})" if c.verdict == "pass" else "[yellow]disagrees[/]"
        )
    if c.name == "fd32":
        return f"{n['failed']} of {n['checked']} fail: {_verdict(c.verdict)}"
    return _verdict(c.verdict)


def _ratio(c: Check) -> float:
    value = c.numbers.get("max_ratio", 0.0)
    return float(value) if value is not None else float("inf")


def _table(report: Report) -> Table:
    """One row per case: its verdict and the key number of each check."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    names = ["compare", "schedules", "alignment", "reference-fd"]
    names = [n for n in names if any(c.name == n for c in report.checks)] or ["compare"]
    if any(c.name == "fd32" for c in report.checks):
        names.append("fd32")
    table.add_column("case", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    heads = {
        "compare": "kernel error / noise bound",
        "schedules": "thread orders",
        "alignment": "alignment",
        "reference-fd": "reference vs FD",
        "fd32": "float32 FD check",
    }
    for name in names:
        table.add_column(heads[name])
    by_case: dict[str, dict[str, Check]] = {}
    every: dict[str, list[Check]] = {}
    rank = {"kernel-bug": 2, "inconclusive": 1}
    for c in report.checks:
        every.setdefault(c.case, []).append(c)
        slot = by_case.setdefault(c.case, {})
        key = c.name if c.name != "fault" else "compare"
        old = slot.get(key)
        # Several outputs: the cell shows the worst compare (then the largest ratio).
        if old is None or (rank.get(c.verdict, 0), _ratio(c)) > (
            rank.get(old.verdict, 0),
            _ratio(old),
        ):
            slot[key] = c
    once = {c["name"] for c in report.cases if c.get("run_once")}
    for case, checks in by_case.items():
        verdict = overall(every[case])
        cells = [
            "ran once" if n in ("schedules", "alignment") and case in once and n not in checks
            else _cell(checks.get(n))
            for n in names
        ]  # fmt: skip
        table.add_row(escape(case), _verdict(verdict), *cells)
    return table


def finding_lines(report: Report, c: Check) -> list[str]:
    """A finding as the STYLE guide lays it out: what, observed, where, cause, reproduce."""
    dims = next((x["dims"] for x in report.cases if x["name"] == c.case), report.shapes)
    dims_s = ", ".join(f"{k}={v}" for k, v in dims.items() if k != "block")
    what = f"{c.name} {c.output}" if c.output else c.name
    lines = [
        f"{c.verdict}: {report.op} [{c.case}] {what} ({dims_s}, block={report.shapes.get('block')}, "
        f"{report.backend} backend)",
        f"  {c.summary}",
    ]
    if c.where:
        lines.append(f"  where: {'; '.join(c.where)}")
    if c.likely_cause:
        lines.append(f"  likely cause: {c.likely_cause}")
    if c.reproduce:
        lines.append(f"  reproduce: {c.reproduce}")
    if c.heatmap:
        lines += [f"  {h}" for h in c.heatmap]
    return lines


def renderables(report: Report) -> Iterator[RenderableType]:
    yield _header(report)
    yield _table(report)
    for case in report.cases:
        if case.get("run_once"):  # what "ran once" in the table means, and why it holds
            yield Text(f"{case['name']}: {case['description']}", style="dim")
    sampled: dict[str, list[str]] = {}  # the cases whose repeats ran on a sample of the blocks
    for case in report.cases:
        if case.get("repeats_on"):
            sampled.setdefault(case["repeats_on"], []).append(case["name"])
    if sampled:
        on = "; ".join(f"{', '.join(names)}: {text}" for text, names in sampled.items())
        yield Text(repeat_note(f"a sample of the blocks ({on})", "block"), style="dim")
    shown: set[tuple[str, str, str]] = set()
    detailed = 0
    for c in report.findings:
        if c.name == "reference-fd" and c.verdict == "pass":
            continue
        key = (c.name, c.output, " | ".join(c.where) or c.summary)
        if key in shown and c.verdict == "kernel-bug":
            continue  # the same evidence on another case: the table lists it
        shown.add(key)
        detailed += 1
        if detailed > MAX_DETAILED:
            yield Text("")
            yield Text(
                f"... {len(report.findings) - MAX_DETAILED} more findings: the table above lists "
                "them; --json FILE has them all"
            )
            break
        style = STYLES.get(c.verdict, "")
        lines = finding_lines(report, c)
        yield Text("")
        yield Group(Text(lines[0], style=style), *(Text(line) for line in lines[1:]))
    n_cases = len(report.cases)
    yield Text("")
    yield Text.from_markup(
        f"verdict: {_verdict(report.verdict)}  ({n_cases} cases, {len(report.checks)} checks, "
        f"{report.elapsed_s:.1f} s)"
        + (
            "\n[yellow]warning:[/] inconclusive is not a pass: the evidence could not decide"
            if report.verdict == "inconclusive"
            else ""
        )
    )


def render_text(report: Report, width: int = 120) -> str:
    """The console report without colour, e.g. for an exception message or a log."""
    buf = io.StringIO()
    console = Console(
        file=buf, width=width, color_system=None, force_terminal=False, soft_wrap=False
    )
    for r in renderables(report):
        console.print(r, soft_wrap=not isinstance(r, Table))
    return buf.getvalue()
