"""Depot's Nix cache side by side with Debian's nginx serving the same files from disk.

Measures, in one run on this machine:

1. download of one NAR (default 256 MiB) with curl: depot's throughput / nginx's;
2. narinfo lookups with 32 concurrent connections (wrk): depot's request rate / nginx's;
3. upload + verification of a 1 GiB zstd-compressed NAR (PUT NAR, PUT narinfo, which makes depot
   stream it through zstd and the NAR validator), with depot's peak RSS over the whole run.

Run as root (nginx runs with a temporary config on a free loopback port):

    .venv/bin/python benchmarks/nix/bench_nix.py [--nar-mib 256] [--upload-mib 1024] [--workers 2]

``--workers`` sets both depot's ``--workers`` and nginx's ``worker_processes`` (default: one per
CPU, nginx's ``worker_processes auto``).

Needs curl, wrk (``apt-get install wrk``) and /usr/sbin/nginx. Prints the figures and ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import zstandard
from depot.nix import narinfo
from depot.nix.narinfo import NarInfo
from depot.nix.nixbase32 import Hash
from depot.nix.signing import SecretKey

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nar_string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + bytes((8 - len(data) % 8) % 8)


def write_nar(path: Path, size: int, compress: bool) -> tuple[Hash, int, Hash, int]:
    """A NAR holding one regular file of ``size`` bytes (half random, half zeros per MiB).

    Written in streaming fashion, optionally zstd-compressed; returns NarHash, NarSize,
    FileHash and FileSize.
    """
    nar_hash, file_hash = hashlib.sha256(), hashlib.sha256()
    nar_size = 0
    random_half = os.urandom(MIB // 2)
    with open(path, "wb") as out:

        class Hashing:
            def write(self, data: bytes) -> int:
                file_hash.update(data)
                out.write(data)
                return len(data)

        sink = (
            zstandard.ZstdCompressor(level=1, threads=2).stream_writer(Hashing(), closefd=False)
            if compress
            else Hashing()
        )

        def emit(data: bytes) -> None:
            nonlocal nar_size
            nar_hash.update(data)
            nar_size += len(data)
            sink.write(data)

        emit(
            b"".join(
                nar_string(t) for t in (b"nix-archive-1", b"(", b"type", b"regular", b"contents")
            )
        )
        emit(struct.pack("<Q", size))
        for i in range(size // MIB):
            block = i.to_bytes(8, "little") + random_half[8:] + bytes(MIB // 2)
            emit(block)
        emit(bytes(size % MIB) + bytes((8 - size % 8) % 8) + nar_string(b")"))
        if compress:
            sink.flush(zstandard.FLUSH_FRAME)
    return (
        Hash("sha256", nar_hash.digest()),
        nar_size,
        Hash("sha256", file_hash.digest()),
        path.stat().st_size,
    )


def _rss(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


class Depot:
    def __init__(self, tmp: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        key = SecretKey.generate("bench-1")
        (tmp / "key").write_text(str(key))
        self.store = tmp / "depot"
        self.log = open(tmp / "depot.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "depot.core", "serve", "--listen-addr", f"127.0.0.1:{self.port}",
             "--store-path", str(self.store), "--private-key", str(tmp / "key"),
             "--workers", str(workers)],
            stdout=self.log, stderr=self.log,
        )  # fmt: skip
        for _ in range(300):
            try:
                if httpx.get(self.url + "/-/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        self.peak_rss = 0
        self._stop = threading.Event()
        threading.Thread(target=self._watch_rss, daemon=True).start()

    def _watch_rss(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.rss("VmHWM"))
            for child in children(self.process.pid):  # --workers N: each worker's own peak
                self.peak_rss = max(self.peak_rss, _rss(child, "VmHWM"))
            time.sleep(0.05)

    def rss(self, field: str = "VmRSS") -> int:
        return _rss(self.process.pid, field)

    def stop(self) -> None:
        self._stop.set()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


class Nginx:
    def __init__(self, tmp: Path, root: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = tmp / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ text/x-nix-narinfo narinfo; application/x-nix-nar nar; }}
    server {{ listen 127.0.0.1:{self.port}; root {root}; }}
}}
""")
        self.process = subprocess.Popen(["/usr/sbin/nginx", "-c", str(conf), "-g", "daemon off;"])
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        self.process.wait(timeout=30)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def curl_speed(url: str, runs: int) -> float:
    """Median download speed in bytes/s over ``runs`` downloads (after one warm-up)."""
    speeds = []
    for i in range(runs + 1):
        out = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}", url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if i:
            speeds.append(float(out))
    return statistics.median(speeds)


def wrk_rate(url: str, seconds: int, connections: int = 32) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m is None or errors:
        raise SystemExit(f"wrk failed or saw errors against {url}:\n{out}")
    return float(m.group(1))


