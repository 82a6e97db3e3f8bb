"""The control-plane store: SQLite under the state directory by default, any SQLAlchemy URL
(PostgreSQL for a highly available server) by choice.

Called by the local target and, later, the release engine and the server. Rows go in and out as
frozen dataclasses (`InstanceState`, `AddonState`), never as live ORM objects, so no caller
holds a session. SQLite runs in WAL mode with a busy timeout, so readers (`shipmate status`)
never block the writer; the writer is serialised by `shipmate.store.lock.StateLock`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shipmate.errors import Conflict, ExternalError, UserError
from shipmate.store.models import (
    SCHEMA_VERSION,
    AddonRow,
    AuditRow,
    Base,
    EnvironmentRow,
    InstanceRow,
    Meta,
    ReleaseRow,
    RolloutRow,
    SecretRow,
    ServiceRow,
)

STATE_FILE = "state.db"


@dataclass(frozen=True)
class InstanceState:
    environment: str
    instance_id: str
    service: str
    version: str
    pid: int | None = None
    pgid: int | None = None
    port: int | None = None
    ready: bool = False
    restarts: int = 0
    started_at: float = 0.0


@dataclass(frozen=True)
class AddonState:
    environment: str
    name: str
    kind: str
    port: int | None = None
    pid: int | None = None
    ready: bool = False


@dataclass(frozen=True)
class ServiceState:
    environment: str
    name: str
    version: str
    router_port: int | None = None


@dataclass(frozen=True)
class StoredRollout:
    """A rollout's row: its JSON state, its phase, and a person's pending request ("" when none)."""

    id: str
    environment: str
    phase: str
    created_at: float
    updated_at: float
    data: str
    request: str


@dataclass(frozen=True)
class EnvironmentState:
    name: str
    target: str
    release: int | None
    supervisor_pid: int | None
    updated_at: float
    phase: str = "stopped"
    message: str = ""
    spec_file: str = ""
    metrics_port: int | None = None


# Columns added after schema 1, with the SQL type and default that `ALTER TABLE ... ADD COLUMN` gives them.
_ADDED_COLUMNS = {
    "environments": (("phase", "VARCHAR(16) NOT NULL DEFAULT 'stopped'"),
                     ("message", "VARCHAR(4000) NOT NULL DEFAULT ''"),
                     ("spec_file", "VARCHAR(4096) NOT NULL DEFAULT ''"),
                     ("metrics_port", "INTEGER")),
    "secrets": (("expires_at", "FLOAT"),),
}


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """Open with `Store.open(state_dir)` (SQLite) or `Store(url)`."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True)
        except (SQLAlchemyError, ValueError) as exc:
            raise UserError(f"cannot open the store {url!r}: {exc}") from exc
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrate()

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(f"sqlite:///{state_dir / STATE_FILE}")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise ExternalError(f"the store {self.url} failed: {str(exc).splitlines()[0][:200]}") from exc

    def _migrate(self) -> None:
        """Create the tables of a new store; refuse a store written by a newer shipmate."""
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise ExternalError(f"cannot create the store's tables at {self.url}: {exc}") from exc
        with self._session() as session:
            row = session.get(Meta, "schema_version")
            if row is None:
                session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(row.value) > SCHEMA_VERSION:
                raise UserError(f"the store {self.url} has schema {row.value}, newer than this shipmate's "
                                f"{SCHEMA_VERSION}; upgrade shipmate")
            elif int(row.value) < SCHEMA_VERSION:
                self._add_columns(session)
                row.value = str(SCHEMA_VERSION)

    def _add_columns(self, session: Session) -> None:
        """Bring an older store's tables up to this schema (new tables exist already: create_all)."""
        existing = inspect(session.connection())
        for table, columns in _ADDED_COLUMNS.items():
            have = {c["name"] for c in existing.get_columns(table)}
            for name, sql in columns:
                if name not in have:
                    session.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {sql}"))

    # --- environments ---------------------------------------------------------------------

    def set_environment(self, name: str, *, target: str = "local", release: int | None = None,
                        supervisor_pid: int | None = None, phase: str | None = None, message: str | None = None,
                        spec_file: str | None = None, metrics_port: int | None = None) -> None:
        """Record an environment; `phase`, `message`, `spec_file` and `metrics_port` keep their
        stored value when not given."""
        with self._session() as session:
            row = session.get(EnvironmentRow, name)
            if row is None:
                row = EnvironmentRow(name=name, phase="stopped", message="", spec_file="")
            row.target, row.release, row.supervisor_pid, row.updated_at = target, release, supervisor_pid, time.time()
            if phase is not None:
                row.phase = phase
            if message is not None:
                row.message = message[:4000]
            if spec_file is not None:
                row.spec_file = spec_file
            if metrics_port is not None:
                row.metrics_port = metrics_port
            session.add(row)

    def set_release(self, name: str, release: int | None) -> None:
        """Record which release an environment runs (the row must exist)."""
        with self._session() as session:
            row = session.get(EnvironmentRow, name)
            if row is None:
                raise UserError(f"no environment {name!r} in the store")
            row.release, row.updated_at = release, time.time()

    def set_phase(self, name: str, phase: str, message: str = "") -> None:
        """Change only what an environment's supervisor is doing (the row must exist)."""
        with self._session() as session:
            row = session.get(EnvironmentRow, name)
            if row is None:
                raise UserError(f"no environment {name!r} in the store")
            row.phase, row.message, row.updated_at = phase, message[:4000], time.time()

    def environment(self, name: str) -> EnvironmentState | None:
        with self._session() as session:
            row = session.get(EnvironmentRow, name)
            if row is None:
                return None
            return EnvironmentState(row.name, row.target, row.release, row.supervisor_pid, row.updated_at,
                                    row.phase, row.message, row.spec_file, row.metrics_port)

    def environments(self) -> list[EnvironmentState]:
        with self._session() as session:
            return [EnvironmentState(r.name, r.target, r.release, r.supervisor_pid, r.updated_at, r.phase,
                                     r.message, r.spec_file, r.metrics_port)
                    for r in session.scalars(select(EnvironmentRow).order_by(EnvironmentRow.name))]

    def remove_environment(self, name: str) -> None:
        """Forget an environment and everything recorded for it."""
        with self._session() as session:
            for model in (InstanceRow, AddonRow, ServiceRow, ReleaseRow, RolloutRow):
                for row in session.scalars(select(model).where(model.environment == name)):
                    session.delete(row)
            env = session.get(EnvironmentRow, name)
            if env is not None:
                session.delete(env)

    # --- instances ------------------------------------------------------------------------

    def put_instance(self, state: InstanceState) -> None:
        with self._session() as session:
            row = session.scalars(select(InstanceRow).where(
                InstanceRow.environment == state.environment,
                InstanceRow.instance_id == state.instance_id)).first()
            if row is None:
                row = InstanceRow(environment=state.environment, instance_id=state.instance_id)
                session.add(row)
            for field in ("service", "version", "pid", "pgid", "port", "ready", "restarts", "started_at"):
                setattr(row, field, getattr(state, field))

    def instances(self, environment: str) -> list[InstanceState]:
        with self._session() as session:
            rows = session.scalars(select(InstanceRow).where(InstanceRow.environment == environment)
                                   .order_by(InstanceRow.service, InstanceRow.instance_id))
            return [InstanceState(r.environment, r.instance_id, r.service, r.version, r.pid, r.pgid, r.port,
                                  r.ready, r.restarts, r.started_at) for r in rows]

    def remove_instance(self, environment: str, instance_id: str) -> None:
        with self._session() as session:
            for row in session.scalars(select(InstanceRow).where(InstanceRow.environment == environment,
                                                                 InstanceRow.instance_id == instance_id)):
                session.delete(row)

    # --- addons ---------------------------------------------------------------------------

    def put_addon(self, state: AddonState) -> None:
        with self._session() as session:
            row = session.scalars(select(AddonRow).where(AddonRow.environment == state.environment,
                                                         AddonRow.name == state.name)).first()
            if row is None:
                row = AddonRow(environment=state.environment, name=state.name)
                session.add(row)
            row.kind, row.port, row.pid, row.ready = state.kind, state.port, state.pid, state.ready

    def addons(self, environment: str) -> list[AddonState]:
        with self._session() as session:
            rows = session.scalars(select(AddonRow).where(AddonRow.environment == environment)
                                   .order_by(AddonRow.name))
            return [AddonState(r.environment, r.name, r.kind, r.port, r.pid, r.ready) for r in rows]

    # --- services -------------------------------------------------------------------------

    def put_service(self, state: ServiceState) -> None:
        with self._session() as session:
            row = session.scalars(select(ServiceRow).where(ServiceRow.environment == state.environment,
                                                           ServiceRow.name == state.name)).first()
            if row is None:
                row = ServiceRow(environment=state.environment, name=state.name)
                session.add(row)
            row.version, row.router_port = state.version, state.router_port

    def services(self, environment: str) -> list[ServiceState]:
        with self._session() as session:
            rows = session.scalars(select(ServiceRow).where(ServiceRow.environment == environment)
                                   .order_by(ServiceRow.name))
            return [ServiceState(r.environment, r.name, r.version, r.router_port) for r in rows]

    def forget_running(self, environment: str) -> None:
        """Drop the instance rows of an environment (nothing of it runs any more); services keep
        their router ports and addons their rows, so that the next `up` reuses them."""
        with self._session() as session:
            for row in session.scalars(select(InstanceRow).where(InstanceRow.environment == environment)):
                session.delete(row)
            for addon in session.scalars(select(AddonRow).where(AddonRow.environment == environment)):
                addon.ready, addon.pid = False, None

    # --- releases -------------------------------------------------------------------------

    def add_release(self, environment: str, number: int, created_at: float, data: str) -> None:
        """Store a new release; Conflict-free by construction: the number must be new."""
        with self._session() as session:
            session.add(ReleaseRow(environment=environment, number=number, created_at=created_at, data=data))

    def release(self, environment: str, number: int) -> str | None:
        with self._session() as session:
            row = session.scalars(select(ReleaseRow).where(ReleaseRow.environment == environment,
                                                           ReleaseRow.number == number)).first()
            return row.data if row is not None else None

    def release_numbers(self, environment: str) -> list[int]:
        with self._session() as session:
            return list(session.scalars(select(ReleaseRow.number).where(ReleaseRow.environment == environment)
                                        .order_by(ReleaseRow.number)))

    def prune_releases(self, environment: str, keep: int, protect: set[int]) -> list[int]:
        """Delete the oldest releases beyond `keep`, never one in `protect`; returns the numbers deleted."""
        numbers = self.release_numbers(environment)
        doomed = [n for n in numbers[:-keep] if n not in protect] if keep > 0 else []
        with self._session() as session:
            for row in session.scalars(select(ReleaseRow).where(ReleaseRow.environment == environment,
                                                                ReleaseRow.number.in_(doomed))):
                session.delete(row)
        return doomed

    # --- rollouts -------------------------------------------------------------------------

    def put_rollout(self, rollout_id: str, environment: str, phase: str, data: str, *, created_at: float) -> None:
        """Write a rollout's state (insert or replace); a pending request is kept."""
        with self._session() as session:
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                row = RolloutRow(id=rollout_id, environment=environment, created_at=created_at, request="")
                session.add(row)
            row.phase, row.data, row.updated_at = phase, data, time.time()

    def rollouts(self, environment: str) -> list[StoredRollout]:
        """Every rollout of an environment, oldest first."""
        with self._session() as session:
            rows = session.scalars(select(RolloutRow).where(RolloutRow.environment == environment)
                                   .order_by(RolloutRow.created_at, RolloutRow.id))
            return [StoredRollout(r.id, r.environment, r.phase, r.created_at, r.updated_at, r.data, r.request)
                    for r in rows]

    def request(self, rollout_id: str, request: str) -> None:
        """Leave a request (promote, promote-full, pause, resume, abort) for the engine."""
        with self._session() as session:
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                raise UserError(f"no rollout {rollout_id!r}")
            row.request = request

    def take_request(self, rollout_id: str) -> str:
        """The pending request of a rollout, cleared ("" when none)."""
        with self._session() as session:
            row = session.get(RolloutRow, rollout_id)
            if row is None or not row.request:
                return ""
            request, row.request = row.request, ""
            return request

    # --- secrets: sealed envelopes only (shipmate.secrets.store seals and opens them) --------

    def add_secret(self, environment: str, name: str, version: int, sealed: str, *, created_at: float,
                   demote: str, expires_at: float | None = None) -> None:
        """Store `version` of a secret as its current one, in one transaction: the version that was
        current becomes `demote` (previous or retired; a previous one ends its grace at `expires_at`)
        and a previous one becomes retired. Conflict unless `version` is one more than the newest
        stored (another writer came first)."""

        with self._session() as session:
            rows = list(session.scalars(select(SecretRow).where(SecretRow.environment == environment,
                                                                SecretRow.name == name)))
            newest = max((row.version for row in rows), default=0)
            if version != newest + 1:
                raise Conflict(f"secret {environment}/{name}: version {version} is not the next one (the newest "
                               f"is {newest}); another change came first, try again")
            for row in rows:
                if row.state == "current":
                    row.state = demote
                    row.expires_at = expires_at if demote == "previous" else None
                elif row.state == "previous":
                    row.state, row.expires_at = "retired", None
            session.add(SecretRow(environment=environment, name=name, version=version, created_at=created_at,
                                  state="current", sealed=sealed))

    def secret_versions(self, environment: str, name: str) -> list[StoredSecret]:
        """Every stored version of one secret, oldest first."""

        with self._session() as session:
            rows = session.scalars(select(SecretRow).where(SecretRow.environment == environment,
                                                           SecretRow.name == name).order_by(SecretRow.version))
            return [_stored(r) for r in rows]

    def secret_names(self, environment: str) -> list[str]:
        """The names of an environment's stored secrets, sorted."""

        with self._session() as session:
            return list(session.scalars(select(SecretRow.name).where(SecretRow.environment == environment)
                                        .distinct().order_by(SecretRow.name)))

    def all_secrets(self) -> list[StoredSecret]:
        """Every stored version of every secret of every environment."""

        with self._session() as session:
            rows = session.scalars(select(SecretRow).order_by(SecretRow.environment, SecretRow.name,
                                                              SecretRow.version))
            return [_stored(r) for r in rows]

    def set_secret_sealed(self, environment: str, name: str, version: int, sealed: str, *, expected: str) -> bool:
        """Replace one version's envelope (a rewrap) if it is still `expected`; whether it was replaced."""

        with self._session() as session:
            row = session.scalars(select(SecretRow).where(SecretRow.environment == environment,
                                                          SecretRow.name == name,
                                                          SecretRow.version == version)).first()
            if row is None or row.sealed != expected:
                return False
            row.sealed = sealed
            return True

    def set_secret_state(self, environment: str, name: str, version: int, state: str) -> None:
        """Change one version's state (current, previous, retired); the version must exist."""

        with self._session() as session:
            row = session.scalars(select(SecretRow).where(SecretRow.environment == environment,
                                                          SecretRow.name == name,
                                                          SecretRow.version == version)).first()
            if row is None:
                raise UserError(f"no version {version} of secret {environment}/{name} in the store")
            row.state = state
            if state != "previous":
                row.expires_at = None

    # --- the audit log of secrets: who read or wrote what, when; never a value ----------------

    def add_audit(self, entry: AuditEntry) -> None:
        with self._session() as session:
            session.add(AuditRow(at=entry.at, actor=entry.actor[:200], action=entry.action,
                                 environment=entry.environment, name=entry.name, version=entry.version,
                                 detail=entry.detail[:1000]))

    def audit_log(self, environment: str | None = None, name: str | None = None,
                  limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` entries (optionally of one environment and/or secret), oldest first."""

        with self._session() as session:
            query = select(AuditRow)
            if environment is not None:
                query = query.where(AuditRow.environment == environment)
            if name is not None:
                query = query.where(AuditRow.name == name)
            rows = list(session.scalars(query.order_by(AuditRow.id.desc()).limit(limit)))
            return [AuditEntry(r.at, r.actor, r.action, r.environment, r.name, r.version, r.detail)
                    for r in reversed(rows)]


def _stored(row: SecretRow) -> StoredSecret:
    return StoredSecret(row.environment, row.name, row.version, row.created_at, row.state, row.sealed, row.expires_at)


@dataclass(frozen=True)
class StoredSecret:
    """One stored version of a secret: its sealed envelope (ciphertext, not the value) and state."""

    environment: str
    name: str
    version: int
    created_at: float
    state: str
    sealed: str
    expires_at: float | None = None  # a previous version: when its grace period ends


@dataclass(frozen=True)
class AuditEntry:
    """One read or write of a secret: never its value."""

    at: float
    actor: str
    action: str  # put, rotate, retire, read, reveal, deliver, rewrap, ...
    environment: str
    name: str
    version: int | None = None
    detail: str = ""
