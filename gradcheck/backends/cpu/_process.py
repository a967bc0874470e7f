"""The launch worker process, seen from the caller: start it, talk to it, replace it when it dies."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..._errors import LaunchError

WORKER = Path(__file__).with_name("_worker.py")
POLL_S = 0.25


class WorkerDied(Exception):
    """The worker exited while running a request (the kernel crashed it)."""

    def __init__(self, returncode: int | None, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        sig = -returncode if returncode is not None and returncode < 0 else None
        self.signal_name = signal.Signals(sig).name if sig else ""
        super().__init__(f"worker exited ({self.signal_name or returncode})")


class WorkerStalled(Exception):
    """The worker made no progress for the allowed time and was killed."""

    def __init__(self, seconds: float, detail: str) -> None:
        self.seconds = seconds
        self.detail = detail
        super().__init__(detail)


class WorkerProcess:
    """One worker per caller process, started on first use, replaced after a crash or a hang."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        # Lives as long as the worker: the worker's stderr, read back when it crashes.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        # The worker's stdout (kernel printf), forwarded to sys.stdout after every request, so
        # it lands wherever the caller's output goes: a notebook cell, pytest's capture, a pipe.
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self._stdout_pos = 0
        self._loaded: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.RLock()
        self.restarts = 0

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(WORKER), str(child.fileno())],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
            )
        except OSError as exc:
            parent.close()
            raise LaunchError(f"cannot start the cpu backend's launch worker: {exc}") from None
        finally:
            child.close()
        self._sock = parent
        self._loaded.clear()

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._loaded.clear()

    def restart(self) -> None:
        """Replace the worker (after a fault that may have left it in a bad state)."""
        with self.lock:
            self._stop()
            self.restarts += 1

    def close(self) -> None:
        """Stop the worker for good (at interpreter exit)."""
        with self.lock:
            self._stop()
            self._stderr.close()
            self._stdout.close()

    def _forward_stdout(self) -> None:
        self._stdout.seek(self._stdout_pos)
        data = self._stdout.read()
        self._stdout_pos += len(data)
        if data:
            sys.stdout.write(data.decode(errors="replace"))
            sys.stdout.flush()

    def _stderr_tail(self, since: int) -> str:
        self._stderr.seek(since)
        data = self._stderr.read()
        self._stderr.seek(0, os.SEEK_END)
        return data.decode(errors="replace")[-4000:]

    def request(
        self,
        req: dict[str, Any],
        fds: list[int] | None = None,
        *,
        stall_timeout: float | None = None,
        progress: Callable[[], object] | None = None,
        describe_stall: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Send one request and wait for its reply.

        ``progress`` returns something that changes while the worker makes progress; the worker is
        killed when it has not changed for ``stall_timeout`` seconds.
        """
        with self.lock:
            if self._proc is None or self._proc.poll() is not None:
                self._stop()
                self._start()
            assert self._sock is not None and self._proc is not None
            since = self._stderr.seek(0, os.SEEK_END)
            socket.send_fds(self._sock, [json.dumps(req).encode()], fds or [])
            self._sock.settimeout(POLL_S)
            last, last_change = progress() if progress else None, time.monotonic()
            try:
                while True:
                    try:
                        data = self._sock.recv(1 << 20)
                    except TimeoutError:
                        if self._proc.poll() is not None:
                            data = b""
                        else:
                            now = progress() if progress else None
                            if now != last:
                                last, last_change = now, time.monotonic()
                            elif (
                                stall_timeout is not None
                                and time.monotonic() - last_change > stall_timeout
                            ):
                                detail = describe_stall() if describe_stall else ""
                                self._stop()
                                raise WorkerStalled(stall_timeout, detail) from None
                            continue
                    except OSError:
                        data = b""
                    if not data:
                        self._proc.wait()
                        rc = self._proc.returncode
                        tail = self._stderr_tail(since)
                        self._stop()
                        raise WorkerDied(rc, tail)
                    reply: dict[str, Any] = json.loads(data)
                    return reply
            finally:
                self._forward_stdout()

    def load(self, library: str) -> list[dict[str, Any]]:
        """Load a kernel library in the worker; returns its kernel table."""
        with self.lock:
            if library in self._loaded and self._proc is not None and self._proc.poll() is None:
                return self._loaded[library]
            try:
                reply = self.request({"op": "load", "library": library}, stall_timeout=60)
            except WorkerDied as exc:
                raise LaunchError(
                    f"the launch worker died loading {library} ({exc.signal_name or exc.returncode}):"
                    f"\n{exc.stderr}"
                ) from None
            if not reply.get("ok"):
                raise LaunchError(
                    f"cannot load the compiled kernels {library}: {reply.get('error')}"
                )
            kernels: list[dict[str, Any]] = reply["kernels"]
            self._loaded[library] = kernels
            return kernels


_worker: WorkerProcess | None = None
_worker_lock = threading.Lock()


def worker() -> WorkerProcess:
    """The process's launch worker (created lazily; nothing starts at import)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = WorkerProcess()
            atexit.register(_worker.close)
        return _worker
