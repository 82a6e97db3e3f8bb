"""The state directory's lock: one shipmate process at a time changes what runs.

Called by the commands that change state (`up`, `down`, `deploy`, ...). An advisory `flock` on
`<state dir>/lock`: the kernel releases it when its holder exits, even by SIGKILL, so a crashed
shipmate never leaves a stale lock behind. The holder writes its pid and command into the file
so that the next one can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from types import TracebackType

from shipmate.errors import Conflict


class StateLock:
    """`with StateLock(state_dir):` holds the lock or raises Conflict at once (no waiting)."""

    def __init__(self, state_dir: Path, command: str | None = None) -> None:
        self.path = state_dir / "lock"
        self.command = command or " ".join(["shipmate", *sys.argv[1:]])[:200]
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode("utf-8", "replace").strip() or "another process"
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
