"""/metrics after a real nix copy to and from depot: the counters move by what nix did."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from depot.core.testing import DepotServer, metric

from .conftest import Closure, Nix  # noqa: TID252 - fixtures' helper types


def test_nix_copy_moves_the_counters(
    nix: Nix, make_closure: Callable[[], Closure], depot_server: DepotServer, tmp_path: Path
) -> None:
    built = make_closure()
    cache = depot_server.url + "/nix"
    before = httpx.get(depot_server.url + "/metrics").text
    nix("nix", "copy", "--to", f"{cache}?compression=none", built.app)
    copied = httpx.get(depot_server.url + "/metrics").text
    nix(
        "nix",
        "copy",
        "--no-check-sigs",
        "--from",
        cache,
        "--to",
        str(tmp_path / "fresh"),
        built.app,
    )
    after = httpx.get(depot_server.url + "/metrics").text

    def delta(a: str, b: str, name: str, **labels: str) -> float:
        return metric(b, name, **labels) - metric(a, name, **labels)

    nar_bytes = sum(int(nix.path_info(p)["narSize"]) for p in built.paths)  # type: ignore[call-overload]
    # Two store paths: two NARs stored (the narinfos and listings are metadata, not artifacts).
    assert delta(before, copied, "depot_artifacts_stored_total", ecosystem="nix") == 2
    assert delta(before, copied, "depot_bytes_received_total", ecosystem="nix") >= nar_bytes
    assert metric(copied, "depot_stored_objects", ecosystem="nix") == 2
    assert delta(copied, after, "depot_artifacts_served_total", ecosystem="nix") == 2
    assert delta(copied, after, "depot_bytes_served_total", ecosystem="nix") >= nar_bytes
    assert delta(before, after, "depot_upload_verification_failures_total", ecosystem="nix") == 0
