"""The cuda backend without a GPU: detection, data movement and error paths against a fake PyCUDA.

FakeCuda stands in for pycuda.driver / pycuda.compiler and one GPU: device memory is bytearrays,
kernels are Python functions, and every driver call is recorded so a test can check what reached
the "GPU" and in what order. The kernels really running on a GPU are in tests/gpu.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradcheck
import gradcheck.backends
from gradcheck import In, InOut, Out
from gradcheck._launch import POISON_BITS, POISON_BYTE, count_poison
from gradcheck.backends import _detect as detect
from gradcheck.backends import cuda as cuda_backend
from gradcheck.backends import resolve_backend
from gradcheck.backends._detect import BackendStatus, cuda_status
from gradcheck.backends.cuda import CPU_ONLY_OPTIONS, CudaSourceModule

FAKE_NVCC = "/fake/cuda/bin/nvcc"

SRC = r"""
__global__ void twice_but_last(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n - 1) y[i] = 2.0f * x[i];   // bug: the last element is never written
}
__global__ void add_one(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += 1.0f;
}
__global__ void noop(float* y) {}
"""


class FakeCuda:
    """PyCUDA and one GPU, faked. Install with ``install(monkeypatch)``."""

    def __init__(self, device_count: int = 1) -> None:
        self.device_count = device_count
        self.calls: list[tuple[Any, ...]] = []
        self.allocations: list[Any] = []
        self.kernels: dict[str, Callable[..., None]] = {
            "twice_but_last": self._twice_but_last,
            "add_one": self._add_one,
            "noop": lambda *args: None,
        }
        self.init_error: Exception | None = None
        self.compile_error: Exception | None = None
        self.launch_error: Exception | None = None
        self.sync_error: Exception | None = None
        self.free_error: Exception | None = None
        self.compile_kwargs: dict[str, Any] = {}
        self.driver = self._make_driver()
        self.compiler = self._make_compiler()
        self.package = types.ModuleType("pycuda")
        self.package.__path__ = []  # a package, but one the path finders find nothing in
        self.package.driver = self.driver  # type: ignore[attr-defined]
        self.package.compiler = self.compiler  # type: ignore[attr-defined]

    def install(self, monkeypatch: pytest.MonkeyPatch, contexts: tuple[str, ...] = ()) -> None:
        monkeypatch.setitem(sys.modules, "pycuda", self.package)
        monkeypatch.setitem(sys.modules, "pycuda.driver", self.driver)
        monkeypatch.setitem(sys.modules, "pycuda.compiler", self.compiler)
        finder = _ContextFinder(self, contexts or ("pycuda.autoprimaryctx", "pycuda.autoinit"))
        monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])

    def driver_calls(self) -> list[tuple[Any, ...]]:
        """Calls that touch the GPU (not the detection ones made once per process)."""
        return [c for c in self.calls if c[0] not in ("init", "count", "compile", "context")]

    def view(self, alloc: Any, dtype: Any) -> np.ndarray:
        return np.frombuffer(alloc.buf, dtype=dtype)

    def _twice_but_last(self, x: Any, y: Any, n: np.int32) -> None:
        xs, ys = self.view(x, np.float32), self.view(y, np.float32)
        ys[: int(n) - 1] = 2 * xs[: int(n) - 1]

    def _add_one(self, x: Any, n: np.int32) -> None:
        self.view(x, np.float32)[: int(n)] += 1

    def _make_driver(self) -> types.ModuleType:
        gpu = self
        drv = types.ModuleType("pycuda.driver")

        class Error(Exception):
            pass

        class CompileError(Error):
            def __init__(
                self, msg: str, command_line: list[str], stdout: Any = None, stderr: Any = None
            ) -> None:
                super().__init__(msg)
                self.command_line = command_line
                self.stdout = stdout
                self.stderr = stderr

        class Device:
            def __init__(self, ordinal: int) -> None:
                self.ordinal = ordinal

            @staticmethod
            def count() -> int:
                gpu.calls.append(("count",))
                return gpu.device_count

            def name(self) -> str:
                return "Fake GPU"

            def compute_capability(self) -> tuple[int, int]:
                return (9, 0)

        class DeviceAllocation:
            def __init__(self, nbytes: int) -> None:
                self.buf = bytearray(nbytes)
                self.freed = False

            def __int__(self) -> int:
                return id(self)

            def free(self) -> None:
                gpu.calls.append(("free", self))
                self.freed = True
                if gpu.free_error is not None:
                    raise gpu.free_error

        class Event:
            def record(self, stream: Any = None) -> None:
                gpu.calls.append(("event_record", stream))

            def synchronize(self) -> None:
                gpu.calls.append(("event_synchronize",))
                if gpu.sync_error is not None:
                    raise gpu.sync_error

            def time_till(self, other: Event) -> float:
                return 1.5  # milliseconds, as PyCUDA reports

        class Context:
            @staticmethod
            def synchronize() -> None:
                gpu.calls.append(("synchronize",))
                if gpu.sync_error is not None:
                    raise gpu.sync_error

        class ArgumentHandler:
            def __init__(self, array: np.ndarray) -> None:
                self.array = array

        class DrvIn(ArgumentHandler):
            pass

        class DrvOut(ArgumentHandler):
            pass

        class DrvInOut(DrvIn, DrvOut):
            pass

        def init() -> None:
            gpu.calls.append(("init",))
            if gpu.init_error is not None:
                raise gpu.init_error

        def mem_alloc(nbytes: int) -> DeviceAllocation:
            alloc = DeviceAllocation(nbytes)
            gpu.allocations.append(alloc)
            gpu.calls.append(("mem_alloc", nbytes))
            return alloc

        def memcpy_htod(dest: DeviceAllocation, src: np.ndarray) -> None:
            data = np.ascontiguousarray(src).tobytes()
            gpu.calls.append(("memcpy_htod", dest, data))
            dest.buf[: len(data)] = data

        def memcpy_dtoh(dest: np.ndarray, src: DeviceAllocation) -> None:
            gpu.calls.append(("memcpy_dtoh", src))
            dest.view(np.uint8).reshape(-1)[:] = np.frombuffer(src.buf, np.uint8)[: dest.nbytes]

        def memset(width: int) -> Callable[[DeviceAllocation, int, int], None]:
            def fill(dest: DeviceAllocation, value: int, count: int) -> None:
                gpu.calls.append((f"memset_d{width}", dest, value, count))
                gpu.view(dest, f"u{width // 8}")[:count] = value

            return fill

        for name, value in {
            "Error": Error,
            "LogicError": type("LogicError", (Error,), {}),
            "LaunchError": type("LaunchError", (Error,), {}),
            "RuntimeError": type("RuntimeError", (Error,), {}),
            "MemoryError": type("MemoryError", (Error, MemoryError), {}),
            "CompileError": CompileError,
            "Device": Device,
            "DeviceAllocation": DeviceAllocation,
            "Event": Event,
            "Context": Context,
            "ArgumentHandler": ArgumentHandler,
            "In": DrvIn,
            "Out": DrvOut,
            "InOut": DrvInOut,
            "function_attribute": types.SimpleNamespace(MAX_DYNAMIC_SHARED_SIZE_BYTES=8),
            "init": init,
            "mem_alloc": mem_alloc,
            "memcpy_htod": memcpy_htod,
            "memcpy_dtoh": memcpy_dtoh,
            "memset_d8": memset(8),
            "memset_d16": memset(16),
            "memset_d32": memset(32),
        }.items():
            setattr(drv, name, value)
        return drv

    def _make_compiler(self) -> types.ModuleType:
        gpu = self
        drv = self.driver
        compiler = types.ModuleType("pycuda.compiler")

        class Function:
            def __init__(self, name: str) -> None:
                self.name = name

            def set_attribute(self, attribute: int, value: int) -> None:
                gpu.calls.append(("set_attribute", attribute, value))

            def __call__(self, *args: Any, **launch: Any) -> None:
                gpu.calls.append(("launch", self.name, args, launch))
                if gpu.launch_error is not None:
                    raise gpu.launch_error
                gpu.kernels[self.name](*args)

        class SourceModule:
            def __init__(self, source: str, **kwargs: Any) -> None:
                gpu.calls.append(("compile",))
                gpu.compile_kwargs = {"source": source, **kwargs}
                if gpu.compile_error is not None:
                    raise gpu.compile_error

            def get_function(self, name: str) -> Function:
                if name not in gpu.kernels:
                    raise drv.LogicError("cuModuleGetFunction failed: named symbol not found")
                return Function(name)

        compiler.SourceModule = SourceModule  # type: ignore[attr-defined]
        return compiler


class _ContextFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves pycuda.autoprimaryctx / pycuda.autoinit, recording that they were imported.

    A module put straight into sys.modules would hide whether the backend imported it at all.
    """

    def __init__(self, gpu: FakeCuda, names: tuple[str, ...]) -> None:
        self.gpu = gpu
        self.names = names

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname in self.names:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        self.gpu.calls.append(("context", module.__name__))


