"""Reading a training log for diagnose-log: JSON lines, a JSON array or CSV, with common aliases.

``read_log`` turns the file (or records) into a ``LogSeries`` of arrays, one entry per logged step;
every mistake in the file is a UsageError that quotes the line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import UsageError, suggest

FloatArray = npt.NDArray[np.float64]


def format_step(s: Any) -> str:
    """A step number as the reports print it (``?`` when unknown)."""
    if s is None or (isinstance(s, float) and not math.isfinite(s)):
        return "?"
    return f"{int(s):,}" if float(s).is_integer() else f"{s:,.6g}"


# The columns diagnose-log reads, each under the names trainers commonly write (case-insensitive).
ALIASES: dict[str, tuple[str, ...]] = {
    "step": ("step", "iter", "iteration"),
    "loss": ("loss", "train_loss"),
    "grad_norm": ("grad_norm", "gnorm", "grad_norm_preclip", "total_norm"),
    "lr": ("lr", "learning_rate"),
    "clipped": ("clipped", "clip"),
    "param_dist": ("param_dist", "dist_from_init"),
    "param_norm": ("param_norm", "weight_norm"),
}


@dataclass(frozen=True, eq=False)
class LogSeries:
    """A training log as arrays, one entry per logged step; NaN where a record lacks the value.

    ``clipped`` holds 1.0 (clipped), 0.0 (not) or NaN; ``clip_source`` says where it came from:
    ``"column"``, ``"max-norm"`` (grad_norm > --max-norm) or ``""`` (unknown).
    """

    source: str
    step: FloatArray
    loss: FloatArray
    grad_norm: FloatArray | None = None
    lr: FloatArray | None = None
    clipped: FloatArray | None = None
    param_dist: FloatArray | None = None
    param_norm: FloatArray | None = None
    columns: tuple[str, ...] = ()
    used: Mapping[str, str] = field(default_factory=dict)
    clip_source: str = ""
    max_norm: float | None = None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.loss.size)


# --- reading ---------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "y", "t"})
_FALSE = frozenset({"false", "no", "n", "f"})
_FORMATS = "diagnose-log reads JSON lines (one object per line) or CSV with a header row"


def read_log(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    max_norm: float | None = None,
) -> LogSeries:
    """Read a training log (a JSON-lines or CSV file, or records as dicts) into a LogSeries.

    The format is chosen by the content: a first line that starts with ``{`` is JSON lines,
    ``[`` a JSON array of objects, anything else CSV with a header. Records without a loss key
    (eval or config lines) are skipped; a loss of null or "nan" is kept as NaN (it is data).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        rows, columns = _read_file(path)
        name = str(source)
    else:
        name = "<records>"
        rows = []
        for i, rec in enumerate(source, 1):
            if not isinstance(rec, Mapping):
                raise UsageError(
                    f"record {i} is a {type(rec).__name__}, not a mapping: pass the log as a "
                    "path, or as an iterable of dicts such as {'step': 1, 'loss': 7.7}."
                )
            rows.append((f"record {i}", dict(rec)))
        columns = list(dict.fromkeys(k for _, rec in rows for k in rec))
        if not rows:
            raise UsageError(
                "the log is empty: no records were given. Pass at least a step and a loss per "
                "record, e.g. [{'step': 1, 'loss': 7.7}, ...]."
            )
    return _series(name, rows, columns, max_norm)


def _read_file(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    if not path.exists():
        raise UsageError(f"{path}: no such file. Give the path of a training log ({_FORMATS}).")
    if path.is_dir():
        raise UsageError(f"{path} is a directory. Give the path of a training log file.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path} is not text (byte {exc.start} is not UTF-8). {_FORMATS}."
        ) from None
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if not first:
        raise UsageError(
            f"{path} is empty: no records. Log at least a step and a loss per line "
            '(e.g. {"step": 1, "loss": 7.7}).'
        )
    if first.startswith("["):
        return _read_json_array(path, text)
    if first.startswith("{"):
        return _read_jsonl(path, lines)
    return _read_csv(path, text)


def _read_jsonl(path: Path, lines: list[str]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    rows: list[tuple[str, dict[str, Any]]] = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path}: line {no} is not JSON ({exc.msg}): {_quote(line)}. {_FORMATS}; "
                "a run killed mid-write leaves a partial last line: delete it."
            ) from None
        if not isinstance(rec, dict):
            raise UsageError(
                f"{path}: line {no} is JSON but not an object: {_quote(line)}. Each line must be "
                'one record such as {"step": 1, "loss": 7.7}.'
            )
        rows.append((f"line {no}", rec))
    return rows, list(dict.fromkeys(k for _, rec in rows for k in rec))


def _read_json_array(path: Path, text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: line {exc.lineno} is not JSON ({exc.msg}): "
            f"{_quote(text.splitlines()[exc.lineno - 1])}. {_FORMATS}."
        ) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UsageError(f"{path} is a JSON document but not a list of objects. {_FORMATS}.")
    rows = [(f"record {i}", rec) for i, rec in enumerate(data, 1)]
    if not rows:
        raise UsageError(f"{path} is empty: the JSON list holds no records.")
    return rows, list(dict.fromkeys(k for _, rec in rows for k in rec))


def _read_csv(path: Path, text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    header = next(ln for ln in text.splitlines() if ln.strip())
    try:
        dialect: Any = csv.Sniffer().sniff(header, delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    columns: list[str] = []
    rows: list[tuple[str, dict[str, Any]]] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if not columns:
            columns = [c.strip() for c in cells]
            continue
        no = reader.line_num
        if len(cells) != len(columns):
            raise UsageError(
                f"{path}: line {no} has {len(cells)} fields, the header has {len(columns)}: "
                f"{_quote(','.join(cells))}. Fix or delete that line."
            )
        rows.append((f"line {no}", dict(zip(columns, cells, strict=True))))
    if not rows:
        raise UsageError(
            f"{path} is empty: a header ({', '.join(columns)}) and no records. Log at least a "
            "step and a loss per line."
        )
    return rows, columns


def _series(
    name: str,
    rows: list[tuple[str, dict[str, Any]]],
    columns: list[str],
    max_norm: float | None,
) -> LogSeries:
    by_fold = {c.strip().casefold(): c for c in reversed(columns)}
    used = {
        f: next(by_fold[a] for a in names if a in by_fold)
        for f, names in ALIASES.items()
        if any(a in by_fold for a in names)
    }
    if "loss" not in used:
        close = [c for c in columns if suggest(c.strip().casefold(), ALIASES["loss"], n=1)]
        hint = (
            f" {' or '.join(repr(c) for c in close)} looks like a loss column: rename it."
            if close
            else ""
        )
        found = ", ".join(repr(c) for c in columns) or "none"
        raise UsageError(
            f"{name} has no loss column (columns found: {found}).{hint} Name the loss column "
            f"one of {', '.join(ALIASES['loss'])}; {_FORMATS}."
        )
    loss_col = used["loss"]
    kept = [(where, rec) for where, rec in rows if loss_col in rec]
    notes: list[str] = []
    if len(kept) < len(rows):
        notes.append(f"{len(rows) - len(kept):,} records without a {loss_col!r} value skipped")
    values: dict[str, FloatArray] = {}
    for f, col in used.items():
        arr = np.array(
            [
                _value(rec.get(col), field=f, column=col, where=f"{name}: {where}")
                for where, rec in kept
            ],
            dtype=np.float64,
        )
        if f != "loss" and not np.isfinite(arr).any():
            continue  # a column with no value at all is as good as missing
        values[f] = arr
    used = {f: c for f, c in used.items() if f in values}
    n = len(kept)
    if "step" in values:
        step = values.pop("step")
        bad = np.flatnonzero(~np.isfinite(step))
        if bad.size:
            where, rec = kept[int(bad[0])]
            raise UsageError(
                f"{name}: {where}: {used['step']}={rec.get(used['step'])!r} is not a step "
                "number. Every record needs a finite step (or leave the column out: the record's "
                "number is used)."
            )
    else:
        step = np.arange(1, n + 1, dtype=np.float64)  # no step column: the record's number
    if n > 1 and not np.all(np.diff(step) > 0):
        # a resumed run logs some steps again: the later record is the one the run continued from
        _, last = np.unique(step[::-1], return_index=True)
        keep = np.sort(n - 1 - last)
        keep = keep[np.argsort(step[keep], kind="stable")]
        notes.append(
            f"steps repeat or go back (a resumed run?): kept the last record of each step, in "
            f"step order ({n - keep.size:,} records dropped)"
        )
        step = step[keep]
        values = {f: v[keep] for f, v in values.items()}
    clipped = values.get("clipped")
    clip_source = ""
    if clipped is not None:
        odd = np.flatnonzero(np.isfinite(clipped) & (clipped != 0) & (clipped != 1))
        if odd.size:
            raise UsageError(
                f"{name}: the {used['clipped']!r} column holds {clipped[odd[0]]:g} (at step "
                f"{format_step(float(step[odd[0]]))}): diagnose-log reads it as clipped yes/no "
                "(true/false or 0/1). If it is a clip coefficient, leave it out and give "
                "--max-norm X: clipped is then grad_norm > X."
            )
        clip_source = "column"
    elif max_norm is not None and "grad_norm" in values:
        g = values["grad_norm"]
        clipped = np.where(np.isfinite(g), (g > max_norm).astype(np.float64), np.nan)
        clip_source = "max-norm"
    return LogSeries(
        source=name,
        step=step,
        loss=values["loss"],
        grad_norm=values.get("grad_norm"),
        lr=values.get("lr"),
        clipped=clipped,
        param_dist=values.get("param_dist"),
        param_norm=values.get("param_norm"),
        columns=tuple(columns),
        used=used,
        clip_source=clip_source,
        max_norm=max_norm,
        notes=tuple(notes),
    )


def _value(raw: Any, *, field: str, column: str, where: str) -> float:
    if raw is None:
        return math.nan
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        s = raw.strip()
        if not s:
            return math.nan
        if field == "clipped" and s.casefold() in _TRUE | _FALSE:
            return 1.0 if s.casefold() in _TRUE else 0.0
        try:
            return float(s)
        except ValueError:
            pass
    raise UsageError(
        f"{where}: {column}={raw!r} is not a number. diagnose-log reads {column!r} as {field}; "
        "write numbers (nan and inf are fine), or true/false for clipped."
    )


def _quote(line: str, limit: int = 100) -> str:
    s = line.strip()
    return repr(s if len(s) <= limit else s[:limit] + "...")
