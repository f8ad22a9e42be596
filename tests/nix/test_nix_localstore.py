"""``depot serve --nix-local-store``: the host's own Nix store served read-only, like nix-serve.

Closures are built with the real nix into the machine's /nix/store; depot reads Nix's database
read-only and serialises NARs on the fly; the real nix substitutes from it with depot's key
trusted (``require-sigs = true``, no ``--no-check-sigs``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import lzma
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from depot.core import create_app
from depot.core.testing import DepotServer
from depot.nix import nardump, narinfo, nixbase32
from depot.nix.localstore import LocalStore, NixDatabase, PathInfoCommand
from depot.nix.nar import validate
from depot.nix.signing import SecretKey

from .conftest import Nix, start_signing_depot  # noqa: TID252 - fixtures' helper types
from .test_nix_cache import chroot_path, same_tree  # noqa: TID252

# `tool` has an executable, a symlink inside the path, one to /etc/passwd (outside the store,
# served as a symlink and never followed), an empty file and directory, and names whose byte
# order differs from other orders (upper case, '-' and '.'); `app` refers to `tool`.
LOCAL_CLOSURE_NIX = """
let
  tool = derivation {
    name = "depot-local-tool-NONCE";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p $out/bin $out/share/empty-dir $out/order
      printf '#!/bin/sh\\necho tool NONCE\\n' > $out/bin/tool
      /bin/chmod +x $out/bin/tool
      /bin/ln -s bin/tool $out/tool-link
      /bin/ln -s /etc/passwd $out/passwd-link
      : > $out/share/empty-file
      for n in b B a-b a.b a _x Z 0; do echo $n > $out/order/$n; done
      /usr/bin/head -c 3000000 /dev/urandom > $out/share/blob
    '' ];
  };
