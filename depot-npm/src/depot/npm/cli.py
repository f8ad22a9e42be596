"""``depot npm``: save packages from a registry and push them into a depot."""

from __future__ import annotations

import click


@click.group("npm")
def npm() -> None:
    """npm registry: save packages with their dependency trees, push them to a depot."""
