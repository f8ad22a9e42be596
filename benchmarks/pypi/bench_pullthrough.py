"""A pull-through depot (``--pypi-upstream``) against the upstream depot it caches, side by side.

The upstream is a ``depot serve`` holding a generated closure of 41 wheels pushed with ``depot
python push`` (a root, 8 mid-level projects, 4 leaves each; each wheel carries a module of about
20 kB, and depot serves its core metadata, PEP 658). Each round, with no client cache:

- direct: ``pip install --target`` of the root from the upstream itself (the floor);
- cold: the same through a fresh pull-through depot (empty store: every page, core metadata
  file and wheel is a miss fetched from upstream while it is streamed to pip);
- warm: the same again through that pull-through depot (everything held), once it has
  committed what the cold install fetched (each install starts with its servers idle).

With ``--uv`` the three are measured with ``uv pip install --no-cache --target`` too (a fresh
pull-through depot of its own for the cold install). Prints medians and the ratios cold/direct
and warm/direct with the goals of issue 15, and the CPU of the depot serving each install
(the upstream for direct, the pull-through depot for cold and warm): the figures that move
least with the machine's load. ``--python OTHER_TREE/.venv/bin/python`` runs the pull-through
depot with another tree, so two trees can alternate in the same conditions. Run::

    .venv/bin/python benchmarks/pypi/bench_pullthrough.py [--rounds 5] [--uv] [--python PY]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_pypi import free_port, stop, wait_ready, write_wheel  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent / "npm"))
from bench_npm import process_cpu_seconds, wait_idle  # noqa: E402

UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def closure(storage: Path, mids: int = 8, leaves: int = 4) -> str:
    """Wheels under ``storage/python/<project>/`` (``depot python push``'s layout); the root."""
    projects: list[tuple[str, list[str]]] = []
    mid_names = []
    for m in range(mids):
        leaf_names = [f"pt-leaf-{m}-{i}" for i in range(leaves)]
        projects += [(leaf, []) for leaf in leaf_names]
        mid_names.append(f"pt-mid-{m}")
        projects.append((mid_names[-1], [f"{leaf}>=1.0" for leaf in leaf_names]))
    projects.append(("pt-root", [f"{mid}>=2.0" for mid in mid_names]))
    for name, requires in projects:
        out = storage / "python" / name
        out.mkdir(parents=True)
        version = "1.0.3" if name.startswith("pt-leaf") else "2.1.0"
        write_wheel(out, name, version, requires, payload=20000)
    return "pt-root"


class Depot:
    """One ``depot serve`` on a free port, logging into ``work``."""

    def __init__(self, work: Path, label: str, *flags: str, python: str = sys.executable) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.index = self.url + "/python/simple/"
        self.store = work / f"{label}-{port}"
        self.log = open(work / f"{label}-{port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [python, "-m", "depot.core", "serve", "--listen-addr", f"127.0.0.1:{port}",
             "--store-path", str(self.store), *flags],
            stdout=self.log, stderr=self.log,
        )  # fmt: skip
        wait_ready(self.url + "/-/health", self.process)

    def cpu_seconds(self) -> float:
        """The server process's user and system CPU so far."""
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop(self.process)
        self.log.close()


def client_env(work: Path) -> dict[str, str]:
    return {
        **os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_FIND_LINKS": " ", "PIP_EXTRA_INDEX_URL": " ", "PIP_CONSTRAINT": " ",
        "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(work / "uv-cache"), "NO_COLOR": "1",
    }  # fmt: skip


def install(work: Path, client: str, index: str, root: str, expected: int) -> float:
    """Seconds for one install of ``root`` from ``index`` into an empty target, no cache.

    Nothing is deleted until the run ends: on this machine's ext4 (no journal), a file created
    within a minute of many being deleted nearby costs the creator kernel CPU to skip their
    inodes, so removing the last install's files would tax whichever server next stores one."""
    target = Path(tempfile.mkdtemp(dir=work, prefix="target-"))
    if client == "pip":
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-cache-dir", "--no-compile",
                   "--target", str(target), "--index-url", index, root]  # fmt: skip
    else:
        command = [UV, "pip", "install", "-q", "--no-cache", "--target", str(target),
                   "--python", sys.executable, "--index-url", index, root]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, env=client_env(work), stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    installed = len(list(target.glob("*.dist-info")))
    assert installed == expected, f"{client} installed {installed} of {expected} from {index}"
    return elapsed


def measure(
    work: Path, client: str, upstream: Depot, root: str, count: int, rounds: int, python: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Medians of (direct, cold, warm) seconds over ``rounds`` alternated rounds, and of the CPU
    seconds of the depot serving each (upstream for direct, the pull-through depot after)."""
    install(work, client, upstream.index, root, count)  # page cache, client warm-up
    seconds: dict[str, list[float]] = {"direct": [], "cold": [], "warm": []}
    cpu: dict[str, list[float]] = {"direct": [], "cold": [], "warm": []}

    def timed(label: str, server: Depot) -> None:
        # Servers idle first: a depot that served a cold install is still committing its writes.
        wait_idle(*{upstream.process.pid, server.process.pid})
        before = server.cpu_seconds()
        seconds[label].append(install(work, client, server.index, root, count))
        cpu[label].append(server.cpu_seconds() - before)

    for round_ in range(rounds):
        timed("direct", upstream)
        caching = Depot(work, "caching", "--pypi-upstream", upstream.index, python=python)
        try:
            timed("cold", caching)
            timed("warm", caching)
        finally:
            caching.stop()
        print(
            f"{client} round {round_ + 1}: "
            + ", ".join(f"{label} {times[-1]:.2f} s" for label, times in seconds.items())
            + "; serving depot's CPU: "
            + ", ".join(f"{label} {times[-1]:.2f} s" for label, times in cpu.items()),
            flush=True,
        )
    return (
        tuple(statistics.median(seconds[label]) for label in ("direct", "cold", "warm")),
        tuple(statistics.median(cpu[label]) for label in ("direct", "cold", "warm")),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uv", action="store_true", help="measure uv pip install as well")
    parser.add_argument("--python", default=sys.executable, help="the pull-through depot's")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="depot-bench-pypi-pullthrough-"))
    upstream: Depot | None = None
    try:
        storage = work / "storage"
        root = closure(storage)
        count = sum(1 for _ in storage.glob("python/*/*.whl"))
        upstream = Depot(work, "upstream")
        subprocess.run(
            [sys.executable, "-m", "depot.core", "python", "push", upstream.url, "--dir",
             str(storage)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"closure: {count} wheels; {args.rounds} rounds, no client cache; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)  # fmt: skip
        results = {}
        for client in ("pip", "uv") if args.uv else ("pip",):
            results[client] = measure(work, client, upstream, root, count, args.rounds, args.python)
        print()
        for client, ((d, c, w), (dc, cc, wc)) in results.items():
            print(f"median {client} install: direct from upstream {d:.2f} s, through cold depot "
                  f"{c:.2f} s, through warm depot {w:.2f} s")  # fmt: skip
            print(f"  ratio cold/direct {c / d:.2f} (goal <= 1.30), warm/direct {w / d:.2f} "
                  f"(goal <= 1.05)")  # fmt: skip
            print(f"  CPU of the depot serving it: upstream direct {dc:.2f} s, pull-through "
                  f"cold {cc:.2f} s, warm {wc:.2f} s (warm/direct {wc / dc:.2f})")  # fmt: skip
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if upstream is not None:
            upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
