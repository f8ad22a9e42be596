"""``depot python``: save distributions with their dependency closure and push them to a depot."""

from __future__ import annotations

import click


@click.group("python")
def python() -> None:
    """Python index: save distributions with their dependencies, push them to a depot."""
