"""Secrets, read from files in `$SHIPMATE_SECRETS_DIR`, and the JWT signing keys kept current.

The directory is delivered the Kubernetes way: each file is a symlink through `..data`, and a new
set replaces the old one with one rename, so a file can vanish for an instant while a set is
swapped (a read is retried). Values are stripped of surrounding whitespace.

`SigningKeys` rereads `jwt-signing-key` (and `jwt-signing-key.previous`, present during a
rotation's grace period) at most every 0.5 s when asked: tokens are signed with the current key
and accepted when signed by either.

Called by every service at start (connection URLs) and by the token checks on each request.
This module must never log, print or put a secret value in an exception message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_DIR = "/var/run/secrets/shipmate"  # where shipmate mounts them on Kubernetes (secretsDir)
JWT_KEY = "jwt-signing-key"
JWT_PREVIOUS = "jwt-signing-key.previous"

log = logging.getLogger("werewolves.secrets")


class MissingSecret(Exception):
    """A secret file that the service needs is absent or empty (the message names it, never a value)."""


class SecretsDir:
    """The directory of secret files of this instance."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_optional(self, name: str) -> str | None:
        """The stripped value of secret `name`, or None when there is no such file (or it is empty)."""
        for attempt in range(5):
            try:
                value = (self.path / name).read_bytes().decode("utf-8").strip()
            except FileNotFoundError:
                # Absent, or swapped away between resolving `..data` and opening: look again.
                if attempt == 4 or not (self.path / "..data").exists():
                    return None
                time.sleep(0.01)
                continue
            return value or None
        return None

    def read(self, name: str) -> str:
        """The stripped value of secret `name`; MissingSecret when it is absent or empty."""
        value = self.read_optional(name)
        if value is None:
            raise MissingSecret(f"secret {name!r} is missing or empty in {self.path}")
        return value


class SigningKeys:
    """The HS256 keys: the current one signs; the current and the previous one verify."""

    def __init__(self, secrets: SecretsDir, *, interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._secrets = secrets
        self._interval = interval
        self._clock = clock
        self._checked = float("-inf")
        self._current: bytes | None = None
        self._previous: bytes | None = None

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < self._interval:
            return
        self._checked = now
        current = self._secrets.read_optional(JWT_KEY)
        previous = self._secrets.read_optional(JWT_PREVIOUS)
        if current is None:
            if self._current is None:
                raise MissingSecret(f"secret {JWT_KEY!r} is missing or empty in {self._secrets.path}")
            log.warning("secret %s unreadable; keeping the key read before", JWT_KEY)
            return
        new_current = current.encode("utf-8")
        new_previous = previous.encode("utf-8") if previous is not None else None
        if self._current is not None and (new_current, new_previous) != (self._current, self._previous):
            log.info("jwt signing keys changed (previous key %s)",
                     "accepted during the grace period" if new_previous else "no longer accepted")
        self._current, self._previous = new_current, new_previous

    def signing(self) -> bytes:
        """The key new tokens are signed with."""
        return self.accepted()[0]

    def accepted(self) -> tuple[bytes, ...]:
        """The keys a token may be signed with: the current one, then the previous one if any."""
        self._refresh()
        if self._current is None:  # _refresh raises before a first key is read; kept for the type
            raise MissingSecret(f"secret {JWT_KEY!r} is missing or empty in {self._secrets.path}")
        return (self._current,) if self._previous is None else (self._current, self._previous)
