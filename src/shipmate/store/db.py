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

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shipmate.errors import ExternalError, UserError
from shipmate.store.models import SCHEMA_VERSION, AddonRow, Base, EnvironmentRow, InstanceRow, Meta

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
class EnvironmentState:
    name: str
    target: str
    release: int | None
    supervisor_pid: int | None
    updated_at: float


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

    # --- environments ---------------------------------------------------------------------

    def set_environment(self, name: str, *, target: str = "local", release: int | None = None,
                        supervisor_pid: int | None = None) -> None:
        with self._session() as session:
            row = session.get(EnvironmentRow, name) or EnvironmentRow(name=name)
            row.target, row.release, row.supervisor_pid, row.updated_at = target, release, supervisor_pid, time.time()
            session.add(row)

    def environment(self, name: str) -> EnvironmentState | None:
        with self._session() as session:
            row = session.get(EnvironmentRow, name)
            if row is None:
                return None
            return EnvironmentState(row.name, row.target, row.release, row.supervisor_pid, row.updated_at)

    def remove_environment(self, name: str) -> None:
        """Forget an environment and everything recorded for it."""
        with self._session() as session:
            for model in (InstanceRow, AddonRow):
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
