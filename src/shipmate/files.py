"""Writing files so that nothing is ever half-written, and comparing a tree with what it should be.

Called by the CLI (render output, init) and later by anything that writes state. Every write goes
to a temporary file in the same directory, is flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = ".shipmate-files"


def atomic_write(path: Path, text: str | bytes, mode: int = 0o644, *, sync: bool = True) -> None:
    """Write `text` (or bytes) to `path` through a temporary file and a rename (flushed to disk
    first unless `sync` is false, for a caller that syncs a whole batch once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text if isinstance(text, bytes) else text.encode("utf-8"))
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class TreeDiff:
    """How a directory differs from the files it should hold."""

    changed: tuple[str, ...]
    missing: tuple[str, ...]
    stale: tuple[str, ...]
    diff: str

    @property
    def clean(self) -> bool:
        return not (self.changed or self.missing or self.stale)


def _previous(root: Path) -> set[str]:
    marker = root / MARKER
    if not marker.is_file():
        return set()
    return {line for line in marker.read_text(encoding="utf-8").splitlines() if line}


def write_tree(root: Path, files: dict[str, str]) -> tuple[int, int]:
    """Write every file under `root`, skipping those already equal, and remove files an earlier
    render wrote that are no longer produced. Returns (written, removed)."""
    written = 0
    for rel, text in files.items():
        target = root / rel
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        try:
            atomic_write(target, text, sync=False)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        written += 1
    if written:
        os.sync()  # one flush for the batch: thousands of fsyncs cost seconds
    removed = 0
    for rel in sorted(_previous(root) - set(files)):
        stale = root / rel
        if stale.is_file():
            stale.unlink()
            removed += 1
    atomic_write(root / MARKER, "".join(f"{rel}\n" for rel in sorted(files)))
    return written, removed


def check_tree(root: Path, files: dict[str, str]) -> TreeDiff:
    """Compare `root` with `files` without writing anything."""
    changed: list[str] = []
    missing: list[str] = []
    chunks: list[str] = []
    for rel, text in files.items():
        target = root / rel
        if not target.is_file():
            missing.append(rel)
            chunks.extend(difflib.unified_diff([], text.splitlines(keepends=True), "/dev/null", f"b/{rel}"))
            continue
        current = target.read_text(encoding="utf-8")
        if current != text:
            changed.append(rel)
            chunks.extend(difflib.unified_diff(current.splitlines(keepends=True), text.splitlines(keepends=True),
                                               f"a/{rel}", f"b/{rel}"))
    stale = sorted(rel for rel in _previous(root) - set(files) if (root / rel).is_file())
    return TreeDiff(tuple(changed), tuple(missing), tuple(stale), "".join(chunks))
