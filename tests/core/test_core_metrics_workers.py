"""/metrics under ``depot serve --workers 2``: every scrape reports the sum over both workers.

Requests go over fresh connections from several threads so the kernel hands them to both
workers; the tests read each worker's own counter file (prometheus-client's multiprocess
directory, found in a worker's environment) to make sure both really served some.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer, free_port, metric

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the workers through /proc"
)

CONTENT = b"w" * 700
RAW_GETS = {"ecosystem": "raw", "method": "GET", "status": "200"}


def _worker_pids(server: DepotServer) -> list[int]:
    """Processes whose parent is the supervisor and which serve (they hold the metrics dir)."""
    assert server.process is not None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == server.process.pid:
            pids.append(int(entry.name))
    return pids


def _metrics_dir(server: DepotServer) -> Path:
    for pid in _worker_pids(server):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for item in environ:
            if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(item.split(b"=", 1)[1].decode())
    raise AssertionError("no worker has PROMETHEUS_MULTIPROC_DIR set")


def _raw_gets_per_worker(metrics_dir: Path) -> dict[str, float]:
    """Each worker's own count of answered raw downloads, from its own counter file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        counts[path.stem.split("_", 1)[1]] = sum(
            sample.value
            for family in MultiProcessCollector.merge([str(path)])
            for sample in family.samples
            if sample.name == "depot_http_requests_total"
            and all(sample.labels.get(k) == v for k, v in RAW_GETS.items())
        )
    return counts


def _spread_downloads(server: DepotServer) -> int:
    """Download the file over new connections until both workers served some; how many sent."""
    metrics_dir = _metrics_dir(server)
    sent = 0

    def download(_: int) -> int:
        return httpx.get(server.url + "/raw/files/one.bin").status_code

    with ThreadPoolExecutor(8) as pool:
        for _ in range(25):
            assert list(pool.map(download, range(20))) == [200] * 20
            sent += 20
            per_worker = _raw_gets_per_worker(metrics_dir)
            if len(per_worker) == 2 and all(per_worker.values()):
                break
    per_worker = _raw_gets_per_worker(metrics_dir)
    assert len(per_worker) == 2 and all(per_worker.values()), per_worker
    assert sum(per_worker.values()) == sent
    return sent


def test_every_scrape_counts_the_requests_of_all_workers(make_depot_server) -> None:
    server = make_depot_server("--workers", "2")
    assert httpx.put(server.url + "/raw/files/one.bin", content=CONTENT).status_code == 201
    sent = _spread_downloads(server)

    scrapes = [httpx.get(server.url + "/metrics").text for _ in range(6)]
    first_total = metric(scrapes[0], "depot_http_requests_total")
    for i, text in enumerate(scrapes):
        assert metric(text, "depot_http_requests_total", **RAW_GETS) == sent
        assert metric(text, "depot_bytes_served_total", ecosystem="raw") >= sent * len(CONTENT)
        # A scrape is counted once answered, so scrape i sees the i scrapes before it.
        assert metric(text, "depot_http_requests_total", route="metrics_endpoint") == i
        assert metric(text, "depot_http_requests_total") == first_total + i
        # Both workers hold the same database totals: reported once, not once per worker.
        assert metric(text, "depot_stored_objects", ecosystem="raw") == 1
        assert metric(text, "depot_stored_bytes", ecosystem="raw") == len(CONTENT)


def test_metrics_port_with_workers_reports_all_of_them(make_depot_server) -> None:
    port = free_port()
    server = make_depot_server("--workers", "2", "--metrics-listen-addr", f"127.0.0.1:{port}")
    assert httpx.put(server.url + "/raw/files/one.bin", content=CONTENT).status_code == 201
    sent = _spread_downloads(server)

    assert httpx.get(server.url + "/metrics").status_code == 404
    # The metrics port's own requests are not counted, so every scrape reads the same totals.
    scrapes = [httpx.get(f"http://127.0.0.1:{port}/metrics").text for _ in range(4)]
    totals = {metric(text, "depot_http_requests_total") for text in scrapes}
    assert len(totals) == 1
    for text in scrapes:
        assert metric(text, "depot_http_requests_total", **RAW_GETS) == sent
        assert metric(text, "depot_http_requests_total", route="unmatched", status="404") == 1
        assert metric(text, "depot_stored_objects", ecosystem="raw") == 1


def test_a_dead_workers_requests_stay_counted(make_depot_server) -> None:
    server = make_depot_server("--workers", "2")
    assert httpx.put(server.url + "/raw/files/one.bin", content=CONTENT).status_code == 201
    sent = _spread_downloads(server)
    metrics_dir = _metrics_dir(server)
    httpx.get(server.url + "/metrics")  # some worker sets the stored-object gauges

    victim = next(
        pid for pid in _worker_pids(server) if (metrics_dir / f"counter_{pid}.db").exists()
    )
    os.kill(victim, signal.SIGKILL)
    # The supervisor marks it dead: its live gauges go, its counter file stays.
    deadline = time.monotonic() + 30
    while (metrics_dir / f"gauge_livemostrecent_{victim}.db").exists():
        assert time.monotonic() < deadline, "the dead worker's gauge file was not removed"
        time.sleep(0.1)
    assert (metrics_dir / f"counter_{victim}.db").exists()

    for _ in range(3):
        text = httpx.get(server.url + "/metrics").text
        assert metric(text, "depot_http_requests_total", **RAW_GETS) == sent
        assert metric(text, "depot_stored_objects", ecosystem="raw") == 1
    assert server.stop() != 0  # a worker died: the supervisor says so when it exits
    assert not metrics_dir.exists()