class _RaiseOnImport(importlib.abc.MetaPathFinder):
    """Makes ``import pycuda.driver`` fail the way it does where libcuda.so.1 is missing."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname == "pycuda.driver":
            raise ImportError(
                "libcuda.so.1: cannot open shared object file: No such file or directory"
            )
        return None


@pytest.fixture(autouse=True)
def fresh_detection(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Detection is cached per process; each test sees its own fake, and leaves no pycuda behind."""
    # Where the real PyCUDA is installed and tests/gpu already ran, its modules (autoprimaryctx
    # included) are in sys.modules; set them aside so the fakes are all a test sees.
    saved = {k: v for k, v in sys.modules.items() if k == "pycuda" or k.startswith("pycuda.")}
    for name in saved:
        del sys.modules[name]
    cuda_status.cache_clear()
    monkeypatch.setattr(cuda_backend, "nvcc_path", lambda nvcc="nvcc": FAKE_NVCC)
    monkeypatch.setattr(detect, "nvcc_path", lambda nvcc="nvcc": FAKE_NVCC)
    monkeypatch.delenv("GRADCHECK_BACKEND", raising=False)
    yield
    monkeypatch.undo()  # first, or its own undo would later remove the modules restored here
    for name in [k for k in sys.modules if k == "pycuda" or k.startswith("pycuda.")]:
        del sys.modules[name]
    sys.modules.update(saved)
    cuda_status.cache_clear()


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda()
    fake.install(monkeypatch)
    return fake


