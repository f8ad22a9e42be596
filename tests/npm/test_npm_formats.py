"""The npm formats as pure functions: names, latest, integrity, packuments, lock files, specs."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile

import pytest
from depot.npm.integrity import IntegrityError, sri, verify
from depot.npm.lockfile import LockedPackage, read_lockfile
from depot.npm.names import InvalidName, check_name, is_version, require_tag
from depot.npm.packument import (
    PackageRecord,
    VersionRecord,
    build_packument,
    dist_tags,
    wants_abbreviated,
)
from depot.npm.specs import Spec, dependency_specs, parse_dependency, parse_spec, pick_version
from depot.npm.tarball import PackageJsonReader, TarballError
from depot.npm.versions import choose_latest, sort_versions

from .conftest import make_tgz  # noqa: TID252 - test helpers


@pytest.mark.parametrize(
    ("name", "new", "old"),
    [
        ("express", True, True),
        ("@scope/pkg", True, True),
        ("a.b-c_d", True, True),
        ("tilde~name", False, True),
        ("JSONStream", False, True),  # capitals: legacy only
        ("http", False, True),  # a core module name
        ("x" * 215, False, True),
        ("", False, False),
        (".hidden", False, False),
        ("_under", False, False),
        ("@scope/.dot", False, False),
        ("node_modules", False, False),
        ("../etc/passwd", False, False),
        ("a/b", False, False),
        ("@scope/a/b", False, False),
        ("sp ace", False, False),
        ("%2e%2e", False, False),
    ],
)
def test_name_validation_follows_validate_npm_package_name(name: str, new: bool, old: bool) -> None:
    result = check_name(name)
    assert result.valid_for_new_packages is new
    assert result.valid_for_old_packages is old


@pytest.mark.parametrize(
    ("version", "valid"),
    [
        ("1.0.0", True),
        ("1.0.0-rc.1", True),
        ("v1.0.0", False),
        ("1.0", False),
        ("01.0.0", False),
        ("../1.0.0", False),
        ("latest", False),
    ],
)
def test_versions_must_be_canonical_semver(version: str, valid: bool) -> None:
    assert is_version(version) is valid


def test_a_tag_cannot_look_like_a_range() -> None:
    assert require_tag("beta") == "beta"
    for bad in ("1.x", "^1", "a/b", "", "../x"):
        with pytest.raises(InvalidName):
            require_tag(bad)


@pytest.mark.parametrize(
    ("versions", "latest"),
    [
        (["1.9.0", "1.10.0", "1.2.0"], "1.10.0"),  # precedence, not string order
        (["1.0.0", "2.0.0-rc.1"], "1.0.0"),  # never a prerelease while a release exists
        (["2.0.0-rc.1", "2.0.0-beta.3", "2.0.0-rc.10"], "2.0.0-rc.10"),  # only prereleases
        ([], None),
    ],
)
def test_latest_follows_semver_precedence(versions: list[str], latest: str | None) -> None:
    assert choose_latest(versions) == latest


def test_an_explicit_latest_tag_wins_while_its_version_exists() -> None:
    assert dist_tags({"latest": "1.0.0", "beta": "9.9.9"}, ["1.0.0", "2.0.0"]) == {
        "latest": "1.0.0"
    }
    assert dist_tags({"latest": "3.0.0"}, ["1.0.0", "2.0.0"]) == {"latest": "2.0.0"}


def test_integrity_checks_the_strongest_hash_and_the_shasum() -> None:
    data = b"tarball bytes"
    digests = {"sha1": hashlib.sha1(data).digest(), "sha512": hashlib.sha512(data).digest()}  # noqa: S324
    good = sri("sha512", digests["sha512"])
    verify(digests, good, digests["sha1"].hex())
    verify(digests, None, digests["sha1"].hex())
    verify(digests, "sha1-" + base64.b64encode(digests["sha1"]).decode(), None)
    wrong = sri("sha512", hashlib.sha512(b"other").digest())
    with pytest.raises(IntegrityError):
        verify(digests, wrong, None)
    with pytest.raises(IntegrityError):  # a matching weaker hash does not rescue a wrong sha512
        verify(digests, f"{wrong} sha1-{base64.b64encode(digests['sha1']).decode()}", None)
    with pytest.raises(IntegrityError):
        verify(digests, good, "0" * 40)
    with pytest.raises(IntegrityError):
        verify(digests, None, None)


def _records() -> list[VersionRecord]:
    def record(version: str, **manifest: object) -> VersionRecord:
        return VersionRecord(
            version=version,
            manifest={
                "name": "p",
                "version": version,
                "readme": "long",
                "scripts": {"test": "x"},
                **manifest,
            },
            filename=f"p-{version}.tgz",
            integrity="sha512-AAAA",
            shasum="ab" * 20,
            created=f"2024-01-0{version[0]}T00:00:00.000Z",
        )

    return [record("1.0.0", dependencies={"q": "^1"}), record("2.0.0-rc.1"), record("1.10.0")]


def test_abbreviated_packument_keeps_install_fields_and_modified() -> None:
    package = PackageRecord(
        "p", "2024-01-01T00:00:00.000Z", "2024-02-02T00:00:00.000Z", {"readme": "r"}
    )
    doc = build_packument(
        package, _records(), lambda r: f"http://h/npm/p/-/{r.filename}", abbreviated=True
    )
    assert set(doc) == {"name", "dist-tags", "versions", "modified"}
    assert doc["modified"] == "2024-02-02T00:00:00.000Z"
    assert doc["dist-tags"] == {"latest": "1.10.0"}
    assert list(doc["versions"]) == ["1.0.0", "1.10.0", "2.0.0-rc.1"]
    v1 = doc["versions"]["1.0.0"]
    assert set(v1) == {"name", "version", "dependencies", "dist"}
    assert v1["dist"]["tarball"] == "http://h/npm/p/-/p-1.0.0.tgz"


def test_full_packument_has_time_rev_and_whole_manifests() -> None:
    package = PackageRecord(
        "p", "2024-01-01T00:00:00.000Z", "2024-02-02T00:00:00.000Z", {"readme": "r"}
    )
    doc = build_packument(package, _records(), lambda r: r.filename)
    assert doc["_id"] == "p" and "_rev" in doc and doc["readme"] == "r"
    assert doc["time"]["1.10.0"] == "2024-01-01T00:00:00.000Z"
    assert doc["versions"]["1.0.0"]["scripts"] == {"test": "x"}
    assert doc["versions"]["1.0.0"]["_id"] == "p@1.0.0"


@pytest.mark.parametrize(
    ("accept", "abbreviated"),
    [
        ("application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*", True),
        ("application/json", False),
        ("application/json, application/vnd.npm.install-v1+json; q=0.5", False),
        (None, False),
    ],
)
def test_accept_header_picks_the_packument_form(accept: str | None, abbreviated: bool) -> None:
    assert wants_abbreviated(accept) is abbreviated


def test_package_json_is_read_from_a_streamed_tarball() -> None:
    tgz = make_tgz("p", "1.0.0", root="weird-root")
    reader = PackageJsonReader()
    for i in range(0, len(tgz), 7):  # tiny chunks cross every header boundary
        reader.feed(tgz[i : i + 7])
    assert reader.finish() == {"name": "p", "version": "1.0.0"}


def test_long_member_names_are_followed() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        long = "package/" + "d" * 150 + "/x.js"
        for path, data in (
            (long, b"x"),
            ("package/package.json", b'{"name":"p","version":"1.0.0"}'),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    reader = PackageJsonReader()
    reader.feed(out.getvalue())
    assert reader.finish()["name"] == "p"


@pytest.mark.parametrize(
    "data",
    [b"not gzip at all", gzip.compress(b"\x00" * 1024), make_tgz("p", "1")[:40]],
    ids=["not-gzip", "no-package-json", "truncated"],
)
def test_broken_tarballs_are_refused(data: bytes) -> None:
    reader = PackageJsonReader()
    with pytest.raises(TarballError):
        reader.feed(data)
        reader.finish()


def test_lockfile_v1_nested_and_aliases() -> None:
    lock = {
        "lockfileVersion": 1,
        "dependencies": {
            "a": {
                "version": "1.0.0",
                "resolved": "https://r/a/-/a-1.0.0.tgz",
                "integrity": "sha512-x",
                "dependencies": {
                    "b": {"version": "2.0.0", "resolved": "https://r/b/-/b-2.0.0.tgz"}
                },
            },
            "alias": {
                "version": "npm:@s/real@3.0.0",
                "resolved": "https://r/@s/real/-/real-3.0.0.tgz",
            },
            "local": {"version": "file:../local"},
            "gitdep": {"version": "git+https://x/y.git#abc", "resolved": "git+https://x/y.git#abc"},
        },
    }
    assert read_lockfile(lock) == [
        LockedPackage("a", "1.0.0", "https://r/a/-/a-1.0.0.tgz", "sha512-x"),
        LockedPackage("b", "2.0.0", "https://r/b/-/b-2.0.0.tgz"),
        LockedPackage("@s/real", "3.0.0", "https://r/@s/real/-/real-3.0.0.tgz"),
    ]


@pytest.mark.parametrize("version", [2, 3])
def test_lockfile_v2_v3_packages(version: int) -> None:
    lock = {
        "lockfileVersion": version,
        "packages": {
            "": {"name": "root", "dependencies": {"a": "^1"}},
            "node_modules/a": {"version": "1.0.0", "resolved": "https://r/a/-/a-1.0.0.tgz"},
            "node_modules/a/node_modules/@s/b": {
                "version": "2.0.0",
                "resolved": "https://r/@s/b/-/b-2.0.0.tgz",
            },
            "node_modules/alias": {
                "name": "c",
                "version": "3.0.0",
                "resolved": "https://r/c/-/c-3.0.0.tgz",
            },
            "node_modules/linked": {"resolved": "packages/linked", "link": True},
            "packages/linked": {"version": "0.0.1"},
            "node_modules/a/node_modules/bundled": {"version": "1.0.0", "inBundle": True},
        },
    }
    assert [(p.name, p.version) for p in read_lockfile(lock)] == [
        ("a", "1.0.0"),
        ("@s/b", "2.0.0"),
        ("c", "3.0.0"),
    ]


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("express", Spec("express", "tag", "latest")),
        ("express@4.18.2", Spec("express", "version", "4.18.2")),
        ("@s/p@^1.2", Spec("@s/p", "range", "^1.2")),
        ("p@beta", Spec("p", "tag", "beta")),
        ("alias@npm:@s/real@~2", Spec("@s/real", "range", "~2")),
        ("p@1.0.0 - 2.x", Spec("p", "range", "1.0.0 - 2.x")),
    ],
)
def test_specs_are_read_as_npm_reads_them(text: str, spec: Spec) -> None:
    assert parse_spec(text) == spec


PACKUMENT = {
    "dist-tags": {"latest": "1.2.0", "next": "2.0.0-rc.2"},
    "versions": {v: {} for v in ("1.0.0", "1.2.0", "1.3.0", "2.0.0-rc.1", "2.0.0-rc.2")}
    | {"1.4.0": {"deprecated": "broken"}},
}


@pytest.mark.parametrize(
    ("wanted", "version"),
    [
        ("^1.0.0", "1.2.0"),  # latest satisfies: npm takes it
        (">=1.3.0", "1.3.0"),  # highest non-deprecated
        ("~1.4.0", "1.4.0"),  # deprecated, but the only match
        ("^2.0.0", None),  # prereleases only when asked for
        ("^2.0.0-rc.1", "2.0.0-rc.2"),
        ("next", "2.0.0-rc.2"),
        ("1.0.0 || 1.3.x", "1.3.0"),
        ("1.0.0 - 1.1.0", "1.0.0"),
        ("9.0.0", None),
    ],
)
def test_versions_are_picked_like_npm(wanted: str, version: str | None) -> None:
    spec = parse_dependency("p", wanted)
    assert spec is not None
    assert pick_version(PACKUMENT, spec) == version


def test_dependency_walk_covers_optional_and_peers_but_not_git_or_bundled() -> None:
    manifest = {
        "dependencies": {"a": "^1", "g": "github:u/r", "bundled": "1.0.0"},
        "optionalDependencies": {"o": "2.x"},
        "peerDependencies": {"peer": ">=3", "maybe": "*"},
        "peerDependenciesMeta": {"maybe": {"optional": True}},
        "devDependencies": {"dev": "1"},
        "bundleDependencies": ["bundled"],
    }
    names = {(s.name, optional) for s, optional in dependency_specs(manifest)}
    assert names == {("a", False), ("o", True), ("peer", False)}
    assert {s.name for s, _ in dependency_specs(manifest, peers=False)} == {"a", "o"}


def test_readme_of_a_package_stored_before_the_top_level_kept_it() -> None:
    """Rows from schema 1 kept the readme in each version's manifest: the latest one's shows."""
    from depot.npm.packument import PackageRecord, VersionRecord, readme_of

    def record(version: str, readme: str) -> VersionRecord:
        manifest = {"name": "old", "version": version, "readme": readme, "description": "d"}
        return VersionRecord(version, manifest, f"old-{version}.tgz", "sha512-x", "0", "t")

    package = PackageRecord("old", "t", "t", fields={"description": "top"})
    found = readme_of(package, [record("1.0.0", "# first"), record("1.2.0", "# latest")])
    assert (found.description, found.readme, found.readme_filename) == ("top", "# latest", None)


def test_versions_sort_in_npm_precedence() -> None:
    """The sort key gives node-semver's own order (prereleases, numeric identifiers, build)."""
    import random
    from functools import cmp_to_key

    import nodesemver

    versions = [
        "1.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
        "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "2.0.0", "1.10.0", "1.9.0", "0.0.1-0",
        "1.0.0-1", "1.0.0-01a", "10.0.0", "1.0.1+build.5", "1.0.0-x.7.z.92",
    ]  # fmt: skip

    def semver(v: str) -> nodesemver.SemVer:
        return nodesemver.make_semver(v, True)

    expected = sorted(versions, key=cmp_to_key(lambda a, b: semver(a).compare(semver(b))))
    for seed in range(20):
        shuffled = random.Random(seed).sample(versions, len(versions))
        assert sort_versions(shuffled) == expected
