"""The pure format modules: names, filenames, simple pages, content negotiation, core metadata."""

from __future__ import annotations

import html.parser
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from depot.pypi import simple
from depot.pypi.coremeta import InvalidDistribution, distribution_metadata
from depot.pypi.names import InvalidFilename, normalize, parse_filename
from packaging.version import Version


@pytest.mark.parametrize(
    ("name", "normalised"),
    [("Friendly-Bard", "friendly-bard"), ("FRIENDLY__BARD", "friendly-bard"),
     ("friendly.bard", "friendly-bard"), ("Friendly-._.-Bard", "friendly-bard")],
)  # fmt: skip
def test_names_are_normalised_as_pep_503_says(name: str, normalised: str) -> None:
    assert normalize(name) == normalised


@pytest.mark.parametrize(
    ("filename", "project", "version", "packagetype"),
    [
        ("requests-2.31.0-py3-none-any.whl", "requests", "2.31.0", "bdist_wheel"),
        ("Beta.Pkg-1.1-py3-none-any.whl", "beta-pkg", "1.1", "bdist_wheel"),
        ("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "numpy",
         "1.26.4", "bdist_wheel"),
        ("foo_bar-1.0+local.1-py3-none-any.whl", "foo-bar", "1.0+local.1", "bdist_wheel"),
        ("flask-2.3.0.tar.gz", "flask", "2.3.0", "sdist"),
        ("Old_Style-0.9.zip", "old-style", "0.9", "sdist"),
    ],
)  # fmt: skip
def test_distribution_filenames_are_parsed(
    filename: str, project: str, version: str, packagetype: str
) -> None:
    dist = parse_filename(filename)
    assert (dist.project, dist.version, dist.packagetype) == (
        project,
        Version(version),
        packagetype,
    )


@pytest.mark.parametrize(
    "filename",
    ["../evil-1.0.tar.gz", "a/b-1.0.tar.gz", "evil-1.0.exe", "foo-1.0-py2.7.egg", "noversion.whl",
     "foo-1.0.tar.bz2", ".hidden-1.0.tar.gz", "foo-1.0-py3-none-any.whl\x00.txt", ""],
)  # fmt: skip
def test_other_filenames_are_refused(filename: str) -> None:
    with pytest.raises(InvalidFilename):
        parse_filename(filename)


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        # pip's header: JSON preferred.
        ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
         "text/html; q=0.01", simple.JSON_V1),
        # A client preferring HTML gets HTML, even if it also takes JSON.
        ("application/vnd.pypi.simple.v1+json; q=0.5, application/vnd.pypi.simple.v1+html",
         simple.HTML_V1),
        ("text/html; q=0.9, application/vnd.pypi.simple.v1+json; q=0.2", simple.TEXT_HTML),
        ("application/vnd.pypi.simple.latest+json", simple.JSON_V1),
        (None, simple.TEXT_HTML),
        ("*/*", simple.TEXT_HTML),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", simple.TEXT_HTML),
        ("application/*", simple.HTML_V1),
        ("application/json, */*;q=0.1", simple.TEXT_HTML),
    ],
)  # fmt: skip
def test_accept_header_is_negotiated_with_q_values(accept: str | None, chosen: str) -> None:
    assert simple.negotiate(accept) == chosen


@pytest.mark.parametrize(
    "accept",
    ["application/json", "text/plain", "application/vnd.pypi.simple.v1+json;q=0, text/html;q=0"],
)
def test_nothing_acceptable_is_refused(accept: str) -> None:
    with pytest.raises(simple.NotAcceptable):
        simple.negotiate(accept)


def test_format_query_parameter_overrides_accept() -> None:
    assert simple.negotiate("text/html", simple.JSON_V1) == simple.JSON_V1


FILES = [
    simple.IndexFile(
        filename="demo-1.0-py3-none-any.whl", url="http://d/python/files/demo/demo-1.0-py3-none-any.whl",
        sha256="a" * 64, size=1234, upload_time="2026-01-02T03:04:05.000006Z",
        requires_python=">=3.8,<4", metadata_sha256="b" * 64,
    ),
    simple.IndexFile(
        filename="demo-1.0.tar.gz", url="http://d/python/files/demo/demo-1.0.tar.gz",
        sha256="c" * 64, size=99, upload_time="2026-01-02T03:04:05.000006Z", yanked="broken <build>",
    ),
]  # fmt: skip


def test_project_json_follows_pep_691_and_700() -> None:
    page = json.loads(simple.project_json("demo", ["1.0"], FILES))
    assert page["meta"] == {"api-version": "1.1"}
    assert page["name"] == "demo" and page["versions"] == ["1.0"]
    wheel, sdist = page["files"]
    assert wheel == {
        "filename": "demo-1.0-py3-none-any.whl",
        "url": "http://d/python/files/demo/demo-1.0-py3-none-any.whl",
        "hashes": {"sha256": "a" * 64},
        "requires-python": ">=3.8,<4",
        "size": 1234,
        "upload-time": "2026-01-02T03:04:05.000006Z",
        "yanked": False,
        "core-metadata": {"sha256": "b" * 64},
    }
    # PEP 714: the old key breaks pip 22.3-23.1 when it appears in JSON.
    assert all("dist-info-metadata" not in f for f in page["files"])
    assert sdist["yanked"] == "broken <build>" and sdist["core-metadata"] is False


