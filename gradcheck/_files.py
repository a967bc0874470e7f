"""Report files: written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import UsageError


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write FILE.tmp, then rename it over FILE: a reader never sees half a report."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise UsageError(f"could not write {os.fspath(path)}: {exc}") from None