@pytest.fixture
def no_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycuda", None)  # None makes `import pycuda` fail


# --- detection -------------------------------------------------------------------------------


def test_status_without_pycuda_names_the_install_command(no_pycuda: None) -> None:
    status = cuda_status()
    assert not status.available
    assert status.reason.startswith("PyCUDA is not installed")
    assert 'pip install "gradcheck[cuda]"' in status.reason


def test_status_without_driver_library_says_no_nvidia_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    package = types.ModuleType("pycuda")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.delitem(sys.modules, "pycuda.driver", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_RaiseOnImport(), *sys.meta_path])
    status = cuda_status()
    assert not status.available
    assert "the CUDA driver library is missing" in status.reason
    assert "libcuda.so.1" in status.reason
    assert "no NVIDIA driver" in status.reason


def test_status_when_init_fails_quotes_the_driver(
    gpu: FakeCuda,
) -> None:
    gpu.init_error = gpu.driver.RuntimeError("cuInit failed: no CUDA-capable device is detected")
    status = cuda_status()
    assert not status.available
    assert status.reason == (
        "the CUDA driver reports no usable device "
        "(cuInit failed: no CUDA-capable device is detected)"
    )


def test_status_with_zero_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda(device_count=0).install(monkeypatch)
    status = cuda_status()
    assert not status.available
    assert status.reason == "the CUDA driver sees 0 devices"


def test_status_with_one_device_names_it(gpu: FakeCuda) -> None:
    status = cuda_status()
    assert status.available
    assert status.reason == ""
    assert status.detail == "Fake GPU (sm_90), 1 device(s)"


def test_status_with_a_device_but_no_nvcc(gpu: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "nvcc_path", lambda nvcc="nvcc": None)
    cuda_status.cache_clear()
    status = cuda_status()
    assert not status.available
    assert "nvcc is not" in status.reason
    assert resolve_backend("auto")[0] == "cpu"