class Anchors(html.parser.HTMLParser):
    """Collects (attributes, text) of every anchor, and meta tags."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.meta: dict[str, str | None] = {}
        self._current: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._current = dict(attrs)
        elif tag == "meta":
            found = dict(attrs)
            self.meta[found.get("name") or ""] = found.get("content")

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self.anchors.append((self._current, data))
            self._current = None


def parse_anchors(page: bytes) -> Anchors:
    parser = Anchors()
    parser.feed(page.decode())
    return parser


def test_project_html_follows_pep_503_592_658_714() -> None:
    parsed = parse_anchors(simple.project_html("demo", FILES))
    assert parsed.meta["pypi:repository-version"] == "1.1"
    (wheel, wheel_text), (sdist, sdist_text) = parsed.anchors
    assert wheel_text == "demo-1.0-py3-none-any.whl"
    assert (
        wheel["href"] == f"http://d/python/files/demo/demo-1.0-py3-none-any.whl#sha256={'a' * 64}"
    )
    # The parser unescapes attributes: the page had &gt; and &lt;.
    assert wheel["data-requires-python"] == ">=3.8,<4"
    assert wheel["data-core-metadata"] == f"sha256={'b' * 64}"
    assert "data-yanked" not in wheel
    assert sdist["data-yanked"] == "broken <build>" and "data-core-metadata" not in sdist
    assert b"&gt;=3.8,&lt;4" in simple.project_html("demo", FILES)


def test_root_pages_list_projects() -> None:
    assert json.loads(simple.root_json(["a", "b-c"]))["projects"] == [
        {"name": "a"},
        {"name": "b-c"},
    ]
    anchors = parse_anchors(simple.root_html(["a", "b-c"])).anchors
    assert [(a["href"], text) for a, text in anchors] == [("a/", "a"), ("b-c/", "b-c")]


def test_versions_are_sorted_by_pep_440() -> None:
    assert simple.sort_versions(["1.10", "1.9", "1.0rc1", "1.0", "1.9"]) == [
        "1.0rc1",
        "1.0",
        "1.9",
        "1.10",
    ]


def _wheel(entries: dict[str, str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    buffer.seek(0)
    return buffer


METADATA = (
    "Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.0\nRequires-Python: >=3.9\n\nLong text\n"
)


def test_wheel_core_metadata_is_read_from_dist_info() -> None:
    wheel = _wheel({"demo_pkg.py": "", "demo_pkg-1.0.dist-info/METADATA": METADATA})
    found = distribution_metadata(wheel, parse_filename("demo_pkg-1.0-py3-none-any.whl"))
    assert (found.name, found.version, found.requires_python) == (
        "Demo_Pkg",
        Version("1.0"),
        ">=3.9",
    )
    assert found.raw == METADATA.encode()


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ({"demo_pkg.py": ""}, "METADATA"),
        ({"demo_pkg-1.0.dist-info/METADATA": METADATA.replace("1.0", "2.0")}, "METADATA"),
        ({"demo_pkg-1.0.dist-info/METADATA": METADATA.replace("Demo_Pkg", "other")}, "filename says"),
        ({"demo_pkg-1.0.dist-info/METADATA": "Name: Demo_Pkg\n"}, "lacks"),
    ],
)  # fmt: skip
def test_wheels_whose_metadata_disagrees_are_refused(entries: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidDistribution, match=reason):
        distribution_metadata(_wheel(entries), parse_filename("demo_pkg-1.0-py3-none-any.whl"))


def test_corrupt_wheel_is_refused() -> None:
    good = _wheel(
        {"demo_pkg-1.0.dist-info/METADATA": METADATA, "demo_pkg.py": "x" * 1000}
    ).getvalue()
    broken = good.replace(b"x" * 100, b"y" * 100, 1)  # stored member bytes change, CRC does not
    with pytest.raises(InvalidDistribution, match="corrupt"):
        distribution_metadata(io.BytesIO(broken), parse_filename("demo_pkg-1.0-py3-none-any.whl"))
    with pytest.raises(InvalidDistribution, match="not a valid wheel"):
        distribution_metadata(
            io.BytesIO(b"not a zip"), parse_filename("demo_pkg-1.0-py3-none-any.whl")
        )


def _sdist(tmp_path: Path, top: str, pkg_info: str | None, zip_format: bool = False) -> io.BytesIO:
    buffer = io.BytesIO()
    if zip_format:
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"{top}/setup.py", "")
            if pkg_info is not None:
                archive.writestr(f"{top}/PKG-INFO", pkg_info)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            members = {f"{top}/setup.py": ""}
            if pkg_info is not None:
                members[f"{top}/PKG-INFO"] = pkg_info
            for name, text in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(text.encode())
                archive.addfile(info, io.BytesIO(text.encode()))
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("zip_format", [False, True], ids=["tar.gz", "zip"])
def test_sdist_pkg_info_must_match_the_filename(tmp_path: Path, zip_format: bool) -> None:
    filename = "demo_pkg-1.0.zip" if zip_format else "demo_pkg-1.0.tar.gz"
    dist = parse_filename(filename)
    found = distribution_metadata(_sdist(tmp_path, "demo_pkg-1.0", METADATA, zip_format), dist)
    assert found.version == Version("1.0")
    with pytest.raises(InvalidDistribution, match="filename says"):
        distribution_metadata(
            _sdist(tmp_path, "demo_pkg-1.0", METADATA.replace("1.0", "1.1"), zip_format), dist
        )
    with pytest.raises(InvalidDistribution, match="PKG-INFO"):
        distribution_metadata(_sdist(tmp_path, "demo_pkg-1.0", None, zip_format), dist)
    with pytest.raises(InvalidDistribution):
        distribution_metadata(io.BytesIO(b"\x1f\x8b garbage"), dist)


@pytest.mark.parametrize(
    ("pyproject", "requires"),
    [
        (None, ["setuptools>=40.8.0", "wheel"]),
        ('[project]\nname = "x"\n', ["setuptools>=40.8.0", "wheel"]),
        ('[build-system]\nrequires = ["hatchling>=1"]\nbuild-backend = "hatchling.build"\n', ["hatchling>=1"]),
        ('[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n',
         ["setuptools>=61", "wheel"]),
    ],
)  # fmt: skip
def test_sdist_build_requirements_follow_pep_518(
    tmp_path: Path, pyproject: str | None, requires: list[str]
) -> None:
    from depot.pypi.coremeta import sdist_build_requirements

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in {
            "PKG-INFO": METADATA,
            **({"pyproject.toml": pyproject} if pyproject else {}),
        }.items():
            info = tarfile.TarInfo(f"demo_pkg-1.0/{name}")
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    buffer.seek(0)
    assert sdist_build_requirements(buffer, "demo_pkg-1.0.tar.gz") == requires


def test_upstream_pages_keep_core_metadata_hashes_only_when_verifiable() -> None:
    from depot.pypi.pullthrough import parse_page

    digest = "ab" * 32
    page = json.dumps({
        "meta": {"api-version": "1.1"}, "name": "demo",
        "files": [
            {"filename": "demo-1.0-py3-none-any.whl", "url": "demo-1.0-py3-none-any.whl",
             "hashes": {"sha256": "cd" * 32}, "core-metadata": {"sha256": digest}},
            {"filename": "demo-0.9-py3-none-any.whl", "url": "demo-0.9-py3-none-any.whl",
             "hashes": {"sha256": "ef" * 32}, "dist-info-metadata": True},
        ],
    }).encode()  # fmt: skip
    files = parse_page(page, "application/vnd.pypi.simple.v1+json", "https://up.example/demo/")
    assert [f["metadata-sha256"] for f in files] == [digest, None]
    html = (
        f'<a href="demo-1.0-py3-none-any.whl#sha256={"cd" * 32}" '
        f'data-dist-info-metadata="sha256={digest}">demo-1.0-py3-none-any.whl</a>'
    ).encode()
    files = parse_page(html, "text/html", "https://up.example/demo/")
    assert files[0]["metadata-sha256"] == digest
    assert files[0]["url"] == "https://up.example/demo/demo-1.0-py3-none-any.whl"


def test_likely_choice_is_the_newest_allowed_pure_python_wheel() -> None:
    from depot.pypi.pullthrough import likely_choice, requirements
    from packaging.specifiers import SpecifierSet

    def wheel(version: str, **extra: object) -> dict[str, object]:
        return {"filename": f"demo-{version}-py3-none-any.whl", "metadata-sha256": "a" * 64,
                "yanked": None, **extra}  # fmt: skip

    files = [wheel("1.0"), wheel("1.5"), wheel("2.0rc1"), wheel("1.9", yanked=""),
             wheel("1.8", **{"requires-python": ">=4"}), wheel("1.7", **{"metadata-sha256": None})]  # fmt: skip
    assert likely_choice(files, SpecifierSet(""))["filename"] == "demo-1.5-py3-none-any.whl"
    assert likely_choice(files, SpecifierSet("<1.2"))["filename"] == "demo-1.0-py3-none-any.whl"
    assert likely_choice(files, SpecifierSet(">3")) is None
    metadata = (
        b"Metadata-Version: 2.1\nName: a\nVersion: 1\nRequires-Dist: Beta.Pkg>=1.0\n"
        b'Requires-Dist: gamma; extra == "fancy"\n\n'
    )
    assert [(name, str(spec)) for name, spec in requirements(metadata)] == [("beta-pkg", ">=1.0")]
