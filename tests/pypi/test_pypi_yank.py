"""Yanking releases (PEP 592) with ``depot python yank`` and the HTTP API, seen by pip and uv.

The depot holds the test projects (conftest), among them ``Beta.Pkg`` 1.0 and 1.1 (1.1 depends on
``delta``, whose 1.0 is installable). Each test starts from nothing yanked and yanks what it needs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer, SshKey, run, start_depot_with_auth
from depot.core.tokens import mint_token

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
REASON = "1.1 corrupts the cache, use 1.0"


def release_files(dists: Path) -> list[Path]:
    return sorted([*dists.glob("Beta.Pkg-*"), *dists.glob("delta-1.0*")])


@pytest.fixture(scope="module")
def depot(published: DepotServer) -> DepotServer:
    return published


@pytest.fixture(autouse=True)
def nothing_yanked(depot: DepotServer) -> Iterator[None]:
    yield
    for version in ("1.0", "1.1"):
        httpx.delete(yank_url(depot, "beta-pkg", version)).raise_for_status()


def yank_url(server: DepotServer, project: str, version: str) -> str:
    return f"{server.url}/python/-/yank/{project}/{version}"


def index(server: DepotServer) -> str:
    return f"{server.url}/python/simple/"


def page(server: DepotServer) -> httpx.Response:
    return httpx.get(index(server) + "beta-pkg/", headers=JSON)


def yanked_by_file(server: DepotServer) -> dict[str, object]:
    return {entry["filename"]: entry["yanked"] for entry in page(server).json()["files"]}


def test_depot_python_yank_marks_every_file_of_the_release(depot: DepotServer, clients) -> None:
    done = clients.depot("python", "yank", depot.url, "Beta.Pkg", "1.1", "--reason", REASON)
    assert done.stdout.strip() == f"yanked beta-pkg 1.1 (2 files): {REASON}"
    assert yanked_by_file(depot) == {
        "Beta.Pkg-1.0-py3-none-any.whl": False,
        "Beta.Pkg-1.0.tar.gz": False,
        "Beta.Pkg-1.1-py3-none-any.whl": REASON,
        "Beta.Pkg-1.1.tar.gz": REASON,
    }
    html = httpx.get(index(depot) + "beta-pkg/", headers={"Accept": "text/html"}).text
    yanked_links = re.findall(r'<a [^>]*data-yanked="([^"]*)"[^>]*>([^<]+)</a>', html)
    assert sorted(yanked_links) == [
        (REASON, "Beta.Pkg-1.1-py3-none-any.whl"), (REASON, "Beta.Pkg-1.1.tar.gz"),
    ]  # fmt: skip


def test_pip_skips_a_yanked_release_unless_it_is_pinned(
    depot: DepotServer, clients, list_installed: Callable[[Path], dict[str, str]]
) -> None:
    clients.depot("python", "yank", depot.url, "beta-pkg", "1.1", "--reason", REASON)
    target, _ = clients.pip_install(index(depot), "Beta.Pkg")
    assert list_installed(target) == {"beta-pkg": "1.0"}
    # PEP 592: an exact pin still installs the yanked release, with a warning giving the reason.
    target, pinned = clients.pip_install(index(depot), "Beta.Pkg==1.1")
    assert list_installed(target) == {"beta-pkg": "1.1", "delta": "1.0"}
    assert "yanked" in pinned.stderr and REASON in pinned.stderr


def test_uv_skips_a_yanked_release_unless_it_is_pinned(
    depot: DepotServer, clients, list_installed: Callable[[Path], dict[str, str]]
) -> None:
    clients.depot("python", "yank", depot.url, "beta-pkg", "1.1", "--reason", REASON)
    assert list_installed(clients.uv_install(index(depot), "Beta.Pkg")) == {"beta-pkg": "1.0"}
    pinned = clients.uv_install(index(depot), "Beta.Pkg==1.1")
    assert list_installed(pinned) == {"beta-pkg": "1.1", "delta": "1.0"}


def test_un_yank_makes_pip_pick_the_newer_release_again(
    depot: DepotServer, clients, list_installed: Callable[[Path], dict[str, str]]
) -> None:
    clients.depot("python", "yank", depot.url, "beta-pkg", "1.1")
    target, _ = clients.pip_install(index(depot), "Beta.Pkg")
    assert list_installed(target) == {"beta-pkg": "1.0"}
    done = clients.depot("python", "yank", depot.url, "beta-pkg", "1.1", "--undo")
    assert done.stdout.strip() == "un-yanked beta-pkg 1.1 (2 files)"
    assert set(yanked_by_file(depot).values()) == {False}
    target, _ = clients.pip_install(index(depot), "Beta.Pkg")
    assert list_installed(target) == {"beta-pkg": "1.1", "delta": "1.0"}


def test_every_yank_change_gives_the_page_a_new_etag(depot: DepotServer) -> None:
    """pip revalidates its cached page with If-None-Match: a 304 would hide the change."""
    seen = [page(depot).headers["etag"]]
    changes = [
        ("POST", "1.1", {"reason": "first"}),
        ("POST", "1.1", {"reason": "second"}),  # same yanked count, another reason
        ("DELETE", "1.1", None),
        ("POST", "1.0", None),  # one release yanked as another was un-yanked
    ]
    for method, version, body in changes:
        url = yank_url(depot, "beta-pkg", version)
        assert httpx.request(method, url, json=body).status_code == 200
        response = page(depot)
        # The ETag is derived from the page: un-yanking may bring back an earlier page and its
        # ETag (correctly: a client holding that page holds the current one), never the last one.
        assert response.headers["etag"] != seen[-1]
        revalidated = httpx.get(
            index(depot) + "beta-pkg/", headers={**JSON, "If-None-Match": seen[-1]}
        )
        assert revalidated.status_code == 200
        seen.append(response.headers["etag"])
    assert yanked_by_file(depot)["Beta.Pkg-1.0-py3-none-any.whl"] is True


def test_yanking_twice_is_harmless_and_keeps_the_reason(depot: DepotServer, clients) -> None:
    first = httpx.post(yank_url(depot, "Beta.Pkg", "1.1.0"), data={"reason": "broken\n wheel"})
    assert first.json() == {
        "project": "beta-pkg", "version": "1.1", "yanked": True, "reason": "broken wheel",
        "files": ["Beta.Pkg-1.1-py3-none-any.whl", "Beta.Pkg-1.1.tar.gz"], "changed": 2,
    }  # fmt: skip
    etag = page(depot).headers["etag"]
    again = clients.depot("python", "yank", depot.url, "beta-pkg", "1.1")
    assert again.stdout.strip() == "beta-pkg 1.1 was already yanked (2 files): broken wheel"
    assert page(depot).headers["etag"] == etag
    undo = clients.depot("python", "yank", depot.url, "beta-pkg", "1.1", "--undo")
    assert undo.stdout.strip() == "un-yanked beta-pkg 1.1 (2 files)"
    undo = clients.depot("python", "yank", depot.url, "beta-pkg", "1.1", "--undo")
    assert undo.stdout.strip() == "beta-pkg 1.1 was not yanked (2 files)"


@pytest.mark.parametrize(
    ("project", "version", "status", "reason"),
    [("beta-pkg", "9.9", 404, "project beta-pkg has no version 9.9"),
     ("no-such-project", "1.0", 404, "project no-such-project not found"),
     ("beta-pkg", "not!a!version", 400, "'not!a!version' is not a valid version (PEP 440)")],
)  # fmt: skip
def test_unknown_releases_are_refused_and_nothing_changes(
    depot: DepotServer, project: str, version: str, status: int, reason: str
) -> None:
    before = page(depot)
    response = httpx.post(yank_url(depot, project, version), json={"reason": "x"})
    assert (response.status_code, response.text.strip()) == (status, reason)
    after = page(depot)
    assert after.headers["etag"] == before.headers["etag"] and after.json() == before.json()


@pytest.mark.parametrize(
    ("body", "reason"),
    [({"json": ["x"]}, 'the JSON body must be an object: {"reason": "..."}'),
     ({"json": {"reason": 7}}, "the reason must be a string"),
     ({"json": {"reason": "x" * 1001}}, "the reason is longer than 1000 characters"),
     ({"content": b"broken", "headers": {"Content-Type": "text/plain"}},
      'send the reason as JSON {"reason": "..."} or as the form field reason=..., not text/plain')],
)  # fmt: skip
def test_a_malformed_reason_is_refused_and_nothing_changes(
    depot: DepotServer, body: dict, reason: str
) -> None:
    before = page(depot).headers["etag"]
    response = httpx.post(yank_url(depot, "beta-pkg", "1.1"), **body)
    assert (response.status_code, response.text.strip()) == (400, reason)
    assert page(depot).headers["etag"] == before


def test_the_cli_reports_an_unknown_version_in_one_line(depot: DepotServer, clients) -> None:
    refused = clients.depot("python", "yank", depot.url, "beta-pkg", "9.9", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"Error: POST {yank_url(depot, 'beta-pkg', '9.9')}: HTTP 404: "
        "project beta-pkg has no version 9.9"
    ]
    assert "Traceback" not in refused.stderr


def test_a_file_uploaded_to_a_yanked_release_is_yanked_too(
    make_depot_server: Callable[..., DepotServer], dists: Path, clients
) -> None:
    server = make_depot_server()
    clients.twine_upload(server.url, [dists / "Beta.Pkg-1.1-py3-none-any.whl"])
    clients.depot("python", "yank", server.url, "beta-pkg", "1.1", "--reason", REASON)
    clients.twine_upload(server.url, [dists / "Beta.Pkg-1.1.tar.gz"])
    assert set(yanked_by_file(server).values()) == {REASON}


# -- with --auth-file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def writer(make_ssh_key) -> SshKey:
    return make_ssh_key("ed25519")


@pytest.fixture(scope="module")
def reader(make_ssh_key) -> SshKey:
    return make_ssh_key("ecdsa-p256")


@pytest.fixture
def closed_depot(
    tmp_path: Path, writer: SshKey, reader: SshKey, dists: Path
) -> Iterator[DepotServer]:
    """Reads and writes need a token; the release is uploaded with the writer's."""
    server = start_depot_with_auth(tmp_path, writer.auth_line("w"), reader.auth_line("r"))
    twine = str(Path(sys.executable).parent / "twine")
    password = token(writer, server)
    run([twine, "upload", "--repository-url", f"{server.url}/python/", "-u", "__token__",
         "-p", password, "--non-interactive", *map(str, release_files(dists))])  # fmt: skip
    yield server
    server.stop()


