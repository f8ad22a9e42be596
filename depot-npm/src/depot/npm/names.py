"""npm package names, versions and dist-tag names: what the registry accepts.

Names follow the rules of npm's ``validate-npm-package-name``: a name is *valid for new packages*
when it breaks none of its rules and triggers none of its warnings (upper case, over 214
characters, ``~'!()*``, a Node.js core module name); names published before those warnings existed
(``JSONStream``) are *valid for old packages*. The npm client publishes any name valid for old
packages, and so does depot: a private registry hosts patched forks under those names. Only the
rules' errors refuse a name (and ``'()*``, which the blob store cannot hold in a key).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import nodesemver

#: ``encodeURIComponent`` leaves these unescaped; a name part must consist of them alone.
_URL_SAFE = re.compile(r"^[A-Za-z0-9\-_.!~*'()]+$")
_SCOPED = re.compile(r"^@([^/]+)/([^/]+)$")
#: Characters the blob store cannot hold in a key; such legacy names are refused outright.
_UNSTORABLE = re.compile(r"['()*]")
_BLACKLIST = {"node_modules", "favicon.ico"}
#: Node.js core modules (``module.builtinModules`` of Node 20, without the ``node:`` scheme).
_BUILTINS = frozenset(
    [
        "assert",
        "async_hooks",
        "buffer",
        "child_process",
        "cluster",
        "console",
        "constants",
        "crypto",
        "dgram",
        "diagnostics_channel",
        "dns",
        "domain",
        "events",
        "fs",
        "http",
        "http2",
        "https",
        "inspector",
        "module",
        "net",
        "os",
        "path",
        "perf_hooks",
        "process",
        "punycode",
        "querystring",
        "readline",
        "repl",
        "stream",
        "string_decoder",
        "sys",
        "timers",
        "tls",
        "trace_events",
        "tty",
        "url",
        "util",
        "v8",
        "vm",
        "wasi",
        "worker_threads",
        "zlib",
    ]
)
MAX_NAME_LENGTH = 214
MAX_VERSION_LENGTH = 256
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


class InvalidName(ValueError):
    """A package name, version or tag the registry refuses; the message is the reason."""


@dataclass(frozen=True)
class NameCheck:
    """The result of checking a name: hard errors and the warnings that block new packages."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def valid_for_new_packages(self) -> bool:
        return not self.errors and not self.warnings

    @property
    def valid_for_old_packages(self) -> bool:
        return not self.errors


def check_name(name: object) -> NameCheck:
    """Apply validate-npm-package-name's rules to ``name``."""
    errors: list[str] = []
    warnings: list[str] = []
    if not isinstance(name, str):
        return NameCheck(("name must be a string",), ())
    if not name:
        errors.append("name length must be greater than zero")
    if name.startswith("."):
        errors.append("name cannot start with a period")
    if name.startswith("_"):
        errors.append("name cannot start with an underscore")
    if name.strip() != name:
        errors.append("name cannot contain leading or trailing spaces")
    if name.lower() in _BLACKLIST:
        errors.append(f"{name} is not a valid package name")
    if name.lower() in _BUILTINS:
        warnings.append(f"{name} is a core module name")
    if len(name) > MAX_NAME_LENGTH:
        warnings.append(f"name can no longer contain more than {MAX_NAME_LENGTH} characters")
    if name.lower() != name:
        warnings.append("name can no longer contain capital letters")
    if re.search(r"[~'!()*]", name.split("/")[-1]):
        warnings.append('name can no longer contain special characters ("~\'!()*")')
    if name and not _URL_SAFE.match(name):
        scoped = _SCOPED.match(name)
        if scoped and all(_URL_SAFE.match(part) for part in scoped.groups()):
            if scoped.group(2).startswith("."):
                errors.append("name cannot start with a period")
        else:
            errors.append("name can only contain URL-friendly characters")
    return NameCheck(tuple(errors), tuple(warnings))


def require_name(name: str) -> str:
    """Return ``name`` if the registry can hold it (valid for old packages), else raise."""
    if not isinstance(name, str):
        raise InvalidName(f"invalid package name {name!r}: name must be a string")
    problem = _name_problem(name)
    if problem is not None:
        raise InvalidName(problem)
    return name


@functools.lru_cache(maxsize=4096)
def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be held, or None; kept for the names every request repeats."""
    result = check_name(name)
    if result.errors:
        return f"invalid package name {name!r}: {result.errors[0]}"
    if _UNSTORABLE.search(name):
        return f"invalid package name {name!r}: special characters are not supported"
    return None


def basename(name: str) -> str:
    """The part of a name that tarball file names start with: ``@scope/pkg`` -> ``pkg``."""
    return name.rsplit("/", 1)[-1]


def escape_name(name: str) -> str:
    """The name as one URL path segment, as npm writes it: ``@scope%2fpkg``."""
    return name.replace("/", "%2f")


def tarball_filename(name: str, version: str) -> str:
    """``<basename>-<version>.tgz``, the file name npm gives every registry tarball."""
    return f"{basename(name)}-{version}.tgz"


def version_from_filename(name: str, filename: str) -> str:
    """The version a tarball file name of ``name`` carries; raises if it is not one of name's."""
    prefix, suffix = basename(name) + "-", ".tgz"
    if not (filename.startswith(prefix) and filename.endswith(suffix)):
        raise InvalidName(f"tarball {filename!r} is not named {prefix}<version>{suffix}")
    return require_version(filename[len(prefix) : -len(suffix)])


def is_version(version: object) -> bool:
    """True for a strict, canonical semver version (``1.2.3-rc.1``; not ``v1.2.3``, not ``01``)."""
    if not isinstance(version, str) or len(version) > MAX_VERSION_LENGTH:
        return False
    parsed = nodesemver.valid(version, False)
    return parsed is not None and parsed.version == version


def require_version(version: object) -> str:
    if not is_version(version):
        raise InvalidName(f"invalid version {version!r}: not a semver version")
    assert isinstance(version, str)
    return version


def require_tag(tag: object) -> str:
    """A dist-tag name: URL-safe, and not something npm would read as a version range."""
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise InvalidName(f"invalid dist-tag {tag!r}")
    if nodesemver.valid_range(tag, False) is not None:
        raise InvalidName(f"invalid dist-tag {tag!r}: a tag must not be a semver range")
    return tag
