"""The options of ``depot serve`` and ``create_app``, defined once for both.

Every option is a click option of ``depot serve`` with a ``DEPOT_<NAME>`` environment variable,
and a keyword of ``create_app`` under its snake_case name with the same default. Plugins add their
own through the ``depot_serve_options`` hook; those land in ``Settings.extra``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import platformdirs
from depot.core.errors import ConfigError
from depot.core.units import Duration, parse_duration, parse_size

#: The default of ``--gc-grace``; why 24 hours: see :mod:`depot.core.collector`.
DEFAULT_GRACE = 24 * 3600.0

DEFAULT_LISTEN_ADDR = "127.0.0.1:8080"


def default_store_path() -> Path:
    """Where blobs and the SQLite database live unless ``--store-path`` says otherwise."""
    return platformdirs.user_data_path("depot")


def option(decls: list[str], **attrs: Any) -> click.Option:
    """A ``depot serve`` option whose environment variable is ``DEPOT_<NAME>``."""
    opt = click.Option(decls, **attrs)
    assert opt.name is not None
    opt.envvar = f"DEPOT_{opt.name.upper()}"
    opt.show_envvar = True
    return opt


CORE_OPTIONS: list[click.Option] = [
    option(
        ["--listen-addr"],
        default=DEFAULT_LISTEN_ADDR,
        show_default=True,
        help="Address to listen on, HOST:PORT or :PORT.",
    ),
    option(
        ["--store-path"],
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Directory for blobs and the SQLite database [default: the user data directory].",
    ),
    option(
        ["--database-url"],
        default=None,
        help="sqlite:///PATH or postgresql://... [default: sqlite at <store-path>/depot.db].",
    ),
    option(["--storage-type"], default="fs", show_default=True, help="Blob store backend."),
    option(
        ["--private-key"],
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Nix signing key file (name:base64), used to sign narinfo.",
    ),
    option(
        ["--auth-file"],
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="File of SSH public keys with r/w permissions; no file means no authentication.",
    ),
    option(
        ["--base-url"], default=None, help="External URL used in links instead of the request's."
    ),
    option(
        ["--trust-proxy-headers"],
        is_flag=True,
        default=False,
        help="Build links from X-Forwarded-Proto/Host/Prefix (only behind a proxy you run).",
    ),
    option(
        ["--document-max-age"],
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Seconds a client or proxy may reuse a mutable document (narinfo, packument, "
        "simple page) without asking again; 0 sends Cache-Control: no-cache.",
    ),
    option(["--workers"], type=click.IntRange(min=1), default=1, show_default=True),
    option(
        ["--metrics-listen-addr"],
        default=None,
        help="Serve /metrics on this HOST:PORT instead of the main port.",
    ),
    option(
        ["--gc-interval"],
        type=Duration(),
        default=None,
        help="Collect unreferenced blobs in the background this often (e.g. 6h) [default: never; "
        "run depot gc].",
    ),
    option(
        ["--gc-grace"],
        type=Duration(),
        default=DEFAULT_GRACE,
        show_default="24h",
        help="Unreferenced blobs younger than this are kept (uploads in flight).",
    ),
    option(
        ["--cache-max-size"],
        default=None,
        help="Evict content cached from upstreams, least recently used first, above this size "
        "(e.g. 50G) [default: no limit]. Published content is never evicted.",
    ),
    option(
        ["--cache-max-age"],
        type=Duration(),
        default=None,
        help="Evict content cached from upstreams unused for this long (e.g. 30d).",
    ),
    option(
        ["--artifact-memory"],
        default="32M",
        show_default=True,
        help="Bytes of small artifacts (npm tarballs, wheels of at most 1 MiB) each process keeps "
        "in memory, so a hot download opens no file; 0 turns it off.",
    ),
    option(
        ["--request-body-timeout"],
        type=click.FloatRange(min=0, min_open=True),
        default=60.0,
        show_default=True,
        help="Seconds a request body may stall (no bytes at all) before it is answered 408.",
    ),
    option(["--verbose"], is_flag=True, default=False, help="Log debug lines and tracebacks."),
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated options of one depot."""

    listen_addr: str = DEFAULT_LISTEN_ADDR
    store_path: Path = dataclasses.field(default_factory=default_store_path)
    database_url: str = ""
    storage_type: str = "fs"
    private_key: Path | None = None
    auth_file: Path | None = None
    base_url: str | None = None
    trust_proxy_headers: bool = False
    document_max_age: int = 0
    workers: int = 1
    metrics_listen_addr: str | None = None
    gc_interval: float | None = None
    gc_grace: float = DEFAULT_GRACE
    cache_max_size: int | None = None
    cache_max_age: float | None = None
    artifact_memory: int = 32 * 1024 * 1024
    request_body_timeout: float = 60.0
    verbose: bool = False
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], plugin_options: Sequence[click.Option] = ()
    ) -> Settings:
        """Validate keyword options as ``create_app`` and ``depot serve`` receive them.

        Unknown names are refused with the list of known ones, so a typo is not silently ignored.
        """
        core_names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        plugin_defaults = {o.name: o.default for o in plugin_options if o.name}
        unknown = set(options) - core_names - set(plugin_defaults)
        if unknown:
            known = ", ".join(sorted(core_names | set(plugin_defaults)))
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {known}")
        core = {k: v for k, v in options.items() if k in core_names and v is not None}
        extra = {k: options.get(k, d) for k, d in plugin_defaults.items()}
        if "store_path" in core:
            core["store_path"] = Path(core["store_path"]).expanduser()
        if isinstance(core.get("cache_max_size"), str):
            try:
                core["cache_max_size"] = parse_size(core["cache_max_size"])
            except ValueError as exc:
                raise ConfigError(f"--cache-max-size: {exc}") from None
        if isinstance(core.get("artifact_memory"), str):
            try:
                core["artifact_memory"] = parse_size(core["artifact_memory"])
            except ValueError as exc:
                raise ConfigError(f"--artifact-memory: {exc}") from None
        for name in ("gc_interval", "gc_grace", "cache_max_age"):
            if isinstance(core.get(name), str):
                try:
                    core[name] = parse_duration(core[name])
                except ValueError as exc:
                    raise ConfigError(f"--{name.replace('_', '-')}: {exc}") from None
        for name in ("private_key", "auth_file"):
            if core.get(name) is not None:
                core[name] = Path(core[name]).expanduser()
        settings = cls(**core, extra=extra)
        if settings.document_max_age < 0:
            raise ConfigError("--document-max-age must be 0 or more seconds")
        parse_listen_addr(settings.listen_addr)
        if settings.metrics_listen_addr:
            parse_listen_addr(settings.metrics_listen_addr)
        if settings.base_url:
            parts = urlsplit(settings.base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--base-url {settings.base_url!r} is not an http(s) URL")
        url = settings.database_url or f"sqlite:///{settings.store_path / 'depot.db'}"
        check_database_url(url)
        return dataclasses.replace(settings, database_url=url)


def parse_listen_addr(addr: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``:PORT`` means all interfaces, ``[::1]:PORT`` for IPv6)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen-addr {addr!r} is not HOST:PORT or :PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def check_database_url(url: str) -> None:
    """Refuse what ``databases`` could not open, before anything is started."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if not parts.path or parts.path == "/":
            raise ConfigError(f"database URL {url!r} names no SQLite file (sqlite:///path/to/db)")
        return
    if parts.scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        if not parts.hostname and not parts.path.strip("/"):
            raise ConfigError(f"database URL {url!r} names no host or database")
        return
    raise ConfigError(
        f"malformed database URL {url!r}: expected sqlite:///PATH or postgresql://HOST/DB"
    )
