"""Tables of the control-plane store (SQLAlchemy 2 typed declarative models).

Used by `shipmate.store.db` only; other packages read and write through `Store`, never these
classes' sessions directly. No I/O here.
"""

from __future__ import annotations

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1


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
