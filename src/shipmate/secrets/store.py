"""Versioned secrets, kept sealed (`shipmate.secrets.crypto`) in the control-plane store.

Each `put` or `rotate` writes a new version, sealed under a fresh data key with the app, environment,
name and version bound as associated data. Versions have a state:

| state    | meaning                                                                     |
| -------- | --------------------------------------------------------------------------- |
| current  | the value delivered now (one per secret)                                    |
| previous | the value before a `rotate`, still delivered (as NAME.previous) and valid during the grace period |
| retired  | kept for rollback to a release that used it; no longer delivered            |

`put` sets a value outright (the old ones are retired at once); `rotate` keeps the old current
value as previous until its grace period ends (`expires_at`, acted on by `retire_expired`, or at
once by `retire_previous`). `rewrap_all` wraps every stored data key again under the newest master
key (or under another provider) without touching values.

Every read and write is written to the store's audit log (`Store.audit_log`): who (`actor`), what,
when and which version, never the value.

Called by the `secrets` CLI commands, the local target's delivery and the rotation drill.
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
from shipmate.store.db import AuditEntry, Store, StoredSecret

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
    expires_at: float | None = None  # a previous version: when its grace period ends


class SecretStore:
    """The secrets of one app, sealed by `provider`, in `store`."""

    def __init__(self, store: Store, provider: KeyProvider, *, app: str, actor: str = "shipmate",
                 now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.provider = provider
        self.app = app
        self.actor = actor
        self._now = now

    def audit(self, action: str, environment: str, name: str, version: int | None = None, detail: str = "") -> None:
        """Record one read or write (never a value) in the audit log."""
        self.store.add_audit(AuditEntry(self._now(), self.actor, action, environment, name, version, detail))

    def __repr__(self) -> str:
        return f"SecretStore(app={self.app!r}, provider={self.provider!r})"

    def _aad(self, environment: str, name: str, version: int) -> dict[str, str]:
        return crypto.secret_aad(self.app, environment, name, version)

    def _add(self, environment: str, name: str, value: bytes, demote: str, expires_at: float | None = None) -> int:
        stored = self.store.secret_versions(environment, name)
        version = max((s.version for s in stored), default=0) + 1
        sealed = crypto.seal(value, self._aad(environment, name, version), self.provider)
        self.store.add_secret(environment, name, version, sealed.to_text(), created_at=self._now(), demote=demote,
                              expires_at=expires_at)
        return version

    def _open(self, row: StoredSecret) -> Value:
        return Value(row.version, crypto.open_(row.sealed, self._aad(row.environment, row.name, row.version),
                                               self.provider))

    # --- writing --------------------------------------------------------------------------

    def put(self, environment: str, name: str, value: bytes, *, detail: str = "") -> int:
        """Set a secret's value as a new current version; every older version is retired at once."""
        version = self._add(environment, name, value, "retired")
        self.audit("put", environment, name, version, detail)
        return version

    def rotate(self, environment: str, name: str, new_value: bytes, *, grace: float = 600.0, detail: str = "") -> int:
        """A new current version; the one it replaces becomes previous, still delivered and valid for
        `grace` seconds (0: retired at once), and an older previous one retired. NotFound if the
        secret has no current version."""
        self._open(self._current_row(environment, name))  # it must exist and open: never hide a tampered value
        if grace <= 0:
            version = self._add(environment, name, new_value, "retired")
        else:
            version = self._add(environment, name, new_value, "previous", expires_at=self._now() + grace)
        self.audit("rotate", environment, name, version, detail or f"grace {grace:g}s")
        return version

    def retire_previous(self, environment: str, name: str, *, detail: str = "") -> int | None:
        """End the grace period now: the previous version (returned, None when there is none) is retired."""
        for row in self.store.secret_versions(environment, name):
            if row.state == "previous":
                self.store.set_secret_state(environment, name, row.version, "retired")
                self.audit("retire", environment, name, row.version, detail or "grace ended")
                return row.version
        return None

    def retire_expired(self, environment: str) -> list[tuple[str, int]]:
        """Retire every previous version of the environment whose grace period is over; returns
        (name, version) of each, so that the caller stops delivering them."""
        now = self._now()
        done: list[tuple[str, int]] = []
        for row in self.store.all_secrets():
            if (row.environment == environment and row.state == "previous" and row.expires_at is not None
                    and row.expires_at <= now):
                self.store.set_secret_state(environment, row.name, row.version, "retired")
                self.audit("retire", environment, row.name, row.version, "grace period over")
                done.append((row.name, row.version))
        return done

    def next_expiry(self, environment: str) -> float | None:
        """When the earliest grace period of the environment ends, None when no previous version waits."""
        times = [r.expires_at for r in self.store.all_secrets()
                 if r.environment == environment and r.state == "previous" and r.expires_at is not None]
        return min(times) if times else None

    # --- reading --------------------------------------------------------------------------

    def _in_state(self, environment: str, name: str, state: str) -> StoredSecret | None:
        rows = [r for r in self.store.secret_versions(environment, name) if r.state == state]
        return rows[-1] if rows else None

    def _current_row(self, environment: str, name: str) -> StoredSecret:
        row = self._in_state(environment, name, "current")
        if row is None:
            raise NotFound(f"no secret {name!r} in environment {environment!r}; set it with "
                           f"`shipmate secrets set {name} --env {environment}`")
        return row

    def has(self, environment: str, name: str) -> bool:
        """Whether the secret has a current version (reads no value)."""
        return self._in_state(environment, name, "current") is not None

    def current(self, environment: str, name: str, *, detail: str = "") -> Value:
        """The current version and its value; NotFound when the secret has none."""
        value = self._open(self._current_row(environment, name))
        self.audit("read", environment, name, value.version, detail)
        return value

    def previous(self, environment: str, name: str, *, detail: str = "") -> Value | None:
        """The previous version (within its grace period) and its value, or None."""
        row = self._in_state(environment, name, "previous")
        if row is None:
            return None
        value = self._open(row)
        self.audit("read", environment, name, value.version, detail)
        return value

    def get(self, environment: str, name: str, version: int, *, detail: str = "") -> Value:
        """Any stored version, retired ones included (a rollback to an older release needs them)."""
        for row in self.store.secret_versions(environment, name):
            if row.version == version:
                value = self._open(row)
                self.audit("read", environment, name, version, detail)
                return value
        raise NotFound(f"no version {version} of secret {name!r} in environment {environment!r}")

    def versions(self, environment: str, name: str) -> list[SecretVersion]:
        """Every version of a secret, oldest first, without values (not audited: no value is read)."""
        return [SecretVersion(r.version, r.state, r.created_at, r.expires_at)
                for r in self.store.secret_versions(environment, name)]

    def delivered(self, environment: str, name: str) -> tuple[int | None, int | None]:
        """(current version, previous version): what is delivered now, read without opening a value."""
        rows = self.store.secret_versions(environment, name)
        current = [r.version for r in rows if r.state == "current"]
        previous = [r.version for r in rows if r.state == "previous"]
        return (current[-1] if current else None, previous[-1] if previous else None)

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
                self.audit("rewrap", row.environment, row.name, row.version, f"to {target.id}:{target.key_id}")
        self.provider = target
        return changed
