"""CPU time of depot's own code per hot request, without a network or an HTTP server.

``bench_metadata.py`` measures whole servers; this drives depot's ASGI app directly (one event
loop, no sockets, no hypercorn) so that what is left is depot's per-request work: middleware,
routing, authentication, the handler, the access line and the metrics. It publishes the same
documents as ``bench_metadata.py`` in-process (SQLite, filesystem blobs), warms each one, then
answers it ``--requests`` times in a row and prints the CPU microseconds per request, and the
same for a bare Starlette app returning a constant body (the framework's own share).

Run: ``.venv/bin/python benchmarks/core/bench_app_path.py [--requests 20000] [--profile DOC]``.
``--profile DOC`` runs cProfile over that document's loop and prints the top functions (py-spy
works too: ``py-spy record -o out.svg -- .venv/bin/python benchmarks/core/bench_app_path.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import logging
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "npm"), str(HERE.parent / "pypi"), str(HERE.parent / "nix")]  # fmt: skip

import bench_metadata  # noqa: E402
import bench_nix  # noqa: E402
import bench_npm  # noqa: E402
import bench_pypi  # noqa: E402
from depot.nix import narinfo  # noqa: E402
from depot.nix.narinfo import NarInfo  # noqa: E402
from depot.nix.nixbase32 import encode  # noqa: E402


async def populate(client: httpx.AsyncClient, work: Path) -> dict[str, tuple[str, str | None]]:
    """Publish what bench_metadata publishes; {label: (path, Accept)}."""
    for version in bench_metadata.VERSIONS:
        document = bench_npm.publish_document(
            bench_metadata.PACKAGE, version, {"dependencies": {"left-pad": "^1.0.0"}}
        )
        (await client.put(f"/npm/{bench_metadata.PACKAGE}", json=document)).raise_for_status()
    big = bench_metadata.big_tarball_document(300 * 1024)
    (await client.put(f"/npm/{bench_metadata.BIG}", json=big, timeout=60)).raise_for_status()
    wheels = work / "wheels"
    wheels.mkdir()
    for i in range(10):
        wheel = bench_pypi.write_wheel(wheels, bench_metadata.PROJECT, f"1.{i}.0", [], 200)
        data = wheel.read_bytes()
        r = await client.put(
            f"/python/files/{bench_metadata.PROJECT}/{wheel.name}",
            content=data,
            headers={"X-Depot-Sha256": hashlib.sha256(data).hexdigest()},
        )
        r.raise_for_status()
    nar = work / "bench.nar"
    nar_hash, nar_size, file_hash, file_size = bench_nix.write_nar(nar, 4096, compress=False)
    hash_part = encode(hashlib.sha256(b"bench-meta").digest()[:20])
    url = f"nar/{file_hash.nix32()}.nar"
    r = await client.put(
        f"/nix/{url}", content=nar.read_bytes(), headers={"Content-Type": "application/x-nix-nar"}
    )
    r.raise_for_status()
    info = NarInfo(store_path=f"/nix/store/{hash_part}-bench-meta", url=url, compression="none",
                   nar_hash=nar_hash, nar_size=nar_size, file_hash=file_hash,
                   file_size=file_size)  # fmt: skip
    (await client.put(f"/nix/{hash_part}.narinfo", content=narinfo.format(info))).raise_for_status()
    packument = (await client.get(f"/npm/{bench_metadata.BIG}")).json()
    tarball = httpx.URL(packument["versions"]["1.0.0"]["dist"]["tarball"]).path
    wheel_name = f"{bench_metadata.PROJECT.replace('-', '_')}-1.0.0-py3-none-any.whl"
    return {
        "packument": (f"/npm/{bench_metadata.PACKAGE}", bench_npm.ABBREVIATED),
        "simple html": (f"/python/simple/{bench_metadata.PROJECT}/", "text/html"),
        "simple json": (f"/python/simple/{bench_metadata.PROJECT}/", bench_metadata.JSON_V1),
        "narinfo": (f"/nix/{hash_part}.narinfo", None),
        "tarball 300 KiB": (tarball, None),
        "wheel": (f"/python/files/{bench_metadata.PROJECT}/{wheel_name}", None),
    }


class Driver:
    """Calls an ASGI app the way hypercorn does for one GET, and discards the answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.status = 0
        self.sent = 0

    def scope(self, path: str, accept: str | None) -> dict[str, Any]:
        headers = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk")]
        if accept:
            headers.append((b"accept", accept.encode()))
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
            "extensions": {},
        }  # fmt: skip

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.sent += len(message.get("body", b""))

    async def run(self, path: str, accept: str | None, requests: int) -> float:
        """CPU seconds per request over ``requests`` requests."""
        template = self.scope(path, accept)
        started = time.process_time()
        for _ in range(requests):
            await self.app(dict(template), self.receive, self.send)
            if self.status != 200:
                raise SystemExit(f"{path}: status {self.status}")
        return (time.process_time() - started) / requests


def floor_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    bodies: dict[int, bytes] = {}

    async def constant(request: Any) -> Response:
        size = request.path_params["size"]
        body = bodies.get(size)
        if body is None:
            body = bodies[size] = b"x" * size
        return Response(body, media_type="application/octet-stream")

    return Starlette(routes=[Route("/{size:int}", constant)])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", help="profile this document's loop (a label below)")
    parser.add_argument("--auth-file", help="serve with this --auth-file (reads must be open)")
    args = parser.parse_args()
    from depot.core import create_app

    work = Path(tempfile.mkdtemp(prefix="bench-app-path-"))
    options: dict[str, Any] = {"store_path": str(work / "store")}
    if args.auth_file:
        options["auth_file"] = args.auth_file
    app = create_app(**options)
    logging.getLogger("depot").setLevel(logging.WARNING)  # quiet while publishing
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
        documents = await populate(client, work)
    # The access lines go to a sink, formatted as in production (depot's JSON handler).
    for handler in logging.getLogger("depot").handlers:
        if getattr(handler, "_depot", False):
            handler.setStream(io.StringIO())  # type: ignore[attr-defined]
    logging.getLogger("depot").setLevel(logging.INFO)
    driver, floor = Driver(app), Driver(floor_app())
    print(f"{'document':<18} {'bytes':>8} {'depot µs':>9} {'floor µs':>9}")
    for label, (path, accept) in documents.items():
        driver.sent = 0
        await driver.run(path, accept, 200)  # warm: render, fill caches
        size = driver.sent // 200
        await floor.run(f"/{size}", None, 200)
        if label == args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
        depot_s = await driver.run(path, accept, args.requests)
        if label == args.profile:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        floor_s = await floor.run(f"/{size}", None, args.requests)
        for handler in logging.getLogger("depot").handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(stream, io.StringIO):
                stream.seek(0)
                stream.truncate()
        print(f"{label:<18} {size:>8} {depot_s * 1e6:>9.1f} {floor_s * 1e6:>9.1f}")
    await app.state.depot.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
