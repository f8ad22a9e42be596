"""The real nix client against a real depot: copy to it, substitute from it, signatures checked."""

from __future__ import annotations

import filecmp
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from depot.core.testing import DepotServer
from depot.nix.signing import SecretKey

from .conftest import Closure, Nix  # noqa: TID252 - fixtures' helper types


def same_tree(a: Path, b: Path) -> bool:
    """True when two directory trees hold the same names, contents and symlinks."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def chroot_path(store: Path, path: str) -> Path:
    return store / path.lstrip("/")


def sign_with_a_second_key(nix: Nix, cache: str, path: str, tmp_path: Path) -> SecretKey:
    """``nix store sign -r`` the closure of ``path`` in ``cache`` with a fresh second key."""
    second = SecretKey.generate("second-signer-1")
    (tmp_path / "second.key").write_text(str(second))
    nix(
        "nix",
        "store",
        "sign",
        "-r",
        "--store",
        cache,
        "--key-file",
        str(tmp_path / "second.key"),
        path,
    )
    return second


@pytest.mark.parametrize("compression", ["xz", "zstd", "bzip2", "none", "br"])
def test_copy_to_depot_and_back_with_signatures(
    compression: str,
    nix: Nix,
    make_closure: Callable[[], Closure],
    nix_depot: DepotServer,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    built = make_closure()
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", f"{cache}?compression={compression}", built.app)

    narinfo = httpx.get(f"{cache}/{Path(built.app).name[:32]}.narinfo").text
    assert f"Compression: {compression}" in narinfo
    assert f"Sig: {signing_key.name}:" in narinfo

    fresh = tmp_path / "fresh"
    trusted = ["--option", "trusted-public-keys", str(signing_key.public_key())]
    nix("nix", "copy", *trusted, "--from", cache, "--to", str(fresh), built.app)
    assert same_tree(Path(built.app), chroot_path(fresh, built.app))
    # The reference came along, executable bit and symlink intact.
    lib = chroot_path(fresh, built.lib)
    assert same_tree(Path(built.lib), lib)
    assert (lib / "bin" / "hello").stat().st_mode & 0o111
    assert (lib / "hello-link").is_symlink()
    assert nix.path_info(built.app, store=str(fresh))["references"] == sorted([built.lib])


def test_copy_from_depot_refused_without_a_trusted_key(
    nix: Nix, closure: Closure, nix_depot: DepotServer, tmp_path: Path
) -> None:
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", cache, closure.app)
    stranger = SecretKey.generate("someone-else-1").public_key()
    result = nix(
        "nix", "copy", "--option", "trusted-public-keys", str(stranger),
        "--from", cache, "--to", str(tmp_path / "fresh"), closure.app,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "lacks a valid signature" in result.stderr
    assert not chroot_path(tmp_path / "fresh", closure.app).exists()


@pytest.mark.parametrize("client", ["nix-store -r", "nix build"])
def test_fresh_store_substitutes_instead_of_building(
    client: str,
    nix: Nix,
    closure: Closure,
    nix_depot: DepotServer,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", cache, closure.app)
    fresh = tmp_path / "fresh"
    # max-jobs 0 forbids local builds: only substitution can produce the path.
    options = [
        "--option", "substituters", cache,
        "--option", "trusted-public-keys", str(signing_key.public_key()),
        "--max-jobs", "0",
    ]  # fmt: skip
    if client == "nix-store -r":
        nix("nix-store", "--store", str(fresh), *options, "-r", closure.app)
    else:
        nix(
            "nix",
            "build",
            "--store",
            str(fresh),
            *options,
            "--no-link",
            "-f",
            str(closure.expression),
        )
    assert same_tree(Path(closure.app), chroot_path(fresh, closure.app))
    assert same_tree(Path(closure.lib), chroot_path(fresh, closure.lib))


def test_store_ls_lists_files_from_depot(
    nix: Nix, closure: Closure, nix_depot: DepotServer
) -> None:
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", cache, closure.app)
    listing = nix("nix", "store", "ls", "--store", cache, "-lR", closure.lib).stdout
    assert "bin/hello" in listing
    assert "hello-link -> bin/hello" in listing
    assert "-r-xr-xr-x" in listing  # the executable
    # Depot derives the .ls listing from the verified NAR (narOffset included).
    ls = httpx.get(f"{cache}/{Path(closure.lib).name[:32]}.ls").json()
    assert ls["version"] == 1
    assert ls["root"]["entries"]["bin"]["entries"]["hello"]["executable"] is True
    assert ls["root"]["entries"]["hello-link"] == {"type": "symlink", "target": "bin/hello"}


def test_build_logs_copied_and_read_back(
    nix: Nix, closure: Closure, nix_depot: DepotServer
) -> None:
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", cache, closure.app)
    nix("nix", "store", "copy-log", "--to", cache, closure.app)
    log = nix("nix", "log", "--store", cache, closure.app).stdout
    assert "building app" in log
    response = httpx.get(f"{cache}/log/{Path(closure.app_drv).name}")
    assert response.headers["content-type"].startswith("text/plain")


def test_nix_store_sign_adds_a_signature(
    nix: Nix,
    make_closure: Callable[[], Closure],
    nix_depot: DepotServer,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    built = make_closure()
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", cache, built.app)
    second = sign_with_a_second_key(nix, cache, built.app, tmp_path)
    narinfo = httpx.get(f"{cache}/{Path(built.app).name[:32]}.narinfo").text
    assert f"Sig: {signing_key.name}:" in narinfo
    assert f"Sig: {second.name}:" in narinfo
    # A client that trusts only the second key accepts the path now.
    nix(
        "nix", "copy", "--option", "trusted-public-keys", str(second.public_key()),
        "--from", cache, "--to", str(tmp_path / "fresh"), built.app,
    )  # fmt: skip


def test_narinfo_stored_before_the_key_is_signed_when_served(
    nix: Nix,
    closure: Closure,
    tmp_path_factory: pytest.TempPathFactory,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    store = tmp_path_factory.mktemp("unsigned") / "store"
    unsigned = DepotServer(store).start()
    try:
        nix("nix", "copy", "--to", f"{unsigned.url}/nix", closure.app)
        info = httpx.get(f"{unsigned.url}/nix/{Path(closure.app).name[:32]}.narinfo").text
        assert "Sig:" not in info
        assert "PublicKey" not in httpx.get(f"{unsigned.url}/nix/nix-cache-info").text
    finally:
        unsigned.stop()
    (tmp_path / "key").write_text(str(signing_key))
    signed = DepotServer(store, "--private-key", str(tmp_path / "key")).start()
    try:
        cache_info = httpx.get(f"{signed.url}/nix/nix-cache-info").text
        assert f"PublicKey: {signing_key.public_key()}" in cache_info
        nix(
            "nix", "copy", "--option", "trusted-public-keys", str(signing_key.public_key()),
            "--from", f"{signed.url}/nix", "--to", str(tmp_path / "fresh"), closure.app,
        )  # fmt: skip
    finally:
        signed.stop()


def test_nix_cache_info_and_heads(closure: Closure, nix: Nix, nix_depot: DepotServer) -> None:
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", f"{cache}?compression=xz", closure.app)
    info = httpx.get(f"{cache}/nix-cache-info")
    assert info.headers["content-type"].startswith("text/x-nix-cache-info")
    assert "StoreDir: /nix/store" in info.text and "WantMassQuery: 1" in info.text
    hash_part = Path(closure.app).name[:32]
    narinfo = httpx.get(f"{cache}/{hash_part}.narinfo")
    assert narinfo.headers["content-type"].startswith("text/x-nix-narinfo")
    url = next(line.split(": ")[1] for line in narinfo.text.splitlines() if line.startswith("URL:"))
    for path in ("nix-cache-info", f"{hash_part}.narinfo", f"{hash_part}.ls", url):
        get, head = httpx.get(f"{cache}/{path}"), httpx.head(f"{cache}/{path}")
        assert head.status_code == get.status_code == 200, path
        assert head.headers["content-length"] == str(len(get.content)), path
        assert head.headers["content-type"] == get.headers["content-type"], path
    nar = httpx.get(f"{cache}/{url}", headers={"Range": "bytes=0-9"})
    assert nar.status_code == 206 and len(nar.content) == 10
    missing = "0" * 32
    assert httpx.get(f"{cache}/{missing}.narinfo").status_code == 404
    assert httpx.head(f"{cache}/{missing}.narinfo").status_code == 404
    assert httpx.get(f"{cache}/nar/{'1' * 52}.nar.xz").status_code == 404


def test_realisations_are_kept(nix_depot: DepotServer) -> None:
    url = f"{nix_depot.url}/nix/realisations/sha256:{'a' * 64}!out.doi"
    document = '{"id": "sha256:' + "a" * 64 + '!out", "outPath": "x", "signatures": []}'
    assert httpx.put(url, content=document).status_code == 200
    got = httpx.get(url)
    assert got.status_code == 200 and got.json()["outPath"] == "x"
    assert httpx.put(url, content="not json").status_code == 400
    assert httpx.get(url.replace("!out", "!dev")).status_code == 404


def test_build_log_needs_a_derivation_name(nix_depot: DepotServer) -> None:
    response = httpx.put(f"{nix_depot.url}/nix/log/{'a' * 32}-x.txt", content=b"log")
    assert response.status_code == 400


def test_missing_paths_are_404_to_nix(nix: Nix, nix_depot: DepotServer, tmp_path: Path) -> None:
    result = nix(
        "nix", "copy", "--from", f"{nix_depot.url}/nix", "--to", str(tmp_path / "fresh"),
        f"/nix/store/{'0' * 32}-absent", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "no substituter" in result.stderr


def test_round_trip_on_postgresql_and_s3(
    nix: Nix,
    make_closure: Callable[[], Closure],
    postgres_url: str,
    s3_bucket: object,
    signing_key: SecretKey,
    tmp_path: Path,
) -> None:
    """The same client session with rows in PostgreSQL and NARs in S3 (moto)."""
    built = make_closure()
    (tmp_path / "key").write_text(str(signing_key))
    server = DepotServer(
        tmp_path / "store",
        "--database-url", postgres_url,
        *s3_bucket.serve_args,  # type: ignore[attr-defined]
        "--private-key", str(tmp_path / "key"),
    ).start()  # fmt: skip
    try:
        cache = f"{server.url}/nix"
        nix("nix", "copy", "--to", f"{cache}?compression=zstd", built.app)
        second = sign_with_a_second_key(nix, cache, built.app, tmp_path)
        fresh = tmp_path / "fresh"
        nix(
            "nix", "copy", "--option", "trusted-public-keys", str(second.public_key()),
            "--from", cache, "--to", str(fresh), built.app,
        )  # fmt: skip
        assert same_tree(Path(built.app), chroot_path(fresh, built.app))
        assert same_tree(Path(built.lib), chroot_path(fresh, built.lib))
        listing = nix("nix", "store", "ls", "--store", cache, "-R", built.lib).stdout
        assert "hello-link" in listing
    finally:
        server.stop()


def test_front_page_tells_how_to_use_the_cache_and_lists_paths(
    nix: Nix, closure: Closure, nix_depot: DepotServer, signing_key: SecretKey
) -> None:
    nix("nix", "copy", "--to", f"{nix_depot.url}/nix", closure.app)
    front = httpx.get(f"{nix_depot.url}/").text
    assert f"substituters = {nix_depot.url}/nix" in front
    assert f"trusted-public-keys = {signing_key.public_key()}" in front
    browse = httpx.get(f"{nix_depot.url}/-/browse/nix", params={"q": Path(closure.lib).name}).text
    assert closure.lib in browse


BIG_NIX = """derivation {
  name = "depot-test-big-NONCE";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; /bin/dd if=/dev/urandom of=$out/blob bs=1M count=3 2>/dev/null; echo NONCE > $out/tag" ];
}
"""


def test_a_path_of_several_mebibytes_round_trips(
    nix: Nix, nix_depot: DepotServer, signing_key: SecretKey, tmp_path: Path
) -> None:
    """Bigger than one chunk, so upload, verification and download all go in several pieces."""
    expression = tmp_path / "big.nix"
    expression.write_text(BIG_NIX.replace("NONCE", tmp_path.name))
    big = nix("nix-build", str(expression), "--no-out-link").stdout.strip()
    cache = f"{nix_depot.url}/nix"
    nix("nix", "copy", "--to", f"{cache}?compression=xz", big)
    fresh = tmp_path / "fresh"
    nix(
        "nix", "copy", "--option", "trusted-public-keys", str(signing_key.public_key()),
        "--from", cache, "--to", str(fresh), big,
    )  # fmt: skip
    assert same_tree(Path(big), chroot_path(fresh, big))
