"""``depot nix``: signing keys for the cache and ``depot nix push``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from depot.core.errors import DepotError


@click.group("nix")
def nix() -> None:
    """Nix binary cache: push closures, manage signing keys."""


@nix.command("generate-key")
@click.option(
    "--name", required=True, help="Key name, e.g. depot.example.com-1 (shown in Sig: lines)."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the secret key to this file (mode 600) and print the public key; default: stdout.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def generate_key(name: str, out: Path | None, force: bool) -> None:
    """Make a signing key in Nix's format (what `nix key generate-secret` writes).

    Serve with `depot serve --private-key FILE`; clients trust the public key printed by
    `depot nix public-key`.
    """
    from depot.nix.signing import SecretKey

    try:
        key = SecretKey.generate(name)
    except ValueError as exc:
        raise DepotError(str(exc)) from None
    if out is None:
        click.echo(str(key))
        return
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL), 0o600)
    except FileExistsError:
        raise DepotError(f"{out} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise DepotError(f"cannot write {out}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        f.write(str(key))
    click.echo(str(key.public_key()))


@nix.command("public-key")
@click.option(
    "--private-key",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    envvar="DEPOT_PRIVATE_KEY",
    required=True,
    help="Secret key file ('-' for stdin) [env: DEPOT_PRIVATE_KEY].",
)
def public_key(private_key: Path) -> None:
    """Print the public half of a secret key, for trusted-public-keys in nix.conf."""
    from depot.nix.keys import load_secret_key
    from depot.nix.signing import SecretKey

    if str(private_key) == "-":
        try:
            key = SecretKey.parse(sys.stdin.read())
        except ValueError as exc:
            raise DepotError(f"secret key on stdin: {exc}") from None
    else:
        key = load_secret_key(private_key)
    click.echo(str(key.public_key()))


@nix.command("push")
@click.argument("url")
@click.option(
    "--store-paths", multiple=True, help="A store path (or a symlink to one); repeatable."
)
@click.option(
    "--flake-refs", multiple=True, help="A flake output, e.g. path:./app#default; repeatable."
)
@click.option(
    "--stdin", "from_stdin", is_flag=True, help="Read store paths from stdin, one a line."
)
@click.option(
    "--token", envvar="DEPOT_AUTH_TOKEN", default=None, help="Bearer token [env: DEPOT_AUTH_TOKEN]."
)
@click.option(
    "--compression",
    type=click.Choice(["xz", "zstd", "bzip2", "gzip", "none"]),
    default="zstd",
    show_default=True,
    help="How NAR files are compressed on the way up.",
)
def push(
    url: str,
    store_paths: tuple[str, ...],
    flake_refs: tuple[str, ...],
    from_stdin: bool,
    token: str | None,
    compression: str,
) -> None:
    """Copy store paths and flake outputs, with their closures, into the depot at URL.

    Runs the real `nix copy`; flakes also get their source copied (`nix flake archive`).
    URL is the depot (http://host:8080) or its cache (http://host:8080/nix).
    """
    from depot.nix.push import PushRequest, run_push

    paths = list(store_paths)
    if from_stdin:
        paths += [line.strip() for line in sys.stdin if line.strip()]
    if not paths and not flake_refs:
        raise DepotError("nothing to push: give --store-paths, --flake-refs or --stdin")
    summary = run_push(
        PushRequest(
            url=url,
            store_paths=paths,
            flake_refs=list(flake_refs),
            token=token,
            compression=compression,
        ),
        echo=lambda line: click.echo(line, err=True),
    )
    click.echo(summary)


@nix.command("delete")
@click.argument("url")
@click.argument("store_paths", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--token", envvar="DEPOT_AUTH_TOKEN", default=None, help="Bearer token [env: DEPOT_AUTH_TOKEN]."
)
def delete(url: str, store_paths: tuple[str, ...], dry_run: bool, token: str | None) -> None:
    """Remove STORE_PATHS (their narinfos, then NARs no other path shares) from the depot at URL.

    URL is the depot (http://host:8080) or its cache (http://host:8080/nix). Needs a write key.
    Paths that refer to a removed one are left as they are: delete them too, or nix copy of
    their closure will miss it.
    """
    from depot.core.client import call_api
    from depot.core.pages import human_size
    from depot.nix.storepath import base_name_of, hash_part_of, is_hash_part

    cache = url.rstrip("/")
    if not cache.endswith("/nix"):
        cache += "/nix"
    for path in store_paths:
        try:
            if is_hash_part(path):
                hash_part = path
            else:
                real = path if path.startswith("/nix/store/") else os.path.realpath(path)
                hash_part = hash_part_of(base_name_of(real))
        except ValueError as exc:
            raise DepotError(str(exc)) from None
        answer = call_api(
            "DELETE", f"{cache}/{hash_part}.narinfo" + ("?dry-run=1" if dry_run else ""), token
        )
        blobs = answer.get("blobs") or []
        size = sum(int(b.get("size") or 0) for b in blobs)
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {answer.get('store_path')} ({len(blobs)} blob(s), {human_size(size)})")
