"""Core metadata inside distributions: a wheel's ``.dist-info/METADATA``, an sdist's ``PKG-INFO``.

These functions read a local, seekable file object (the spooled upload), never the whole archive
into memory: :mod:`zipfile` reads the central directory and one member, :mod:`tarfile` streams
members until it meets ``PKG-INFO``. They raise :class:`InvalidDistribution` with a one-line reason
for anything a client should be told about.
"""

from __future__ import annotations

import email.parser
import email.policy
import tarfile
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from depot.pypi.names import DistributionFile, normalize
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

#: Core metadata is a few kilobytes; anything far larger is not a METADATA file we should keep.
MAX_METADATA_SIZE = 16 * 1024 * 1024


class InvalidDistribution(ValueError):
    """The archive is corrupt or its metadata disagrees with its filename; answered with 400."""


@dataclass(frozen=True)
class CoreMetadata:
    """The fields of core metadata the index needs."""

    name: str
    version: Version
    requires_python: str | None
    raw: bytes  # the file as stored in the archive: served as ``<wheel>.metadata`` (PEP 658)


def parse_core_metadata(raw: bytes, where: str = "METADATA") -> CoreMetadata:
    """Read Name, Version and Requires-Python from an RFC 822 core metadata file.

    Core metadata is UTF-8 (core metadata specification); anything else is refused here, because
    the email parser would hand back undecodable headers as objects that are not strings.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDistribution(
            f"{where} is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    message = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)
    name = (message.get("Name") or "").strip()
    version_text = (message.get("Version") or "").strip()
    if not message.get("Metadata-Version") or not name or not version_text:
        raise InvalidDistribution(f"{where} lacks Metadata-Version, Name or Version")
    try:
        version = Version(version_text)
    except InvalidVersion as exc:
        raise InvalidDistribution(f"{where} has an invalid Version {version_text!r}") from exc
    requires_python = (message.get("Requires-Python") or "").strip() or None
    if requires_python is not None:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier as exc:
            raise InvalidDistribution(
                f"{where} has an invalid Requires-Python {requires_python!r}"
            ) from exc
    return CoreMetadata(name=name, version=version, requires_python=requires_python, raw=raw)


def check_matches(metadata: CoreMetadata, dist: DistributionFile, where: str) -> None:
    """The metadata must name the same project and version as the filename."""
    if normalize(metadata.name) != dist.project or metadata.version != dist.version:
        raise InvalidDistribution(
            f"{where} says {metadata.name} {metadata.version}, "
            f"but the filename says {dist.project} {dist.version}"
        )


def wheel_metadata(file: BinaryIO, dist: DistributionFile) -> CoreMetadata:
    """The ``{name}-{version}.dist-info/METADATA`` of a wheel, checked against its filename.

    Every member's CRC is checked too (``testzip``), streaming, so a truncated or corrupted wheel
    is refused at upload rather than failing on a user's machine.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            candidates = [
                info
                for info in archive.infolist()
                if info.filename.count("/") == 1 and info.filename.endswith(".dist-info/METADATA")
            ]
            matching = [info for info in candidates if _dist_info_matches(info.filename, dist)]
            if len(matching) != 1:
                raise InvalidDistribution(
                    f"wheel has {len(matching)} .dist-info/METADATA for "
                    f"{dist.project} {dist.version} (PEP 427 wants exactly one)"
                )
            info = matching[0]
            if info.file_size > MAX_METADATA_SIZE:
                raise InvalidDistribution(f"{info.filename} is implausibly large")
            raw = archive.read(info)
            bad = archive.testzip()
            if bad is not None:
                raise InvalidDistribution(f"wheel member {bad} is corrupt (CRC mismatch)")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, InvalidDistribution):
            raise
        raise InvalidDistribution(f"not a valid wheel (zip): {exc}") from exc
    metadata = parse_core_metadata(raw, info.filename)
    check_matches(metadata, dist, info.filename)
    return metadata


def _dist_info_matches(member: str, dist: DistributionFile) -> bool:
    directory = member.split("/", 1)[0].removesuffix(".dist-info")
    name, sep, version = directory.rpartition("-")
    if not sep:
        return False
    try:
        return normalize(name) == dist.project and Version(version) == dist.version
    except InvalidVersion:
        return False


