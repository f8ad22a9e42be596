"""The ``depot`` command: core commands plus whatever installed plugins contribute.

Errors a user can act on are one line on stderr and exit status 1; a traceback is printed only
with ``--verbose`` (or ``DEPOT_VERBOSE=1``).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

import click
from depot.core.errors import DepotError
from depot.core.plugins import Plugins, load_plugins


def depot_version() -> str:
    try:
        return version("depot-core")
    except PackageNotFoundError:
        return "unknown"


class DepotGroup(click.Group):
    """A group that turns :class:`DepotError` and unexpected failures into one line."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except DepotError as exc:
            if _verbose(ctx):
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        except Exception as exc:  # the last line of defence: no traceback for users
            if _verbose(ctx):
                raise
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise click.ClickException(f"{message} (run with --verbose for details)") from None


def _verbose(ctx: click.Context) -> bool:
    if os.environ.get("DEPOT_VERBOSE", "").lower() in ("1", "true", "yes"):
        return True
    while ctx is not None:
        if ctx.params.get("verbose"):
            return True
        ctx = ctx.parent  # type: ignore[assignment]
    return "--verbose" in sys.argv


def build_cli(plugins: Plugins | None = None) -> click.Group:
    """The ``depot`` group with core commands and every installed plugin's commands."""
    plugins = plugins or load_plugins()

    @click.group(cls=DepotGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--verbose", is_flag=True, help="Show tracebacks and debug logs.")
    @click.pass_context
    def depot(ctx: click.Context, verbose: bool) -> None:
        """Depot: Nix, npm and Python packages served from one place."""
        ctx.obj = plugins

    @depot.command("version")
    def version_command() -> None:
        """Print depot's version."""
        click.echo(depot_version())

    @depot.command("plugins")
    def plugins_command() -> None:
        """List installed plugins with their distributions and versions."""
        for info in plugins.loaded:
            click.echo(f"{info.name:<12} {info.distribution} {info.version}  ({info.module})")
        for failure in plugins.failed:
            click.echo(f"{failure.name:<12} {failure.distribution}  FAILED: {failure.error}")

    from depot.core.gccli import gc_command
    from depot.core.serve import serve_command

    depot.add_command(serve_command(plugins))
    depot.add_command(gc_command(plugins))
    for contributed in plugins.hook.depot_commands():
        for command in contributed or ():
            if command.name in depot.commands:
                click.echo(f"depot: plugin command {command.name!r} clashes; ignored", err=True)
                continue
            depot.add_command(command)
    return depot


def main() -> None:
    """Console-script entry point."""
    plugins = load_plugins()
    for failure in plugins.failed:
        click.echo(
            f"depot: plugin {failure.name!r} ({failure.distribution}) failed to load: "
            f"{failure.error}",
            err=True,
        )
    build_cli(plugins)(prog_name="depot")
