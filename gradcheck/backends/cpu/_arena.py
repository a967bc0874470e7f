"""The memory one launch sees: every buffer between guard pages, with canaries in the slack.

The arena is a memfd shared with the launch worker. This side copies inputs in, poisons outputs and
reads results; the worker protects the guard pages in its own mapping, so an access past a buffer
faults there. ``align="end"`` puts each buffer's last byte against the following guard page (an
access one element past the end faults); ``align="start"`` puts its first byte after the preceding
guard page (an access before the start faults). The slack on the other side holds canary bytes:
a write there is found after the launch.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..._launch import poison_fill

PAGE = mmap.PAGESIZE
CANARY = 0xA5
STATUS_BYTES = 64 + 64 * 64  # cudacpu_status in gradcheck_cpu_abi.h
Align = Literal["end", "start"]


@dataclass
class Slot:
    """Where one array argument lives in the arena."""

    arg_index: int
    offset: int  # of the first data byte
    nbytes: int
    itemsize: int
    region: tuple[int, int]  # the pages between the two guard pages
    guards: tuple[int, int]


class Arena:
    def __init__(self, arrays: list[tuple[int, np.ndarray, str]], align: Align) -> None:
        """``arrays``: (argument index, array, direction) for each array argument."""
        self.slots: list[Slot] = []
        pos = -(-STATUS_BYTES // PAGE) * PAGE
        guards: list[int] = []
        for index, array, _ in arrays:
            lead = pos
            pages = max(1, -(-array.nbytes // PAGE))
            start = lead + PAGE
            end = start + pages * PAGE
            # Keep the element alignment: data never straddles a partial element.
            offset = end - array.nbytes if align == "end" else start
            self.slots.append(
                Slot(index, offset, array.nbytes, array.itemsize, (start, end), (lead, end))
            )
            guards.append(lead)
            pos = end
        guards.append(pos)
        self.guard_pages = sorted(set(guards))
        self.size = pos + PAGE
        self.fd, self.mm, self.capacity = _pool.get(self.size)
        self.mm[:STATUS_BYTES] = bytes(STATUS_BYTES)
        for slot, (_, array, direction) in zip(self.slots, arrays, strict=True):
            a, b = slot.region
            self.mm[a : slot.offset] = bytes([CANARY]) * (slot.offset - a)
            self.mm[slot.offset + slot.nbytes : b] = bytes([CANARY]) * (
                b - slot.offset - slot.nbytes
            )
            view = self.view(slot, array)
            if direction == "out":
                poison_fill(view)
            else:
                view[...] = array
            del view

    def view(self, slot: Slot, like: np.ndarray) -> np.ndarray:
        return np.frombuffer(
            self.mm, dtype=like.dtype, count=like.size, offset=slot.offset
        ).reshape(like.shape)

    def canary_damage(self, slot: Slot) -> tuple[int, int] | None:
        """Bytes written outside the buffer: (bytes before the start, bytes past the end) reached."""
        a, b = slot.region
        before = np.frombuffer(self.mm, np.uint8, slot.offset - a, a)
        after_start = slot.offset + slot.nbytes
        after = np.frombuffer(self.mm, np.uint8, b - after_start, after_start)
        bad_before = np.flatnonzero(before != CANARY)
        bad_after = np.flatnonzero(after != CANARY)
        if not bad_before.size and not bad_after.size:
            return None
        reach_before = int(len(before) - bad_before[0]) if bad_before.size else 0
        reach_after = int(bad_after[-1] + 1) if bad_after.size else 0
        return reach_before, reach_after

    def locate(self, offset: int) -> tuple[Slot, int] | None:
        """Which argument an out-of-bounds arena offset belongs to, and its byte offset from the
        buffer's start (negative before the start, >= nbytes past the end)."""
        for slot in self.slots:
            lead, trail = slot.guards
            if (
                lead <= offset < trail + PAGE
                and not slot.offset <= offset < slot.offset + slot.nbytes
            ):
                return slot, offset - slot.offset
        return None

    def status(self) -> tuple[int, list[tuple[int, int]]]:
        """(blocks done, [(block, thread) per busy OS thread]) as the runtime last published them."""
        done, nworkers = struct.unpack_from("<II", self.mm, 0)
        busy = []
        for w in range(min(nworkers, 64)):
            block, thread = struct.unpack_from("<II", self.mm, 64 + 64 * w)
            if block != 0xFFFFFFFF:
                busy.append((block, thread))
        return done, busy


