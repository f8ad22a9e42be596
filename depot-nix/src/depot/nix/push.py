"""``depot nix push``: the real ``nix copy`` into a depot, through auth when the depot wants it.

Auth: a ``--token`` (or ``DEPOT_AUTH_TOKEN``) reaches nix as a netrc password, which depot accepts
as ``Basic`` credentials; without one, when the depot refuses anonymous writes, the push runs
through depot's in-process proxy (:mod:`depot.core.proxy`), which signs each request with a token
made from the user's SSH key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from depot.core.errors import DepotError
from depot.nix.storepath import STORE_DIR, base_name_of

Echo = Callable[[str], None]


@dataclass
class PushRequest:
    url: str
    store_paths: list[str] = field(default_factory=list)
    flake_refs: list[str] = field(default_factory=list)
    token: str | None = None
    compression: str = "zstd"


def depot_root(url: str) -> str:
    """The depot's root URL from what the user typed (the root or its /nix cache)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DepotError(f"{url!r} is not an http(s) URL of a depot")
    root = url.rstrip("/")
    return root[: -len("/nix")] if root.endswith("/nix") else root


def find_nix() -> str:
    nix = shutil.which("nix")
    if nix is None:
        raise DepotError("nix is not installed or not on PATH; depot nix push runs `nix copy`")
    return nix


def _nix(args: list[str], what: str) -> str:
    """Run a nix command for its stdout; its last error line becomes a one-line DepotError."""
    result = subprocess.run(args, capture_output=True, text=True)  # noqa: S603
    if result.returncode != 0:
        lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error")] or lines or ["(no output)"]
        raise DepotError(f"{what}: {errors[-1]}")
    return result.stdout


def resolve_store_path(nix: str, path: str) -> str:
    """The store path ``path`` names (``./result`` symlinks are followed), checked valid."""
    real = os.path.realpath(path) if not path.startswith(STORE_DIR + "/") else path
    try:
        base_name = base_name_of(real)
    except ValueError:
        # A file inside a store path: push the store path that holds it.
        parts = real.split("/")
        if real.startswith(STORE_DIR + "/") and len(parts) > 4:
            return resolve_store_path(nix, "/".join(parts[:4]))
        raise DepotError(f"{path} is not a Nix store path") from None
    full = f"{STORE_DIR}/{base_name}"
    _nix([nix, "path-info", full], f"{path} is not a valid store path")
    return full


def flake_outputs(nix: str, ref: str) -> list[str]:
    """Build a flake output (a no-op when it is built) and return its output paths."""
    out = _nix([nix, "build", "--no-link", "--json", ref], f"cannot build {ref}")
    try:
        built = json.loads(out)
        return [p for entry in built for p in entry["outputs"].values()]
    except (ValueError, KeyError, TypeError):
        raise DepotError(f"unexpected output from nix build --json {ref}") from None


def needs_auth(root: str, headers: dict[str, str]) -> bool:
    """Ask the depot whether this push may write: PUT nix-cache-info is a harmless write."""
    request = urllib.request.Request(
        root + "/nix/nix-cache-info", data=b"StoreDir: /nix/store\n", method="PUT", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30):
            return False
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            if headers:
                raise DepotError(f"{root} refused the token: {exc.code} {exc.reason}") from None
            return True
        if exc.code == 404:
            raise DepotError(
                f"{root} serves no Nix cache at /nix (is depot-nix installed?)"
            ) from None
        raise DepotError(f"{root} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DepotError(f"cannot reach {root}: {reason}") from None


@contextlib.contextmanager
def cache_url_for_nix(root: str, token: str | None) -> Iterator[tuple[str, list[str]]]:
    """The cache URL nix should write to, with the extra nix options that carry auth."""
    if token:
        needs_auth(root, {"Authorization": f"Bearer {token}"})
        host = urlsplit(root).hostname
        with tempfile.TemporaryDirectory(prefix="depot-nix-") as tmp:
            netrc = Path(tmp) / "netrc"
            fd = os.open(netrc, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"machine {host} login depot password {token}\n")
            yield root + "/nix", ["--option", "netrc-file", str(netrc)]
        return
    if not needs_auth(root, {}):
        yield root + "/nix", []
        return
    try:
        from depot.core.proxy import proxy_in_thread
    except ImportError:
        raise DepotError(
            f"{root} requires authentication: pass --token or set DEPOT_AUTH_TOKEN"
        ) from None
    with proxy_in_thread(root) as local:
        yield local + "/nix", []


_COPYING = re.compile(r"copying (\d+) paths")


def nix_copy(
    nix: str, cache: str, compression: str, paths: list[str], options: list[str], echo: Echo
) -> int:
    """Run ``nix copy`` with its progress lines shown; returns how many paths it uploaded."""
    cmd = [nix, "copy", *options, "--to", f"{cache}?compression={compression}", *paths]
    process = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # noqa: S603
    assert process.stderr is not None
    copied = 0
    last_error = ""
    for line in process.stderr:
        line = line.rstrip()
        if not line:
            continue
        echo(line)
        m = _COPYING.search(line)
        if m:
            copied += int(m.group(1))
        if line.startswith("error"):
            last_error = line
    if process.wait() != 0:
        raise DepotError(
            f"nix copy failed: {last_error or 'exit status ' + str(process.returncode)}"
        )
    return copied


def run_push(request: PushRequest, echo: Echo) -> str:
    """Push everything ``request`` names; returns the one-line summary."""
    started = time.monotonic()
    nix = find_nix()
    root = depot_root(request.url)
    roots = [resolve_store_path(nix, p) for p in request.store_paths]
    with cache_url_for_nix(root, request.token) as (cache, options):
        for ref in request.flake_refs:
            echo(f"building {ref}")
            roots += flake_outputs(nix, ref)
            echo(f"copying the source of {ref}")
            _nix(
                # The source is the flake itself, without the output's fragment.
                [
                    nix,
                    "flake",
                    "archive",
                    *options,
                    "--to",
                    f"{cache}?compression={request.compression}",
                    ref.split("#", 1)[0],
                ],
                f"cannot copy the source of {ref}",
            )
        roots = list(dict.fromkeys(roots))
        closure = _nix(
            [nix, "path-info", "--recursive", *roots], "cannot compute the closure"
        ).split()
        copied = nix_copy(nix, cache, request.compression, roots, options, echo) if roots else 0
    elapsed = time.monotonic() - started
    flakes = f" and {len(request.flake_refs)} flake source(s)" if request.flake_refs else ""
    return (
        f"pushed {len(roots)} root(s){flakes} to {root}/nix: "
        f"{len(closure)} path(s) in the closure, "
        f"{copied} uploaded, {len(closure) - copied} already there ({elapsed:.1f}s)"
    )
