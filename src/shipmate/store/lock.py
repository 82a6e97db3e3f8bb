"""The state directory's lock: one shipmate process at a time changes what runs.

Called by the commands that change state (`up`, `down`, `deploy`, ...). An advisory `flock` on
`<state dir>/lock`: the kernel releases it when its holder exits, even by SIGKILL, so a crashed
shipmate never leaves a stale lock behind. The holder writes its pid and command into the file
so that the next one can say who holds it. Probes (`holder`) take a shared lock for an instant and
write nothing; an exclusive acquire retries for a moment so that a probe, or a holder between
emptying the file and unlocking it, never makes it fail.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from shipmate.errors import Conflict


class StateLock:
    """`with StateLock(state_dir):` holds the lock or raises Conflict (after `patience` seconds at
    most: long enough to outlast a probe or a release in progress, short enough to feel at once)."""

    def __init__(self, state_dir: Path, command: str | None = None, patience: float = 0.5) -> None:
        self.path = state_dir / "lock"
        self.command = command or " ".join(["shipmate", *sys.argv[1:]])[:200]
        self.patience = patience
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                holder = _holder_text(fd) or "another process"
                os.close(fd)
                raise Conflict(f"{self.path}: held by {holder}; wait for it to finish, or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({self.command})\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()


def holder(state_dir: Path, patience: float = 1.0) -> str | None:
    """What holds the lock of `state_dir` ("pid N (command)"), None when nobody does. Writes nothing
    and never stands in an exclusive holder's way for more than an instant."""
    path = state_dir / "lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = _holder_text(fd)
                # an empty file under a held lock: a holder that has just locked and not yet written,
                # or one emptying it on release; either way the answer is a moment away
                if text or time.monotonic() > deadline:
                    return text or "another process"
                time.sleep(0.005)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)


def _holder_text(fd: int) -> str:
    return os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
