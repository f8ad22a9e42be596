"""Shared fixtures: the core's pytest plugin (a real ``depot serve``, an in-process app)."""

import os

import pytest

pytest_plugins = ["depot.core.testing", "depot.core.testing_services"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("DEPOT_TEST_NETWORK") == "1":
        return
    skip = pytest.mark.skip(reason="reaches the public registries; set DEPOT_TEST_NETWORK=1")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)
