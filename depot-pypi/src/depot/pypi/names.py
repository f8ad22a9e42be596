"""Project names and distribution filenames, as PEP 503 and the packaging specs define them.

Pure functions: they take strings and return values or raise :class:`InvalidFilename`, so the
upload routes, the index pages and ``depot python save`` agree on what a filename means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

#: Characters a distribution filename may hold (wheel tags, local versions with ``+``).
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*$")
_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)

WHEEL = "bdist_wheel"
#: A file's core metadata (PEP 658) is served as ``<file>.metadata``.
METADATA_SUFFIX = ".metadata"
SDIST = "sdist"


class InvalidFilename(ValueError):
    """A filename that is not a wheel or sdist name the index can serve; answered with 400."""


def normalize(name: str) -> str:
    """PEP 503 normalised name: lower case, runs of ``-_.`` become one ``-``."""
    return canonicalize_name(name)


def is_valid_project_name(name: str) -> bool:
    """True for a name core metadata allows (PEP 508 ``identifier``)."""
    return bool(_NAME.match(name))


@dataclass(frozen=True)
class DistributionFile:
    """What a distribution's filename says: project, version and kind."""

    filename: str
    project: str  # normalised
    version: Version
    packagetype: str  # "bdist_wheel" or "sdist", as twine's ``filetype`` field spells it

    @property
    def is_wheel(self) -> bool:
        return self.packagetype == WHEEL


def parse_filename(filename: str) -> DistributionFile:
    """Parse a wheel (PEP 427) or sdist (PEP 625 ``.tar.gz``, legacy ``.zip``) filename.

    Anything else (eggs, ``.exe``, traversal, odd characters) raises :class:`InvalidFilename`.
    """
    if not _FILENAME.match(filename) or ".." in filename or len(filename) > 255:
        raise InvalidFilename(f"{filename!r} is not a distribution filename")
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return DistributionFile(filename, str(name), version, WHEEL)
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return DistributionFile(filename, str(name), version, SDIST)
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise InvalidFilename(f"{filename!r} is not a valid distribution filename: {exc}") from exc
    raise InvalidFilename(f"{filename!r} is neither a wheel (.whl) nor an sdist (.tar.gz, .zip)")
