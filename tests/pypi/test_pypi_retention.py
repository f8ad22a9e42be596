"""``--cache-max-size`` over a PyPI pull-through cache, with the real pip.

The upstream is the module's depot holding the test projects (:mod:`conftest`), behind the
fault proxy as in :mod:`test_pypi_pullthrough`. Use is recorded in memory and written at
shutdown, so the test stops the caching depot, runs ``depot gc`` on its store, and starts a
depot on the same store again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from depot.core.testing import DepotServer, depot_gc
from depot.core.testing_upstream import FaultProxy

from .conftest import Clients, installed

EXPECTED = {"alpha": "1.0", "beta-pkg": "1.1", "delta": "1.0"}


@pytest.fixture
def proxy(published: DepotServer) -> Iterator[FaultProxy]:
    with FaultProxy(published.url) as running:
        yield running


def bulky_wheel(wheel_factory: Callable[..., Path], name: str, size: int) -> Path:
    """A wheel of about ``size`` bytes (hex of random bytes compresses to about half)."""
    module = name.replace("-", "_")
    return wheel_factory(name, "1.0", files={f"{module}.py": os.urandom(size).hex()})


def test_over_max_size_the_least_recently_used_are_evicted_and_fetched_again(
    published: DepotServer,
    proxy: FaultProxy,
    make_depot_server: Callable[..., DepotServer],
    clients: Clients,
    wheel_factory: Callable[..., Path],
) -> None:
    clients.twine_upload(published.url, [bulky_wheel(wheel_factory, "pt-bulky", 200_000)])
    args = ("--pypi-upstream", proxy.url + "/python/simple/")
    caching = make_depot_server(*args)
    index = caching.url + "/python/simple/"
    # Uploaded here, larger than the whole cache may be: never counted, never evicted.
    clients.twine_upload(caching.url, [bulky_wheel(wheel_factory, "pt-own", 300_000)])

    clients.pip_install(index, "alpha")
    clients.pip_install(index, "pt-bulky")
    target, _ = clients.pip_install(index, "alpha")  # used again: pt-bulky is now the oldest
    assert installed(target) == EXPECTED
    caching.stop()  # writes the recorded uses

    # About 200 KB cached for pt-bulky, a few KB for alpha's closure: pt-bulky's wheel goes
    # (with its page and core metadata, used at the same moment), alpha's closure stays
    # (what the prefetch fetched and no install used may go before them); pt-own is not cache.
    report = depot_gc(caching, "--cache-max-size", "100K").stdout
    evicted = re.search(r"pypi: evicted \d+ cached items? \(([\d.]+) KiB\)", report)
    assert evicted is not None and float(evicted[1]) > 100, report  # the wheel went

    caching = make_depot_server(*args, store_path=caching.store_path)
    index = caching.url + "/python/simple/"
    wheel = r"pt_bulky-1\.0-.*\.whl$"
    before, wheels_before = proxy.count(), proxy.count(wheel)
    target, _ = clients.pip_install(index, "pt-bulky")  # fetched again, and it works
    assert installed(target) == {"pt-bulky": "1.0"}
    # Its wheel again (with its page and core metadata if they went too), nothing else.
    assert proxy.count(wheel) - wheels_before == 1
    assert proxy.count() - before <= 3

    proxy.stop()  # upstream gone: what is held, and what is uploaded here, still installs
    target, _ = clients.pip_install(index, "alpha")
    assert installed(target) == EXPECTED
    target, _ = clients.pip_install(index, "pt-own")
    assert installed(target) == {"pt-own": "1.0"}
