"""Config and secret files of a local instance, delivered the way Kubernetes updates a volume.

Called by the supervisor when it starts an instance and whenever its config or secret values
change (rotation). One *set* of files lives in one directory:

    <dir>/                         0700
    <dir>/..2026_11_22_10_20_30.8b1c2d3e/   0700, one version of the whole set
    <dir>/..2026_11_22_10_20_30.8b1c2d3e/a  0600
    <dir>/..data -> ..2026_11_22_10_20_30.8b1c2d3e
    <dir>/a      -> ..data/a

A new version is written in full to a fresh timestamped directory, flushed, and made current with
one `rename(2)` of a `..data` symlink, so a reader that resolves `..data` once (see `read_set`)
never sees half a set; older versions are removed after the swap. Each file alone is always whole,
whatever the reader does. As with a Kubernetes volume, a reader that opens `<dir>/<name>` at the
instant of a swap may get ENOENT (its path resolved to the version just removed): readers retry,
or use `read_set`.

Values arrive as plain bytes (the secrets package unwraps them at the last moment). This module
must never log, print or put a value in an exception message, and must not decide which values an
instance gets.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"
_DATA_TMP = "..data_tmp"
DIR_MODE = 0o700
FILE_MODE = 0o600


def _check_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\0" in name or name.startswith(".."):
        raise ValueError(f"invalid file name in a delivered set: {name!r}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _symlink_over(target: str, link: Path) -> None:
    """Point `link` at `target` with one rename, replacing whatever `link` was."""
    tmp = link.with_name(f"{_DATA_TMP}.{link.name}" if link.name != DATA else _DATA_TMP)
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def current_version(directory: Path) -> str | None:
    """The name of the version directory `..data` points at, or None before the first delivery."""
    try:
        return os.readlink(directory / DATA)
    except FileNotFoundError:
        return None


def deliver(directory: Path, files: Mapping[str, bytes]) -> str:
    """Make `files` (name -> content) the current set in `directory`; returns the new version's
    directory name. Names are plain file names (no `/`, not starting with `..`)."""
    for name in files:
        _check_name(name)
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    version = Path(tempfile.mkdtemp(prefix=stamp, dir=directory))  # mkdtemp makes it 0700
    os.chmod(version, DIR_MODE)
    try:
        for name, content in files.items():
            fd = os.open(version / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(version)
        _symlink_over(version.name, directory / DATA)
    except BaseException:
        _remove_tree(version)
        raise
    for name in files:
        link = directory / name
        want = f"{DATA}/{name}"
        try:
            if os.readlink(link) == want:
                continue
        except FileNotFoundError:
            pass
        except OSError as exc:  # a regular file in the way: replace it
            if exc.errno != errno.EINVAL:
                raise
        _symlink_over(want, link)
    _fsync_dir(directory)
    for entry in os.scandir(directory):
        if entry.name in files or entry.name == DATA:
            continue
        if entry.name.startswith(".."):
            if entry.name != version.name and entry.is_dir(follow_symlinks=False):
                _remove_tree(Path(entry.path))
        elif entry.is_symlink() and os.readlink(entry.path).startswith(f"{DATA}/"):
            os.unlink(entry.path)  # a name the previous set had and this one does not
    return version.name


def read_set(directory: Path, *, attempts: int = 1000) -> dict[str, bytes]:
    """Read the whole current set consistently: resolve `..data` once, read every file of that
    version, and accept the result only if that version is still current afterwards (a version is
    removed only once it has stopped being current, so it was complete while it was read)."""
    for _ in range(attempts):
        version = current_version(directory)
        if version is None:
            return {}
        try:
            fd = os.open(directory / version, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # swapped and removed between the two calls
        try:
            result: dict[str, bytes] = {}
            for name in sorted(os.listdir(fd)):
                file_fd = os.open(name, os.O_RDONLY, dir_fd=fd)
                with os.fdopen(file_fd, "rb") as handle:
                    result[name] = handle.read()
        except FileNotFoundError:
            continue
        finally:
            os.close(fd)
        if current_version(directory) == version:
            return result
    raise OSError(errno.EAGAIN, "the file set kept changing while being read", str(directory))


def remove(directory: Path) -> None:
    """Remove a delivered set entirely (an instance that stopped)."""
    _remove_tree(directory)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
