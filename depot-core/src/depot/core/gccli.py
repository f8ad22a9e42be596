"""``depot gc``: run one garbage collection now, against the store ``depot serve`` uses.

It reads the same options and ``DEPOT_*`` variables as ``depot serve`` (store path, database URL,
storage type, the ``--s3-*`` options of plugins), so it is run beside a live depot with the same
environment. See :mod:`depot.core.collector` for what is removed and why it is safe while the
depot serves.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click
from depot.core.collector import CollectionReport, EcosystemTally
from depot.core.errors import DepotError
from depot.core.pages import human_size
from depot.core.plugins import Plugins
from depot.core.settings import CORE_OPTIONS, DEFAULT_GRACE
from depot.core.units import Duration, format_duration

#: The ``depot serve`` options that say where the store is; the others do not matter here.
_STORE_OPTIONS = (
    "store_path", "database_url", "storage_type", "cache_max_size", "cache_max_age", "verbose",
)  # fmt: skip


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def report_lines(report: CollectionReport) -> list[str]:
    """What ``depot gc`` prints: a line per ecosystem, the leftovers, a summary."""
    verb = "would remove" if report.dry_run else "removed"
    lines = []
    for name, tally in report.ecosystems.items():
        if not tally.collected:
            lines.append(
                f"{name}: {_plural(tally.examined, 'blob')} ({human_size(tally.examined_bytes)}), "
                "not collected: the plugin reports no references"
            )
            continue
        lines.append(
            f"{name}: {verb} {_plural(tally.removed, 'blob')} ({human_size(tally.removed_bytes)}) "
            f"of {tally.examined:,}; {_plural(tally.kept, 'blob')} "
            f"({human_size(tally.kept_bytes)}) kept"
        )
    for name, evicted in report.evicted.items():
        lines.append(
            f"{name}: {'would evict' if report.dry_run else 'evicted'} "
            f"{_plural(evicted.items, 'cached item')} ({human_size(evicted.bytes)})"
        )
    leftovers = report.leftovers
    lines.append(
        f"unfinished uploads: {verb} {_plural(leftovers.objects, 'temporary object')} "
        f"({human_size(leftovers.bytes)})"
    )
    lines.append(
        f"{'dry run: ' if report.dry_run else ''}{verb} {_plural(report.removed, 'object')}, "
        f"{human_size(report.removed_bytes)}, in {report.duration:.1f} s "
        f"(grace {format_duration(report.grace)})"
    )
    return lines


def gc_command(plugins: Plugins) -> click.Command:
    """Build ``depot gc`` with the store options of ``depot serve`` and every plugin's."""
    plugin_options = [o for found in plugins.hook.depot_serve_options() for o in found or ()]
    store_options = [o for o in CORE_OPTIONS if o.name in _STORE_OPTIONS]

    def callback(grace: float, dry_run: bool, **options: Any) -> None:
        from depot.core.app import create_app
        from depot.core.collector import collect

        options = {k: v for k, v in options.items() if v is not None}
        app = create_app(plugins=plugins, **options)
        depot = app.state.depot
        if not depot.settings.verbose:
            logging.getLogger("depot").setLevel(logging.WARNING)

        def progress(name: str, tally: EcosystemTally) -> None:
            click.echo(
                f"{name}: {tally.examined:,} blobs examined, {tally.removed:,} "
                f"{'to remove' if dry_run else 'removed'} ({human_size(tally.removed_bytes)})",
                err=True,
            )

        async def run() -> CollectionReport:
            await depot.startup()
            try:
                return await collect(depot, grace=grace, dry_run=dry_run, progress=progress)
            finally:
                await depot.shutdown()

        report = asyncio.run(run())
        if report.skipped:
            raise DepotError(
                "another collection is running (on this depot or a replica); try later"
            )
        for line in report_lines(report):
            click.echo(line)

    return click.Command(
        "gc",
        callback=callback,
        params=[
            click.Option(
                ["--dry-run"], is_flag=True, help="Say what would be removed; remove nothing."
            ),
            click.Option(
                ["--grace"],
                envvar="DEPOT_GC_GRACE",
                show_envvar=True,
                type=Duration(),
                default=DEFAULT_GRACE,
                show_default="24h",
                help="Keep unreferenced blobs younger than this (0 also takes uploads in "
                "progress).",
            ),
            *store_options,
            *plugin_options,
        ],
        help="Remove blobs no package points at, and leftovers of unfinished uploads.",
    )
