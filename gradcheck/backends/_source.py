"""Kernel source given as text (as PyCUDA takes it) or as a path to a .cu file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .._errors import UsageError

_SOURCE_SUFFIXES = (".cu", ".cuh", ".h", ".hpp", ".cpp", ".cc", ".cxx")


@dataclass(frozen=True)
class Source:
    """Kernel source text, where it came from, and the name compiler messages should cite."""

    text: str
    path: Path | None
    display_name: str

    @property
    def include_dir(self) -> Path | None:
        """The directory of the source file: its quoted #includes resolve there, as in nvcc."""
        return self.path.parent if self.path is not None else None


def load_source(source_or_path: str | os.PathLike[str]) -> Source:
    """Read a path, or take text as it is.

    A ``str`` is a path when it is one line ending in a source suffix (``.cu``, ``.cuh``, ...);
    anything else is source text. ``pathlib.Path`` is always a path.
    """
    if isinstance(source_or_path, os.PathLike):
        return _read(Path(source_or_path))
    if not isinstance(source_or_path, str):
        raise UsageError(
            f"SourceModule needs CUDA source text or a path to a .cu file, "
            f"got {type(source_or_path).__name__}."
        )
    text = source_or_path
    if "\n" not in text and text.strip().endswith(_SOURCE_SUFFIXES):
        return _read(Path(text.strip()))
    if not text.strip():
        raise UsageError("SourceModule got empty source text.")
    return Source(text=text, path=None, display_name="kernel.cu")


def _read(path: Path) -> Source:
    if not path.exists():
        raise UsageError(
            f"kernel source file {str(path)!r} does not exist (looked in {Path.cwd()}). "
            "Pass the path to a .cu file, or the source text itself."
        )
    if path.is_dir():
        raise UsageError(f"{str(path)!r} is a directory; pass the .cu file inside it.")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{str(path)!r} is not a text file ({exc}).") from None
    return Source(text=text, path=path.resolve(), display_name=str(path))


_GLOBAL_DECL = re.compile(
    r"__global__(?:[^;{(]|__launch_bounds__\s*\([^)]*\))*?"
    r"\b(?!__launch_bounds__)([A-Za-z_]\w*)\s*(?:<[^;{(]*>)?\s*\(",
    re.S,
)


def declared_kernel_names(text: str) -> list[str]:
    """Names of the ``__global__`` functions in ``text``, by a light scan of the raw source.

    Used for suggestions in error messages; the cpu backend's compiler-accurate list comes from
    the build itself.
    """
    names: list[str] = []
    for m in _GLOBAL_DECL.finditer(_strip_comments(text)):
        if m.group(1) not in names:
            names.append(m.group(1))
    return names


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)
