"""Garbage collection over a generated store: time and peak memory of ``depot gc``.

Writes N blobs straight into an fs store (not through clients), gives half of them a row (the
example raw plugin's table, so a third-party ecosystem's reachability is what is exercised),
backdates them past the grace period and runs ``depot gc --grace 1h`` as a separate process,
(on the filesystem of ``--dir``; a disk mounted with ``discard`` makes every unlink a TRIM and
the deletions dominate, so ``--dir /dev/shm`` measures depot rather than the disk),
for two store sizes: the collection must finish under a minute at 100,000 blobs and its peak
RSS must not grow with the store. Beside it, ``find`` listing the same tree is the floor any
collector walking the store pays; the ratio to it is printed.

    .venv/bin/python benchmarks/core/bench_gc.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

OLD = time.time() - 7200


def generate(store: Path, count: int) -> None:
    """``count`` blobs under raw/sha256/, the even ones referenced by a raw_files row."""
    env = {**os.environ, "DEPOT_STORE_PATH": str(store)}
    # Start-up creates the schema; nothing to collect yet.
    subprocess.run([sys.executable, "-m", "depot.core", "gc", "--dry-run"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    directory = store / "blobs" / "raw" / "sha256"
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    now = datetime.now(UTC).isoformat()
    for i in range(count):
        digest = f"{i:064x}"
        path = directory / digest
        path.write_bytes(b"b" * 256)
        os.utime(path, (OLD, OLD))
        if i % 2 == 0:
            rows.append((f"file-{i}", digest, 256, now))
    with sqlite3.connect(store / "depot.db") as db:
        db.executemany(
            "INSERT INTO raw_files (name, sha256, size, uploaded_at) VALUES (?, ?, ?, ?)", rows
        )


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def peak_rss_mib(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall time, peak RSS (MiB) and stdout of one child, measured by a fresh wrapper process
    so earlier children do not count."""
    wrapper = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True);"
        "print(time.perf_counter() - t);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024);"
        "print(p.stdout)"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    seconds, rss, stdout = out.split("\n", 2)
    return float(seconds), float(rss), stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument(
        "--dir", default=None, help="where to generate the stores (default: $TMPDIR or /tmp)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    fs = subprocess.run(["df", "-T", args.dir or tempfile.gettempdir()], capture_output=True,
                        text=True).stdout.splitlines()[-1].split()[1]  # fmt: skip
    print(f"stores on {args.dir or tempfile.gettempdir()} ({fs})")
    print(f"{'blobs':>8} {'depot gc s':>11} {'peak RSS MiB':>13} {'find s':>7} {'ratio':>6}")
    for count in sizes:
        root = Path(tempfile.mkdtemp(prefix="depot-bench-gc-", dir=args.dir))
        try:
            store = root / "store"
            generate(store, count)
            find_seconds, _ = timed(["find", str(store / "blobs"), "-type", "f", "-printf",
                                     "%s %T@ %p\n"])  # fmt: skip
            env = {**os.environ, "DEPOT_STORE_PATH": str(store)}
            gc = [sys.executable, "-m", "depot.core", "gc", "--grace", "1h"]
            seconds, rss, stdout = peak_rss_mib(gc, env)
            removed = next(line for line in stdout.splitlines() if line.startswith("raw:"))
            assert f"removed {count // 2:,} blobs" in removed, stdout
            print(f"{count:>8,} {seconds:>11.2f} {rss:>13.1f} {find_seconds:>7.2f} "
                  f"{seconds / find_seconds:>6.1f}x   {removed}")  # fmt: skip
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
