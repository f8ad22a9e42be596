"""``depot python save``: resolve a dependency closure with pip, download it, verify it, keep it.

Resolution is pip's own (``pip install --dry-run --ignore-installed --report``), once per target
(the running interpreter, plus each ``--python-version``/``--platform`` combination), so what is
saved is exactly what ``pip install`` of the same requirements will ask a depot for. Every target
is resolved before anything is downloaded: an unresolvable requirement writes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import click
from depot.core.errors import DepotError
from depot.pypi import local
from depot.pypi.coremeta import InvalidDistribution, sdist_build_requirements
from depot.pypi.names import DistributionFile, InvalidFilename, parse_filename

PYPI = "https://pypi.org/simple/"
DOWNLOAD_JOBS = 6


@dataclass(frozen=True)
class Target:
    """An interpreter/platform the closure must install on; None means the running one."""

    python_version: str | None = None
    platform: str | None = None

    def __str__(self) -> str:
        if self.python_version is None and self.platform is None:
            return "this interpreter"
        return f"python {self.python_version or 'current'} on {self.platform or 'this platform'}"

    def pip_options(self) -> list[str]:
        if self.python_version is None and self.platform is None:
            return []
        # pip only accepts interpreter/platform options when it cannot build: wheels only.
        options = ["--only-binary=:all:"]
        if self.python_version:
            options += ["--python-version", self.python_version]
        if self.platform:
            options += ["--platform", self.platform]
        return options


@dataclass(frozen=True)
class Resolved:
    """A file pip chose, with the sha256 the index published for it."""

    dist: DistributionFile
    url: str
    sha256: str


def targets_for(python_versions: Sequence[str], platforms: Sequence[str]) -> list[Target]:
    """The running interpreter, plus every combination of the requested versions and platforms."""
    targets = [Target()]
    if python_versions or platforms:
        for version in python_versions or [None]:
            for platform in platforms or [None]:
                target = Target(version, platform)
                if target not in targets:
                    targets.append(target)
    return targets


def resolve(requirements: Path, target: Target, index_url: str) -> list[Resolved]:
    """Run pip's resolver for one target; raise DepotError with pip's first error line."""
    with tempfile.TemporaryDirectory(prefix="depot-save-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "pip", "install",
            "--dry-run", "--ignore-installed", "--quiet", "--no-input",
            "--disable-pip-version-check",
            "--report", str(report), "--index-url", index_url,
            *target.pip_options(), "-r", str(requirements),
        ]  # fmt: skip
        result = subprocess.run(
            cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=pip_environment()
        )
        if result.returncode != 0:
            raise DepotError(f"cannot resolve for {target}: {_first_error(result.stderr)}")
        return report_files(json.loads(report.read_text()))


#: pip list settings that add sources or pins beside ``--index-url``. The environment overrides
#: pip.conf, and pip splits list values on whitespace, so a single space empties them (an empty
#: string would be ignored): the closure comes from the index given and nowhere else, while the
#: user's certificates, proxy and timeouts in pip.conf still apply.
_SOURCE_SETTINGS = ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT")


def pip_environment() -> dict[str, str]:
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    env.pop("PIP_NO_INDEX", None)
    for name in _SOURCE_SETTINGS:
        env[name] = " "
    return env


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ERROR:"):
            return line.removeprefix("ERROR:").strip()
    return lines[-1] if lines else "pip failed without a message"


def report_files(report: dict) -> list[Resolved]:
    """The files of a pip installation report (``pip install --report``, format version 1)."""
    files = []
    for item in report.get("install", []):
        info = item.get("download_info") or {}
        url = info.get("url", "")
        archive = info.get("archive_info")
        if archive is None or not url.startswith(("http://", "https://")):
            name = (item.get("metadata") or {}).get("name", url)
            raise DepotError(f"{name} is not from the index ({url}); only index files can be saved")
        sha256 = (archive.get("hashes") or {}).get("sha256")
        if not sha256 and (archive.get("hash") or "").startswith("sha256="):
            sha256 = archive["hash"].split("=", 1)[1]
        if not sha256:
            raise DepotError(f"the index gave no sha256 for {url}: it cannot be verified")
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        try:
            dist = parse_filename(filename)
        except InvalidFilename as exc:
            raise DepotError(str(exc)) from exc
        files.append(Resolved(dist, url, sha256.lower()))
    return files


async def download_all(
    files: Sequence[Resolved],
    root: Path,
    staged: dict[str, Path] | None = None,
    jobs: int = DOWNLOAD_JOBS,
) -> tuple[int, int, int]:
    """Download what is not saved yet (or move it from ``staged``); (saved, skipped, bytes)."""
    staged = staged or {}
    progress = local.Progress(len(files), click.echo)
    counts = {"saved": 0, "skipped": 0, "bytes": 0}
    semaphore = asyncio.Semaphore(jobs)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(item: Resolved) -> None:
            async with semaphore:
                final = local.saved_path(root, item.dist)
                if (
                    final.exists()
                    and await asyncio.to_thread(local.sha256_of, final) == item.sha256
                ):
                    counts["skipped"] += 1
                    progress.step(f"already saved {item.dist.filename}")
                    return
                if item.dist.filename in staged:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    size = staged[item.dist.filename].stat().st_size
                    await asyncio.to_thread(local.publish_part, staged[item.dist.filename], final)
                else:
                    size = await _download(session, item, final, progress)
                counts["saved"] += 1
                counts["bytes"] += size
                progress.step(f"saved {item.dist.filename} ({local.human_size(size)})")

        results = await asyncio.gather(*(one(f) for f in files), return_exceptions=True)
        progress.finish()
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        first = failures[0]
        message = (
            str(first) if isinstance(first, DepotError) else f"{type(first).__name__}: {first}"
        )
        raise DepotError(f"{len(failures)} download(s) failed; first: {message}")
    return counts["saved"], counts["skipped"], counts["bytes"]


async def _download(
    session: aiohttp.ClientSession,
    item: Resolved,
    final: Path,
    progress: local.Progress | None = None,
) -> int:
    """Stream one file to a hidden temporary name, check its sha256, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    part = local.part_path(final)
    digest = hashlib.sha256()
    size = 0
    try:
        async with session.get(item.url) as response:
            if response.status != 200:
                raise DepotError(f"GET {item.url}: HTTP {response.status}")
            with open(part, "wb") as out:
                async for chunk in response.content.iter_chunked(1024 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(out.write, chunk)
                    if progress is not None:
                        progress.add_bytes(len(chunk))
        if digest.hexdigest() != item.sha256:
            raise DepotError(
                f"{item.dist.filename}: sha256 {digest.hexdigest()} does not match the index's "
                f"{item.sha256}"
            )
        await asyncio.to_thread(local.publish_part, part, final)
    finally:
        part.unlink(missing_ok=True)
    return size


def save(
    requirements: Sequence[str],
    requirement_files: Sequence[Path],
    root: Path,
    index_url: str,
    python_versions: Sequence[str],
    platforms: Sequence[str],
) -> None:
    """The whole command: resolve every target (and what sdists need to build), then download."""
    targets = targets_for(python_versions, platforms)
    with tempfile.TemporaryDirectory(prefix="depot-save-") as tmp:
        listing = Path(tmp) / "requirements.txt"
        lines = [*requirements, *(f"-r {os.path.abspath(f)}" for f in requirement_files)]
        listing.write_text("\n".join(lines) + "\n")
        chosen: dict[str, Resolved] = {}
        for target in targets:
            click.echo(f"resolving for {target} from {index_url}", err=True)
            for item in resolve(listing, target, index_url):
                chosen.setdefault(item.dist.filename, item)
        (root / local.SUBDIR).mkdir(parents=True, exist_ok=True)
        # Staged sdists live under the storage directory (same file system: publishing is a
        # rename) in a hidden directory that push ignores and that vanishes on any failure.
        with tempfile.TemporaryDirectory(dir=root / local.SUBDIR, prefix=".staging-") as staging:
            staged = add_build_requirements(chosen, root, Path(staging), Path(tmp), index_url)
            files = sorted(chosen.values(), key=lambda r: r.dist.filename)
            saved, skipped, size = asyncio.run(download_all(files, root, staged))
    click.echo(
        f"{len(files)} file(s) for {len(targets)} target(s) in {root / local.SUBDIR}: "
        f"{saved} saved ({local.human_size(size)}), {skipped} already there",
        err=True,
    )


def add_build_requirements(
    chosen: dict[str, Resolved], root: Path, staging: Path, tmp: Path, index_url: str
) -> dict[str, Path]:
    """Add the closure of every chosen sdist's PEP 518 build requirements to ``chosen``.

    pip builds an sdist on the installing machine, in an isolated environment it fills from the
    same index, so the backend (setuptools, hatchling, ...) must be saved too. Sdists are fetched
    (verified) into ``staging`` to read their ``pyproject.toml``; returns filename -> staged path.
    Only the running interpreter's resolution can yield sdists: other targets are wheels only.
    """
    staged: dict[str, Path] = {}
    sources: dict[str, Path] = {}
    rounds = 0
    while pending := [
        r for r in chosen.values() if not r.dist.is_wheel and r.dist.filename not in sources
    ]:
        rounds += 1
        missing = []
        for item in pending:
            saved = local.saved_path(root, item.dist)
            if saved.exists() and local.sha256_of(saved) == item.sha256:
                sources[item.dist.filename] = saved
            else:
                missing.append(item)
        asyncio.run(_stage(missing, staging, staged))
        sources.update(staged)
        needed: set[str] = set()
        for item in pending:
            with open(sources[item.dist.filename], "rb") as f:
                try:
                    needed.update(sdist_build_requirements(f, item.dist.filename))
                except InvalidDistribution as exc:
                    raise DepotError(str(exc)) from exc
        if not needed or rounds > 10:
            break
        listing = tmp / f"build-requirements-{rounds}.txt"
        listing.write_text("\n".join(sorted(needed)) + "\n")
        click.echo(
            f"resolving build requirements of {len(pending)} sdist(s): {', '.join(sorted(needed))}",
            err=True,
        )
        for item in resolve(listing, Target(), index_url):
            chosen.setdefault(item.dist.filename, item)
    return staged


async def _stage(items: Sequence[Resolved], staging: Path, staged: dict[str, Path]) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for item in items:
            path = staging / item.dist.filename
            await _download(session, item, path)
            staged[item.dist.filename] = path
