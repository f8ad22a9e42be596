"""A pull-through depot (``--npm-upstream``) against the upstream depot it caches, side by side.

The upstream is a ``depot serve`` holding a generated tree of 321 packages (a root, 20 mid-level
packages, 15 leaves each). Each round, with an empty npm cache every time:

- direct: ``npm ci`` from the upstream itself (the floor);
- cold: ``npm ci`` through a fresh pull-through depot (empty store: every packument-free
  tarball request is a miss fetched from upstream while it is streamed to npm);
- warm: ``npm ci`` again through the same pull-through depot (everything held), once it has
  committed what the cold install fetched (each install starts with its servers idle).

The lockfile is made once against the upstream and rewritten to each registry's URL, so every
``npm ci`` downloads exactly the 321 tarballs. Prints medians and the ratios cold/direct and
warm/direct, and the CPU of the depot serving each install (upstream for direct, the
pull-through depot for cold and warm): the figures that move least with the machine's load.
``--python OTHER_TREE/.venv/bin/python`` runs the pull-through depot with another tree, so two
trees can alternate in the same conditions.
Run: ``.venv/bin/python benchmarks/npm/bench_pullthrough.py [--rounds 3] [--python PY]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_npm import Server, free_port, publish_all, start_depot, wait_idle  # noqa: E402


def tree(mids: int = 20, leaves: int = 15) -> list[tuple[str, str, dict[str, Any]]]:
    packages: list[tuple[str, str, dict[str, Any]]] = []
    names = []
    for m in range(mids):
        mid = f"@pt/mid-{m}" if m % 4 == 0 else f"pt-mid-{m}"
        deps = {}
        for i in range(leaves):
            leaf = f"pt-leaf-{m}-{i}"
            packages.append((leaf, "1.0.3", {}))
            deps[leaf] = "^1.0.0"
        packages.append((mid, "3.1.0", {"dependencies": deps}))
        names.append(mid)
    packages.append(("pt-root", "1.0.0", {"dependencies": {n: "^3.0.0" for n in names}}))
    return packages


def start_caching(work: Path, upstream: str, python: str = sys.executable) -> Server:
    port = free_port()
    store = work / f"caching-{port}"
    log = open(work / f"caching-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [python, "-m", "depot.core", "serve", "--listen-addr", f"127.0.0.1:{port}",
         "--store-path", str(store), "--npm-upstream", upstream + "/"],
        stdout=log, stderr=log,
    )  # fmt: skip
    return Server(
        "caching", f"http://127.0.0.1:{port}/npm", process, f"http://127.0.0.1:{port}/-/health"
    ).wait()


def npm_env(work: Path, label: str) -> dict[str, str]:
    """npm's environment with an empty cache of its own (left for the end: see :func:`npm_ci`)."""
    cache = Path(tempfile.mkdtemp(dir=work, prefix=f"npm-cache-{label}-"))
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    env.update(
        NPM_CONFIG_CACHE=str(cache),
        NPM_CONFIG_USERCONFIG=str(work / "npmrc"),
        NPM_CONFIG_AUDIT="false",
        NPM_CONFIG_FUND="false",
        NPM_CONFIG_UPDATE_NOTIFIER="false",
    )
    return env


def make_lockfile(work: Path, registry: str) -> str:
    project = work / "lock"
    project.mkdir()
    (project / "package.json").write_text(
        json.dumps({"name": "p", "version": "0.0.0", "dependencies": {"pt-root": "1.0.0"}})
    )
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--registry", registry + "/"],
        cwd=project, env=npm_env(work, "lock"), check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return (project / "package-lock.json").read_text()


def npm_ci(work: Path, registry: str, lockfile: str, upstream: str, label: str) -> float:
    """Seconds for ``npm ci`` into a new project with an empty cache.

    Nothing is deleted until the run ends: on this machine's ext4 (no journal), a file created
    within a minute of thousands being deleted nearby costs the creator kernel CPU to skip their
    inodes, so removing the last install's node_modules would tax whichever server next stores
    a blob (a client and its registry do not share a disk in use)."""
    project = Path(tempfile.mkdtemp(dir=work, prefix=f"project-{label}-"))
    (project / "package.json").write_text(
        json.dumps({"name": "p", "version": "0.0.0", "dependencies": {"pt-root": "1.0.0"}})
    )
    (project / "package-lock.json").write_text(lockfile.replace(upstream + "/", registry + "/"))
    env = npm_env(work, label)
    started = time.perf_counter()
    subprocess.run(
        ["npm", "ci", "--registry", registry + "/"],
        cwd=project, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert (project / "node_modules" / "pt-root" / "package.json").exists()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", default=sys.executable, help="the pull-through depot's")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="depot-bench-pullthrough-"))
    (work / "npmrc").write_text("")
    servers: list[Server] = []
    try:
        upstream = start_depot(work)
        servers.append(upstream)
        packages = tree()
        asyncio.run(publish_all(upstream.registry, packages, 8))
        lockfile = make_lockfile(work, upstream.registry)
        count = sum(1 for p in json.loads(lockfile)["packages"] if p)
        print(f"tree: {count} packages; {args.rounds} rounds, empty npm cache each install")
        npm_ci(
            work, upstream.registry, lockfile, upstream.registry, "warmup"
        )  # page cache, node warm-up
        direct, cold, warm = [], [], []
        direct_cpu, cold_cpu, warm_cpu = [], [], []
        for round_ in range(args.rounds):
            wait_idle(upstream.process.pid)
            cpu = upstream.cpu_seconds()
            direct.append(npm_ci(work, upstream.registry, lockfile, upstream.registry, "direct"))
            direct_cpu.append(upstream.cpu_seconds() - cpu)
            caching = start_caching(work, upstream.registry, args.python)
            servers.append(caching)
            wait_idle(upstream.process.pid, caching.process.pid)
            cpu = caching.cpu_seconds()
            cold.append(npm_ci(work, caching.registry, lockfile, upstream.registry, "cold"))
            cold_cpu.append(caching.cpu_seconds() - cpu)
            wait_idle(upstream.process.pid, caching.process.pid)  # the cold install's writes
            cpu = caching.cpu_seconds()
            warm.append(npm_ci(work, caching.registry, lockfile, upstream.registry, "warm"))
            warm_cpu.append(caching.cpu_seconds() - cpu)
            caching.stop()
            print(
                f"round {round_ + 1}: direct {direct[-1]:.2f} s, cold {cold[-1]:.2f} s, "
                f"warm {warm[-1]:.2f} s; serving depot's CPU: upstream direct "
                f"{direct_cpu[-1]:.2f} s, pull-through cold {cold_cpu[-1]:.2f} s, warm "
                f"{warm_cpu[-1]:.2f} s"
            )
        d, c, w = (statistics.median(x) for x in (direct, cold, warm))
        print(f"median npm ci: direct from upstream {d:.2f} s, through cold depot {c:.2f} s, "
              f"through warm depot {w:.2f} s")  # fmt: skip
        print(f"ratio cold/direct {c / d:.2f} (goal <= 1.30), warm/direct {w / d:.2f} "
              f"(goal <= 1.05)")  # fmt: skip
        dc, cc, wc = (statistics.median(x) for x in (direct_cpu, cold_cpu, warm_cpu))
        print(f"median CPU of the depot serving the install: upstream direct {dc:.2f} s, "
              f"pull-through cold {cc:.2f} s, warm {wc:.2f} s "
              f"(warm/direct {wc / dc:.2f})")  # fmt: skip
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
