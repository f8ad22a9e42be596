"""Package pages of packages with 1,000 versions: every page must answer in under 100 ms.

The rows are written straight into a fresh depot's database (what 1,000 publishes would leave):

- npm ``big-pkg``: 1,000 versions, each with ten dependencies, a 7 KiB markdown readme (kept
  once per package, as depot-npm stores it);
- Python ``big-project``: 1,000 versions with a wheel and an sdist each, the newest wheel's core
  metadata holding a 7 KiB reStructuredText description and twenty Requires-Dist;
- Nix: a path referring to 1,000 others that all refer to one base path (1,000 referrers).

Then a real ``depot serve`` answers each page: one cold request (nothing rendered yet: the
readme's rendering is in it, which grows with the readme, docutils' most of all) and then
sequential warm ones. The first pages of the fresh process, of small packages, carry the one-off
import of the page modules and renderers and are listed apart; the figures are printed next to the machine-readable document of the
same package (packument, simple page, narinfo) and ``/-/health``, the server's floor.
Run: ``.venv/bin/python benchmarks/core/bench_pages.py [--requests 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

VERSIONS = 1000
LIMIT_MS = 100.0

README = "# big-pkg\n\n" + "".join(
    f"## Section {i}\n\nSome *documentation* with `code` and a [link](https://example.org/{i}).\n\n"
    "```js\nconst x = require('big-pkg');\n```\n\n- one\n- two\n\n"
    for i in range(50)
)
RST = "big-project\n===========\n\n" + "".join(
    f"Section {i}\n{'-' * (8 + len(str(i)))}\n\nSome *documentation* with ``code`` and a "
    f"`link <https://example.org/{i}>`_.\n\n* one\n* two\n\n"
    for i in range(60)
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def populate(store: Path) -> dict[str, str]:
    """Write the rows; returns {label: path} of the pages and documents to time."""
    from depot.core import create_app
    from depot.nix import nixbase32, tables
    from depot.npm import store as npm_store
    from depot.pypi.schema import pypi_files
    from depot.pypi.store import store_bytes

    app = create_app(store_path=store)
    depot = app.state.depot
    await depot.startup()
    try:
        db = depot.database
        # npm: one package, 1,000 versions, dependencies on ten packages of which two are held.
        stamp = "2026-01-01T00:00:00.000Z"
        await db.execute(
            npm_store.packages.insert().values(
                name="big-pkg",
                created=stamp,
                modified=stamp,
                serial=VERSIONS,
                fields={},
                description="A package with many versions",
                readme=README,
                readme_filename="README.md",
            )
        )
        deps = {f"dep-{i}": f"^{i}.0.0" for i in range(10)}
        for held in ("dep-0", "dep-1"):
            await db.execute(
                npm_store.packages.insert().values(
                    name=held,
                    created=stamp,
                    modified=stamp,
                    serial=0,
                    fields={},
                    description="a dependency",
                    readme="# dep\n\n*small*",
                    readme_filename="README.md",
                )
            )
            await db.execute(
                npm_store.tarballs.insert().values(
                    name=held,
                    filename=f"{held}-1.0.0.tgz",
                    blob_key=f"t/{held}",
                    size=1,
                    sha1="0" * 40,
                    sha512="0" * 100,
                    created=stamp,
                )
            )
            await db.execute(
                npm_store.versions.insert().values(
                    name=held,
                    version="1.0.0",
                    filename=f"{held}-1.0.0.tgz",
                    integrity="sha512-x",
                    manifest={"name": held, "version": "1.0.0"},
                    shasum="0" * 40,
                    created=stamp,
                )
            )
        tarball_rows, version_rows = [], []
        for i in range(VERSIONS):
            version = f"1.{i // 100}.{i % 100}"
            filename = f"big-pkg-{version}.tgz"
            digest = hashlib.sha512(filename.encode()).digest()
            tarball_rows.append(
                {
                    "name": "big-pkg",
                    "filename": filename,
                    "blob_key": f"t/{filename}",
                    "size": 4096 + i,
                    "sha1": "0" * 40,
                    "sha512": digest.hex()[:100],
                    "created": stamp,
                }
            )
            manifest = {
                "name": "big-pkg",
                "version": version,
                "description": "many versions",
                "dependencies": deps,
                "readme": README,
                "readmeFilename": "README.md",
            }
            version_rows.append(
                {
                    "name": "big-pkg",
                    "version": version,
                    "filename": filename,
                    "manifest": manifest,
                    "integrity": "sha512-" + digest.hex()[:80],
                    "shasum": "0" * 40,
                    "created": stamp,
                    "deprecated": "old" if i % 7 == 0 else None,
                }
            )
        async with db.transaction():  # one commit, not a thousand
            await db.execute_many(npm_store.tarballs.insert(), tarball_rows)
            await db.execute_many(npm_store.versions.insert(), version_rows)

        # Python: 1,000 versions x (wheel + sdist); the newest wheel's METADATA is stored.
        ctx = depot.context("pypi")
        requires = "".join(f"Requires-Dist: dep{i}>=1.0\n" for i in range(20))
        metadata = (
            f"Metadata-Version: 2.1\nName: big-project\nVersion: 9.0.999\n"
            f"Summary: A project with many versions\n{requires}"
            f"Description-Content-Type: text/x-rst\n\n{RST}"
        ).encode()
        metadata_sha = hashlib.sha256(metadata).hexdigest()
        await store_bytes(ctx, metadata, metadata_sha)
        small = b"Metadata-Version: 2.1\nName: dep0\nVersion: 1.0\n\nA *small* one.\n"
        small_sha = hashlib.sha256(small).hexdigest()
        await store_bytes(ctx, small, small_sha)
        rows = [
            {
                "filename": "dep0-1.0-py3-none-any.whl",
                "project": "dep0",
                "version": "1.0",
                "packagetype": "bdist_wheel",
                "sha256": "1" * 64,
                "size": 1,
                "requires_python": None,
                "metadata_sha256": small_sha,
                "upload_time": "2026-01-01T00:00:00.000000Z",
                "yanked": None,
                "yank_changes": 0,
                "md5": "0" * 32,
                "blake2_256": "0" * 64,
                "fields": {},
            }
        ]
        for i in range(VERSIONS):
            version = f"9.{i // 1000}.{i}"
            for filename, kind in (
                (f"big_project-{version}-py3-none-any.whl", "bdist_wheel"),
                (f"big_project-{version}.tar.gz", "sdist"),
            ):
                rows.append(
                    {
                        "filename": filename,
                        "project": "big-project",
                        "version": version,
                        "packagetype": kind,
                        "sha256": hashlib.sha256(filename.encode()).hexdigest(),
                        "size": 10_000 + i,
                        "requires_python": ">=3.9",
                        "metadata_sha256": metadata_sha if kind == "bdist_wheel" else None,
                        "upload_time": f"2026-01-01T00:00:{i % 60:02d}.000000Z",
                        "yanked": "broken" if i % 50 == 0 else None,
                        "yank_changes": 0,
                        "md5": "0" * 32,
                        "blake2_256": "0" * 64,
                        "fields": {},
                    }
                )
        async with db.transaction():
            await db.execute_many(pypi_files.insert(), rows)

        # Nix: root -> 1,000 leaves -> base.
        def path(name: str) -> tuple[str, str]:
            hash_part = nixbase32.encode(secrets.token_bytes(20))
            return hash_part, f"{hash_part}-{name}"

        def narinfo(base_name: str, references: list[str]) -> dict[str, object]:
            nar_hash = "sha256:" + nixbase32.encode(hashlib.sha256(base_name.encode()).digest())
            return {
                "hash_part": base_name[:32],
                "store_path": f"/nix/store/{base_name}",
                "url": f"nar/{nar_hash[7:]}.nar.xz",
                "compression": "xz",
                "file_hash": nar_hash,
                "file_size": 1000,
                "nar_hash": nar_hash,
                "nar_size": 4000,
                "references": " ".join(references),
                "deriver": None,
                "system": "x86_64-linux",
                "ca": None,
                "nar_key": f"nar/{nar_hash[7:]}.nar.xz",
                "listing_key": f"ls/{base_name[:32]}",
            }

        base_hash, base = path("base-1.0")
        leaves = [path(f"leaf-{i}")[1] for i in range(VERSIONS)]
        root_hash, root = path("root-1.0")
        nix_rows = [narinfo(base, []), narinfo(root, [*leaves, base])]
        nix_rows += [narinfo(leaf, [base]) for leaf in leaves]
        async with db.transaction():
            await db.execute_many(tables.narinfos.insert(), nix_rows)
    finally:
        await depot.shutdown()
    return {
        # First pages of a fresh process: the page modules and renderers are imported here.
        "first npm page (1 version)": "/-/browse/npm/dep-0",
        "first pypi page (1 file)": "/-/browse/pypi/dep0",
        "first nix page": f"/-/browse/nix/{leaves[0][:32]}",
        "npm page (1,000 versions)": "/-/browse/npm/big-pkg",
        "npm packument (full)": "/npm/big-pkg",
        "pypi page (2,000 files)": "/-/browse/pypi/big-project",
        "pypi simple page (JSON)": "/python/simple/big-project/?format=application/vnd.pypi.simple.v1%2Bjson",
        "nix page (1,000 references)": f"/-/browse/nix/{root_hash}",
        "nix page (1,000 referrers)": f"/-/browse/nix/{base_hash}",
        "nix narinfo": f"/nix/{root_hash}.narinfo",
        "/ page": "/",
        "/-/health": "/-/health",
    }


def time_requests(client: httpx.Client, url: str, count: int) -> tuple[float, list[float]]:
    """(cold ms, warm ms list) of sequential GETs, each timed to the end of the body."""
    timings = []
    for _ in range(count + 1):
        start = time.perf_counter()
        response = client.get(url)
        response.read()
        timings.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return timings[0], timings[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="warm requests per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        store = Path(tmp) / "store"
        started = time.perf_counter()
        pages = asyncio.run(populate(store))
        print(f"rows written in {time.perf_counter() - started:.1f} s", flush=True)
        port = free_port()
        env = {**os.environ, "DEPOT_STORE_PATH": str(store)}
        server = subprocess.Popen(
            [sys.executable, "-m", "depot.core", "serve", "--listen-addr", f"127.0.0.1:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        failed = []
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=30) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if client.get("/-/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("depot serve did not start")
                    time.sleep(0.1)
                results = {
                    label: time_requests(client, path, args.requests)
                    for label, path in pages.items()
                }
                sizes = {label: len(client.get(path).content) for label, path in pages.items()}
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=40)
    floor = statistics.median(results["/-/health"][1])
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"\n{'':30} {'cold ms':>8} {'median':>8} {'p95':>8} {'max':>8} {'x health':>9} {'bytes':>9}"
    )
    for label, (cold, warm) in results.items():
        ordered = sorted(warm)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        median = statistics.median(warm)
        print(
            f"{label:30} {cold:8.1f} {median:8.1f} {p95:8.1f} {max(warm):8.1f} "
            f"{median / floor:9.1f} {sizes[label]:9d}"
        )
        if label.startswith(("npm page", "pypi page", "nix page")) and max(cold, *warm) > LIMIT_MS:
            failed.append(label)
    print(
        f"\nevery page under {LIMIT_MS:.0f} ms (cold and warm): {'yes' if not failed else 'NO: ' + ', '.join(failed)}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
