"""Report files: written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import UsageError


def check_output_dir(flag: str, path: str | os.PathLike[str] | None) -> None:
    """Refuse an output file whose directory does not exist, before any work is done."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise UsageError(
            f"{flag} {os.fspath(path)}: the directory {Path(path).parent} does not exist."
        )


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write FILE.tmp, then rename it over FILE: a reader never sees half a report."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise UsageError(f"could not write {os.fspath(path)}: {exc}") from None
