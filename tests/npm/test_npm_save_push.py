"""``depot npm save`` from one depot and ``depot npm push`` into another, then npm installs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from depot.core.testing import DepotServer, free_port, run

from .conftest import Npm, make_tgz, publish_body  # noqa: TID252 - test helpers

#: name, version, extra manifest fields: a scoped package, ranges, a prerelease, optional and peers.
TREE: list[tuple[str, str, dict[str, Any]]] = [
    ("@demo/core", "1.0.0", {}),
    ("@demo/core", "1.4.2", {}),
    ("@demo/core", "2.0.0-beta.1", {}),
    ("leftpad", "0.1.0", {}),
    ("leftpad", "0.1.7", {}),
    ("leftpad", "1.0.0", {}),
    ("opt-native", "3.0.0", {}),
    ("react-ish", "18.2.0", {}),
    (
        "plugin",
        "1.0.0",
        {"peerDependencies": {"react-ish": ">=18"}, "dependencies": {"leftpad": "~0.1.0"}},
    ),
    ("beta-lib", "2.0.0-beta.1", {"dependencies": {"@demo/core": "^2.0.0-beta.1"}}),
    (
        "app",
        "1.0.0",
        {
            "dependencies": {
                "@demo/core": "^1.0.0",
                "plugin": "1.x",
                "pad": "npm:leftpad@^1.0.0",
                "beta-lib": "2.0.0-beta.1",
            },
            "optionalDependencies": {"opt-native": ">=3.0.0 <4"},
        },
    ),
]


def publish_tree(server: DepotServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        for name, version, fields in TREE:
            manifest = {"name": name, "version": version, **fields}
            tgz = make_tgz(name, version, manifest=manifest)
            body = publish_body(name, version, tgz)
            body["versions"][version].update(fields)
            tag = "beta" if "-" in version else "latest"
            body["dist-tags"] = {tag: version}
            escaped = name.replace("/", "%2f")
            response = client.put(f"/npm/{escaped}", json=body)
            assert response.status_code == 201, response.text


def depot(*args: str, check: bool = True) -> Any:
    return run([sys.executable, "-m", "depot.core", *args], check=check)


def saved_versions(directory: Path) -> set[str]:
    root = directory / "npm" / "versions"
    return {f"{p.parent.relative_to(root).as_posix()}@{p.stem}" for p in root.rglob("*.json")}


EXPECTED = {
    "app@1.0.0",
    "@demo/core@1.4.2",
    "@demo/core@2.0.0-beta.1",
    "plugin@1.0.0",
    "leftpad@0.1.7",
    "leftpad@1.0.0",
    "react-ish@18.2.0",
    "opt-native@3.0.0",
    "beta-lib@2.0.0-beta.1",
}


@pytest.fixture
def first(make_depot_server: Callable[..., DepotServer]) -> DepotServer:
    server = make_depot_server()
    publish_tree(server)
    return server


def test_save_from_one_depot_push_into_another_and_install(
    first: DepotServer, make_depot_server: Callable[..., DepotServer], npm: Npm, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    result = depot("npm", "save", "--dir", str(storage), "--registry", first.url + "/npm", "app")
    assert "saved 9 package versions" in result.stderr
    assert saved_versions(storage) == EXPECTED
    again = depot("npm", "save", "--dir", str(storage), "--registry", first.url + "/npm", "app")
    assert "saved 0 package versions" in again.stderr and "9 already saved" in again.stderr

    second = make_depot_server()
    pushed = depot("npm", "push", second.url, "--dir", str(storage))
    assert "pushed 9 package versions" in pushed.stderr
    tags = httpx.get(second.url + "/npm/-/package/@demo%2fcore/dist-tags").json()
    assert tags == {"latest": "1.4.2", "beta": "2.0.0-beta.1"}
    resumed = depot("npm", "push", second.url, "--dir", str(storage))
    assert "pushed 0 package versions" in resumed.stderr and "9 already there" in resumed.stderr

    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "project", "version": "0.0.0"}))
    npm(second.url + "/npm/", "install", "app", cwd=project)
    lock = json.loads((project / "package-lock.json").read_text())
    installed = {
        f"{entry.get('name') or path.rsplit('node_modules/', 1)[1]}@{entry['version']}"
        for path, entry in lock["packages"].items()
        if path
    }
    assert installed == EXPECTED
    assert all(e["resolved"].startswith(second.url) for p, e in lock["packages"].items() if p)

    # The lock file alone is enough to save the same set again.
    from_lock = tmp_path / "from-lock"
    depot(
        "npm",
        "save",
        "--dir",
        str(from_lock),
        "--registry",
        second.url + "/npm",
        str(project / "package-lock.json"),
    )
    assert saved_versions(from_lock) == EXPECTED


def test_no_peer_leaves_peer_dependencies_out(first: DepotServer, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    depot(
        "npm",
        "save",
        "--no-peer",
        "--dir",
        str(storage),
        "--registry",
        first.url + "/npm",
        "plugin@^1",
    )
    assert saved_versions(storage) == {"plugin@1.0.0", "leftpad@0.1.7"}


def test_specs_from_stdin_with_ranges_tags_and_aliases(first: DepotServer, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    specs = "leftpad@0.1.0 - 0.1.5\n@demo/core@beta\nalias@npm:leftpad@>=1\n"
    run(
        [
            sys.executable,
            "-m",
            "depot.core",
            "npm",
            "save",
            "--stdin",
            "--dir",
            str(storage),
            "--registry",
            first.url + "/npm",
        ],
        input=specs,
    )
    assert saved_versions(storage) == {"leftpad@0.1.0", "@demo/core@2.0.0-beta.1", "leftpad@1.0.0"}


def test_a_missing_package_fails_in_one_line_and_keeps_what_was_saved(
    first: DepotServer, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    result = depot(
        "npm",
        "save",
        "--dir",
        str(storage),
        "--registry",
        first.url + "/npm",
        "leftpad@1",
        "no-such-package",
        check=False,
    )
    assert result.returncode == 1
    assert "no-such-package: not found" in result.stderr and "Traceback" not in result.stderr
    assert saved_versions(storage) == {"leftpad@1.0.0"}


def test_an_unreachable_registry_fails_in_one_line(tmp_path: Path) -> None:
    registry = f"http://127.0.0.1:{free_port()}/npm"
    result = depot(
        "npm", "save", "--dir", str(tmp_path / "s"), "--registry", registry, "express", check=False
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "cannot reach" in errors[0] and "express" in errors[0]
    assert "Traceback" not in result.stderr


def test_push_of_a_tampered_tarball_fails_and_exits_non_zero(
    first: DepotServer, make_depot_server: Callable[..., DepotServer], tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    depot("npm", "save", "--dir", str(storage), "--registry", first.url + "/npm", "leftpad@1")
    tarball = storage / "npm" / "tarballs" / "leftpad" / "leftpad-1.0.0.tgz"
    tarball.write_bytes(
        make_tgz("leftpad", "1.0.0", manifest={"name": "leftpad", "version": "1.0.0", "x": 1})
    )
    second = make_depot_server()
    result = depot("npm", "push", second.url, "--dir", str(storage), check=False)
    assert result.returncode == 1 and "leftpad@1.0.0" in result.stderr
    assert httpx.get(second.url + "/npm/leftpad").status_code == 404


@pytest.mark.network
def test_save_express_from_the_public_registry(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    result = depot("npm", "save", "--dir", str(storage), "express@4")
    assert "0 failed" in result.stderr
    names = {v.rsplit("@", 1)[0] for v in saved_versions(storage)}
    assert {"express", "body-parser", "accepts", "debug"} <= names
