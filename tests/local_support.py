"""Helpers for tests that run `shipmate up` for real: the CLI in a subprocess, its status, and
the processes it left. Import as `from tests.local_support import ...`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def run_cli(spec: Path, *args: str, state: Path | None = None,
            timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """`shipmate -f SPEC [--state-dir STATE] ARGS...`, captured."""
    where = ["--state-dir", str(state)] if state is not None else []
    return subprocess.run([sys.executable, "-m", "shipmate.cli.main", "-f", str(spec), "--no-color", *where, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def status_doc(spec: Path, *args: str, state: Path | None = None) -> dict[str, Any]:
    done = run_cli(spec, "status", "--output", "json", *args, state=state)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def pids_mentioning(*marks: Path) -> list[int]:
    """Every live process (but this one) whose command line or environment names one of `marks`."""
    found = []
    needles = [str(m).encode() for m in marks]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(n in seen for n in needles) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextlib.contextmanager
def brought_down(spec: Path, *marks: Path, state: Path | None = None, env: str | None = None) -> Iterator[None]:
    """Run the body, then `shipmate down` and SIGKILL anything still naming `marks` (a failing
    test leaves no process behind)."""
    try:
        yield
    finally:
        run_cli(spec, "down", *(["--env", env] if env else []), state=state)
        for pid in pids_mentioning(*marks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

