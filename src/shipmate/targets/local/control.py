"""Finding and signalling an environment's supervisor process from outside it: cheap on purpose.

Called by every command that looks at or changes a running local environment (`status`,
`deploy`, `rollback`, `rollout ...`, `down`); it imports nothing heavy, so those commands start
fast. The lock (`shipmate.store.lock`) says whether a supervisor runs and which pid it has.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from shipmate.errors import Conflict
from shipmate.store.lock import holder


def env_dir(state_dir: Path, environment: str) -> Path:
    """Where one environment of the local target keeps its files."""
    return state_dir / "local" / environment


def wake(root: Path) -> None:
    """Tell an environment's supervisor that there is something new in the store (SIGUSR1)."""
    pid = holder_pid(root)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGUSR1)


def holder_pid(root: Path) -> int | None:
    """The pid of the process holding an environment's lock, None when nobody holds it."""
    text = holder(root)
    if text is None:
        return None
    words = text.split()
    return int(words[1]) if len(words) > 1 and words[0] == "pid" and words[1].isdigit() else None


def stop_supervisor(root: Path, timeout: float) -> int | None:
    """Ask an environment's supervisor process to take everything down (SIGTERM) and wait until it
    has; returns its pid, None when none was running. Conflict when it does not stop in time."""
    pid = holder_pid(root)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while holder(root) is not None:
        if time.monotonic() > deadline:
            raise Conflict(f"the supervisor of {root.name} (pid {pid}) did not stop within {timeout:g}s; "
                           f"its log: {root / 'logs' / 'supervisor.log'}")
        time.sleep(0.1)
    return pid
