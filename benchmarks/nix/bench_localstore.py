"""NARs served from the local Nix store (``depot serve --nix-local-store``) vs ``nix-store --dump``.

Both serialise the same 256 MiB store path (one file from /dev/urandom, built by a derivation
here): ``nix-store --dump <path> > /dev/null`` on one side, ``curl`` downloading the NAR from depot
to /dev/null on the other, in alternating rounds after one warm-up each (page cache warm for
both). Prints each side's median throughput, the ratio depot / nix-store (the issue's goal >= 0.8),
and depot's server CPU per GiB sent.

For the ceiling of any HTTP server on this machine, the same rounds also time ``curl`` fetching
the identical NAR bytes, dumped once to a file, from Debian's nginx (``sendfile on``, the same
worker count), and ``nix-store --dump | cat > /dev/null`` (one pipe). With ``/usr/sbin/nginx``
absent the nginx column is skipped.

    .venv/bin/python benchmarks/nix/bench_localstore.py [--mib 256] [--rounds 7] [--chunk-kib 1024]

``--chunk-kib`` overrides ``depot.nix.localnar.CHUNK_SIZE`` in the server, for tuning. Needs
nix (a writable store) and curl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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


def start_nginx(tmp: Path, root: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    """Debian's nginx serving ``root`` on ``port`` with sendfile, as a file server at its best."""
    conf = tmp / "nginx.conf"
    temp = " ".join(f"{kind}_temp_path {tmp}/nginx-{kind};" for kind in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    conf.write_text(
        f"user root; worker_processes {workers}; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;"
        f"events {{ worker_connections 1024; }}"
        f"http {{ access_log off; sendfile on; tcp_nopush on; {temp}"
        f"server {{ listen 127.0.0.1:{port}; root {root}; }} }}"
    )
    process = subprocess.Popen(["/usr/sbin/nginx", "-c", str(conf), "-g", "daemon off;"])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return process


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=1, help="depot and nginx worker processes")
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
        nginx = None
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
            # For context: what moving the same bytes through one pipe costs nix-store.
            piped = ["sh", "-c", f"nix-store --dump {path} | cat > /dev/null"]
            commands = {"dump": dump, "depot": curl, "piped": piped}
            if shutil.which("/usr/sbin/nginx"):
                root = tmp / "nginx-root"
                root.mkdir()
                with open(root / "same.nar", "wb") as out:
                    subprocess.run(dump, stdout=out, check=True)
                nginx_port = free_port()
                nginx = start_nginx(tmp, root, nginx_port, args.workers)
                commands["nginx"] = ["curl", "-sSf", "-o", "/dev/null",
                                     f"http://127.0.0.1:{nginx_port}/same.nar"]  # fmt: skip
            for command in commands.values():  # warm the page cache and every code path
                timed(command)
            times: dict[str, list[float]] = {name: [] for name in commands}
            cpu = 0.0
            for _ in range(args.rounds):
                for name, command in commands.items():
                    before = cpu_seconds(server_pids(server.pid)) if name == "depot" else 0.0
                    times[name].append(timed(command))
                    if name == "depot":
                        cpu += cpu_seconds(server_pids(server.pid)) - before
        finally:
            server.terminate()
            server.wait()
            if nginx is not None:
                nginx.send_signal(signal.SIGQUIT)
                nginx.wait()

    size_mib = info.nar_size / MIB
    load = Path("/proc/loadavg").read_text().split()[0]
    rate = {name: size_mib / statistics.median(t) for name, t in times.items()}
    gib_sent = info.nar_size * args.rounds / (1024 * MIB)
    print(f"store path: {path} (NAR {info.nar_size} bytes)")
    print(f"chunk: {args.chunk_kib} KiB, workers: {args.workers}, rounds: {args.rounds}")
    print(f"nix-store --dump > /dev/null: {rate['dump']:7.0f} MiB/s (median)")
    print(f"depot NAR via curl          : {rate['depot']:7.0f} MiB/s (median)")
    if "nginx" in rate:
        print(f"nginx, same bytes, via curl : {rate['nginx']:7.0f} MiB/s (median, sendfile)")
    print(f"nix-store --dump | cat      : {rate['piped']:7.0f} MiB/s (median, for context)")
    print(f"ratio depot / nix-store: {rate['depot'] / rate['dump']:.2f} (the issue's goal >= 0.8)")
    if "nginx" in rate:
        ceiling = rate["nginx"] / rate["dump"]
        print(f"ratio nginx / nix-store: {ceiling:.2f} (what a C file server reaches here)")
        print(f"ratio depot / nginx    : {rate['depot'] / rate['nginx']:.2f}")
    print(f"ratio depot / nix-store | cat: {rate['depot'] / rate['piped']:.2f}")
    print(f"load average before: {load}")
    print(f"depot server CPU: {cpu / gib_sent:.2f} s per GiB sent")


if __name__ == "__main__":
    main()
