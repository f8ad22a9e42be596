"""``depot python save`` from one depot, ``depot python push`` into another, install from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from depot.core.testing import DepotServer


def saved(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_save_then_push_then_install_from_the_second_depot(
    published: DepotServer,
    make_depot_server: Callable[..., DepotServer],
    clients,
    tmp_path: Path,
    list_installed: Callable[[Path], dict[str, str]],
) -> None:
    storage = tmp_path / "storage"
    index = f"{published.url}/python/simple/"
    save = clients.depot(
        "python", "save", "alpha[fancy]", "--dir", str(storage), "--index-url", index
    )
    assert saved(storage) == [
        "python/alpha/alpha-1.0-py3-none-any.whl", "python/beta-pkg/Beta.Pkg-1.1-py3-none-any.whl",
        "python/delta/delta-1.0-py3-none-any.whl", "python/gamma/gamma-1.0-py3-none-any.whl",
    ]  # fmt: skip
    assert "4 saved" in save.stderr and "[4/4]" in save.stderr
    again = clients.depot(
        "python", "save", "alpha[fancy]", "--dir", str(storage), "--index-url", index
    )
    assert "0 saved" in again.stderr and "4 already there" in again.stderr

    second = make_depot_server()
    pushed = clients.depot("python", "push", second.url, "--dir", str(storage))
    assert "4 pushed" in pushed.stderr and "0 failed" in pushed.stderr
    target, _ = clients.pip_install(f"{second.url}/python/simple/", "alpha[fancy]")
    assert list_installed(target) == {
        "alpha": "1.0",
        "beta-pkg": "1.1",
        "gamma": "1.0",
        "delta": "1.0",
    }
    # The second depot extracted core metadata itself: pip used it there too.
    assert 'alpha-1.0-py3-none-any.whl.metadata", "status": 200' in second.log()

    rerun = clients.depot("python", "push", second.url, "--dir", str(storage))
    assert "0 pushed" in rerun.stderr and "4 already there" in rerun.stderr


def test_save_for_another_python_version_adds_its_closure(
    published: DepotServer, clients, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    clients.depot(
        "python", "save", "Beta.Pkg", "--dir", str(storage),
        "--index-url", f"{published.url}/python/simple/", "--python-version", "3.7",
    )  # fmt: skip
    # On 3.7 Beta.Pkg 1.1 cannot install (its delta needs Python >= 3.8), so 1.0 is saved too.
    assert saved(storage) == [
        "python/beta-pkg/Beta.Pkg-1.0-py3-none-any.whl", "python/beta-pkg/Beta.Pkg-1.1-py3-none-any.whl",
        "python/delta/delta-1.0-py3-none-any.whl",
    ]  # fmt: skip


def test_save_reads_requirements_from_stdin_and_files(
    published: DepotServer, clients, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# pinned\ngamma==1.0\n")
    clients.depot(
        "python", "save", "--stdin", "-r", str(requirements), "--dir", str(storage),
        "--index-url", f"{published.url}/python/simple/", input="delta ; python_version >= '3'\n",
    )  # fmt: skip
    assert saved(storage) == [
        "python/delta/delta-1.0-py3-none-any.whl",
        "python/gamma/gamma-1.0-py3-none-any.whl",
    ]


def test_unresolvable_requirement_is_one_line_and_saves_nothing(
    published: DepotServer, clients, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    result = clients.depot(
        "python", "save", "gamma", "no-such-project==1.0", "--dir", str(storage),
        "--index-url", f"{published.url}/python/simple/", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: cannot resolve for this interpreter:")
    assert "no-such-project==1.0" in lines[-1] and "Traceback" not in result.stderr
    assert not storage.exists() or saved(storage) == []


def test_push_reports_failures_and_exits_non_zero(
    published: DepotServer, clients, tmp_path: Path, wheel_factory: Callable[..., Path]
) -> None:
    storage = tmp_path / "storage" / "python" / "gamma"
    storage.mkdir(parents=True)
    # Same filename as the published gamma, other bytes: the depot must keep its own.
    impostor = wheel_factory("gamma", "1.0")
    (storage / impostor.name).write_bytes(impostor.read_bytes())
    result = clients.depot(
        "python", "push", published.url, "--dir", str(tmp_path / "storage"), check=False
    )
    assert result.returncode == 1
    assert "holds different content" in result.stderr and "1 failed" in result.stderr


def test_push_to_an_unreachable_depot_fails_cleanly(
    clients, tmp_path: Path, wheel_factory: Callable[..., Path]
) -> None:
    storage = tmp_path / "storage" / "python" / "demo"
    storage.mkdir(parents=True)
    wheel = wheel_factory("demo", "1.0")
    (storage / wheel.name).write_bytes(wheel.read_bytes())
    result = clients.depot(
        "python", "push", "http://127.0.0.1:9", "--dir", str(tmp_path / "storage"), check=False
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "1 failed" in result.stderr


@pytest.mark.network
def test_save_from_pypi_then_install_from_depot_alone(
    make_depot_server: Callable[..., DepotServer],
    clients,
    tmp_path: Path,
    list_installed: Callable[[Path], dict[str, str]],
) -> None:
    storage = tmp_path / "storage"
    clients.depot("python", "save", "requests>=2.0.0", "flask==2.3.0", "--dir", str(storage))
    depot = make_depot_server()
    clients.depot("python", "push", depot.url, "--dir", str(storage))
    target, _ = clients.pip_install(
        f"{depot.url}/python/simple/", "requests>=2.0.0", "flask==2.3.0"
    )
    found = list_installed(target)
    assert found["flask"] == "2.3.0" and "requests" in found and "werkzeug" in found


TINY_BACKEND = '''
"""A PEP 517 build backend small enough for a test: packs top-level modules into a wheel."""
import base64, hashlib, os, tomllib, zipfile


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    stem = f"{project['name'].replace('-', '_')}-{project['version']}"
    members = {name: open(name).read() for name in os.listdir(".") if name.endswith(".py")}
    members[f"{stem}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {project['version']}\\n"
    )
    members[f"{stem}.dist-info/WHEEL"] = "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = []
    for name, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    members[f"{stem}.dist-info/RECORD"] = "\\n".join([*record, f"{stem}.dist-info/RECORD,,"]) + "\\n"
    filename = f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return filename
'''


def sdist_only_project(tmp_path: Path) -> Path:
    """``needs-build`` 1.0 as an sdist whose build backend (``tinybackend``) is on the index."""
    import io
    import tarfile

    files = {
        "pyproject.toml": '[build-system]\nrequires = ["tinybackend"]\nbuild-backend = "tinybackend"\n'
        '[project]\nname = "needs-build"\nversion = "1.0"\n',
        "needs_build.py": "BUILT = True\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: needs-build\nVersion: 1.0\n",
    }
    sdist = tmp_path / "needs_build-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name, text in files.items():
            info = tarfile.TarInfo(f"needs_build-1.0/{name}")
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    return sdist


def test_save_includes_what_an_sdist_needs_to_build(
    published: DepotServer,
    make_depot_server: Callable[..., DepotServer],
    clients,
    tmp_path: Path,
    wheel_factory: Callable[..., Path],
    list_installed: Callable[[Path], dict[str, str]],
) -> None:
    import httpx

    backend = wheel_factory("tinybackend", "1.0", files={"tinybackend.py": TINY_BACKEND})
    sdist = sdist_only_project(tmp_path)
    for project, path in (("tinybackend", backend), ("needs-build", sdist)):
        response = httpx.put(
            f"{published.url}/python/files/{project}/{path.name}", content=path.read_bytes()
        )
        assert response.status_code in (200, 201), response.text

    storage = tmp_path / "storage"
    clients.depot(
        "python",
        "save",
        "needs-build",
        "--dir",
        str(storage),
        "--index-url",
        f"{published.url}/python/simple/",
    )
    assert saved(storage) == [
        "python/needs-build/needs_build-1.0.tar.gz", "python/tinybackend/tinybackend-1.0-py3-none-any.whl",
    ]  # fmt: skip
    second = make_depot_server()
    clients.depot("python", "push", second.url, "--dir", str(storage))
    # pip builds the sdist in an isolated environment filled from the second depot alone.
    target, _ = clients.pip_install(f"{second.url}/python/simple/", "needs-build")
    assert list_installed(target) == {"needs-build": "1.0"}
    assert (target / "needs_build.py").read_text() == "BUILT = True\n"


def test_save_uses_only_the_index_given(
    published: DepotServer, clients, tmp_path: Path, wheel_factory: Callable[..., Path]
) -> None:
    # A machine-wide pip setting offering a newer gamma elsewhere must not leak into the closure.
    elsewhere = wheel_factory("gamma", "9.0").parent
    clients.env["PIP_FIND_LINKS"] = str(elsewhere)
    clients.env["PIP_EXTRA_INDEX_URL"] = elsewhere.as_uri()
    storage = tmp_path / "storage"
    clients.depot(
        "python", "save", "gamma", "--dir", str(storage), "--index-url", f"{published.url}/python/simple/"
    )  # fmt: skip
    assert saved(storage) == ["python/gamma/gamma-1.0-py3-none-any.whl"]


def test_save_refuses_a_file_whose_bytes_differ_from_the_index_hash(
    make_depot_server: Callable[..., DepotServer],
    clients,
    tmp_path: Path,
    wheel_factory: Callable[..., Path],
) -> None:
    import hashlib

    import httpx

    upstream = make_depot_server()
    wheel = wheel_factory("tampered", "1.0")
    httpx.put(f"{upstream.url}/python/files/tampered/{wheel.name}", content=wheel.read_bytes())
    # Rot the stored bytes behind the index's back: the page still lists the original sha256.
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    blob = upstream.store_path / "blobs" / "pypi" / "sha256" / sha256[:2] / sha256
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    storage = tmp_path / "storage"
    result = clients.depot(
        "python", "save", "tampered", "--dir", str(storage),
        "--index-url", f"{upstream.url}/python/simple/", check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "does not match the index" in result.stderr
    assert saved(storage) == []