def token(key: SshKey, server: DepotServer) -> str:
    return mint_token(audience=server.url, key_path=key.path)


def user_env(clients, tmp_path: Path, key: SshKey) -> dict[str, str]:
    """A user whose only SSH key is ``key`` (no agent, no ~/.ssh, no token in the environment)."""
    env = {**clients.env, "HOME": str(tmp_path / "home"), "DEPOT_KEY": str(key.path)}
    for name in ("SSH_AUTH_SOCK", "DEPOT_AUTH_TOKEN"):
        env.pop(name, None)
    return env


def closed_yanked(server: DepotServer, headers: dict[str, str]) -> dict[str, object]:
    response = httpx.get(f"{server.url}/python/simple/beta-pkg/", headers={**JSON, **headers})
    return {entry["filename"]: entry["yanked"] for entry in response.json()["files"]}


def test_a_read_key_cannot_yank_and_a_write_key_can(
    closed_depot: DepotServer, writer: SshKey, reader: SshKey, clients, tmp_path: Path
) -> None:
    url = yank_url(closed_depot, "beta-pkg", "1.1")
    as_reader = {"Authorization": f"Bearer {token(reader, closed_depot)}"}
    assert httpx.post(url, json={"reason": REASON}, headers=as_reader).status_code == 403
    assert httpx.post(url).status_code == 401

    refused = run(
        [sys.executable, "-m", "depot.core", "python", "yank", closed_depot.url, "beta-pkg", "1.1"],
        env=user_env(clients, tmp_path, reader), check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1 and "HTTP 403" in refused.stderr
    assert set(closed_yanked(closed_depot, as_reader).values()) == {False}

    done = run(
        [sys.executable, "-m", "depot.core", "python", "yank", closed_depot.url, "beta-pkg", "1.1",
         "--reason", REASON],
        env=user_env(clients, tmp_path, writer),
    )  # fmt: skip
    assert done.stdout.strip() == f"yanked beta-pkg 1.1 (2 files): {REASON}"
    assert closed_yanked(closed_depot, as_reader)["Beta.Pkg-1.1.tar.gz"] == REASON


def test_a_yank_on_one_replica_is_seen_at_once_on_the_other(
    make_replicas: Callable[..., list], dists: Path, clients
) -> None:
    """Replicas share PostgreSQL: a page the second one cached must not outlive the yank."""
    first, second = make_replicas(2)
    clients.twine_upload(first.url, release_files(dists))
    before = page(second)
    assert set(yanked_by_file(second).values()) == {False}
    clients.depot("python", "yank", first.url, "beta-pkg", "1.1", "--reason", REASON)
    after = page(second)
    assert after.headers["etag"] != before.headers["etag"]
    assert yanked_by_file(second)["Beta.Pkg-1.1-py3-none-any.whl"] == REASON
    clients.depot("python", "yank", second.url, "beta-pkg", "1.1", "--undo")
    assert set(yanked_by_file(first).values()) == {False}
