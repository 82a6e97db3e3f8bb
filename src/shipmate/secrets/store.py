"""Versioned secrets, kept sealed (`shipmate.secrets.crypto`) in the control-plane store.

Each `put` or `rotate` writes a new version, sealed under a fresh data key with the app, environment,
name and version bound as associated data. Versions have a state:

| state    | meaning                                                                     |
| -------- | --------------------------------------------------------------------------- |
| current  | the value delivered now (one per secret)                                    |
| previous | the value before a `rotate`, still delivered (as NAME.previous) and valid during the grace period |
| retired  | kept for rollback to a release that used it; no longer delivered            |

`put` sets a value outright (the old ones are retired at once); `rotate` keeps the old current
value as previous until `retire_previous` ends its grace period. `rewrap_all` wraps every stored
data key again under the newest master key (or under another provider) without touching values.

Called by the `secrets` CLI commands, the local target's delivery and the rotation drill (to come).
Writers are serialised by the state lock (`shipmate.store.lock`), as for every other store change.
It must never log, print or repr a value: values leave only inside `Value`, whose repr hides them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from shipmate.errors import NotFound
from shipmate.secrets import crypto
from shipmate.secrets.keys import KeyProvider
from shipmate.store.db import Store, StoredSecret

STATES = ("current", "previous", "retired")


class Value(NamedTuple):
    """One version of a secret and its value: unpacks as `(version, value)`; its repr hides the value."""

    version: int
    value: bytes

    def __repr__(self) -> str:
        return f"Value(version={self.version}, value=<hidden>)"

    def __str__(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class SecretVersion:
    """What `versions` lists: never a value."""

    version: int
    state: str
    created_at: float


class SecretStore:
    """The secrets of one app, sealed by `provider`, in `store`."""

    def __init__(self, store: Store, provider: KeyProvider, *, app: str, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.provider = provider
        self.app = app
        self._now = now

    def __repr__(self) -> str:
        return f"SecretStore(app={self.app!r}, provider={self.provider!r})"

    def _aad(self, environment: str, name: str, version: int) -> dict[str, str]:
        return crypto.secret_aad(self.app, environment, name, version)

    def _add(self, environment: str, name: str, value: bytes, demote: str) -> int:
        stored = self.store.secret_versions(environment, name)
        version = max((s.version for s in stored), default=0) + 1
        sealed = crypto.seal(value, self._aad(environment, name, version), self.provider)
        self.store.add_secret(environment, name, version, sealed.to_text(), created_at=self._now(), demote=demote)
        return version

    def _open(self, row: StoredSecret) -> Value:
        return Value(row.version, crypto.open_(row.sealed, self._aad(row.environment, row.name, row.version),
                                               self.provider))

    # --- writing --------------------------------------------------------------------------

    def put(self, environment: str, name: str, value: bytes) -> int:
        """Set a secret's value as a new current version; every older version is retired at once."""
        return self._add(environment, name, value, "retired")

    def rotate(self, environment: str, name: str, new_value: bytes) -> int:
        """A new current version; the one it replaces becomes previous (still valid for the grace
        period) and an older previous one retired. NotFound if the secret has no current version."""
        self.current(environment, name)  # must exist, and open: a rotation never hides a tampered value
        return self._add(environment, name, new_value, "previous")

    def retire_previous(self, environment: str, name: str) -> int | None:
        """End the grace period: the previous version (returned, None when there is none) is retired."""
        for row in self.store.secret_versions(environment, name):
            if row.state == "previous":
                self.store.set_secret_state(environment, name, row.version, "retired")
                return row.version
        return None

    # --- reading --------------------------------------------------------------------------

    def _in_state(self, environment: str, name: str, state: str) -> StoredSecret | None:
        rows = [r for r in self.store.secret_versions(environment, name) if r.state == state]
        return rows[-1] if rows else None

    def current(self, environment: str, name: str) -> Value:
        """The current version and its value; NotFound when the secret has none."""
        row = self._in_state(environment, name, "current")
        if row is None:
            raise NotFound(f"no secret {name!r} in environment {environment!r}; set it with "
                           f"`shipmate secrets set {name} --env {environment}`")
        return self._open(row)

    def previous(self, environment: str, name: str) -> Value | None:
        """The previous version (within its grace period) and its value, or None."""
        row = self._in_state(environment, name, "previous")
        return self._open(row) if row is not None else None

    def get(self, environment: str, name: str, version: int) -> Value:
        """Any stored version, retired ones included (a rollback to an older release needs them)."""
        for row in self.store.secret_versions(environment, name):
            if row.version == version:
                return self._open(row)
        raise NotFound(f"no version {version} of secret {name!r} in environment {environment!r}")

    def versions(self, environment: str, name: str) -> list[SecretVersion]:
        """Every version of a secret, oldest first, without values."""
        return [SecretVersion(r.version, r.state, r.created_at) for r in self.store.secret_versions(environment, name)]

    def names(self, environment: str) -> list[str]:
        """The names of an environment's secrets, sorted."""
        return self.store.secret_names(environment)

    # --- keys -----------------------------------------------------------------------------

    def rewrap_all(self, provider: KeyProvider | None = None) -> int:
        """Wrap every stored data key again, values untouched; returns how many envelopes changed.

        Without `provider`: under the newest version of this store's key (after a master key
        rotation). With another provider: moved to it (a migration, e.g. from the local key file to
        Vault Transit), after which this store seals with it. Each version is rewritten on its own,
        so an interrupted run is finished by running it again."""
        target = provider if provider is not None else self.provider
        changed = 0
        for row in self.store.all_secrets():
            aad = self._aad(row.environment, row.name, row.version)
            what = crypto.describe(aad)
            sealed = crypto.Sealed.from_text(row.sealed, what=what)
            if (sealed.provider, sealed.key_id) == (target.id, target.key_id):
                new = crypto.rewrap(sealed, aad, target)
            else:
                new = crypto.rewrap(sealed, aad, self.provider, to=target)
            text = new.to_text()
            if text != row.sealed and self.store.set_secret_sealed(row.environment, row.name, row.version, text,
                                                                   expected=row.sealed):
                changed += 1
        self.provider = target
        return changed
