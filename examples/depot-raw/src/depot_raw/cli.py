"""``depot raw``: upload and list files in a depot's raw store."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import click
from depot.core.errors import DepotError


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@click.group("raw")
def raw() -> None:
    """Plain files: upload them to a depot and list what it holds."""


@raw.command("upload")
@click.argument("depot_url")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def upload(depot_url: str, files: tuple[Path, ...]) -> None:
    """Upload FILES to the depot at DEPOT_URL, verified by sha256."""
    for path in files:
        url = f"{depot_url.rstrip('/')}/raw/files/{path.name}"
        with path.open("rb") as body:
            request = urllib.request.Request(
                url,
                data=body,
                method="PUT",
                headers={
                    "X-Checksum-Sha256": _sha256(path),
                    "Content-Length": str(path.stat().st_size),
                },
            )
            try:
                with urllib.request.urlopen(request) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                raise DepotError(
                    f"{path.name}: {exc.code} {exc.read().decode(errors='replace').strip()}"
                ) from None
            except urllib.error.URLError as exc:
                raise DepotError(f"cannot reach {depot_url}: {exc.reason}") from None
        click.echo(f"{'stored' if status == 201 else 'already there'}: {path.name}")


@raw.command("list")
@click.argument("depot_url")
def list_files(depot_url: str) -> None:
    """List the files in the depot at DEPOT_URL."""
    try:
        with urllib.request.urlopen(f"{depot_url.rstrip('/')}/raw/") as response:
            entries = json.load(response)
    except urllib.error.URLError as exc:
        raise DepotError(f"cannot reach {depot_url}: {getattr(exc, 'reason', exc)}") from None
    for entry in entries:
        click.echo(f"{entry['size']:>12}  {entry['sha256'][:12]}  {entry['name']}")
