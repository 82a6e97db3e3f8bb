"""Tables of the control-plane store (SQLAlchemy 2 typed declarative models).

Used by `shipmate.store.db` only; other packages read and write through `Store`, never these
classes' sessions directly. No I/O here.
"""

from __future__ import annotations

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 4


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the store itself (its schema version)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class EnvironmentRow(Base):
    """One environment the local target runs: its current release and supervisor."""

    __tablename__ = "environments"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    target: Mapped[str] = mapped_column(String(16), default="local")
    release: Mapped[int | None] = mapped_column(Integer, nullable=True)
    supervisor_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[float] = mapped_column(default=0.0)
    # added in schema 2: what the supervisor is doing and why (starting, ready, failed, stopping, stopped)
    phase: Mapped[str] = mapped_column(String(16), default="stopped")
    message: Mapped[str] = mapped_column(String(4000), default="")
    spec_file: Mapped[str] = mapped_column(String(4096), default="")
    metrics_port: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ServiceRow(Base):
    """One service of an environment on the local target: its version and its router's stable port."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("environment", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(128))
    router_port: Mapped[int | None] = mapped_column(Integer, nullable=True)


class InstanceRow(Base):
    """One running (or last seen) instance of a service."""

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("environment", "instance_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(63), index=True)
    instance_id: Mapped[str] = mapped_column(String(128))
    service: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pgid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ready: Mapped[bool] = mapped_column(default=False)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float] = mapped_column(default=0.0)


class AddonRow(Base):
    """One addon of an environment: where it listens and which process runs it."""

    __tablename__ = "addons"
    __table_args__ = (UniqueConstraint("environment", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ready: Mapped[bool] = mapped_column(default=False)


class ReleaseRow(Base):
    """One immutable release of an environment (added in schema 3); `data` is its JSON (release.codec)."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("environment", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(63), index=True)
    number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(default=0.0)
    data: Mapped[str] = mapped_column(Text)


class RolloutRow(Base):
    """One rollout (added in schema 3): its state as JSON, rewritten before and after every step, and
    the request a person made (promote, pause, resume, abort) for the engine to act on."""

    __tablename__ = "rollouts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    environment: Mapped[str] = mapped_column(String(63), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(default=0.0)
    updated_at: Mapped[float] = mapped_column(default=0.0)
    data: Mapped[str] = mapped_column(Text)
    request: Mapped[str] = mapped_column(String(32), default="")


class SecretRow(Base):
    """One version of one secret of an environment: `sealed` is its envelope (shipmate.secrets.crypto,
    canonical JSON), never the value; `state` is current, previous (still delivered during its grace
    period) or retired. A new table, so `create_all` adds it to an older store without a schema bump;
    `expires_at` (schema 4) is when a previous version's grace period ends."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("environment", "name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(253))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(default=0.0)
    state: Mapped[str] = mapped_column(String(16), default="current")
    sealed: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[float | None] = mapped_column(default=None)


class AuditRow(Base):
    """One read or write of a secret (schema 4): who, what, when, which version; never a value."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(default=0.0, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(253))
    version: Mapped[int | None] = mapped_column(Integer, default=None)
    detail: Mapped[str] = mapped_column(String(1000), default="")
