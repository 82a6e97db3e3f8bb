"""The local target's supervisor and file delivery, with real processes and real files.

Fake services are small Python scripts written to tmp_path. Every wait is bounded; timings are
generous enough to hold on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from shipmate.targets.local import files

pytestmark = pytest.mark.integration


# --- file delivery ----------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_delivery_layout_and_permissions(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    files.deliver(target, {"jwt-key": b"one", "db-url": b"postgres://x"})
    version = files.current_version(target)
    assert version is not None
    assert version.startswith("..")
    assert version != files.DATA
    assert os.readlink(target / files.DATA) == version
    assert os.readlink(target / "jwt-key") == "..data/jwt-key"
    assert (target / "jwt-key").read_bytes() == b"one"
    assert _mode(target) == 0o700
    assert _mode(target / version) == 0o700
    assert _mode(target / version / "jwt-key") == 0o600
    assert _mode(target / version / "db-url") == 0o600

    files.deliver(target, {"jwt-key": b"two"})
    assert (target / "jwt-key").read_bytes() == b"two"
    assert not (target / "db-url").exists()
    assert not (target / "db-url").is_symlink()
    versions = [e for e in os.listdir(target) if e.startswith("..") and e != files.DATA]
    assert versions == [files.current_version(target)], "old versions are removed after the swap"
    assert files.read_set(target) == {"jwt-key": b"two"}


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "..data", "..hidden"])
def test_delivery_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid file name"):
        files.deliver(tmp_path / "d", {name: b"x"})


def test_readers_never_see_a_mixed_set(tmp_path: Path) -> None:
    target = tmp_path / "config"
    names = ("a", "b", "c")
    size = 64 * 1024  # big enough that a torn write would show

    def content(version: int) -> bytes:
        return str(version).encode().ljust(size, b"#")

    files.deliver(target, dict.fromkeys(names, content(0)))
    stop = threading.Event()
    problems: list[str] = []
    reads = {"sets": 0, "files": 0}

    def reader() -> None:
        while not stop.is_set():
            values = files.read_set(target)
            if set(values) != set(names) or len(set(values.values())) != 1:
                problems.append(f"mixed set: { {k: v[:8] for k, v in values.items()} }")
            reads["sets"] += 1
            for name in names:  # a single file through its symlink is always whole
                data = (target / name).read_bytes()
                if len(data) != size or data != content(int(data.split(b"#", 1)[0])):
                    problems.append(f"torn file {name}")
                reads["files"] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for version in range(1, 201):
            files.deliver(target, dict.fromkeys(names, content(version)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not problems, problems[:5]
    assert reads["sets"] > 20
    assert files.read_set(target) == dict.fromkeys(names, content(200))
    assert len([e for e in os.listdir(target) if e.startswith("..")]) == 2  # ..data and one version
