"""`shipmate secrets ...`: the encrypted, versioned secrets of an environment (being written)."""

from __future__ import annotations

import click


@click.group("secrets")
def secrets() -> None:
    """Encrypted, versioned secrets: set, get, rotate, rewrap, and the git file form."""
