"""/metrics after a real twine upload and pip install: the counters move by what the clients did."""

from __future__ import annotations

from pathlib import Path

import httpx
from depot.core.testing import DepotServer, metric

from .conftest import Clients  # noqa: TID252 - fixtures' helper types


def test_twine_upload_and_pip_install_move_the_counters(
    depot_server: DepotServer, dists: Path, clients: Clients
) -> None:
    gamma = sorted(dists.glob("gamma-1.0*"))
    assert len(gamma) == 2  # the wheel and the sdist
    url = depot_server.url
    before = httpx.get(url + "/metrics").text
    clients.twine_upload(url, gamma)
    uploaded = httpx.get(url + "/metrics").text
    clients.pip_install(url + "/python/simple/", "gamma")
    after = httpx.get(url + "/metrics").text

    def delta(a: str, b: str, name: str, **labels: str) -> float:
        return metric(b, name, **labels) - metric(a, name, **labels)

    upload_bytes = sum(p.stat().st_size for p in gamma)
    assert delta(before, uploaded, "depot_artifacts_stored_total", ecosystem="pypi") == 2
    assert delta(before, uploaded, "depot_bytes_received_total", ecosystem="pypi") >= upload_bytes
    assert metric(uploaded, "depot_stored_objects", ecosystem="pypi") == 2
    assert metric(uploaded, "depot_stored_bytes", ecosystem="pypi") == upload_bytes
    wheel = next(p for p in gamma if p.suffix == ".whl")
    # pip reads the wheel's .metadata, then downloads the wheel once.
    assert delta(uploaded, after, "depot_artifacts_served_total", ecosystem="pypi") >= 1
    assert (
        delta(uploaded, after, "depot_bytes_served_total", ecosystem="pypi") >= wheel.stat().st_size
    )
    assert delta(uploaded, after, "depot_upload_verification_failures_total", ecosystem="pypi") == 0
