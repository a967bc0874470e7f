"""The cpu backend's launch worker: a separate process that loads kernel libraries and runs launches.

A kernel that crashes or hangs takes down this process, never the caller. It imports the standard
library only (it is started with ``python -I -S``), so it starts in milliseconds. The caller sends
one JSON request per SOCK_SEQPACKET message, with the launch's memory (a memfd) attached; buffers
sit between guard pages that this process protects in its own mapping.

The ctypes structures mirror native/gradcheck_cpu_abi.h.
"""

import ctypes
import ctypes.util
import json
import os
import socket
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
PROT_NONE, PROT_READ, PROT_RW, MAP_SHARED = 0, 1, 3, 1
ABI_VERSION = 4


class Param(ctypes.Structure):
    _fields_ = [
        ("is_pointer", ctypes.c_uint8),
        ("code", ctypes.c_char),
        ("is_const", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("size", ctypes.c_uint32),
    ]


class Kernel(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("params", ctypes.c_char_p),
        ("fn", ctypes.c_void_p),
        ("body", ctypes.c_void_p),
        ("nparams", ctypes.c_int32),
        ("types", ctypes.POINTER(Param)),
    ]


class Range(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("itemsize", ctypes.c_uint32),
        ("raced", ctypes.c_uint32),
    ]


class Race(ctypes.Structure):
    _fields_ = [
        ("scope", ctypes.c_int32),
        ("range", ctypes.c_int32),
        ("offset", ctypes.c_uint64),
        ("size", ctypes.c_uint32),
        ("block", ctypes.c_uint32),
        ("thread", ctypes.c_uint32),
        ("other_block", ctypes.c_uint32),
        ("other_thread", ctypes.c_uint32),
        ("atomic", ctypes.c_int32),
        ("other_atomic", ctypes.c_int32),
        ("same_warp", ctypes.c_int32),
        ("shared_words", ctypes.c_uint64),
        ("symbol_offset", ctypes.c_uint64),
        ("symbol", ctypes.c_char * 256),
    ]


class Launch(ctypes.Structure):
    _fields_ = [
        ("grid", ctypes.c_uint32 * 3),
        ("block", ctypes.c_uint32 * 3),
        ("shared_bytes", ctypes.c_uint64),
        ("stack_bytes", ctypes.c_uint64),
        ("schedule", ctypes.c_int32),
        ("seed", ctypes.c_uint32),
        ("workers", ctypes.c_int32),
        ("strict", ctypes.c_int32),
        ("poison_shared", ctypes.c_int32),
        ("status", ctypes.c_void_p),
        ("races", ctypes.c_int32),
        ("nranges", ctypes.c_uint32),
        ("ranges", ctypes.POINTER(Range)),
        ("nblock_list", ctypes.c_uint32),
        ("block_list", ctypes.POINTER(ctypes.c_uint32)),
        ("fault_kind", ctypes.c_int32),
        ("fault_signal", ctypes.c_int32),
        ("fault_write", ctypes.c_int32),
        ("fault_addr", ctypes.c_uint64),
        ("fault_block", ctypes.c_uint32 * 3),
        ("fault_thread", ctypes.c_uint32 * 3),
        ("message", ctypes.c_char * 2048),
        ("race", Race),
    ]


class DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]

libraries = {}


def load(path):
    if path not in libraries:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        lib.cudacpu_abi_version.restype = ctypes.c_int
        if lib.cudacpu_abi_version() != ABI_VERSION:
            raise RuntimeError(f"{path} was built for another runtime ABI")
        n = ctypes.c_int(0)
        lib.cudacpu_kernels.restype = ctypes.POINTER(Kernel)
        lib.cudacpu_kernels.argtypes = [ctypes.POINTER(ctypes.c_int)]
        table = lib.cudacpu_kernels(ctypes.byref(n))
        lib.cudacpu_launch.restype = ctypes.c_int
        lib.cudacpu_launch.argtypes = [ctypes.c_void_p, ctypes.POINTER(Launch), ctypes.c_void_p]
        libraries[path] = (lib, table, n.value)
    lib, table, n = libraries[path]
    kernels = []
    for i in range(n):
        k = table[i]
        info = DlInfo()
        symbol = None
        if libc.dladdr(k.fn, ctypes.byref(info)) and info.dli_sname and info.dli_saddr == k.fn:
            symbol = info.dli_sname.decode()
        params = [
            {
                "is_pointer": bool(k.types[j].is_pointer),
                "code": k.types[j].code.decode(),
                "is_const": bool(k.types[j].is_const),
                "size": k.types[j].size,
            }
            for j in range(k.nparams)
        ]
        kernels.append(
            {
                "name": k.name.decode(),
                "params": k.params.decode(),
                "symbol": symbol,
                "types": params,
            }
        )
    return {"ok": True, "kernels": kernels}


mapping = {"key": None, "base": None, "size": 0, "guards": []}