class _Pool:
    """One memfd reused from launch to launch: a fresh one costs a page fault per 4 KiB on both
    sides (about as long as the whole kernel at vocab 50257). Callers hold the worker's lock."""

    def __init__(self) -> None:
        self.fd = -1
        self.mm: mmap.mmap | None = None
        self.capacity = 0

    def get(self, size: int) -> tuple[int, mmap.mmap, int]:
        too_small = self.mm is None or size > self.capacity
        # Give back a large arena once launches are much smaller again.
        too_large = self.capacity > (256 << 20) and size < self.capacity // 4
        if too_small or too_large:
            self.release()
            self.capacity = max(size, 1 << 20)
            self.fd = os.memfd_create("gradcheck-launch", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, self.capacity)
            self.mm = mmap.mmap(self.fd, self.capacity)
        assert self.mm is not None
        return self.fd, self.mm, self.capacity

    def release(self) -> None:
        if self.mm is not None:
            # A numpy view still alive keeps the mapping; it is unmapped when the view goes.
            with contextlib.suppress(BufferError):
                self.mm.close()
            os.close(self.fd)
        self.mm, self.fd, self.capacity = None, -1, 0


_pool = _Pool()


class HostBuffer:
    """Memory one array shares with the launch worker, so that launches use it in place.

    Laid out as an arena slot with ``align="end"``: a guard page, the data ending against the next
    guard page, canary bytes in the slack before the data. A launch with the default guard passes
    such an array to the worker as it is: nothing is copied in or out (an arena would hold a second
    copy of every argument, which at 4096 x 128256 float32 elements is 2 GiB each). An input
    (``In``) is mapped read-only in the worker, so a kernel that writes it faults instead of
    changing the caller's data.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        count = 1
        for n in shape:
            count *= n
        self.nbytes = count * dtype.itemsize
        pages = max(1, -(-self.nbytes // PAGE))
        self.size = (pages + 2) * PAGE
        self.offset = (pages + 1) * PAGE - self.nbytes
        self.guards = (0, self.size - PAGE)
        fd = os.memfd_create("gradcheck-host", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, self.size)
            mm = mmap.mmap(fd, self.size)
        except OSError:
            os.close(fd)
            raise
        self.fd = fd
        self.mm = mm
        mm[PAGE : self.offset] = bytes([CANARY]) * (self.offset - PAGE)
        self.array: np.ndarray = np.frombuffer(mm, dtype, count, self.offset).reshape(shape)
        self.address = int(self.array.__array_interface__["data"][0])
        _hosts[self.address] = self
        # When the array goes, so does this record (views keep the memory, not the record).
        weakref.finalize(self.array, _forget, self.address, fd)

    def canary_damage(self) -> int:
        """Bytes written before the data's start (its end touches the guard page)."""
        before = np.frombuffer(self.mm, np.uint8, self.offset - PAGE, PAGE)
        bad = np.flatnonzero(before != CANARY)
        return int(len(before) - bad[0]) if bad.size else 0


_hosts: dict[int, HostBuffer] = {}


def _forget(address: int, fd: int) -> None:
    _hosts.pop(address, None)
    with contextlib.suppress(OSError):
        os.close(fd)


def shared_empty(shape: int | tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """An uninitialised array the cpu backend's launches use in place (no copy in or out).

    The cpu backend's counterpart of PyCUDA's ``pagelocked_empty``: pass it as ``In(a)``,
    ``Out(a)`` or ``InOut(a)`` as any array. Worth it for large buffers (hundreds of MB); a launch
    with ``guard="start"`` or ``races=True`` copies it as it copies any array.
    """
    dims = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
    return HostBuffer(dims, np.dtype(dtype)).array


def host_buffer(array: np.ndarray) -> HostBuffer | None:
    """The HostBuffer ``array`` is (the whole of it, not a view of part), or None."""
    hb = _hosts.get(int(array.__array_interface__["data"][0]))
    if hb is None or array.nbytes != hb.nbytes or not array.flags.c_contiguous:
        return None
    return hb
