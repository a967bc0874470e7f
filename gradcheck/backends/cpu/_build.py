"""Build CUDA source into a shared library the cpu backend can launch.

Steps: wrap the source as PyCUDA does (``extern "C" { ... }`` unless ``no_extern_c``) behind the
prelude header; preprocess with g++; find the kernels in the preprocessed text; append a table
that registers each one; compile. The cache key hashes the *preprocessed* text (so editing an
included header rebuilds), the flags, the compiler's version and the runtime library.

A race-checking variant (``race_build``) is built on request from the same preprocessed text:
compiled with g++'s ThreadSanitizer instrumentation (``-fsanitize=thread``, code generation only)
and linked against the runtime library, which defines the ``__tsan_*`` entry points itself; libtsan
is never linked.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..._errors import CompileError, UsageError
from .._detect import compiler_version, cxx_compiler, nvcc_path
from .._source import Source
from . import _nvcc
from ._scan import KernelDecl, scan

NATIVE = Path(__file__).parent / "native"
CXX_STD = "-std=c++20"
# -fno-strict-aliasing: CUDA code reinterprets float* as float4* freely and nvcc tolerates it.
# -U_FORTIFY_SOURCE: glibc's checked longjmp rejects the jumps between fiber stacks.
# -fno-gnu-unique: template statics (the per-kernel parameter-type tables among them) would
# otherwise bind process-wide across RTLD_LOCAL libraries, so two modules that both define
# extern "C" kernel `k` would share one table.
COMMON_FLAGS = (
    "-O2",
    "-fPIC",
    "-pthread",
    "-fno-strict-aliasing",
    "-U_FORTIFY_SOURCE",
    "-fno-gnu-unique",
)
USER_BEGIN = "namespace cudacpu_user_source_begins_here {}"
# The race-checking variant: every store and atomic calls a __tsan_* hook of the runtime library.
# Function entry/exit hooks are not needed (reports name buffers and threads, not call stacks).
RACE_FLAGS = ("-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where compiled modules live: cache_dir, $GRADCHECK_CACHE_DIR, or ~/.cache/gradcheck."""
    if cache_dir is not None:
        root = Path(cache_dir)
    elif os.environ.get("GRADCHECK_CACHE_DIR"):
        root = Path(os.environ["GRADCHECK_CACHE_DIR"])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(base) / "gradcheck"
    path = root / "cpu"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:24]


