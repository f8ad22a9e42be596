"""Depot's core: the plugin contract, the app, and the services ecosystems are given.

Plugins import :data:`hookimpl` from here; applications call :func:`create_app`, and a host
that mounts depot runs its start-up and shutdown with :func:`lifespan` or :func:`running`.
"""

from depot.core.app import Depot, EcosystemContext, create_app
from depot.core.ecosystem import Ecosystem
from depot.core.hookspecs import hookimpl
from depot.core.lifespan import lifespan, running

__all__ = [
    "Depot",
    "Ecosystem",
    "EcosystemContext",
    "create_app",
    "hookimpl",
    "lifespan",
    "running",
]
