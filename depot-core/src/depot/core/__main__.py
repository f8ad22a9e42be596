"""``python -m depot.core`` runs the ``depot`` command."""

from depot.core.cli import main

main()
