"""``depot python``: save a dependency closure, push it to a depot, yank releases there."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from depot.core.errors import DepotError

DEFAULT_DIR = ".depot-storage"


@click.group("python")
def python() -> None:
    """Python index: save distributions with their dependencies, push them to a depot, yank."""


@python.command("save")
@click.argument("requirements", nargs=-1)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read requirements from standard input.")
@click.option(
    "-r", "--requirement", "requirement_files", multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read requirements from a file, as pip does (repeatable).",
)  # fmt: skip
@click.option(
    "--dir", "root", default=DEFAULT_DIR, show_default=True,
    type=click.Path(file_okay=False, path_type=Path), help="Where saved files go (under python/).",
)  # fmt: skip
@click.option(
    "--index-url", default="https://pypi.org/simple/", show_default=True,
    envvar="DEPOT_PYTHON_INDEX_URL", help="The index to resolve and download from.",
)  # fmt: skip
@click.option(
    "--python-version", "python_versions", multiple=True, metavar="X.Y",
    help="Also save the closure for this Python version (repeatable; wheels only).",
)  # fmt: skip
@click.option(
    "--platform", "platforms", multiple=True, metavar="TAG",
    help="Also save the closure for this platform tag, e.g. manylinux2014_x86_64 (repeatable).",
)  # fmt: skip
def save_command(
    requirements: tuple[str, ...],
    from_stdin: bool,
    requirement_files: tuple[Path, ...],
    root: Path,
    index_url: str,
    python_versions: tuple[str, ...],
    platforms: tuple[str, ...],
) -> None:
    """Save REQUIREMENTS (PEP 508) and their whole dependency closure into --dir.

    pip's resolver picks the files, once for this interpreter and once for each
    --python-version/--platform combination; every file is checked against the sha256 the index
    publishes. Files already saved are skipped.
    """
    from depot.pypi.save import save

    lines = [r.strip() for r in requirements if r.strip()]
    if from_stdin:
        lines += [line.strip() for line in sys.stdin if line.strip()]
    if not lines and not requirement_files:
        raise DepotError("nothing to save: give requirements, --stdin or -r FILE")
    save(lines, requirement_files, root, index_url, python_versions, platforms)


@python.command("push")
@click.argument("depot_url")
@click.option(
    "--dir", "root", default=DEFAULT_DIR, show_default=True,
    type=click.Path(file_okay=False, path_type=Path), help="Where `depot python save` put files.",
)  # fmt: skip
@click.option("--token", envvar="DEPOT_AUTH_TOKEN", help="Bearer token for the depot.")
@click.option("--jobs", default=8, show_default=True, help="Uploads in flight at once.")
def push_command(depot_url: str, root: Path, token: str | None, jobs: int) -> None:
    """Upload everything saved in --dir to the depot at DEPOT_URL, skipping what it has."""
    from depot.pypi.push import push

    push(depot_url, root, token, max(1, jobs))


@python.command("yank")
@click.argument("depot_url")
@click.argument("project")
@click.argument("version")
@click.option("--reason", help="Why the release is yanked; pip shows it when it installs it.")
@click.option("--undo", is_flag=True, help="Un-yank the release instead.")
@click.option("--token", envvar="DEPOT_AUTH_TOKEN", help="Bearer token for the depot.")
def yank_command(
    depot_url: str, project: str, version: str, reason: str | None, undo: bool, token: str | None
) -> None:
    """Yank (PEP 592) every file of PROJECT VERSION on the depot at DEPOT_URL, or un-yank it.

    Installers skip a yanked release unless a requirement pins it with == or ===.
    """
    from depot.pypi.yank_client import yank

    click.echo(yank(depot_url, project, version, reason, undo, token))


@python.command("delete")
@click.argument("depot_url")
@click.argument("project")
@click.argument("version", required=False)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--token", envvar="DEPOT_AUTH_TOKEN", help="Bearer token for the depot.")
def delete_command(
    depot_url: str, project: str, version: str | None, dry_run: bool, token: str | None
) -> None:
    """Remove every file of PROJECT, or of its VERSION, from the depot at DEPOT_URL.

    Prefer yank when installs pinned to the release must keep working. Needs a write key.
    """
    from urllib.parse import quote

    from depot.core.client import call_api
    from depot.core.pages import human_size

    url = f"{depot_url.rstrip('/')}/python/-/projects/{quote(project, safe='')}"
    if version:
        url += f"/{quote(version, safe='')}"
    answer = call_api("DELETE", url + ("?dry-run=1" if dry_run else ""), token)
    files = answer.get("files") or []
    size = sum(int(b.get("size") or 0) for b in answer.get("blobs") or [])
    click.echo(
        f"{'would delete' if dry_run else 'deleted'} {answer.get('project')} "
        f"{version or '(all versions)'}: {len(files)} file(s), {human_size(size)}"
    )
    for filename in files:
        click.echo(f"  {filename}")
