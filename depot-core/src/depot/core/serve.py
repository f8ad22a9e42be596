"""``depot serve``: the app under hypercorn, with graceful shutdown and optional workers.

SIGINT and SIGTERM stop accepting connections and let in-flight requests finish (up to
``GRACEFUL_TIMEOUT`` seconds). With ``--workers N`` the listening socket is opened once and shared
by N processes, each with its own event loop and connections.

Metrics with workers: the supervisor makes a fresh directory and names it in
``PROMETHEUS_MULTIPROC_DIR`` before it starts the workers (spawned, so each imports
prometheus_client afresh with the variable already set). Every worker's counters land there and
``/metrics`` from any worker reports their sum (:mod:`depot.core.metrics`). The supervisor tells
prometheus-client about each worker that exits (``mark_process_dead``) and removes the directory
when it exits itself.

``--metrics-listen-addr`` with workers is served by worker 0 alone, on a socket the supervisor
binds before any worker starts (so a bad or busy address fails at once, like the main one). A
worker and not the supervisor, because answering a scrape refreshes the stored-object gauges from
the database, which needs an open depot and an event loop; the workers have both, and the
supervisor stays a plain process supervisor with no database connections. Should worker 0 die,
its port stops answering while the other workers go on serving: the scrape fails, which is how a
dead worker gets noticed.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any

import click
from depot.core.errors import ConfigError
from depot.core.logs import configure_server_logging
from depot.core.plugins import Plugins, load_plugins
from depot.core.settings import CORE_OPTIONS, Settings, parse_listen_addr

GRACEFUL_TIMEOUT = 30.0


def metrics_app(depot: Any) -> Any:
    """A tiny app answering only ``/metrics`` for ``--metrics-listen-addr``."""
    from depot.core.metrics import metrics_endpoint
    from starlette.applications import Starlette
    from starlette.routing import Route

    inner = Starlette(routes=[Route("/metrics", metrics_endpoint, methods=["GET"])])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["depot"] = depot
        await inner(scope, receive, send)

    return app


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (Linux and macOS), else asyncio's own.

    Measured with wrk against ``depot serve`` on a 2-core machine: 5-15% more narinfo requests
    per second at the same server CPU, because its selector, callbacks and socket writes run in C.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on the event loop :func:`event_loop_factory` picks."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main)


def _hypercorn_config(settings: Settings, listen_addr: str | None = None) -> Any:
    from hypercorn.config import Config

    host, port = parse_listen_addr(listen_addr or settings.listen_addr)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.accesslog = None  # depot logs its own access lines
    # A logger object, not "-": hypercorn then adds no plain-text handler of its own, and its
    # lines go through depot's JSON handler on the root logger (configure_server_logging).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    # No body size limit beyond what ecosystems enforce: NARs of several GiB are normal.
    config.h11_max_incomplete_size = 64 * 1024
    return config


async def _serve(options: dict[str, Any], sockets: Any = None, metrics_sockets: Any = None) -> None:
    """Serve one depot; ``sockets`` are the supervisor's when this is a worker.

    A worker serves ``--metrics-listen-addr`` only when handed ``metrics_sockets`` (worker 0).
    """
    from depot.core import connections
    from depot.core.app import create_app
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    # Coalesced writes, early answers that close, framing refused, client closes noticed.
    connections.install()
    app = create_app(**options)
    configure_server_logging(app.state.depot.settings.verbose)
    depot = app.state.depot
    await depot.startup()  # fail before listening: one line, not a half-started server
    config = _hypercorn_config(depot.settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def begin_stopping() -> None:
        stop.set()
        depot.body_deadlines.shorten()  # stalled uploads must not hold the shutdown

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, begin_stopping)
    servers = [
        worker_serve(
            wrap_app(app, config.wsgi_max_body_size, "asgi"),
            config,
            sockets=sockets,
            shutdown_trigger=stop.wait,
        )
    ]
    if depot.settings.metrics_listen_addr and (sockets is None or metrics_sockets is not None):
        metrics_config = _hypercorn_config(depot.settings, depot.settings.metrics_listen_addr)
        servers.append(
            worker_serve(
                wrap_app(metrics_app(depot), config.wsgi_max_body_size, "asgi"),
                metrics_config,
                sockets=metrics_sockets,
                shutdown_trigger=stop.wait,
            )
        )
    try:
        await asyncio.gather(*servers)
    finally:
        await depot.shutdown()


async def _prepare(options: dict[str, Any]) -> None:
    """Open and migrate once in the parent, so workers never race on schema creation."""
    from depot.core.app import create_app

    depot = create_app(**options).state.depot
    await depot.startup()
    await depot.shutdown()


def _worker(options: dict[str, Any], sockets: Any, metrics_sockets: Any) -> None:
    try:
        run_loop(_serve(options, sockets, metrics_sockets))
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


def run(options: dict[str, Any], workers: int) -> None:
    """Serve until SIGINT/SIGTERM; with several workers, supervise them."""
    if workers <= 1:
        run_loop(_serve(options))
        return
    from depot.core.metrics import MULTIPROC_DIR_ENV

    settings = Settings.from_options(options, _plugin_options(load_plugins()))
    asyncio.run(_prepare(options))
    sockets = _hypercorn_config(settings).create_sockets()
    metrics_sockets = None
    if settings.metrics_listen_addr:
        metrics_sockets = _hypercorn_config(settings, settings.metrics_listen_addr).create_sockets()
    metrics_dir = tempfile.mkdtemp(prefix="depot-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = metrics_dir  # inherited by the workers spawned below
    try:
        _supervise(options, workers, sockets, metrics_sockets, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(
    options: dict[str, Any], workers: int, sockets: Any, metrics_sockets: Any, metrics_dir: str
) -> None:
    """Start the workers, pass signals on, and wait for every one of them to exit."""
    from multiprocessing.connection import wait

    from prometheus_client.multiprocess import mark_process_dead

    ctx = multiprocessing.get_context("spawn")
    processes = [
        ctx.Process(target=_worker, args=(options, sockets, metrics_sockets if i == 0 else None))
        for i in range(workers)
    ]
    # Workers inherit "ignore SIGHUP" until their app installs its reload handler, so a SIGHUP
    # sent while they start cannot kill them.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for p in processes:
        p.start()

    def forward(signum: int, frame: Any) -> None:
        for p in processes:
            if p.pid is not None and p.is_alive():
                p.terminate()

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    def forward_hup(signum: int, frame: Any) -> None:
        # Workers reload on SIGHUP (the auth file); the supervisor must not die of it.
        for p in processes:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGHUP)

    signal.signal(signal.SIGHUP, forward_hup)
    failed = False
    running = {p.sentinel: p for p in processes}
    while running:
        for sentinel in wait(list(running)):
            p = running.pop(sentinel)  # type: ignore[arg-type]
            p.join()
            # Its counters stay (totals never go down); its live gauges go.
            mark_process_dead(p.pid, metrics_dir)
            failed |= p.exitcode not in (0, -signal.SIGTERM)
    if failed:
        raise ConfigError("a worker exited with an error (see above)")


def _plugin_options(plugins: Plugins) -> list[click.Option]:
    return [o for found in plugins.hook.depot_serve_options() for o in found or ()]


def serve_command(plugins: Plugins) -> click.Command:
    """Build ``depot serve`` with the core's options and every plugin's."""

    def callback(**options: Any) -> None:
        workers = options.get("workers") or 1
        # Validate everything (and say so in one line) before any process starts.
        Settings.from_options(options, _plugin_options(plugins))
        run(options, workers)

    return click.Command(
        "serve",
        callback=callback,
        params=[*CORE_OPTIONS, *_plugin_options(plugins)],
        help="Serve every installed ecosystem over HTTP.",
    )
