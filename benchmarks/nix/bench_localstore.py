"""NARs served from the local Nix store (``depot serve --nix-local-store``) vs ``nix-store --dump``.

Both serialise the same 256 MiB store path (one file from /dev/urandom, built by a derivation
here): ``nix-store --dump <path> > /dev/null`` on one side, ``curl`` downloading the NAR from depot
to /dev/null on the other, in alternating rounds after one warm-up each (page cache warm for
both). Prints each side's median throughput, the ratio depot / nix-store (goal >= 0.8), and
depot's server CPU per GiB sent.

    .venv/bin/python benchmarks/nix/bench_localstore.py [--mib 256] [--rounds 7] [--chunk-kib 1024]

``--chunk-kib`` overrides ``depot.nix.localnar.CHUNK_SIZE`` in the server, for tuning. Needs
nix (a writable store) and curl.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from depot.nix import narinfo

MIB = 1024 * 1024
NIX_CONFIG = "substituters =\nsandbox = false\nexperimental-features = nix-command\n"
BIG_PATH_NIX = """
derivation {
  name = "depot-bench-localstore-MIBmib";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; /usr/bin/head -c MIBYTES /dev/urandom > $out/blob" ];
}
"""
# Runs depot's CLI with the NAR chunk size overridden (the constant is read per response).
SERVER = (
    "import sys, depot.nix.localnar as m; m.CHUNK_SIZE = int(sys.argv.pop(1));"
    "from depot.core.cli import main; main()"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_path(mib: int, tmp: Path) -> str:
    expression = tmp / "big.nix"
    text = BIG_PATH_NIX.replace("MIBYTES", str(mib * MIB)).replace("MIB", str(mib))
    expression.write_text(text)
    env = {**os.environ, "NIX_CONFIG": NIX_CONFIG}
    out = subprocess.run(["nix-build", str(expression), "--no-out-link"], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def server_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        path = build_path(args.mib, tmp)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(args.chunk_kib * 1024), "serve",
             "--listen-addr", f"127.0.0.1:{port}", "--store-path", str(tmp / "store"),
             "--nix-local-store", "--workers", str(args.workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}/nix"
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/nix-cache-info", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            info = narinfo.parse(httpx.get(f"{base}/{Path(path).name[:32]}.narinfo").text)
            nar_url = f"{base}/{info.url}"
            dump = ["nix-store", "--dump", path]
            curl = ["curl", "-sSf", "-o", "/dev/null", nar_url]
            timed(dump), timed(curl)  # warm the page cache and both code paths
            # For context: what moving the same bytes through one pipe costs nix-store.
            piped = ["sh", "-c", f"nix-store --dump {path} | cat > /dev/null"]
            dump_times, depot_times, piped_times = [], [], []
            cpu_before = cpu_seconds(server_pids(server.pid))
            for _ in range(args.rounds):
                dump_times.append(timed(dump))
                depot_times.append(timed(curl))
                piped_times.append(timed(piped))
            cpu = cpu_seconds(server_pids(server.pid)) - cpu_before
        finally:
            server.terminate()
            server.wait()

    size_mib = info.nar_size / MIB
    load = Path("/proc/loadavg").read_text().split()[0]
    dump_rate = size_mib / statistics.median(dump_times)
    depot_rate = size_mib / statistics.median(depot_times)
    gib_sent = info.nar_size * args.rounds / (1024 * MIB)
    print(f"store path: {path} (NAR {info.nar_size} bytes)")
    print(f"chunk: {args.chunk_kib} KiB, workers: {args.workers}, rounds: {args.rounds}")
    print(f"nix-store --dump > /dev/null: {dump_rate:7.0f} MiB/s (median)")
    print(f"depot NAR via curl          : {depot_rate:7.0f} MiB/s (median)")
    piped_rate = size_mib / statistics.median(piped_times)
    print(f"nix-store --dump | cat      : {piped_rate:7.0f} MiB/s (median, for context)")
    print(f"ratio depot / nix-store: {depot_rate / dump_rate:.2f} (goal >= 0.8)")
    print(f"load average before: {load}")
    print(f"depot server CPU: {cpu / gib_sent:.2f} s per GiB sent")


if __name__ == "__main__":
    main()
