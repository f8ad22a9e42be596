"""``depot nix``: commands for Nix binary caches."""

from __future__ import annotations

import click


@click.group("nix")
def nix() -> None:
    """Nix binary cache: push closures, manage signing keys."""