def arena(fd, size, guards):
    """Map the caller's arena, reusing the mapping when it is the same memfd as last time."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    if mapping["key"] != key or mapping["size"] != size:
        if mapping["base"] is not None:
            libc.munmap(mapping["base"], mapping["size"])
            mapping.update(key=None, base=None, size=0, guards=[])
        base = libc.mmap(None, size, PROT_RW, MAP_SHARED, fd, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap of the launch arena failed")
        mapping.update(key=key, base=base, size=size, guards=[])
    base = mapping["base"]
    for off in mapping["guards"]:
        libc.mprotect(base + off, PAGE, PROT_RW)
    mapping["guards"] = []
    for off in guards:
        if libc.mprotect(base + off, PAGE, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect of a guard page failed")
        mapping["guards"].append(off)
    return base


def map_host(fd, a):
    """Map a caller's HostBuffer (its own memfd) for one launch: inputs read-only, guards set."""
    prot = PROT_READ if a["read_only"] else PROT_RW
    base = libc.mmap(None, a["size"], prot, MAP_SHARED, fd, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap of a host buffer failed")
    for off in a["guards"]:
        if libc.mprotect(base + off, PAGE, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect of a guard page failed")
    return base


def launch(req, fds):
    lib, table, _ = libraries[req["library"]]
    size = req["arena_bytes"]
    base = arena(fds[0], size, req["guard_pages"])
    keep = []
    hosts = []  # (base, size) of each host buffer mapped for this launch
    try:
        for a in req["args"]:
            if a["kind"] == "host":
                hosts.append((map_host(fds[a["fd"]], a), a["size"]))
        return run(req, lib, table, base, size, hosts, keep)
    finally:
        for b, n in hosts:
            libc.munmap(b, n)


def run(req, lib, table, base, size, hosts, keep):
    mapped = iter(hosts)
    for a in req["args"]:
        if a["kind"] == "buffer":
            keep.append(ctypes.c_void_p(base + a["offset"]))
        elif a["kind"] == "host":
            keep.append(ctypes.c_void_p(next(mapped)[0] + a["offset"]))
        else:
            keep.append(
                ctypes.create_string_buffer(bytes.fromhex(a["bytes"]), max(8, len(a["bytes"]) // 2))
            )
    argv = (ctypes.c_void_p * max(1, len(keep)))(*[ctypes.addressof(k) for k in keep])
    spec = Launch()
    spec.grid[:] = req["grid"]
    spec.block[:] = req["block"]
    spec.shared_bytes = req["shared"]
    spec.stack_bytes = req["stack_bytes"]
    spec.schedule = req["schedule"]
    spec.seed = req["seed"]
    spec.workers = req["workers"]
    spec.strict = int(req["strict"])
    spec.poison_shared = int(req["poison_shared"])
    spec.status = base + req["status_offset"]
    watch = req.get("race_ranges") or []
    ranges = (Range * max(1, len(watch)))()
    if req.get("races"):
        # The writable argument buffers: [offset, bytes, itemsize] each, in the caller's order.
        for r, (offset, nbytes, itemsize) in zip(ranges, watch, strict=False):
            r.addr, r.bytes, r.itemsize = base + offset, nbytes, itemsize
        spec.races = 1
        spec.nranges = len(watch)
        spec.ranges = ranges
    only = req.get("block_list") or []
    block_list = (ctypes.c_uint32 * max(1, len(only)))(*only)
    spec.nblock_list = len(only)
    spec.block_list = block_list
    entry = ctypes.addressof(table[req["index"]])
    rc = lib.cudacpu_launch(entry, ctypes.byref(spec), argv)
    addr = spec.fault_addr
    race = None
    if spec.races and spec.fault_kind == 9:  # CUDACPU_FAULT_RACE
        f = spec.race
        race = {name: getattr(f, name) for name, _ in Race._fields_ if name != "symbol"}
        race["symbol"] = f.symbol.decode(errors="replace")
        race["raced"] = [ranges[i].raced for i in range(len(watch))]
    return {
        "ok": True,
        "rc": rc,
        "kind": spec.fault_kind,
        "signal": spec.fault_signal,
        "write": spec.fault_write,
        "addr": addr,
        "arena_offset": addr - base if base <= addr < base + size else None,
        "host_hit": next(
            ([k, addr - b] for k, (b, n) in enumerate(hosts) if b <= addr < b + n), None
        ),
        "block": list(spec.fault_block),
        "thread": list(spec.fault_thread),
        "message": spec.message.decode(errors="replace"),
        "race": race,
    }


def main():
    # stdout is a file here, which C stdio would buffer fully: a kernel that crashes would lose
    # its last printf lines. Line buffering keeps them.
    libc.setvbuf(ctypes.c_void_p.in_dll(libc, "stdout"), None, 1, 0)  # 1: _IOLBF
    sock = socket.socket(fileno=int(sys.argv[1]))
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 64)
        except (ConnectionError, OSError):
            return
        if not msg:
            return
        try:
            req = json.loads(msg)
            if req["op"] == "load":
                reply = load(req["library"])
            elif req["op"] == "launch":
                reply = launch(req, fds)
            else:
                reply = {"ok": False, "error": f"unknown request {req['op']!r}"}
        except Exception as exc:  # reported to the caller, which raises a named error
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())


if __name__ == "__main__":
    main()
