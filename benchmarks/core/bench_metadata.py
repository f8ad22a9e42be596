"""Metadata at the speed of the server itself: depot's hot documents against hypercorn's floor.

In one run, one worker each, the same wrk load (``-t1 -c16``, a few seconds per URL):

- the floor: a bare Starlette app under hypercorn (uvloop) answering a constant body of the same
  size as each document below;
- depot (``depot serve``, one worker, SQLite): an abbreviated npm packument (10 versions), the
  PyPI simple page of a 10-file project as HTML and as PEP 691 JSON, a narinfo, and a 300 KiB
  npm tarball;
- Verdaccio serving the same package (same versions) and pypiserver the same project's page.

Prints each rate, depot / floor and depot / peer, and floor / peer: the most any app under
hypercorn could show against that peer. Goals (issue 17): metadata >= 0.7 of the floor,
packument >= 20x Verdaccio, simple page >= 50x pypiserver, tarball >= 0.8 of the floor.

Needs wrk (``apt-get install -y wrk``), npm (Verdaccio is installed from the npm registry, or
reused with ``--verdaccio-dir``), uv (pypiserver goes into a temporary venv). Run:
``.venv/bin/python benchmarks/core/bench_metadata.py [--seconds 3]``. The machine is shared:
note its load (printed first) next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "npm"), str(HERE.parent / "pypi"), str(HERE.parent / "nix")]

import bench_nix  # noqa: E402
import bench_npm  # noqa: E402
import bench_pypi  # noqa: E402
from depot.nix.nixbase32 import encode  # noqa: E402

ABBREVIATED = bench_npm.ABBREVIATED
PACKAGE = "bench-meta"
VERSIONS = [f"1.{i}.0" for i in range(10)]
BIG = "bench-big"
PROJECT = "bench-page"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
CONNECTIONS = 16

FLOOR_APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    BODIES = {}

    async def constant(request):
        size = request.path_params["size"]
        body = BODIES.get(size)
        if body is None:
            body = BODIES[size] = b"x" * size
        return Response(body, media_type="application/octet-stream")

    app = Starlette(routes=[Route("/{size:int}", constant)])
    """
)


def wrk(url: str, seconds: int, accept: str | None = None) -> float:
    """Requests per second over ``seconds`` at :data:`CONNECTIONS` connections, one wrk thread."""
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url]
    if accept:
        cmd[1:1] = ["-H", f"Accept: {accept}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk failed or saw errors against {url}:\n{out}")
    return float(rate.group(1))


def big_tarball_document(size: int) -> dict[str, Any]:
    """A publish document whose tarball is ``size`` bytes of incompressible content, about."""
    manifest = {"name": BIG, "version": "1.0.0", "main": "index.js", "license": "MIT"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, data in {
            "package/package.json": json.dumps(manifest).encode(),
            "package/blob.bin": os.urandom(size),
        }.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = out.getvalue()
    dist = {
        "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
        "shasum": hashlib.sha1(data).hexdigest(),  # noqa: S324 - npm's shasum
    }
    return {
        "_id": BIG,
        "name": BIG,
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {**manifest, "_id": f"{BIG}@1.0.0", "dist": dist}},
        "_attachments": {
            f"{BIG}-1.0.0.tgz": {"data": base64.b64encode(data).decode(), "length": len(data)}
        },
    }


def populate_depot(url: str, work: Path) -> dict[str, str]:
    """Publish the package, the big tarball, the project and a store path; their URLs."""
    packages = [(PACKAGE, v, {"dependencies": {"left-pad": "^1.0.0"}}) for v in VERSIONS]
    asyncio.run(bench_npm.publish_all(f"{url}/npm", packages, 1))
    put = httpx.put(f"{url}/npm/{BIG}", json=big_tarball_document(300 * 1024), timeout=60)
    put.raise_for_status()
    wheels = work / "wheels"
    wheels.mkdir()
    for i in range(10):
        wheel = bench_pypi.write_wheel(wheels, PROJECT, f"1.{i}.0", [], payload=200)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        r = httpx.put(
            f"{url}/python/files/{PROJECT}/{wheel.name}",
            content=wheel.read_bytes(),
            headers={"X-Depot-Sha256": digest},
        )
        r.raise_for_status()
    nar = work / "bench.nar"
    nar_hash, nar_size, file_hash, file_size = bench_nix.write_nar(nar, 4096, compress=False)
    hash_part = encode(hashlib.sha256(b"bench-meta").digest()[:20])
    store_path = f"/nix/store/{hash_part}-bench-meta"

    class Depot:
        pass

    depot = Depot()
    depot.url = url  # type: ignore[attr-defined]
    bench_nix.publish(
        depot, store_path, nar, "none", nar_hash, nar_size, file_hash, file_size  # type: ignore[arg-type]
    )  # fmt: skip
    tarball = httpx.get(f"{url}/npm/{BIG}").json()["versions"]["1.0.0"]["dist"]["tarball"]
    return {
        "packument": f"{url}/npm/{PACKAGE}",
        "simple html": f"{url}/python/simple/{PROJECT}/",
        "simple json": f"{url}/python/simple/{PROJECT}/",
        "narinfo": f"{url}/nix/{hash_part}.narinfo",
        "tarball 300 KiB": tarball,
    }


ACCEPT = {"packument": ABBREVIATED, "simple json": JSON_V1, "simple html": "text/html"}