in derivation {
  name = "depot-local-app-NONCE";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  inherit tool;
  args = [ "-c" "/bin/mkdir $out; echo $tool > $out/tool-path" ];
}
"""


@dataclass
class LocalClosure:
    app: str
    tool: str

    @property
    def paths(self) -> list[str]:
        return [self.tool, self.app]


def hash_part(path: str) -> str:
    return Path(path).name[:32]


def nix_dump(path: str) -> bytes:
    return subprocess.run(["nix-store", "--dump", path], capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def local_closure(tmp_path_factory: pytest.TempPathFactory) -> LocalClosure:
    tmp = tmp_path_factory.mktemp("local-closure")
    expression = tmp / "closure.nix"
    expression.write_text(LOCAL_CLOSURE_NIX.replace("NONCE", secrets.token_hex(6)))
    builder = Nix(tmp / "home")
    app = builder("nix-build", str(expression), "--no-out-link").stdout.strip()
    tool = (Path(app) / "tool-path").read_text().strip()
    return LocalClosure(app, tool)


@pytest.fixture(scope="module")
def local_depot(
    tmp_path_factory: pytest.TempPathFactory, signing_key: SecretKey
) -> Iterator[DepotServer]:
    """``depot serve --nix-local-store --private-key KEY``: the bare flag means the root ``/``."""
    server = start_signing_depot(
        tmp_path_factory.mktemp("local-depot"), signing_key, "--nix-local-store"
    )
    yield server
    server.stop()


def test_nix_copy_from_the_local_store_with_depots_key_trusted(
    nix: Nix,
    local_closure: LocalClosure,
    local_depot: DepotServer,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    cache = f"{local_depot.url}/nix"
    fresh = tmp_path / "fresh"
    trusted = ["--option", "trusted-public-keys", str(signing_key.public_key())]
    nix("nix", "copy", *trusted, "--from", cache, "--to", str(fresh), local_closure.app)

    for path in local_closure.paths:  # the reference came along
        assert same_tree(Path(path), chroot_path(fresh, path))
    tool = chroot_path(fresh, local_closure.tool)
    assert (tool / "bin" / "tool").stat().st_mode & 0o100
    assert os.readlink(tool / "tool-link") == "bin/tool"
    assert os.readlink(tool / "passwd-link") == "/etc/passwd"
    assert nix.path_info(local_closure.app, store=str(fresh))["references"] == [local_closure.tool]
    assert "from database /nix/var/nix/db/db.sqlite (read-only)" in local_depot.log()


def test_narinfo_carries_what_nix_registered_and_depots_signature(
    nix: Nix, local_closure: LocalClosure, local_depot: DepotServer, signing_key: SecretKey
) -> None:
    registered = nix.path_info(local_closure.app)
    text = httpx.get(f"{local_depot.url}/nix/{hash_part(local_closure.app)}.narinfo").text
    info = narinfo.parse(text)
    assert info.store_path == local_closure.app
    assert info.compression == "none" and info.file_hash is None
    assert info.nar_size == registered["narSize"]
    assert info.references == (Path(local_closure.tool).name,)
    assert info.deriver == Path(str(registered["deriver"])).name
    assert info.verify_signature(signing_key.public_key())


@pytest.mark.parametrize("which", ["app", "tool"])
def test_nar_bytes_equal_nix_store_dump(
    which: str, local_closure: LocalClosure, local_depot: DepotServer
) -> None:
    path = getattr(local_closure, which)
    cache = f"{local_depot.url}/nix"
    info = narinfo.parse(httpx.get(f"{cache}/{hash_part(path)}.narinfo").text)
    response = httpx.get(f"{cache}/{info.url}")
    expected = nix_dump(path)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(expected)
    assert response.content == expected
    # A resumed download (Range) gets the rest of the same bytes.
    middle = len(expected) // 2 + 3
    resumed = httpx.get(f"{cache}/{info.url}", headers={"Range": f"bytes={middle}-"})
    assert resumed.status_code == 206 and resumed.content == expected[middle:]
    # The listing is the one depot derives from an uploaded NAR of the same path.
    listing = httpx.get(f"{cache}/{hash_part(path)}.ls")
    assert listing.status_code == 200 and listing.text == validate(expected)[2]


def test_a_symlink_out_of_the_store_is_served_as_a_symlink(
    nix: Nix, local_closure: LocalClosure, local_depot: DepotServer
) -> None:
    listing = httpx.get(f"{local_depot.url}/nix/{hash_part(local_closure.tool)}.ls").json()
    entries = listing["root"]["entries"]
    assert entries["passwd-link"] == {"type": "symlink", "target": "/etc/passwd"}
    # The NAR never holds the file the link points to.
    passwd = Path("/etc/passwd").read_bytes()
    info = narinfo.parse(
        httpx.get(f"{local_depot.url}/nix/{hash_part(local_closure.tool)}.narinfo").text
    )
    assert passwd not in httpx.get(f"{local_depot.url}/nix/{info.url}").content


def test_paths_that_are_not_valid_in_the_store_are_404(
    local_closure: LocalClosure, local_depot: DepotServer
) -> None:
    cache = f"{local_depot.url}/nix"
    absent = "0" * 31 + "1"
    # A directory in /nix/store that Nix never registered (as while a build runs) is not served.
    nix32 = "0123456789abcdfghijklmnpqrsvwxyz"
    unregistered = Path(
        f"/nix/store/{''.join(secrets.choice(nix32) for _ in range(32))}-half-built"
    )
    unregistered.mkdir()
    try:
        (unregistered / "file").write_text("not registered")
        for missing in (absent, unregistered.name[:32]):
            assert httpx.get(f"{cache}/{missing}.narinfo").status_code == 404
            assert httpx.get(f"{cache}/{missing}.ls").status_code == 404
            assert httpx.get(f"{cache}/nar/local/{missing}/{'0' * 52}.nar").status_code == 404
    finally:
        shutil.rmtree(unregistered)
    # A NAR URL whose NarHash is not the path's (rebuilt since the narinfo was read) is 404 too.
    assert (
        httpx.get(f"{cache}/nar/local/{hash_part(local_closure.app)}/{'0' * 52}.nar").status_code
        == 404
    )


def test_an_uploaded_narinfo_wins_over_the_local_store(
    nix: Nix, tmp_path: Path, local_depot: DepotServer, signing_key: SecretKey
) -> None:
    expression = tmp_path / "up.nix"
    expression.write_text(LOCAL_CLOSURE_NIX.replace("NONCE", secrets.token_hex(6)))
    app = nix("nix-build", str(expression), "--no-out-link").stdout.strip()
    cache = f"{local_depot.url}/nix"
    before = narinfo.parse(httpx.get(f"{cache}/{hash_part(app)}.narinfo").text)
    assert before.compression == "none" and before.url.startswith("nar/local/")

    # `nix copy --to` would skip the path (depot already has it), so upload as it would: the NAR,
    # then the narinfo naming it.
    nar = lzma.compress(nix_dump(app))
    file_hash = nixbase32.encode(hashlib.sha256(nar).digest())
    url = f"nar/{file_hash}.nar.xz"
    assert httpx.put(f"{cache}/{url}", content=nar).status_code == 200
    uploaded = dataclasses.replace(before, url=url, compression="xz", signatures=())
    put = httpx.put(f"{cache}/{hash_part(app)}.narinfo", content=narinfo.format(uploaded))
    assert put.status_code == 200, put.text
    after = narinfo.parse(httpx.get(f"{cache}/{hash_part(app)}.narinfo").text)
    assert after.compression == "xz" and not after.url.startswith("nar/local/")
    assert after.nar_hash == before.nar_hash
    assert after.verify_signature(signing_key.public_key())
    assert httpx.get(f"{cache}/{after.url}").content == nar


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_store_under_another_root(
    how: str, nix: Nix, tmp_path: Path, signing_key: SecretKey
) -> None:
    """``--nix-local-store ROOT`` (or ``DEPOT_NIX_LOCAL_STORE=ROOT``) serves a chroot store."""
    root = tmp_path / "root"
    source = tmp_path / "source"
    source.mkdir()
    (source / "only-in-root").write_text(f"nonce {secrets.token_hex(8)}\n")
    added = nix("nix", "store", "add-path", "--store", str(root), str(source)).stdout.strip()
    assert not Path(added).exists()  # only in the chroot store, not on the host
    key_file = tmp_path / "secret.key"
    key_file.write_text(str(signing_key))
    args = ["--private-key", str(key_file)]
    env = {}
    if how == "flag":
        args += ["--nix-local-store", str(root)]
    else:
        env["DEPOT_NIX_LOCAL_STORE"] = str(root)
    server = DepotServer(tmp_path / "depot", *args, env=env).start()
    try:
        info = narinfo.parse(httpx.get(f"{server.url}/nix/{hash_part(added)}.narinfo").text)
        assert info.store_path == added and info.ca and info.ca.startswith("fixed:r:sha256:")
        nar = httpx.get(f"{server.url}/nix/{info.url}").content
        expected = subprocess.run(
            ["nix", "--extra-experimental-features", "nix-command", "store", "dump-path",
             "--store", str(root), added],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert nar == expected
        fresh = tmp_path / "fresh"
        trusted = ["--option", "trusted-public-keys", str(signing_key.public_key())]
        nix("nix", "copy", *trusted, "--from", f"{server.url}/nix", "--to", str(fresh), added)
        assert same_tree(source, chroot_path(fresh, added))
    finally:
        server.stop()


async def test_cache_info_priority_and_want_mass_query(tmp_path: Path) -> None:
    app = create_app(store_path=tmp_path / "store", nix_priority=42, nix_want_mass_query=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depot.test") as client:
        text = (await client.get("/nix/nix-cache-info")).text
    await app.state.depot.shutdown()
    assert "Priority: 42\n" in text and "WantMassQuery: 0\n" in text


def test_nix_path_info_fallback_agrees_with_the_database(local_closure: LocalClosure) -> None:
    """Where the database is unreadable depot asks ``nix path-info``: the same narinfo."""
    database = NixDatabase(Path("/nix/var/nix/db/db.sqlite"))
    command = PathInfoCommand(Path("/"), shutil.which("nix") or "nix")
    drv = subprocess.run(
        ["nix-store", "--query", "--deriver", local_closure.app], capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    for path in [*local_closure.paths, drv]:
        assert asyncio.run(command.lookup(hash_part(path))) == database.lookup(hash_part(path))
    assert asyncio.run(command.lookup("0" * 31 + "1")) is None
    database.close()


def test_the_database_is_opened_read_only(tmp_path: Path) -> None:
    """A store whose database cannot be opened read-only falls back (and says so), never writes."""
    root = tmp_path / "root"
    (root / "nix/store").mkdir(parents=True)
    store = LocalStore(root)
    assert store.source.startswith("nix path-info (database")
    assert not (root / "nix/var/nix/db/db.sqlite").exists()


def test_nar_writer_refuses_special_files_and_never_follows_symlinks(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link").symlink_to("/etc/passwd")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        nar = b"".join(nardump.dump(fd, "tree"))
        assert b"/etc/passwd" in nar and Path("/etc/passwd").read_bytes() not in nar
        assert validate(nar)[0] == len(nar)
        os.mkfifo(tree / "fifo")
        with pytest.raises(nardump.NarDumpError):
            b"".join(nardump.dump(fd, "tree"))
    finally:
        os.close(fd)
