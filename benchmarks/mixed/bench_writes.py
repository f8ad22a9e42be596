"""Server CPU per write on one ``depot serve``: npm publishes, twine uploads, Nix NAR + narinfo.

Each kind of write runs on its own (``--writes`` of them, ``--clients`` at a time, small
artefacts), and the server's CPU (user + system, from ``/proc``) is read before and after: the
figure that moves least with whatever else the machine runs, unlike the time taken. The bodies
are built before each phase, so the load generator's own work is not part of what is measured.

Run: ``.venv/bin/python benchmarks/mixed/bench_writes.py [--writes 300] [--clients 4]
[--python OTHER_TREE/.venv/bin/python]`` (``--python`` runs another tree's server, so two trees
can alternate in the same conditions).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from depot.nix import narinfo
from depot.nix.narinfo import NarInfo
from depot.nix.nixbase32 import Hash

sys.path.insert(0, str(Path(__file__).parent))
from bench_mixed import cpu_seconds, npm_publish, running_depot, wheel  # noqa: E402

#: A request to send: method, path, body, headers (aiohttp's ``data`` takes the form as is).
Request = tuple[str, str, Any, dict[str, str]]


def nar(data: bytes) -> bytes:
    """A NAR holding one regular file (``nix-store --dump`` of it)."""

    def string(value: bytes) -> bytes:
        return struct.pack("<Q", len(value)) + value + bytes((8 - len(value) % 8) % 8)

    parts = (b"nix-archive-1", b"(", b"type", b"regular", b"contents", data, b")")
    return b"".join(string(p) for p in parts)


def nix_upload(n: int) -> list[Request]:
    """The NAR and then the narinfo of store path number ``n`` (what ``nix copy`` PUTs)."""
    body = nar(os.urandom(4096) + n.to_bytes(8, "little"))
    digest = Hash("sha256", hashlib.sha256(body).digest())
    hash_part = (
        hashlib.sha256(b"path%d" % n).hexdigest()[:32].translate(str.maketrans("eotu", "0123"))
    )
    info = NarInfo(
        store_path=f"/nix/store/{hash_part}-bench-{n}", url=f"nar/{digest.nix32()}.nar",
        compression="none", nar_hash=digest, nar_size=len(body), file_hash=digest,
        file_size=len(body),
    )  # fmt: skip
    return [
        ("PUT", f"/nix/{info.url}", body, {"content-type": "application/x-nix-nar"}),
        ("PUT", f"/nix/{info.hash_part}.narinfo", narinfo.format(info).encode(), {}),
    ]


def npm_upload(n: int) -> list[Request]:
    name = f"pkg{n % 10}"
    body = npm_publish(name, f"2.0.{n}")
    return [("PUT", f"/npm/{name}", body, {"content-type": "application/json"})]


def twine_upload(n: int) -> list[Request]:
    """twine's legacy upload form: the wheel and the fields it sends."""
    name, version = f"whl{n % 10}", f"2.{n}"
    body = wheel(name, version)
    form = aiohttp.FormData()
    for key, value in (
        (":action", "file_upload"), ("protocol_version", "1"), ("name", name),
        ("version", version), ("filetype", "bdist_wheel"), ("pyversion", "py3"),
        ("metadata_version", "2.1"), ("summary", "a benchmark wheel"),
        ("sha256_digest", hashlib.sha256(body).hexdigest()),
    ):  # fmt: skip
        form.add_field(key, value)
    form.add_field("content", body, filename=f"{name}-{version}-py3-none-any.whl")
    return [("POST", "/python/", form, {})]


KINDS: dict[str, Callable[[int], list[Request]]] = {
    "npm publish": npm_upload,
    "twine upload": twine_upload,
    "nix copy (NAR + narinfo)": nix_upload,
}


async def run_writes(url: str, writes: list[list[Request]], clients: int) -> int:
    """Send every write's requests in order, ``clients`` writes at a time; returns failures."""
    queue = iter(writes)
    failures = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for requests in queue:
            for method, path, data, headers in requests:
                async with session.request(method, url + path, data=data, headers=headers) as r:
                    await r.read()
                    if r.status >= 400:
                        failures += 1
                        if failures < 4:
                            print(f"  {r.status} {method} {path}: {(await r.text())[:200]}")

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter of the depot to measure"
    )
    args = parser.parse_args()
    with running_depot(args.python) as (url, server):
        # Every package exists before the measure: its first publish is not the common case.
        warm = [npm_upload(10**6 + n) + twine_upload(10**6 + n) for n in range(10)]
        asyncio.run(run_writes(url, warm, 1))
        for kind, make in KINDS.items():
            writes = [make(n) for n in range(args.writes)]
            before, started = cpu_seconds(server.pid), time.monotonic()
            failures = asyncio.run(run_writes(url, writes, args.clients))
            cpu = cpu_seconds(server.pid) - before
            elapsed = time.monotonic() - started
            print(
                f"{kind}: {args.writes} in {elapsed:.1f} s, server CPU {cpu:.2f} s, "
                f"{cpu / args.writes * 1000:.2f} ms per write, {failures} failures"
            )


if __name__ == "__main__":
    main()