def test_asking_for_cuda_without_it_says_why(no_pycuda: None) -> None:
    with pytest.raises(gradcheck.BackendUnavailable) as info:
        gradcheck.SourceModule(SRC, backend="cuda")
    message = str(info.value)
    assert "PyCUDA is not installed" in message
    assert "backend='cpu'" in message


def test_building_the_cuda_module_directly_without_cuda_says_why(no_pycuda: None) -> None:
    with pytest.raises(gradcheck.BackendUnavailable, match="PyCUDA is not installed"):
        CudaSourceModule(SRC)


def test_auto_picks_cpu_when_cuda_is_unavailable(
    no_pycuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the choice is under test, so the cpu backend's own check is not run.
    monkeypatch.setattr(gradcheck.backends, "cpu_status", lambda: BackendStatus("cpu", True))
    name, reason = resolve_backend("auto")
    assert name == "cpu"
    assert reason.startswith("auto: PyCUDA is not installed")


def test_auto_picks_cuda_when_a_device_is_usable(gpu: FakeCuda) -> None:
    assert resolve_backend("auto") == ("cuda", "auto: Fake GPU (sm_90), 1 device(s)")


def test_importing_the_backend_imports_no_pycuda(tmp_path: Path) -> None:
    # A pycuda that imports fine, so the check fails if the backend imports it eagerly.
    (tmp_path / "pycuda").mkdir()
    (tmp_path / "pycuda" / "__init__.py").write_text("")
    (tmp_path / "pycuda" / "driver.py").write_text("")
    script = textwrap.dedent(
        """
        import sys
        import gradcheck
        import gradcheck.backends.cuda
        print(sorted(m for m in sys.modules if m.split(".")[0] == "pycuda"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_context_is_made_by_the_first_module_and_prefers_the_primary_context(
    gpu: FakeCuda,
) -> None:
    assert ("context", "pycuda.autoprimaryctx") not in gpu.calls
    gradcheck.SourceModule(SRC, backend="cuda")
    assert ("context", "pycuda.autoprimaryctx") in gpu.calls
    assert ("context", "pycuda.autoinit") not in gpu.calls


def test_old_pycuda_without_autoprimaryctx_falls_back_to_autoinit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCuda()
    fake.install(monkeypatch, contexts=("pycuda.autoinit",))
    gradcheck.SourceModule(SRC, backend="cuda")
    assert ("context", "pycuda.autoinit") in fake.calls


def test_the_factory_records_why_cuda_was_chosen(gpu: FakeCuda) -> None:
    mod = gradcheck.SourceModule(SRC, backend="cuda")
    assert mod.backend == "cuda"
    assert mod.backend_reason == "asked for"  # type: ignore[attr-defined]
    assert isinstance(mod, CudaSourceModule)
    assert mod.kernel_names == ("twice_but_last", "add_one", "noop")


# --- compiling -------------------------------------------------------------------------------


def test_compile_options_reach_pycuda(gpu: FakeCuda) -> None:
    CudaSourceModule(SRC, options=["-O3"], arch="sm_90", keep=True, cache_dir="/tmp/cache")
    kwargs = gpu.compile_kwargs
    assert kwargs["source"] == SRC
    assert kwargs["nvcc"] == FAKE_NVCC  # the resolved path, found even when not on PATH
    assert kwargs["options"] == ["-O3"]
    assert kwargs["arch"] == "sm_90"
    assert kwargs["keep"] is True
    assert kwargs["cache_dir"] == "/tmp/cache"
    assert kwargs["no_extern_c"] is False


def test_a_source_path_adds_its_directory_for_quoted_includes(
    gpu: FakeCuda, tmp_path: Path
) -> None:
    (tmp_path / "common.cuh").write_text("#define SCALE 2.0f\n")
    path = tmp_path / "scale.cu"
    path.write_text('#include "common.cuh"\n__global__ void scale(float* x) { x[0] *= SCALE; }\n')
    mod = CudaSourceModule(path, include_dirs=["/opt/include"])
    assert gpu.compile_kwargs["include_dirs"] == [str(tmp_path.resolve()), "/opt/include"]
    assert mod.source.path == path.resolve()
    assert mod.kernel_names == ("scale",)


def test_options_given_as_one_string_are_refused(gpu: FakeCuda) -> None:
    with pytest.raises(gradcheck.UsageError, match=r"options='-O3' must be a list of strings"):
        CudaSourceModule(SRC, options="-O3")  # type: ignore[arg-type]


def test_missing_nvcc_says_where_it_looked(gpu: FakeCuda, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_backend, "nvcc_path", lambda nvcc="nvcc": None)
    with pytest.raises(gradcheck.BackendUnavailable) as info:
        CudaSourceModule(SRC)
    assert "'nvcc' is not on PATH" in str(info.value)
    assert "/usr/local/cuda/bin" in str(info.value)


def test_a_compile_error_carries_the_command_and_nvcc_output(gpu: FakeCuda) -> None:
    stderr = (
        'kernel.cu(4): error: identifier "undefined_thing" is undefined\n\n'
        "1 error detected in the compilation of kernel.cu.\n"
    )
    command = [FAKE_NVCC, "--cubin", "-arch", "sm_90", "kernel.cu"]
    gpu.compile_error = gpu.driver.CompileError(
        "nvcc compilation of /tmp/tmpab12/kernel.cu failed",
        command,
        stdout=b"",
        stderr=stderr.encode(),  # older PyCUDA hands over bytes
    )
    with pytest.raises(gradcheck.CompileError) as info:
        gradcheck.SourceModule(SRC, backend="cuda")
    err = info.value
    assert err.compiler == "nvcc"
    assert err.command == tuple(command)
    assert err.stderr == stderr
    message = str(err)
    assert message.startswith(
        'nvcc could not compile kernel.cu for the cuda backend: kernel.cu(4): error: identifier "'
    )
    assert f"command: {FAKE_NVCC} --cubin -arch sm_90 kernel.cu" in message
    assert '  | kernel.cu(4): error: identifier "undefined_thing" is undefined' in message
    assert "one past your file's" in message  # PyCUDA's extern "C" { line shifts them


def test_a_c_linkage_compile_error_points_at_no_extern_c(gpu: FakeCuda) -> None:
    gpu.compile_error = gpu.driver.CompileError(
        "nvcc compilation of kernel.cu failed",
        ["nvcc", "kernel.cu"],
        stderr='kernel.cu(3): error: this declaration may not have extern "C" linkage\n',
    )
    with pytest.raises(gradcheck.CompileError, match=r"pass no_extern_c=True"):
        CudaSourceModule("template <int N> __global__ void k(float* x) {}\n")


def test_a_misspelt_kernel_gets_a_suggestion(gpu: FakeCuda) -> None:
    mod = gradcheck.SourceModule(SRC, backend="cuda")
    with pytest.raises(gradcheck.KernelNotFound) as info:
        mod.get_function("twice_but_lst")
    message = str(info.value)
    assert "no kernel named 'twice_but_lst'" in message
    assert "Did you mean 'twice_but_last'?" in message
    assert "Kernels it defines: twice_but_last, add_one, noop." in message


def test_a_mangled_kernel_name_is_explained_with_no_extern_c(
    gpu: FakeCuda,
) -> None:
    mod = CudaSourceModule("__global__ void scale(float* x) {}\n", no_extern_c=True)
    with pytest.raises(gradcheck.KernelNotFound) as info:
        mod.get_function("scale")
    message = str(info.value)
    assert "mangles kernel names" in message
    assert "'_Z5scale'" in message
    assert 'extern "C" __global__' in message


def test_the_cuda_module_refuses_cpu_backend_options(gpu: FakeCuda) -> None:
    with pytest.raises(gradcheck.UsageError) as info:
        gradcheck.SourceModule(SRC, backend="cuda", nvcc_check="off")
    assert "nvcc_check=, a cpu-backend option" in str(info.value)
    assert "backend='cpu'" in str(info.value)
    with pytest.raises(
        gradcheck.UsageError, match=r"unexpected keyword archh=\. Did you mean 'arch'"
    ):
        gradcheck.SourceModule(SRC, backend="cuda", archh="sm_90")


# --- launching -------------------------------------------------------------------------------


@pytest.fixture
def twice(gpu: FakeCuda) -> Any:
    return gradcheck.SourceModule(SRC, backend="cuda").get_function("twice_but_last")


def test_a_launch_copies_in_poisons_out_and_counts_unwritten(gpu: FakeCuda, twice: Any) -> None:
    x = np.arange(8, dtype=np.float32)
    y = np.zeros(8, dtype=np.float32)
    launch = twice.launch(In(x), Out(y), np.int32(8), block=(8, 1, 1), grid=(1, 1))

    htod = [c for c in gpu.calls if c[0] == "memcpy_htod"]
    assert [c[2] for c in htod] == [x.tobytes()]  # In copied in; Out never copied in
    assert ("memset_d32", gpu.allocations[1], POISON_BITS["float32"], 8) in gpu.calls
    # y came back from the device: written elements doubled, the skipped one still poison.
    np.testing.assert_array_equal(y[:7], 2 * x[:7])
    assert np.isnan(y[7])
    assert y.view(np.uint32)[7] == POISON_BITS["float32"]
    assert launch.unwritten == {1: 1}
    assert launch.backend == "cuda"
    assert launch.kernel == "twice_but_last"
    assert launch.block == (8, 1, 1)
    assert launch.grid == (1, 1, 1)
    assert twice.last_launch is launch
    assert all(a.freed for a in gpu.allocations)

    (_, _, args, geometry) = next(c for c in gpu.calls if c[0] == "launch")
    assert args[0] is gpu.allocations[0]
    assert args[1] is gpu.allocations[1]
    assert geometry == {"block": (8, 1, 1), "grid": (1, 1, 1), "shared": 0, "stream": None}


@pytest.mark.parametrize(
    ("dtype", "call", "value"),
    [
        ("float32", "memset_d32", POISON_BITS["float32"]),
        ("float16", "memset_d16", POISON_BITS["float16"]),
        ("int32", "memset_d8", POISON_BYTE),
        ("uint8", "memset_d8", POISON_BYTE),
    ],
)
def test_out_buffers_are_poisoned_with_the_value_of_their_dtype(
    gpu: FakeCuda, dtype: str, call: str, value: int
) -> None:
    f = gradcheck.SourceModule(SRC, backend="cuda").get_function("noop")
    y = np.zeros(5, dtype=dtype)
    launch = f.launch(Out(y), block=(1, 1, 1))
    count = y.nbytes if call == "memset_d8" else y.size
    assert (call, gpu.allocations[0], value, count) in gpu.calls
    assert launch.unwritten == {0: 5}
    assert count_poison(y) == 5


def test_float64_outputs_are_poisoned_through_a_host_copy(gpu: FakeCuda) -> None:
    f = gradcheck.SourceModule(SRC, backend="cuda").get_function("noop")
    y = np.zeros(3, dtype=np.float64)
    launch = f.launch(Out(y), block=(1, 1, 1))
    sent = next(c[2] for c in gpu.calls if c[0] == "memcpy_htod")
    assert np.frombuffer(sent, np.uint64).tolist() == [POISON_BITS["float64"]] * 3
    assert np.isnan(y).all()
    assert launch.unwritten == {0: 3}


def test_inout_goes_both_ways_and_is_not_counted_as_unwritten(gpu: FakeCuda) -> None:
    f = gradcheck.SourceModule(SRC, backend="cuda").get_function("add_one")
    x = np.arange(4, dtype=np.float32)
    launch = f.launch(InOut(x), np.int32(3), block=(4, 1, 1))
    np.testing.assert_array_equal(x, [1, 2, 3, 3])
    assert launch.unwritten == {}


def test_pycuda_style_wrappers_are_moved_and_poisoned_like_gradchecks(
    gpu: FakeCuda, twice: Any
) -> None:
    x = np.arange(4, dtype=np.float32)
    y = np.zeros(4, dtype=np.float32)
    launch = twice.launch(gpu.driver.In(x), gpu.driver.Out(y), np.int32(4), block=(4, 1, 1))
    assert launch.unwritten == {1: 1}
    assert np.isnan(y[3])


def test_scalars_and_device_pointers_pass_through(gpu: FakeCuda) -> None:
    gpu.kernels["takes_all"] = lambda *args: None
    f = gradcheck.SourceModule(SRC, backend="cuda").get_function("takes_all")
    on_device = gpu.driver.DeviceAllocation(16)
    gpu_array = types.SimpleNamespace(gpudata=on_device)  # what a pycuda GPUArray exposes
    f(np.int32(7), np.float32(0.5), np.bool_(True), on_device, gpu_array, block=(1, 1, 1))
    (_, _, args, _) = next(c for c in gpu.calls if c[0] == "launch")
    assert args[0] == 7 and args[0].dtype == np.int32
    assert args[1] == 0.5 and args[1].dtype == np.float32
    assert args[2] == 1 and args[2].dtype == np.uint8  # a C++ bool is one byte
    assert args[3] is on_device
    assert args[4] is gpu_array
    assert not on_device.freed  # not ours to free


def test_a_python_int_is_refused_before_any_driver_call(gpu: FakeCuda, twice: Any) -> None:
    x = np.zeros(4, dtype=np.float32)
    before = gpu.driver_calls()
    with pytest.raises(gradcheck.UsageError) as info:
        twice(In(x), Out(x.copy()), 4, block=(4, 1, 1))
    assert "argument 2 is a Python int (4)" in str(info.value)
    assert "np.int32(4)" in str(info.value)
    assert gpu.driver_calls() == before


@pytest.mark.parametrize(
    ("geometry", "expected"),
    [
        ({"block": (64, 32, 1)}, "CUDA allows at most 1024 per block"),
        ({}, "block= is required"),
        ({"block": (32, 1, 1), "grid": (0, 1)}, "every dimension must be at least 1"),
        ({"block": (32, 1, 1), "shared": -1}, "must be a number of bytes >= 0"),
    ],
)
def test_bad_geometry_is_refused_before_any_driver_call(
    gpu: FakeCuda, twice: Any, geometry: dict[str, Any], expected: str
) -> None:
    x = np.zeros(4, dtype=np.float32)
    before = gpu.driver_calls()
    with pytest.raises(gradcheck.UsageError, match=expected):
        twice(In(x), Out(x.copy()), np.int32(4), **geometry)
    assert gpu.driver_calls() == before
    assert gpu.allocations == []


@pytest.mark.parametrize("option", CPU_ONLY_OPTIONS)
def test_cpu_backend_options_are_refused_by_name(gpu: FakeCuda, twice: Any, option: str) -> None:
    x = np.zeros(4, dtype=np.float32)
    before = gpu.driver_calls()
    with pytest.raises(gradcheck.UsageError) as info:
        twice(In(x), Out(x.copy()), np.int32(4), block=(4, 1, 1), **{option: 1})
    message = str(info.value)
    assert f"got {option}=, a cpu-backend option" in message
    assert "backend='cpu'" in message
    assert gpu.driver_calls() == before


def test_a_misspelt_launch_keyword_gets_a_suggestion(gpu: FakeCuda, twice: Any) -> None:
    x = np.zeros(4, dtype=np.float32)
    with pytest.raises(gradcheck.UsageError) as info:
        twice(In(x), Out(x.copy()), np.int32(4), block=(4, 1, 1), gird=(1, 1))
    assert "unexpected keyword gird=. Did you mean 'grid'?" in str(info.value)


def test_time_kernel_returns_event_time_in_seconds(gpu: FakeCuda, twice: Any) -> None:
    x = np.zeros(4, dtype=np.float32)
    assert twice(In(x), Out(x.copy()), np.int32(4), block=(4, 1, 1)) is None
    elapsed = twice(In(x), Out(x.copy()), np.int32(4), block=(4, 1, 1), time_kernel=True)
    assert elapsed == pytest.approx(1.5e-3)
    assert twice.last_launch.elapsed_s == pytest.approx(1.5e-3)
    assert sum(c[0] == "event_record" for c in gpu.calls) == 2


def test_texture_references_reach_pycuda_only_when_given(gpu: FakeCuda) -> None:
    f = gradcheck.SourceModule(SRC, backend="cuda").get_function("noop")
    texref = object()
    f(Out(np.zeros(1, np.float32)), block=(1, 1, 1), texrefs=[])
    f(Out(np.zeros(1, np.float32)), block=(1, 1, 1), texrefs=[texref])
    launches = [c[3] for c in gpu.calls if c[0] == "launch"]
    assert "texrefs" not in launches[0]
    assert launches[1]["texrefs"] == [texref]


def test_large_dynamic_shared_memory_is_opted_into(gpu: FakeCuda) -> None:
    f = gradcheck.SourceModule(SRC, backend="cuda").get_function("noop")
    f(Out(np.zeros(1, np.float32)), block=(32, 1, 1), shared=64 * 1024)
    assert ("set_attribute", 8, 64 * 1024) in gpu.calls


# --- driver errors ---------------------------------------------------------------------------


def test_an_illegal_address_becomes_out_of_bounds_and_memory_is_still_freed(
    gpu: FakeCuda, twice: Any
) -> None:
    gpu.sync_error = gpu.driver.LogicError(
        "cuCtxSynchronize failed: an illegal memory access was encountered"
    )
    # After a sticky fault every later call fails too; that must not hide the fault.
    gpu.free_error = gpu.driver.LogicError("cuMemFree failed: an illegal memory access")
    x = np.zeros(4, dtype=np.float32)
    with pytest.raises(gradcheck.OutOfBounds) as info:
        twice(In(x), Out(x.copy()), np.int32(4), block=(4, 1, 1), grid=(2, 1))
    err = info.value
    assert isinstance(err, AssertionError)  # pytest reports it as a test failure
    assert err.kernel == "twice_but_last"
    message = str(err)
    assert message.startswith(
        "illegal memory access in kernel 'twice_but_last' (grid=(2, 1, 1), block=(4, 1, 1)"
    )
    assert "an illegal memory access was encountered" in message
    assert "gives no address, argument or thread" in message
    assert "backend='cpu', which names the argument, block and thread" in message
    assert "CUDA context is now unusable in this process" in message
    assert len(gpu.allocations) == 2
    assert all(a.freed for a in gpu.allocations)


def test_too_many_resources_becomes_a_launch_error_with_what_to_try(
    gpu: FakeCuda, twice: Any
) -> None:
    gpu.launch_error = gpu.driver.LaunchError(
        "cuLaunchKernel failed: too many resources requested for launch"
    )
    x = np.zeros(4, dtype=np.float32)
    with pytest.raises(gradcheck.LaunchError) as info:
        twice(In(x), Out(x.copy()), np.int32(4), block=(1024, 1, 1))
    message = str(info.value)
    assert "could not start" in message
    assert "too many resources requested for launch" in message
    assert "__launch_bounds__(1024)" in message
    assert "unusable" not in message  # this one is not sticky: the process can go on
    assert all(a.freed for a in gpu.allocations)


def test_any_other_driver_error_is_a_launch_error_quoting_the_driver(
    gpu: FakeCuda, twice: Any
) -> None:
    gpu.sync_error = gpu.driver.RuntimeError("cuCtxSynchronize failed: unspecified launch failure")
    x = np.zeros(4, dtype=np.float32)
    with pytest.raises(gradcheck.LaunchError) as info:
        twice(In(x), Out(x.copy()), np.int32(4), block=(4, 1, 1))
    assert not isinstance(info.value, gradcheck.OutOfBounds)
    message = str(info.value)
    assert "the CUDA driver said: cuCtxSynchronize failed: unspecified launch failure" in message
    assert "CUDA context is now unusable" in message


def test_running_out_of_device_memory_says_how_much_was_asked(
    gpu: FakeCuda, twice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(nbytes: int) -> None:
        raise gpu.driver.MemoryError("cuMemAlloc failed: out of memory")

    monkeypatch.setattr(gpu.driver, "mem_alloc", no_memory)
    x = np.zeros(1000, dtype=np.float32)
    with pytest.raises(gradcheck.LaunchError) as info:
        twice(In(x), Out(x.copy()), np.int32(1000), block=(256, 1, 1))
    assert "no room for the arguments" in str(info.value)
    assert "8,000 bytes" in str(info.value)
