"""Building sources for the cpu backend: kernel discovery, the compile cache, the nvcc cross-check."""

from __future__ import annotations

from pathlib import Path

import pytest

import gradcheck as gc
from gradcheck.backends._detect import nvcc_path
from gradcheck.backends._source import declared_kernel_names, load_source
from gradcheck.backends.cpu._build import build, split_options
from gradcheck.backends.cpu._nvcc import parse_resource_usage
from gradcheck.backends.cpu._scan import GLOBAL_MARK, SHARED_MARK, param_names, scan


def test_scan_finds_namespaced_overloaded_and_instantiated_kernels() -> None:
    g = GLOBAL_MARK
    text = f"""
    namespace a {{ namespace b {{ extern "C" {g} void k1(float* x, int n) {{ }} }} }}
    {g} void over(float* x) {{ }}
    {g} void over(double* x) {{ }}
    {g} void declared_only(int);
    template <int B> {g} void t(float* y) {{ }}
    template {g} void t<128>(float*);
    template void t<256>(float* y);
    template <int B> {g} void never(float* y) {{ }}
    void host_helper() {{ }}
    """
    found = scan(text)
    names = [k.name for k in found.kernels]
    assert names == ["a::b::k1", "over", "over", "t<128>", "t<256>"]
    assert found.kernels[0].expr == "&::a::b::k1"
    assert found.kernels[1].expr == "static_cast<void(*)(float* x)>(&::over)"
    assert found.templates == ("never",)


def test_scan_rewrites_extern_shared_by_scope() -> None:
    s = f"extern {SHARED_MARK} static thread_local float"
    text = (
        f"{s} gbuf[];\nvoid f() {{ extern {SHARED_MARK} static thread_local volatile int sm[]; }}"
    )
    out = scan(text).text
    assert "static cudacpu::dyn_shared<float> gbuf;" in out
    assert "volatile int* const sm = reinterpret_cast<volatile int*>(cudacpu_tls.dsmem);" in out


def test_param_names() -> None:
    assert param_names("const float* __restrict__ logits, int, float* , unsigned int n") == (
        "logits",
        "",
        "",
        "n",
    )


def test_light_scan_of_raw_source_for_suggestions() -> None:
    src = "// __global__ void gone(\ntemplate <int B> __global__ void __launch_bounds__(B) tk(float*) {}"
    assert declared_kernel_names(src) == ["tk"]


def test_split_options_keeps_what_gxx_understands() -> None:
    keep, ignored = split_options(["-DA=1", "-D", "B", "-I/x", "--use_fast_math", "-arch=sm_90"])
    assert keep == ["-DA=1", "-DB", "-I/x"]
    assert ignored == ["--use_fast_math", "-arch=sm_90"]
    with pytest.raises(gc.UsageError, match="must be a list"):
        split_options("-DA=1")  # type: ignore[arg-type]


def test_cache_hits_and_header_edits_rebuild(tmp_path: Path) -> None:
    (tmp_path / "v.cuh").write_text("#define VALUE 1\n")
    src = tmp_path / "k.cu"
    src.write_text('#include "v.cuh"\nextern "C" __global__ void k(int* y) { y[0] = VALUE; }\n')
    cache = tmp_path / "cache"
    first = build(load_source(src), cache_dir=cache, nvcc_check="off")
    again = build(load_source(src), cache_dir=cache, nvcc_check="off")
    assert not first.cached and again.cached and again.library == first.library
    (tmp_path / "v.cuh").write_text("#define VALUE 2\n")  # only the header changes
    edited = build(load_source(src), cache_dir=cache, nvcc_check="off")
    assert not edited.cached and edited.library != first.library


def test_missing_include_suggests_include_dirs(tmp_path: Path) -> None:
    with pytest.raises(gc.CompileError, match=r"nope\.cuh: No such file"):
        gc.SourceModule('#include "nope.cuh"\n__global__ void k() {}', backend="cpu")


def test_template_without_instantiation_explains_itself() -> None:
    mod = gc.SourceModule(
        "template <int B> __global__ void t(float* y) { y[0] = B; }",
        no_extern_c=True,
        backend="cpu",
    )
    with pytest.raises(gc.KernelNotFound, match="template kernel with no explicit instantiation"):
        mod.get_function("t")


needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not installed here")


@needs_nvcc
def test_nvcc_rejects_what_only_gxx_accepts() -> None:
    src = 'extern "C" __global__ void k(float* y) { y[0] = 1; abort(); }'
    with pytest.raises(gc.CompileError) as err:
        gc.SourceModule(src, no_extern_c=True, backend="cpu")
    assert err.value.compiler == "nvcc"
    assert "g++ accepts kernel.cu but nvcc rejects it" in str(err.value)
    gc.SourceModule(src, no_extern_c=True, backend="cpu", nvcc_check="off")  # builds for the CPU


@needs_nvcc
def test_nvcc_resources_are_reported() -> None:
    mod = gc.SourceModule(
        'extern "C" __global__ void k(float* y) { __shared__ float s[64]; s[threadIdx.x] = 1; '
        "__syncthreads(); y[threadIdx.x] = s[63 - threadIdx.x]; }",
        no_extern_c=True,
        backend="cpu",
    )
    res = {r.arch: r for r in mod.resources}  # type: ignore[attr-defined]
    assert set(res) == {"sm_80", "sm_90"}
    assert res["sm_80"].shared_bytes == 256 and res["sm_80"].registers > 0


def test_parse_resource_usage() -> None:
    text = """ptxas info    : Compiling entry function 'k' for 'sm_80'
ptxas info    : Function properties for k
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 388 bytes cmem[0]
"""
    (r,) = parse_resource_usage(text)
    assert (r.kernel, r.arch, r.registers, r.shared_bytes) == ("k", "sm_80", 40, 1024)
    assert (r.stack_bytes, r.spill_stores, r.spill_loads, r.barriers) == (8, 4, 12, 1)
    # A kernel with a call stack: ptxas puts its cumulative size before the shared memory.
    stacked = text.replace("used 1 barriers, ", "used 1 barriers, 16 bytes cumulative stack size, ")
    (r,) = parse_resource_usage(stacked)
    assert (r.registers, r.barriers, r.shared_bytes) == (40, 1, 1024)