def _run(cmd: Sequence[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(cmd), input=input, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CompileError(
            f"cannot run the C++ compiler {cmd[0]!r}: {exc}", compiler=cmd[0], command=cmd
        ) from None


def build_runtime(cache: Path) -> Path:
    """The runtime library (fiber scheduler and fault handling), built once per compiler."""
    cxx = cxx_compiler()
    sources = [(NATIVE / n).read_bytes() for n in ("runtime.cpp", "gradcheck_cpu_abi.h")]
    key = _digest(*sources, compiler_version(cxx), *COMMON_FLAGS)
    name = f"libgradcheck_cudacpu-{key}.so"
    target = cache / name
    if target.exists():
        return target
    tmp = cache / f".{name}.{os.getpid()}.tmp"
    cmd = [cxx, CXX_STD, *COMMON_FLAGS, "-shared", f"-I{NATIVE}", f"-Wl,-soname,{name}"]
    cmd += [str(NATIVE / "runtime.cpp"), "-o", str(tmp)]
    r = _run(cmd)
    if r.returncode:
        raise CompileError(
            "the cpu backend's runtime library does not build with this compiler (needs g++ 11+)",
            compiler=cxx,
            command=cmd,
            stdout=r.stdout,
            stderr=r.stderr,
        )
    os.replace(tmp, target)
    return target


def split_options(options: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split nvcc-style options into those g++ understands (-D, -U, -I, -include) and the rest."""
    if isinstance(options, str):
        raise UsageError(f"options={options!r} must be a list of strings, e.g. ['-DBLOCK=256'].")
    keep: list[str] = []
    ignored: list[str] = []
    it = iter(options)
    for opt in it:
        if not isinstance(opt, str):
            raise UsageError(f"options must be strings; got {opt!r}.")
        if opt in ("-D", "-U", "-I", "-include", "--define-macro", "--include-path"):
            value = next(it, None)
            if value is None:
                raise UsageError(f"option {opt!r} needs a value after it.")
            flag = {"--define-macro": "-D", "--include-path": "-I"}.get(opt, opt)
            keep += [flag, value] if flag == "-include" else [flag + value]
        elif re.match(r"^(-D|-U|-I)\S", opt):
            keep.append(opt)
        elif opt.startswith(("--define-macro=", "--include-path=")):
            flag = "-D" if opt.startswith("--define-macro=") else "-I"
            keep.append(flag + opt.split("=", 1)[1])
        else:
            ignored.append(opt)  # -O3, -arch=..., --use_fast_math, -lineinfo: nvcc's business
    return keep, ignored


@dataclass(frozen=True)
class Build:
    """A compiled module: its library, its kernels, and what the cross-check found."""

    library: Path
    kernels: tuple[KernelDecl, ...]
    templates: tuple[str, ...]
    ignored_options: tuple[str, ...]
    resources: tuple[_nvcc.Resources, ...]
    nvcc_checked: bool
    cached: bool
    seconds: float
    # The preprocessed translation unit with its registration table: what race_build compiles.
    unit: str = field(default="", repr=False, compare=False)


def translation_unit(source: Source, no_extern_c: bool) -> str:
    """What g++ compiles: the prelude, then the source exactly as PyCUDA would hand it to nvcc."""
    return f'#include "gradcheck_cuda.h"\n{USER_BEGIN}\n{nvcc_unit(source, no_extern_c)}'


def nvcc_unit(source: Source, no_extern_c: bool) -> str:
    """The source as PyCUDA hands it to nvcc, with #line so messages cite the user's file."""
    name = source.display_name.replace("\\", "/").replace('"', '\\"')
    body = f'#line 1 "{name}"\n{source.text}\n'
    return body if no_extern_c else f'extern "C" {{\n{body}}}\n'


def registration(kernels: Sequence[KernelDecl]) -> str:
    """C++ appended to the preprocessed source: the table the launch worker reads."""

    def lit(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    rows = []
    for k in kernels:
        t = f"cudacpu::kernel<{k.expr}>"
        rows.append(
            f"  {{{lit(k.name)}, {lit(k.params)}, reinterpret_cast<const void*>({k.expr}), "
            f"&{t}::body, {t}::n, {t}::types}},"
        )
    if not rows:
        rows.append("  {nullptr, nullptr, nullptr, nullptr, 0, nullptr},")
    return (
        "\nstatic const cudacpu_kernel cudacpu_kernel_table[] = {\n"
        + "\n".join(rows)
        + "\n};\n"
        + 'extern "C" __attribute__((visibility("default"))) const cudacpu_kernel* '
        + f"cudacpu_kernels(int* n) {{ *n = {len(kernels)}; return cudacpu_kernel_table; }}\n"
        + 'extern "C" __attribute__((visibility("default"))) cudacpu_ctx* cudacpu_ctx_addr() '
        + "{ return &cudacpu_tls; }\n"
        + 'extern "C" __attribute__((visibility("default"))) int '
        + "cudacpu_launch(const cudacpu_kernel* k, cudacpu_launch* l, void** a) "
        + "{ return cudacpu_run(l, k->body, a, &cudacpu_ctx_addr); }\n"
    )


def _first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        if " error: " in line or line.startswith("error") or "fatal error" in line:
            return line.strip()
    for line in stderr.splitlines():
        if "undefined reference" in line:
            return line.strip()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"


def _discard(cu_dir: Path, proc: subprocess.Popen[str] | None) -> None:
    """Stop an nvcc run that is no longer needed and remove its scratch directory."""
    if proc is not None:
        proc.kill()
        proc.communicate()
    for f in cu_dir.iterdir():
        f.unlink()
    cu_dir.rmdir()


def build(
    source: Source,
    *,
    options: Sequence[str] = (),
    include_dirs: Sequence[str] = (),
    no_extern_c: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    keep: bool = False,
    nvcc: str = "nvcc",
    nvcc_check: str = "auto",
) -> Build:
    if nvcc_check not in ("auto", "off", "require"):
        raise UsageError(f"nvcc_check={nvcc_check!r} must be 'auto', 'off' or 'require'.")
    t0 = time.perf_counter()
    cache = cache_root(cache_dir)
    runtime = build_runtime(cache)
    cxx = cxx_compiler()
    gxx_opts, ignored = split_options(options or ())
    incs = [str(d) for d in (include_dirs or ())]
    if source.include_dir is not None:
        incs.insert(0, str(source.include_dir))
    for d in incs:
        if not Path(d).is_dir():
            raise UsageError(f"include_dirs entry {d!r} is not a directory.")
    inc_flags = [f"-I{NATIVE}", f"-I{NATIVE / 'include'}", *[f"-I{d}" for d in incs]]

    # nvcc works in parallel with g++ when it is there.
    nvcc_job = None
    nvcc_exe = nvcc_path(nvcc) if nvcc_check != "off" else None
    if nvcc_check == "require" and nvcc_exe is None:
        raise UsageError(f"nvcc_check='require' but nvcc ({nvcc!r}) is not installed here.")

    tu = translation_unit(source, no_extern_c)
    pre_cmd = [cxx, CXX_STD, "-E", "-x", "c++", *inc_flags, *gxx_opts, "-"]
    pre = _run(pre_cmd, input=tu)
    if pre.returncode:
        raise CompileError(
            f"g++ could not preprocess {source.display_name}: {_first_error(pre.stderr)}",
            compiler=cxx,
            command=pre_cmd,
            stdout="",
            stderr=pre.stderr,
        )
    text = pre.stdout
    begin = text.find(USER_BEGIN)
    found = scan(text, begin + len(USER_BEGIN) if begin >= 0 else 0)
    full = found.text + registration(found.kernels)
    link = [str(runtime), "-Wl,-rpath,$ORIGIN"]
    compile_flags = [CXX_STD, *COMMON_FLAGS, "-shared", "-w", "-x", "c++-cpp-output"]
    key = _digest(full, compiler_version(cxx), *compile_flags, runtime.name)
    library = cache / f"k-{key}.so"
    nvcc_key = _digest(nvcc_unit(source, no_extern_c), *(options or ()), *incs, nvcc_exe or "")
    nvcc_report = cache / f"nvcc-{nvcc_key}.txt"

    if nvcc_exe is not None and not nvcc_report.exists():
        cu_dir = Path(tempfile.mkdtemp(prefix="gradcheck-nvcc-"))
        cu_file = cu_dir / (source.path.name if source.path else "kernel.cu")
        cu_file.write_text(nvcc_unit(source, no_extern_c))
        nvcc_job = (cu_dir, *_nvcc.start(nvcc_exe, cu_file, options or (), incs))

    cached = library.exists()
    if not cached:
        ii = cache / f"k-{key}.ii"
        ii.write_text(full)
        tmp = cache / f".k-{key}.{os.getpid()}.tmp"
        cmd = [cxx, *compile_flags, str(ii), "-x", "none", *link, "-o", str(tmp)]
        r = _run(cmd)
        if r.returncode:
            if nvcc_job:
                _discard(nvcc_job[0], nvcc_job[2])
            raise CompileError(
                f"g++ could not compile {source.display_name}: {_first_error(r.stderr)}",
                compiler=cxx,
                command=cmd,
                stdout=r.stdout,
                stderr=r.stderr,
            )
        os.replace(tmp, library)
        if not keep:
            ii.unlink(missing_ok=True)

    resources: tuple[_nvcc.Resources, ...] = ()
    if nvcc_job is not None:
        cu_dir, cmd, proc = nvcc_job
        out, err = proc.communicate()
        _discard(cu_dir, None)
        if proc.returncode:
            raise CompileError(
                f"g++ accepts {source.display_name} but nvcc rejects it for "
                f"{'/'.join(_nvcc.ARCHS)}: {_nvcc.first_error(err)}. A kernel that only builds on "
                "the CPU would fail on a GPU; fix the source, or pass nvcc_check='off'.",
                compiler="nvcc",
                command=cmd,
                stdout=out,
                stderr=err,
            )
        nvcc_report.write_text(err + out)
    if nvcc_exe is not None and nvcc_report.exists():
        resources = tuple(_nvcc.parse_resource_usage(nvcc_report.read_text()))

    return Build(
        library=library,
        kernels=found.kernels,
        templates=found.templates,
        ignored_options=tuple(ignored),
        resources=resources,
        nvcc_checked=nvcc_exe is not None,
        cached=cached,
        seconds=time.perf_counter() - t0,
        unit=full,
    )


def race_build(b: Build, *, keep: bool = False) -> Path:
    """The race-checking library of a build (compiled on first use, then cached like the plain one).

    The same translation unit, compiled with ThreadSanitizer's instrumentation and linked against
    the runtime library (whose ``__tsan_*`` functions keep the shadow state); ``-z defs`` makes a
    hook the runtime lacks a link error here instead of a failure to load in the worker.
    """
    if not b.unit:
        raise UsageError("this build carries no translation unit to build a race-checking variant")
    cache = b.library.parent
    runtime = build_runtime(cache)
    cxx = cxx_compiler()
    compile_flags = [CXX_STD, *COMMON_FLAGS, "-w", "-x", "c++-cpp-output", *RACE_FLAGS]
    key = _digest(b.unit, compiler_version(cxx), *compile_flags, runtime.name)
    library = cache / f"kr-{key}.so"
    if library.exists():
        return library
    ii = cache / f"kr-{key}.ii"
    obj = cache / f".kr-{key}.{os.getpid()}.o"
    tmp = cache / f".kr-{key}.{os.getpid()}.tmp"
    ii.write_text(b.unit)
    try:
        cmd = [cxx, *compile_flags, "-c", str(ii), "-o", str(obj)]
        r = _run(cmd)
        if not r.returncode:
            cmd = [cxx, "-shared", "-pthread", str(obj), str(runtime)]
            cmd += ["-Wl,-rpath,$ORIGIN", "-Wl,-z,defs", "-o", str(tmp)]
            r = _run(cmd)
        if r.returncode:
            raise CompileError(
                "g++ could not build the race-checking variant of the kernels (races=True needs "
                f"g++ with -fsanitize=thread support): {_first_error(r.stderr)}",
                compiler=cxx,
                command=cmd,
                stdout=r.stdout,
                stderr=r.stderr,
            )
        os.replace(tmp, library)
    finally:
        obj.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        if not keep:
            ii.unlink(missing_ok=True)
    return library