def sdist_metadata(file: BinaryIO, dist: DistributionFile) -> CoreMetadata:
    """The top-level ``PKG-INFO`` of an sdist (``.tar.gz``, ``.zip``), checked against its name."""
    try:
        if dist.filename.endswith(".zip"):
            raw, where = _zip_pkg_info(file)
        else:
            raw, where = _tar_pkg_info(file)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, InvalidDistribution):
            raise
        raise InvalidDistribution(f"not a valid sdist archive: {exc}") from exc
    metadata = parse_core_metadata(raw, where)
    check_matches(metadata, dist, where)
    return metadata


def _tar_pkg_info(file: BinaryIO) -> tuple[bytes, str]:
    # Stream mode ("r|gz"): members are read in order, nothing seeks back, memory stays flat.
    with tarfile.open(fileobj=file, mode="r|gz") as archive:
        for member in archive:
            if _is_top_pkg_info(member.name) and member.isfile():
                if member.size > MAX_METADATA_SIZE:
                    raise InvalidDistribution(f"{member.name} is implausibly large")
                extracted = archive.extractfile(member)
                assert extracted is not None
                return extracted.read(), member.name
    raise InvalidDistribution("sdist has no top-level PKG-INFO")


def _zip_pkg_info(file: BinaryIO) -> tuple[bytes, str]:
    with zipfile.ZipFile(file) as archive:
        for info in archive.infolist():
            if _is_top_pkg_info(info.filename):
                if info.file_size > MAX_METADATA_SIZE:
                    raise InvalidDistribution(f"{info.filename} is implausibly large")
                return archive.read(info), info.filename
    raise InvalidDistribution("sdist has no top-level PKG-INFO")


def _is_top_pkg_info(member: str) -> bool:
    parts = member.lstrip("./").split("/")
    return len(parts) == 2 and parts[1] == "PKG-INFO"


def distribution_metadata(file: BinaryIO, dist: DistributionFile) -> CoreMetadata:
    """The core metadata of a wheel or sdist, verified against its filename."""
    file.seek(0)
    try:
        if dist.is_wheel:
            return wheel_metadata(file, dist)
        return sdist_metadata(file, dist)
    finally:
        file.seek(0)


#: What pip assumes for an sdist without ``[build-system]`` (PEP 518), plus ``wheel``, which
#: setuptools before 70.1 asks for when building a wheel.
LEGACY_BUILD_REQUIRES = ("setuptools>=40.8.0", "wheel")


def sdist_build_requirements(file: BinaryIO, filename: str) -> list[str]:
    """The PEP 518 ``build-system.requires`` of an sdist: what installing it needs to build it.

    An sdist without a ``pyproject.toml`` (or without ``build-system.requires``) gets pip's legacy
    default; a setuptools backend also gets ``wheel``, which older setuptools ask for dynamically.
    """
    import tomllib

    file.seek(0)
    raw = None
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(file) as archive:
                for info in archive.infolist():
                    if _is_top_file(info.filename, "pyproject.toml"):
                        raw = archive.read(info)
                        break
        else:
            with tarfile.open(fileobj=file, mode="r|gz") as archive:
                for member in archive:
                    if _is_top_file(member.name, "pyproject.toml") and member.isfile():
                        extracted = archive.extractfile(member)
                        assert extracted is not None
                        raw = extracted.read()
                        break
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InvalidDistribution(f"{filename}: not a valid sdist archive: {exc}") from exc
    finally:
        file.seek(0)
    if raw is None:
        return list(LEGACY_BUILD_REQUIRES)
    try:
        build_system = tomllib.loads(raw.decode()).get("build-system", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidDistribution(f"{filename}: pyproject.toml is not valid TOML: {exc}") from exc
    requires = build_system.get("requires")
    if not isinstance(requires, list):
        return list(LEGACY_BUILD_REQUIRES)
    backend = str(build_system.get("build-backend") or "setuptools.build_meta:__legacy__")
    if backend.startswith("setuptools") and not any(str(r).startswith("wheel") for r in requires):
        requires = [*requires, "wheel"]
    return [str(r) for r in requires]


def _is_top_file(member: str, name: str) -> bool:
    parts = member.lstrip("./").split("/")
    return len(parts) == 2 and parts[1] == name
