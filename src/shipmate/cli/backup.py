"""`shipmate backup ...`: backups, point-in-time recovery and restore drills (being written)."""

from __future__ import annotations

import click


@click.group("backup")
def backup() -> None:
    """Backups of an application's databases: WAL archive, base backups, restore."""
