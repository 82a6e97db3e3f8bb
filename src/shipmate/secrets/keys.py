"""Key providers: the `KeyProvider` protocol that wraps data keys, and the default provider, a local
key file.

The key file is a keyring: JSON holding a random ring id and one or more 32-byte master key versions,

    {"format": "shipmate-keyring/1", "id": HEX, "keys": [{"version": 1, "created_at": T, "key": B64}, ...]}

created 0600 on first use (written to a temporary file, flushed, then linked into place, so a
reader never sees half a key and two first uses cannot make two keys; its directory is created
0700). A key file that group or others have any permission on is refused, with the `chmod 600` that
fixes it. `rotate()` adds a version beside the old ones (rewritten through a temporary file and a
rename); `rewrap` moves a wrapped data key to the newest version, and `unwrap` keeps opening keys
wrapped under any version the ring holds. Creation and rotation hold an exclusive lock on
`PATH.lock`, so two processes can neither make two keys nor lose a version.

A wrapped data key is 65 bytes: layout byte 0x01, the master key version (4 bytes, big-endian), a
96-bit nonce, then the data key encrypted with AES-256-GCM (32 bytes and a 16-byte tag). Its
associated data is `shipmate-local-wrap/1`, the ring id, the version and the caller's AAD, so a
wrapped key only unwraps under the ring, version and AAD it was made for.

Called by `shipmate.secrets.crypto`/`store`/`fileform` (through the protocol) and, later, the
`secrets` CLI commands. It must not log or return a master key or a data key anywhere but to its
caller, and never puts one in an error or a repr.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag

from shipmate.errors import NotFound, UserError
from shipmate.secrets.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    Tampered,
    WrongKey,
    gcm_decrypt,
    gcm_encrypt,
    new_data_key,
)


class KeyProvider(Protocol):
    """Wraps and unwraps the data keys of `shipmate.secrets.crypto`.

    `id` names the kind of provider (`local`, `vault-transit`, `aws-kms`) and `key_id` the key, not
    its version (the wrapped bytes carry that), so that a sealed value says which key opens it.
    `aad` is canonical associated data (`crypto.encode_aad`): a wrapped key must unwrap under the
    same `aad` only. `unwrap` and `rewrap` raise `crypto.Tampered` when the wrapped bytes or the
    `aad` do not authenticate. `rewrap` wraps the same data key under the newest version of the key
    (returning `wrapped` itself when it can tell it is there already; KMS cannot), through the
    provider's own operation where it has one, so that a remote provider never hands the data key
    out for it.
    """

    @property
    def id(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...

    def rewrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


KEYRING_FORMAT = "shipmate-keyring/1"
_LAYOUT = 1
_WRAPPED_BYTES = 1 + 4 + NONCE_BYTES + KEY_BYTES + TAG_BYTES


@dataclass(frozen=True)
class _Ring:
    id: str
    keys: dict[int, bytes] = field(repr=False)
    created: dict[int, float]

    @property
    def newest(self) -> int:
        return max(self.keys)

    def to_text(self) -> str:
        return json.dumps({"format": KEYRING_FORMAT, "id": self.id, "keys": [
            {"version": v, "created_at": self.created[v], "key": base64.b64encode(self.keys[v]).decode("ascii")}
            for v in sorted(self.keys)]}, indent=2) + "\n"


def _parse_ring(raw: bytes) -> _Ring:
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("format") != KEYRING_FORMAT:
        raise ValueError(f"format is not {KEYRING_FORMAT}")
    ring_id, entries = data.get("id"), data.get("keys")
    if not isinstance(ring_id, str) or not ring_id:
        raise ValueError("no ring id")
    if not isinstance(entries, list) or not entries:
        raise ValueError("no keys")
    keys: dict[int, bytes] = {}
    created: dict[int, float] = {}
    for entry in entries:
        version = entry.get("version") if isinstance(entry, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1 or version in keys:
            raise ValueError("a key has no valid, distinct version")
        try:
            key = base64.b64decode(str(entry.get("key", "")), validate=True)
        except binascii.Error:
            key = b""
        if len(key) != KEY_BYTES:
            raise ValueError(f"key version {version} is not {KEY_BYTES} bytes of base64")
        keys[version], created[version] = key, float(entry.get("created_at", 0.0))
    return _Ring(ring_id, keys, created)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalKeyProvider:
    """The default key provider: a keyring file on this machine (see the module docstring).

    Constructing one touches nothing; the file is created by the first `wrap` or `rotate`.
    """

    id = "local"

    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = now
        self._stamp: tuple[int, int, int] | None = None
        self._cached: _Ring | None = None

    def __repr__(self) -> str:
        return f"LocalKeyProvider({str(self.path)!r})"

    # --- the protocol ---------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The ring's id: the same for every version, different for every key file."""
        return self._existing().id

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        ring = self._ensure()
        return self._wrap(ring, ring.newest, data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        ring = self._existing()
        version = self._version_of(wrapped, ring)
        try:
            return gcm_decrypt(ring.keys[version], wrapped[5:5 + NONCE_BYTES], wrapped[5 + NONCE_BYTES:],
                               self._aad(ring, version, aad))
        except InvalidTag:
            raise Tampered(f"key file {self.path} (version {version}) does not authenticate the wrapped key: it "
                           "or its associated data was changed") from None

    def rewrap(self, wrapped: bytes, aad: bytes) -> bytes:
        ring = self._existing()
        if self._version_of(wrapped, ring) == ring.newest:
            self.unwrap(wrapped, aad)  # still prove it authentic: a rewrap never blesses changed bytes
            return wrapped
        return self._wrap(ring, ring.newest, self.unwrap(wrapped, aad), aad)

    # --- rotation -------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """The master key versions the file holds, oldest first ([] when there is no file yet)."""
        ring = self._read()
        return sorted(ring.keys) if ring is not None else []

    def rotate(self) -> int:
        """Add a new master key version (kept beside the old ones) and return its number. New wraps
        use it; `rewrap` moves existing wrapped keys to it."""
        self._ensure()
        with self._lock():
            ring = self._existing()  # read again under the lock: another process may have rotated
            version = ring.newest + 1
            new = _Ring(ring.id, {**ring.keys, version: new_data_key()}, {**ring.created, version: self._now()})
            tmp = self._write_temp(new)
            try:
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(self.path.parent)
            return version

    # --- the file -------------------------------------------------------------------------

    def _wrap(self, ring: _Ring, version: int, data_key: bytes, aad: bytes) -> bytes:
        nonce, ciphertext = gcm_encrypt(ring.keys[version], data_key, self._aad(ring, version, aad))
        return bytes([_LAYOUT]) + version.to_bytes(4, "big") + nonce + ciphertext

    @staticmethod
    def _aad(ring: _Ring, version: int, aad: bytes) -> bytes:
        return b"shipmate-local-wrap/1\x00" + ring.id.encode() + b"\x00" + version.to_bytes(4, "big") + b"\x00" + aad

    def _version_of(self, wrapped: bytes, ring: _Ring) -> int:
        if len(wrapped) != _WRAPPED_BYTES or wrapped[0] != _LAYOUT:
            raise Tampered(f"not a data key wrapped by a local key file ({len(wrapped)} bytes): it was changed")
        version = int.from_bytes(wrapped[1:5], "big")
        if version not in ring.keys:
            raise WrongKey(f"the data key was wrapped under version {version} of key file {self.path}, which "
                           f"holds versions {', '.join(map(str, sorted(ring.keys)))}: use the key file it was "
                           "sealed with (or the wrapped key was changed)")
        return version

    def _existing(self) -> _Ring:
        ring = self._read()
        if ring is None:
            raise NotFound(f"no key file at {self.path}: values sealed under it cannot be opened without it; "
                           "restore it, or point shipmate at the right key file")
        return ring

    def _ensure(self) -> _Ring:
        """The ring, created on first use."""
        ring = self._read()
        return ring if ring is not None else self._create()

    def _read(self) -> _Ring | None:
        """The ring in the file (cached while the file is unchanged); None when there is no file."""
        try:
            with open(self.path, "rb") as handle:
                info = os.fstat(handle.fileno())
                self._check_mode(info)
                stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
                if stamp == self._stamp and self._cached is not None:
                    return self._cached
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UserError(f"{self.path}: cannot read the key file: {exc.strerror}") from exc
        try:
            ring = _parse_ring(raw)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{self.path}: not a shipmate key file ({exc})") from None
        self._stamp, self._cached = stamp, ring
        return ring

    def _check_mode(self, info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{self.path}: the key file is not a regular file")
        if info.st_mode & 0o077:
            raise UserError(f"{self.path}: the key file is open to group or others (mode "
                            f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {self.path}")

    def _create(self) -> _Ring:
        """Make the key file with one master key version: temporary file, flush, then a link (which,
        unlike a rename, fails when another process made the file first: theirs is kept)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock():
            existing = self._read()
            if existing is not None:
                return existing
            first = _Ring(secrets.token_hex(16), {1: new_data_key()}, {1: self._now()})
            tmp = self._write_temp(first)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            except OSError as exc:
                raise UserError(f"{self.path}: cannot create the key file: {exc.strerror}") from exc
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
        ring = self._read()
        if ring is None:
            raise UserError(f"{self.path}: the key file vanished while it was being created")
        return ring

    def _write_temp(self, ring: _Ring) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(ring.to_text().encode("ascii"))
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise creation and rotation across processes (a lost rotation would lose a key)."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