def start(cmd: list[str], log: Path, ready: str, env: dict[str, str] | None = None) -> Any:
    process = subprocess.Popen(
        cmd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    bench_pypi.wait_ready(ready, process)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="wrk duration per URL")
    parser.add_argument("--verdaccio-dir", type=Path, help="reuse a Verdaccio install here")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="bench-metadata-"))
    processes = []
    try:
        depot_port, floor_port = bench_npm.free_port(), bench_npm.free_port()
        depot = f"http://127.0.0.1:{depot_port}"
        processes.append(
            start(
                [sys.executable, "-m", "depot.core", "serve", "--listen-addr",
                 f"127.0.0.1:{depot_port}", "--store-path", str(work / "depot-store")],
                work / "depot.log", f"{depot}/-/health",
            )
        )  # fmt: skip
        urls = populate_depot(depot, work)
        (work / "floor_app.py").write_text(FLOOR_APP)
        floor = f"http://127.0.0.1:{floor_port}"
        processes.append(
            start(
                [sys.executable, "-m", "hypercorn", "--worker-class", "uvloop", "--bind",
                 f"127.0.0.1:{floor_port}", "floor_app:app"],
                work / "floor.log", f"{floor}/1", env={"PYTHONPATH": str(work)},
            )
        )  # fmt: skip

        verdaccio = bench_npm.start_verdaccio(
            bench_npm.install_verdaccio(args.verdaccio_dir or work / "verdaccio"), work
        )
        processes.append(verdaccio.process)
        packages = [(PACKAGE, v, {"dependencies": {"left-pad": "^1.0.0"}}) for v in VERSIONS]
        asyncio.run(bench_npm.publish_all(verdaccio.registry, packages, 1))

        flat = work / "flat"
        flat.mkdir()
        for wheel in (work / "wheels").iterdir():
            os.link(wheel, flat / wheel.name)
        pypiserver_port = bench_npm.free_port()
        pypiserver = f"http://127.0.0.1:{pypiserver_port}"
        processes.append(
            start(
                [str(bench_pypi.install_pypiserver(work)), "run", "-p", str(pypiserver_port),
                 "-i", "127.0.0.1", "-a", ".", "-P", ".", "--disable-fallback", "--backend",
                 "cached-dir", str(flat)],
                work / "pypiserver.log", f"{pypiserver}/simple/",
            )
        )  # fmt: skip

        # Each pair is measured alternately, twice, and the better of each side's two rates
        # kept: on a shared machine a burst of someone else's load should not decide a ratio.
        rates: dict[str, tuple[float, float, int]] = {}
        for what, url in urls.items():
            accept = ACCEPT.get(what)
            size = len(httpx.get(url, headers={"Accept": accept} if accept else {}).content)
            wrk(url, 1, accept)  # warm-up: renders and caches the document
            pairs = [
                (wrk(url, args.seconds, accept), wrk(f"{floor}/{size}", args.seconds))
                for _ in range(2)
            ]
            rates[what] = (max(p[0] for p in pairs), max(p[1] for p in pairs), size)
        packument_url, page_url = urls["packument"], urls["simple html"]
        packument_size, page_size = rates["packument"][2], rates["simple html"][2]
        peers = [
            (
                wrk(f"{verdaccio.registry}/{PACKAGE}", args.seconds, ABBREVIATED),
                wrk(f"{pypiserver}/simple/{PROJECT}/", args.seconds, "text/html"),
                wrk(packument_url, args.seconds, ABBREVIATED),
                wrk(page_url, args.seconds, "text/html"),
                wrk(f"{floor}/{packument_size}", args.seconds),
                wrk(f"{floor}/{page_size}", args.seconds),
            )
            for _ in range(2)
        ]
        verdaccio_rate = max(p[0] for p in peers)
        pypiserver_rate = max(p[1] for p in peers)
        depot_packument = max(p[2] for p in peers)
        depot_page = max(p[3] for p in peers)
        floor_packument = max(p[4] for p in peers)
        floor_page = max(p[5] for p in peers)
    finally:
        for process in processes:
            bench_pypi.stop(process)

    print(f"\none worker each, wrk -t1 -c{CONNECTIONS} -d{args.seconds}s")
    print(
        f"{'document':<18} {'bytes':>8} {'depot r/s':>10} {'floor r/s':>10} {'depot/floor':>12}"
        "  goal"
    )
    for what, (rate, floor_rate, size) in rates.items():
        goal = 0.8 if what.startswith("tarball") else 0.7
        print(
            f"{what:<18} {size:>8} {rate:>10.0f} {floor_rate:>10.0f} {rate / floor_rate:>11.2f}x"
            f"  >= {goal}x"
        )
    packument, html = depot_packument, depot_page  # measured next to the peers
    # The floor against the peer is the most any app under hypercorn (one worker) could show:
    # a goal above it cannot be met by depot's own code.
    print(f"\n{'peer':<20} {'peer r/s':>9} {'depot r/s':>10} {'floor r/s':>10} "
          f"{'depot/peer':>11} {'floor/peer':>11}  goal")  # fmt: skip
    for label, peer, ours, most, goal in (
        ("verdaccio packument", verdaccio_rate, packument, floor_packument, 20),
        ("pypiserver page", pypiserver_rate, html, floor_page, 50),
    ):
        print(f"{label:<20} {peer:>9.0f} {ours:>10.0f} {most:>10.0f} {ours / peer:>10.1f}x "
              f"{most / peer:>10.1f}x  >= {goal}x")  # fmt: skip
    load = os.getloadavg()
    print(f"load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