def publish(
    depot: Depot,
    store_path: str,
    file: Path,
    compression: str,
    nar_hash: Hash,
    nar_size: int,
    file_hash: Hash,
    file_size: int,
) -> float:
    """PUT the NAR file with curl (streamed) and then its narinfo; returns seconds taken."""
    ext = {"none": "", "zstd": ".zst"}[compression]
    url = f"nar/{file_hash.nix32()}.nar{ext}"
    info = NarInfo(store_path=store_path, url=url, compression=compression, nar_hash=nar_hash,
                   nar_size=nar_size, file_hash=file_hash, file_size=file_size)  # fmt: skip
    started = time.monotonic()
    subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-T", str(file),
         "-H", "Content-Type: application/x-nix-nar", f"{depot.url}/nix/{url}"],
        check=True, capture_output=True,
    )  # fmt: skip
    response = httpx.put(
        f"{depot.url}/nix/{info.hash_part}.narinfo", content=narinfo.format(info), timeout=3600
    )
    if response.status_code != 200:
        raise SystemExit(f"narinfo refused: {response.status_code} {response.text}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nar-mib", type=int, default=256)
    parser.add_argument("--upload-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternating wrk rounds per server")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="depot serve --workers and nginx worker_processes (default: one per CPU, as nginx's "
        "'worker_processes auto' and as depot is deployed)",
    )
    args = parser.parse_args()
    for tool in ("curl", "wrk", "/usr/sbin/nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install {Path(tool).name})")

    with tempfile.TemporaryDirectory(prefix="depot-bench-") as tmp_name:
        tmp = Path(tmp_name)
        depot = Depot(tmp, args.workers)
        nginx = None
        try:
            print(f"making a {args.nar_mib} MiB NAR ...", flush=True)
            nar_file = tmp / "download.nar"
            nar_hash, nar_size, file_hash, file_size = write_nar(
                nar_file, args.nar_mib * MIB, compress=False
            )
            store_path = f"/nix/store/{'1' * 32}-bench-download"
            took = publish(
                depot, store_path, nar_file, "none", nar_hash, nar_size, file_hash, file_size
            )
            print(f"  published in depot (upload + verify): {took:.2f}s")
            hash_part = "1" * 32
            # nginx serves the very same files: the blob depot stored and the narinfo it serves.
            root = tmp / "nginx-root"
            (root / "nix" / "nar").mkdir(parents=True)
            nar_url = f"nix/nar/{file_hash.nix32()}.nar"
            os.link(depot.store / "blobs" / nar_url, root / nar_url)
            served = httpx.get(f"{depot.url}/nix/{hash_part}.narinfo").text
            (root / "nix" / f"{hash_part}.narinfo").write_text(served)
            nar_file.unlink()
            nginx = Nginx(tmp, root, args.workers)

            print("download throughput (curl, median of runs):", flush=True)
            # CPU seconds per GiB served do not depend on what else loads the machine.
            depot_pids = [depot.process.pid, *children(depot.process.pid)]
            nginx_pids = [nginx.process.pid, *children(nginx.process.pid)]
            served_gib = (args.runs + 1) * args.nar_mib / 1024
            cpu = cpu_seconds(depot_pids)
            depot_speed = curl_speed(f"{depot.url}/{nar_url}", args.runs)
            depot_cpu = (cpu_seconds(depot_pids) - cpu) / served_gib
            cpu = cpu_seconds(nginx_pids)
            nginx_speed = curl_speed(f"{nginx.url}/{nar_url}", args.runs)
            nginx_cpu = (cpu_seconds(nginx_pids) - cpu) / served_gib
            print(f"  depot {depot_speed / MIB:8.0f} MiB/s   nginx {nginx_speed / MIB:8.0f} "
                  f"MiB/s   ratio {depot_speed / nginx_speed:.2f}")  # fmt: skip
            print(f"  server CPU per GiB served: depot {depot_cpu:.2f}s, nginx {nginx_cpu:.2f}s")

            print(f"narinfo lookups (wrk, 32 connections, {args.rounds} alternating rounds):",
                  flush=True)  # fmt: skip
            narinfo_url = f"/nix/{hash_part}.narinfo"
            wrk_rate(depot.url + narinfo_url, 1)  # warm-up: connections, caches
            # Alternating rounds, then medians: on a shared 2-core machine one round of each can
            # land on a busy and a quiet second and swing the ratio by a third.
            depot_rates, nginx_rates = [], []
            for _ in range(args.rounds):
                depot_rates.append(wrk_rate(depot.url + narinfo_url, args.seconds))
                nginx_rates.append(wrk_rate(nginx.url + narinfo_url, args.seconds))
            depot_rate = statistics.median(depot_rates)
            nginx_rate = statistics.median(nginx_rates)
            pairs = zip(depot_rates, nginx_rates, strict=True)
            rounds = ", ".join(f"{d / n:.3f}" for d, n in pairs)
            print(f"  depot {depot_rate:8.0f} req/s   nginx {nginx_rate:8.0f} req/s   "
                  f"ratio of medians {depot_rate / nginx_rate:.3f} (rounds: {rounds})")  # fmt: skip
            nginx.stop()
            nginx = None
            (root / nar_url).unlink()

            print(f"making a {args.upload_mib} MiB NAR, zstd-compressed ...", flush=True)
            big = tmp / "upload.nar.zst"
            nar_hash, nar_size, file_hash, file_size = write_nar(
                big, args.upload_mib * MIB, compress=True
            )
            took = publish(depot, f"/nix/store/{'2' * 32}-bench-upload", big, "zstd", nar_hash,
                           nar_size, file_hash, file_size)  # fmt: skip
            print(f"  upload + verify of {nar_size / MIB:.0f} MiB NAR ({file_size / MIB:.0f} MiB "
                  f"zstd): {took:.1f}s, {nar_size / MIB / took:.0f} MiB/s")  # fmt: skip
            time.sleep(0.2)
            peak = max(depot.peak_rss, depot.rss("VmHWM"))
            print(f"  depot peak RSS over the whole run: {peak / MIB:.0f} MiB "
                  f"({'under' if peak < 200 * MIB else 'OVER'} 200 MiB)")  # fmt: skip
            print()
            print(f"RATIOS download {depot_speed / nginx_speed:.2f} (goal >= 0.8), "
                  f"narinfo {depot_rate / nginx_rate:.3f} (goal >= 0.1), "
                  f"peak RSS {peak / MIB:.0f} MiB (goal < 200)")  # fmt: skip
        finally:
            if nginx is not None:
                nginx.stop()
            depot.stop()


if __name__ == "__main__":
    main()
