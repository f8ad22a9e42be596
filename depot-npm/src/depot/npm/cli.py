"""``depot npm``: save packages with their dependency trees, push them into a depot."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from depot.core.errors import DepotError

DEFAULT_DIR = Path(".depot-storage")

# The saved-packages folder, the same option for save and push.
dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Where saved packages are kept (under npm/).",
)


@click.group("npm")
def npm() -> None:
    """npm registry: save packages with their dependency trees, push them to a depot."""


@npm.command("save")
@click.argument("specs", nargs=-1)
@click.option(
    "--stdin", "from_stdin", is_flag=True, help="Read specs from standard input, one a line."
)
@dir_option
@click.option(
    "--registry",
    default=None,
    envvar="DEPOT_NPM_REGISTRY",
    help="Upstream registry  [default: https://registry.npmjs.org]",
)
@click.option("--no-peer", is_flag=True, help="Do not follow peerDependencies.")
@click.option("--jobs", default=16, show_default=True, help="Concurrent requests.")
def save_command(
    specs: tuple[str, ...],
    from_stdin: bool,
    directory: Path,
    registry: str | None,
    no_peer: bool,
    jobs: int,
) -> None:
    """Save SPECs (name, name@version, name@range, name@tag, alias@npm:name@range) with all their
    dependencies, or every package pinned by a package-lock.json given as a path.

    \b
      depot npm save express lodash@^4
      depot npm save path/to/package-lock.json
      cat specs.txt | depot npm save --stdin
    """
    from depot.npm.lockfile import LockfileError, read_lockfile
    from depot.npm.save import DEFAULT_REGISTRY, save
    from depot.npm.specs import SpecError, parse_spec

    texts = list(specs)
    if from_stdin:
        texts += [line.strip() for line in sys.stdin if line.strip() and not line.startswith("#")]
    parsed, locked = [], []
    for text in texts:
        if text.endswith(".json") and Path(text).is_file():
            try:
                locked += read_lockfile(json.loads(Path(text).read_text()))
            except (ValueError, LockfileError) as exc:
                raise DepotError(f"{text}: {exc}") from exc
            continue
        try:
            parsed.append(parse_spec(text))
        except SpecError as exc:
            raise DepotError(str(exc)) from exc
    if not parsed and not locked:
        raise DepotError("nothing to save: give package specs, a package-lock.json or --stdin")
    upstream = registry or DEFAULT_REGISTRY
    report = asyncio.run(save(parsed, locked, upstream, directory, peers=not no_peer, jobs=jobs))
    click.echo(
        f"saved {len(report.saved)} package versions ({report.bytes / 1e6:.1f} MB), "
        f"{len(report.skipped)} already saved, {len(report.failed)} failed, in {directory / 'npm'}",
        err=True,
    )
    if report.failed:
        raise DepotError(
            f"{len(report.failed)} packages could not be saved; first: {report.failed[0]}"
        )


@npm.command("push")
@click.argument("depot_url")
@dir_option
@click.option(
    "--token",
    default=None,
    help="Bearer token (default: DEPOT_AUTH_TOKEN, else made from SSH keys on 401).",
)
@click.option("--jobs", default=8, show_default=True, help="Concurrent uploads.")
def push_command(depot_url: str, directory: Path, token: str | None, jobs: int) -> None:
    """Upload the saved npm packages into the depot at DEPOT_URL (skipping what it has)."""
    from depot.npm.push import push

    if not (directory / "npm" / "versions").is_dir():
        raise DepotError(f"nothing saved in {directory / 'npm'}: run depot npm save first")
    report = asyncio.run(push(depot_url, directory, token, jobs))
    click.echo(
        f"pushed {len(report.pushed)} package versions ({report.bytes / 1e6:.1f} MB), "
        f"{len(report.skipped)} already there, {len(report.failed)} failed",
        err=True,
    )
    if report.failed:
        raise DepotError(
            f"{len(report.failed)} packages could not be pushed; first: {report.failed[0]}"
        )


@npm.command("delete")
@click.argument("depot_url")
@click.argument("spec", metavar="NAME[@VERSION]")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--token", envvar="DEPOT_AUTH_TOKEN", default=None, help="Bearer token [env: DEPOT_AUTH_TOKEN]."
)
def delete_command(depot_url: str, spec: str, dry_run: bool, token: str | None) -> None:
    """Remove a published package, or one version of it, from the depot at DEPOT_URL.

    Its rows go at once; its tarballs are removed right after. Needs a write key.
    """
    from urllib.parse import quote

    from depot.core.client import call_api
    from depot.core.pages import human_size

    at = spec.rfind("@")
    name, version = (spec[:at], spec[at + 1 :]) if at > 0 else (spec, None)
    url = f"{depot_url.rstrip('/')}/npm/-/depot/packages/{quote(name, safe='@/')}"
    query = [f"version={quote(version)}"] if version else []
    if dry_run:
        query.append("dry-run=1")
    answer = call_api("DELETE", url + ("?" + "&".join(query) if query else ""), token)
    blobs = answer.get("blobs") or []
    size = sum(int(b.get("size") or 0) for b in blobs)
    versions = ", ".join(answer.get("versions") or [])
    click.echo(
        f"{'would delete' if dry_run else 'deleted'} {name} {versions} "
        f"({len(blobs)} tarball(s), {human_size(size)})"
    )
