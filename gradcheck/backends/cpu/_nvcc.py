"""Compile the same source with nvcc for real GPU architectures, where nvcc is installed.

g++ accepts code that nvcc rejects (and the other way round for a few CUDA-only constructs the
prelude emulates): the cross-check catches a kernel that only builds on the CPU, and reports what
ptxas says each kernel costs (registers, shared memory, spills).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ARCHS: tuple[str, ...] = ("sm_80", "sm_90")


@dataclass(frozen=True)
class Resources:
    """What ptxas reports for one kernel on one architecture."""

    kernel: str
    arch: str
    registers: int
    shared_bytes: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int
    barriers: int


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
# ptxas puts other fields between these ("16 bytes cumulative stack size"): match each on its own.
_USED = re.compile(r"Used (\d+) registers")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_resource_usage(text: str) -> list[Resources]:
    """Parse ``nvcc --resource-usage`` (ptxas info) output."""
    found: list[Resources] = []
    kernel = arch = ""
    stack = stores = loads = 0
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            kernel, arch = m.group(1), m.group(2)
            stack = stores = loads = 0
        elif m := _PROPS.search(line):
            stack, stores, loads = (int(g) for g in m.groups())
        elif (m := _USED.search(line)) and kernel:
            bars, smem = _BARRIERS.search(line), _SMEM.search(line)
            found.append(
                Resources(
                    kernel=kernel,
                    arch=arch,
                    registers=int(m.group(1)),
                    barriers=int(bars.group(1)) if bars else 0,
                    shared_bytes=int(smem.group(1)) if smem else 0,
                    stack_bytes=stack,
                    spill_stores=stores,
                    spill_loads=loads,
                )
            )
            kernel = ""
    return found


def nvcc_command(
    nvcc: str, source_file: Path, options: Sequence[str], include_dirs: Sequence[str]
) -> list[str]:
    cmd = [nvcc, "--fatbin", "--resource-usage", "-o", "/dev/null"]
    for arch in ARCHS:
        num = arch[3:]
        cmd += ["-gencode", f"arch=compute_{num},code={arch}"]
    cmd += [f"-I{d}" for d in include_dirs]
    cmd += list(options)
    cmd.append(str(source_file))
    return cmd


def start(
    nvcc: str, source_file: Path, options: Sequence[str], include_dirs: Sequence[str]
) -> tuple[list[str], subprocess.Popen[str]]:
    """Start nvcc in the background, so it overlaps the g++ build."""
    cmd = nvcc_command(nvcc, source_file, options, include_dirs)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return cmd, proc


def first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        if "error" in line:
            return line.strip()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[0].strip() if lines else "nvcc failed"
